"""Data parallelism through Accelerate: this process's share of the work, and how the shares are combined.

    accelerate launch --num_processes 8 -m taalm learn --config configs/lama-ckl/learn_taalm.yaml ...
    torchrun --nproc-per-node 8 -m taalm learn ...          # the same

Every process runs the same command. ``Processes`` is Accelerate's ``Accelerator``, which in one process only runs
the code and under a launcher wraps the model in DistributedDataParallel (``prepare``; gradients averaged in
backward), waits for everyone, tells the main process and keeps the ``--log`` trackers. Each optimizer step's documents
(and each meta-batch's pairs, and the probes) are dealt out round-robin, and each process's loss is scaled by the
number of processes: the update equals the single-process update on the whole step, whatever the process count. Only
the main process writes outputs, logs and shows progress.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from taalm import models
from taalm.errors import TaalmError


class Processes(Accelerator):
    """Where this process stands in a data-parallel run (rank ``rank`` of ``world``), with what Accelerator lacks:
    round-robin shares and their values gathered back in order, sums that a process working alone keeps to itself,
    and the all-reduce of gradients that backward hooks do not see. ``log`` (none, tensorboard, wandb) and ``out``
    set up the trackers (``start_tracking``). ``alone``: one process's work whatever launched us (``single``)."""

    def __init__(self, device: str = "auto", log: str = "none", out: str | Path | None = None, alone: bool = False):
        if log != "none" and importlib.util.find_spec(log) is None:  # Accelerate would skip the tracker silently
            raise TaalmError(f"option --log: {log} asked for but the package is not installed (pip install {log})")
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not alone
        # A launched process computes where Accelerate puts it; one working alone where --device says (cuda:N, which
        # Accelerator has no option for). cpu=True picks gloo for a launched run; it is not passed otherwise, since
        # Accelerate's state is fixed per process by its first Accelerator and one process may run on several devices.
        self._device = None if launched else models.pick_device(device)
        super().__init__(cpu=launched and device == "cpu", device_placement=False,
                         log_with=None if log == "none" else log, project_dir=str(out) if out else None)
        self.world = self.num_processes if launched else 1
        self.rank = self.process_index if launched else 0

    @classmethod
    def single(cls, device: str = "cpu") -> Processes:
        """One process, whatever launched us (e.g. meta-training's validation, which runs on the main process only)."""
        return cls(device, alone=True)

    @property
    def device(self) -> torch.device:
        return self.state.device if self._device is None else self._device

    def shard(self, items: list) -> list:
        """This process's share, dealt round-robin (process r takes items r, r + world, ...): the dealing that
        ``gather_in_order`` undoes and every multi-process run so far used (Accelerate's ``split_between_processes``
        deals contiguous blocks)."""
        return items[self.rank::self.world]

    def gather_in_order(self, values: list) -> list:
        """The shares' values (one per item of ``shard(items)``) back in the order of ``items``, on every process
        (Accelerate's ``gather_object`` concatenates the shares)."""
        if self.world == 1:
            return list(values)
        from accelerate.utils import gather_object

        shares = gather_object([list(values)])
        out: list[Any] = [None] * sum(len(s) for s in shares)
        for rank, share in enumerate(shares):
            out[rank::self.world] = share
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes (a copy when this process works alone, where ``reduce`` would wait for the others)."""
        return tensor.clone() if self.world == 1 else self.reduce(tensor, reduction="sum")

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over processes (one flat all-reduce), for gradients that
        DistributedDataParallel's backward hooks do not see (φ's meta-gradient is computed with ``torch.autograd.grad``)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        total = self.sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p, g in zip(parameters, grads):
            p.grad = total[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (every process gets the same answer)."""
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    def start_tracking(self, config: dict[str, Any]) -> None:
        """Start the ``--log`` trackers (main process only): TensorBoard events under OUT/taalm, or a W&B run of the
        project taalm with the run's config (TensorBoard's hparams take scalars only, so it gets none)."""
        self.init_trackers("taalm", init_kwargs={"wandb": {"dir": self.logging_dir, "config": config}})

    def end_tracking(self) -> None:
        """Finish the trackers; not ``end_training``, which also ends the process group a benchmark's next run needs."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
