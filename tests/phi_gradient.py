"""φ's meta-gradient for the first update of a meta-training run, on however many processes run this.

    accelerate launch --num_processes 2 --cpu tests/phi_gradient.py CONFIG_JSON OUT.pt

Used by tests/test_distributed.py, in-process (one process) and under `accelerate launch` (two).
"""

from __future__ import annotations

import json
import sys

import torch

from taalm import meta, models
from taalm.config import MetaTrainConfig
from taalm.data import pad_token_id
from taalm.distributed import Processes
from taalm.meta_train import build_models, prepare, update_gradient


def gradient(cfg: MetaTrainConfig, procs: Processes | None = None) -> dict[str, torch.Tensor]:
    procs = procs or Processes(cfg.device)
    tokenizer = models.load_tokenizer(cfg.theta)
    encoded, _, _ = prepare(cfg, tokenizer)
    theta, phi = build_models(cfg, procs.device)
    indices = meta.meta_batch_indices(0, cfg.meta_batch, len(encoded), cfg.seed)
    update_gradient(cfg, theta, phi, meta.trainable_params(theta), encoded, indices, pad_token_id(tokenizer), procs)
    return {n: p.grad.detach().clone() for n, p in phi.named_parameters() if p.grad is not None}


if __name__ == "__main__":
    torch.set_num_threads(1)
    config = MetaTrainConfig(**json.loads(sys.argv[1]))
    processes = Processes(config.device)
    grads = gradient(config, processes)
    if processes.is_main_process:
        torch.save(grads, sys.argv[2])
