"""Optimizer-step time of ``taalm`` (cached φ weights) ÷ ``finetune`` on the same documents and model, one run.

    python speed/ckl_step.py                      # SmolLM2-135M
    python speed/ckl_step.py --docs 8 --max-length 64 --steps 5

Also reports φ's weight-precompute time per 1k tokens. The two methods' steps are interleaved so that machine
noise hits both alike; the target is a ratio ≤ 1.05 (a TAALM step is a finetune step with other weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_name, lama_pairs


def main() -> None:
    from taalm import adapters, ckl, models
    from taalm.config import LearnConfig
    from taalm.data import encode, pad_token_id
    from taalm.methods import parse_method
    from taalm.weight_sources import FixedWeights
    from taalm.weighting import TrainAttention, document_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    device = models.pick_device("auto")
    tokenizer = models.load_tokenizer(args.model)
    docs = [encode(tokenizer, p.document, args.max_length) for p in lama_pairs(args.docs)]
    phi = TrainAttention.create(args.model).to(device)
    start = time.perf_counter()
    weights = [torch.tensor(w) for w in document_weights(phi, [d.input_ids for d in docs])]
    phi_seconds = time.perf_counter() - start
    n_tokens = sum(len(d.input_ids) for d in docs)
    del phi

    learners = {}
    for name, static in (("finetune", None), ("taalm", weights)):
        cfg = LearnConfig(model=args.model, docs="-", out="-", method=name, phi="-" if name == "taalm" else "",
                          batch_size=args.docs, micro_batch=args.docs, max_length=args.max_length)
        method = parse_method(name)
        torch.manual_seed(0)
        model = adapters.build_model(cfg, method, device)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        source = FixedWeights(static) if static else None
        learners[name] = ckl.Learner(cfg, method, model, optimizer, docs, [], source, pad_token_id(tokenizer), device)
    times = {name: [] for name in learners}
    ids = list(range(len(docs)))
    for step in range(args.steps + 1):
        for name, learner in learners.items():
            start = time.perf_counter()
            learner.step(ids, 0, step)
            if step:  # the first step of each warms up allocators and kernels
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "device": device_name(), "model": args.model, "docs": args.docs, "max_length": args.max_length,
        "finetune_step_s": round(median["finetune"], 3), "taalm_step_s": round(median["taalm"], 3),
        "taalm_over_finetune": round(median["taalm"] / median["finetune"], 3),
        "phi_precompute_s_per_1k_tokens": round(phi_seconds / n_tokens * 1000, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
