"""Data parallelism through Accelerate: this process's share of the work, and how the shares are combined.

    accelerate launch --num_processes 8 -m taalm learn --config configs/lama-ckl/learn_taalm.yaml ...
    torchrun --nproc-per-node 8 -m taalm learn ...          # the same

Every process runs the same command. Each optimizer step's documents (and each meta-batch's pairs, and the probes)
are dealt out round-robin; the model is wrapped by Accelerate in DistributedDataParallel, which averages the
gradients, so each process's loss is scaled by the number of processes: the update equals the single-process
update on the whole step, whatever the process count. Only the main process writes outputs and shows progress.
Without a launcher there is one process and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from taalm import models


class Processes:
    """Where this process stands in a data-parallel run (rank ``rank`` of ``world``). ``Processes(device)`` is
    built once per process (Accelerate's state is global); later calls return the same one."""

    _current: Processes | None = None

    def __new__(cls, device: str = "auto"):
        if cls._current is None or cls._current.requested != device:
            cls._current = super().__new__(cls)
            cls._current._setup(device)
        return cls._current

    def _setup(self, device: str) -> None:
        self.requested = device
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.accelerator = None
        if self.world > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device == "cpu")
            self.rank, self.device = self.accelerator.process_index, self.accelerator.device
        else:
            self.rank, self.device = 0, models.pick_device(device)

    @classmethod
    def single(cls, device: str = "cpu") -> Processes:
        """One process, whatever launched us (e.g. meta-training's validation, which runs on the main process only)."""
        procs = object.__new__(cls)
        procs.world, procs.rank, procs.accelerator, procs.device = 1, 0, None, models.pick_device(device)
        procs.requested = device
        return procs

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share, dealt round-robin (process r takes items r, r + world, ...)."""
        return items[self.rank::self.world]

    def gather_in_order(self, values: list) -> list:
        """The shares' values (one per item of ``shard(items)``) back in the order of ``items``, on every process."""
        if self.world == 1:
            return list(values)
        from accelerate.utils import gather_object

        shares = gather_object([list(values)])
        out: list[Any] = [None] * sum(len(s) for s in shares)
        for rank, share in enumerate(shares):
            out[rank::self.world] = share
        return out

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel through Accelerate (gradients averaged in backward); the model itself alone."""
        return self.accelerator.prepare_model(model) if self.accelerator else model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model) if self.accelerator else model

    def no_sync(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Accumulate gradients locally (every micro-batch of a step but the last)."""
        return self.accelerator.no_sync(model) if self.accelerator else contextlib.nullcontext()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes (a copy when there is one process)."""
        if self.world == 1:
            return tensor.clone()
        from accelerate.utils import reduce

        return reduce(tensor.clone(), reduction="sum")

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over processes (one flat all-reduce), for gradients that
        backward hooks do not see (φ's meta-gradient is computed with ``torch.autograd.grad``)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        total = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p, g in zip(parameters, grads):
            p.grad = total[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def barrier(self) -> None:
        if self.accelerator:
            self.accelerator.wait_for_everyone()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (every process gets the same answer)."""
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)
