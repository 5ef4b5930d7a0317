"""``taalm demo``: the whole pipeline on the embedded SmolLM2 with the quick preset, on a CPU.

tailor LAMA-ckl → meta-train φ on the meta pool → learn with finetune, oracle and taalm → the paper's table,
the curves, and a heatmap of φ's weights on To-Learn documents φ never saw.
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
