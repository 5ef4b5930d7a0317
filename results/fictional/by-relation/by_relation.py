"""taalm − finetune at the last epoch on the facts whose relation φ's side also asks (shared: φ trained on prose
stating them with the same sentence templates) and on the test-only ones (relations and templates φ never saw), each
with the benchmark's paired bootstrap (taalm.stats) over those facts only.

    python results/fictional/by-relation/by_relation.py OUT [METHOD [SETS [OTHER]]]
    # METHOD default taalm; SETS: the run whose seed-N/sets/ hold the facts (default OUT; a copy holding only taalm's
    # rows, as gemma3-270m-cpu-phi-f005, names the run it was paired with, whose finetune rows are then used too);
    # OTHER: a run on the same sets whose taalm rows take finetune's place (one φ against another)
"""
import sys
from pathlib import Path

import numpy as np

from taalm.bench import fictional, lama_ckl
from taalm.bench import fictional_data as gen
from taalm.io import read_jsonl
from taalm.stats import bootstrap


def scores(out: Path, seed: int, method: str) -> dict:
    return lama_ckl.fact_scores([r for _, r in read_jsonl(out / f"seed-{seed}/methods/{method}/metrics.jsonl")])


def subset(fact_scores: dict, keep: np.ndarray) -> dict:
    return {**fact_scores, "to_learn": {k: v[:, keep] for k, v in fact_scores["to_learn"].items()}}


def main(out: Path, method: str = "taalm", sets: Path | None = None, other: Path | None = None,
         seeds=(0, 1, 2)) -> None:
    sets = sets or out
    # the paired baseline: finetune's rows, or another φ's taalm rows on the same facts
    baseline, label = ((other, "taalm"), f"{other.name} taalm") if other else ((sets, "finetune"), "finetune")
    for name, relations in (("shared with φ's side", gen.SHARED), ("test-only", gen.TEST_ONLY)):
        runs = []
        for s in seeds:
            rows = [r for _, r in read_jsonl(sets / f"seed-{s}/sets/to_learn.jsonl")]
            keep = np.array([r["relation"] in relations for r in rows])
            both = {"finetune": scores(baseline[0], s, baseline[1]), method: scores(out, s, method)}
            assert all(v["to_learn"]["accuracy"].shape[1] == len(rows) for v in both.values())
            runs.append({m: subset(v, keep) for m, v in both.items()})
        result = bootstrap(runs, fictional.statistic)
        d = result[method]["vs_finetune"]["last_acc"]
        print(f"{name} ({sum(len(r['finetune']['to_learn']['accuracy'][0]) for r in runs)} facts): "
              f"{label} {result['finetune']['stats']['last_acc']['mean']:.3f}, "
              f"{method} {result[method]['stats']['last_acc']['mean']:.3f}, {method} − {label} {d['mean']:+.3f} "
              f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], per seed " + ", ".join(f"{x:+.3f}" for x in d["per_seed"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3], *(Path(a) for a in sys.argv[3:5]))
