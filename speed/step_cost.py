"""Time and peak memory of one learning step and one φ meta-update, as ratios to a plain LoRA step, in one run.

    python speed/step_cost.py                                   # SmolLM2-135M, 8 documents of <= 128 tokens
    python speed/step_cost.py --model gemma3-270m --docs 8 --max-length 128 --out bench-results.json

Phases, each in its own process so that its peak memory (CUDA: max allocated; CPU: peak RSS) is its own:
  lora        one AdamW step of θ's LoRA on the batch with the plain mean loss (the reference)
  learn       one step of the CKL loop (taalm.ckl.Learner) with cached token weights, micro-batched
  meta-loop   one φ update over the same documents as meta-training pairs, one inner problem after another
  meta-stacked  the same update with the inner problems stacked in one batch (--pair-batch)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import device_name, lama_pairs, peak_memory_mb, timed

PHASES = ("lora", "learn", "meta-loop", "meta-stacked")


def run_phase(args) -> dict:
    from taalm import ckl, meta, models
    from taalm.config import LoopOptions
    from taalm.data import encode, pad_token_id
    from taalm.methods import parse_method
    from taalm.weight_sources import FixedWeights
    from taalm.weighting import TrainAttention

    device = models.pick_device("auto")
    tokenizer = models.load_tokenizer(args.model)
    torch.manual_seed(0)
    attn = "eager" if args.phase.startswith("meta") else "auto"
    theta = models.add_lora(models.load_causal_lm(args.model, attn_implementation=attn), 64, 16, 0.1).to(device)
    pairs = lama_pairs(args.docs, tokenizer, args.max_length)
    docs = [encode(tokenizer, p.document, args.max_length) for p in pairs]
    baseline = peak_memory_mb()
    if args.phase in ("lora", "learn"):
        optimizer = torch.optim.AdamW([p for p in theta.parameters() if p.requires_grad], lr=1e-4)
        weights = [torch.rand(len(d.input_ids) - 1) for d in docs]  # cached φ weights stand-in (same cost)
        options = LoopOptions(batch_size=args.docs, micro_batch=args.micro_batch if args.phase == "learn" else args.docs)
        learner = ckl.Learner(options, parse_method("taalm" if args.phase == "learn" else "finetune"), theta, optimizer,
                              docs, [], FixedWeights(weights) if args.phase == "learn" else None, pad_token_id(tokenizer),
                              device)
        step = lambda: learner.step(list(range(len(docs))), 0, 0)
    else:
        phi = TrainAttention.create(args.model, attn_implementation="eager", num_layers=args.phi_layers).to(device)
        encoded = [meta.encode_pair(tokenizer, p, args.max_length) for p in pairs]
        start = meta.trainable_params(theta)
        optimizer = torch.optim.AdamW([p for p in phi.parameters() if p.requires_grad], lr=2e-4)
        pad = pad_token_id(tokenizer)
        stacked = args.phase == "meta-stacked"
        groups = [encoded] if stacked else [[e] for e in encoded]

        def step():
            for group in groups:
                meta.meta_gradient(theta, phi, start, meta.make_problem(group, pad).to(device), stacked=stacked,
                                   scale=1 / len(encoded))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = timed(step, args.repeats)
    tokens = sum(len(d.input_ids) for d in docs)
    return {"seconds": seconds, "peak_mb": peak_memory_mb(), "baseline_mb": baseline, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--docs", type=int, default=8, help="documents per step = pairs per φ update")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=4, help="the learn phase's micro-batch")
    parser.add_argument("--phi-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--out", default="", help="also write the report to this JSON file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return
    results = {}
    for phase in args.phases.split(","):
        cmd = [sys.executable, __file__, "--phase", phase] + [a for a in sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[phase] = json.loads(out)
    lora = results["lora"]
    extra = lambda r: max(r["peak_mb"] - r["baseline_mb"], 1e-9)
    report = {"device": device_name(), "model": args.model, "docs": args.docs, "max_length": args.max_length,
              "tokens": lora["tokens"], "phi_layers": args.phi_layers, "phases": {}}
    for phase, r in results.items():
        report["phases"][phase] = {"seconds": round(r["seconds"], 3), "time_ratio": round(r["seconds"] / lora["seconds"], 2),
                                   "peak_mb": round(r["peak_mb"]), "peak_ratio": round(r["peak_mb"] / lora["peak_mb"], 2),
                                   "step_memory_ratio": round(extra(r) / extra(lora), 2)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
