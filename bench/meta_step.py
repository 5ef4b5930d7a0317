"""Cost of one meta-update of φ vs one plain weighted LoRA step of θ on the same batch, measured in one run.

    python bench/meta_step.py                         # SmolLM2-135M, CPU or GPU
    python bench/meta_step.py --docs 4 --max-length 64 --repeats 3

Each phase runs in its own process so that peak memory (GPU: max allocated; CPU: peak RSS) belongs to it alone.
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


def run_phase(args) -> dict:
    from taalm import losses, meta, models
    from taalm.data import pad_token_id
    from taalm.weighting import TrainAttention

    device = models.pick_device("auto")
    tokenizer = models.load_tokenizer(args.model)
    torch.manual_seed(0)
    theta = models.add_lora(models.load_causal_lm(args.model, attn_implementation="eager"), 64, 16, 0.1).to(device)
    phi = TrainAttention.create(args.model, attn_implementation="eager", num_layers=args.phi_layers).to(device)
    encoded = [meta.encode_pair(tokenizer, p, args.max_length) for p in lama_pairs(args.docs)]
    problem = meta.make_problem(encoded, pad_token_id(tokenizer)).to(device)
    baseline = peak_memory_mb()
    if args.phase == "plain":
        with torch.no_grad():
            weights = phi(problem.document["input_ids"], problem.document["attention_mask"])
        del phi
        optimizer = torch.optim.AdamW([p for p in theta.parameters() if p.requires_grad], lr=1e-4)
        doc = problem.document

        def step():
            logits = theta(input_ids=doc["input_ids"], attention_mask=doc["attention_mask"]).logits
            losses.weighted_loss(losses.token_nll(logits, doc["input_ids"]), weights, doc["loss_mask"]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        start = meta.trainable_params(theta)
        optimizer = torch.optim.AdamW([p for p in phi.parameters() if p.requires_grad], lr=2e-4)

        def step():
            meta.meta_gradient(theta, phi, start, problem, dummy_steps=args.dummy_steps)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, args.repeats)
    return {"seconds": seconds, "peak_mb": peak_memory_mb(), "baseline_mb": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--docs", type=int, default=4, help="documents in the batch (one inner problem)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--dummy-steps", type=int, default=1)
    parser.add_argument("--phi-layers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase", choices=["plain", "meta"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args)))
        return
    results = {}
    for phase in ("plain", "meta"):
        cmd = [sys.executable, __file__, "--phase", phase] + sys.argv[1:]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[phase] = json.loads(out)
    plain, meta_ = results["plain"], results["meta"]
    extra = lambda r: max(r["peak_mb"] - r["baseline_mb"], 1e-9)
    report = {
        "device": device_name(), "model": args.model, "docs": args.docs, "max_length": args.max_length,
        "dummy_steps": args.dummy_steps, "phi_layers": args.phi_layers,
        "plain_step_s": round(plain["seconds"], 3), "meta_update_s": round(meta_["seconds"], 3),
        "time_ratio": round(meta_["seconds"] / plain["seconds"], 2),
        "plain_peak_mb": round(plain["peak_mb"]), "meta_peak_mb": round(meta_["peak_mb"]),
        "peak_ratio": round(meta_["peak_mb"] / plain["peak_mb"], 2),
        "step_memory_ratio": round(extra(meta_) / extra(plain), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
