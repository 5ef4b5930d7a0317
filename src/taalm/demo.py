"""``taalm demo``: TAALM on the embedded SmolLM2 with the quick preset, on a CPU, in a few minutes.

tailor a small LAMA-ckl split → learn it with finetune, oracle and taalm, the latter with the φ shipped for SmolLM2
(``--phi train`` meta-trains a brief one on the meta pool instead) → the paper's table, the curves, and a heatmap of
φ's weights on To-Learn documents φ never saw.
"""

from __future__ import annotations

from pathlib import Path

from taalm.bench.config import LamaCklConfig
from taalm.config import WeightsConfig


def run_demo(cfg: LamaCklConfig, command: str = "") -> None:
    from taalm.bench.lama_ckl import run_bench
    from taalm.inspect_weights import show_weights

    summary = run_bench(cfg, command=command)
    out = Path(cfg.out)
    phi = (summary.get("phi") or {}).get("dir")
    if phi:
        show_weights(WeightsConfig(phi=phi, file=str(out / "sets" / "to_learn.jsonl"), limit=3,
                                   out=str(out / "weights.html"), device=cfg.device))
    print(f"demo finished: {out}/table.md, {out}/curves.png, {out}/weights.html")
