"""``taalm demo``: TAALM on the embedded SmolLM2 with the fictional benchmark's quick preset, on a CPU, in minutes.

generate 24 facts about invented entities (no pretrained model knows them) → learn them with finetune, oracle and
taalm, the latter with the φ shipped for SmolLM2 (``--phi train`` meta-trains a brief one on generated train-side
pairs instead), Not-To-Forget = 16 LAMA-ckl facts the model knows → the table with intervals, the curves, and a
heatmap of φ's weights on To-Learn documents φ never saw.
"""

from __future__ import annotations

from pathlib import Path

from taalm.bench.config import FictionalConfig
from taalm.config import WeightsConfig


def run_demo(cfg: FictionalConfig, command: str = "") -> None:
    from taalm.bench.fictional import run_bench
    from taalm.bench.runner import seed_dir
    from taalm.inspect_weights import show_weights

    summary = run_bench(cfg, command=command)
    out = Path(cfg.out)
    phi = (summary.get("phi") or {}).get("dir")
    if phi:
        to_learn = seed_dir(out, cfg.seed_list()[0]) / "sets" / "to_learn.jsonl"  # the first seed's To-Learn set
        show_weights(WeightsConfig(phi=phi, file=str(to_learn), limit=3,
                                   out=str(out / "weights.html"), device=cfg.device))
    print(f"demo finished: {out}/table.md, {out}/curves.png, {out}/weights.html")
