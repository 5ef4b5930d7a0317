"""Paired difference between two φs' taalm rows on the same benchmark seeds and sets, with the benchmark's own
per-fact scores, statistic and bootstrap (taalm.stats): new φ − old φ. Used for the 16-layer φ against A1 and for
Gemma's floor 0.05 against floor 0.1 (GA1).

    python results/phi/smollm2-135m-layers/paired_vs_a1.py lama results/lama_ckl/smollm2-135m-cpu-phi-l16 \
        results/lama_ckl/smollm2-135m-cpu-phi-a1        # or fictional / temporalwiki

Two more arguments name other rows than taalm's: new's method and old's, e.g. `... taalm oracle` for taalm against
the oracle's rows of the same seeds and sets.
"""
import sys
from pathlib import Path

from taalm.bench import fictional, lama_ckl, temporalwiki
from taalm.bench.twiki_data import LEARN_PERIODS
from taalm.io import read_jsonl
from taalm.stats import bootstrap


def metrics(path: Path) -> list[dict]:
    return [record for _, record in read_jsonl(path)]


def lama_scores(method_dir: Path) -> dict:
    return lama_ckl.fact_scores(metrics(method_dir / "metrics.jsonl"))


def temporalwiki_scores(method_dir: Path) -> dict:
    return {name: scores for period in LEARN_PERIODS
            for name, scores in temporalwiki.period_facts(metrics(method_dir / period / "metrics.jsonl"), period).items()}


BENCHES = {"lama": (lama_scores, lama_ckl.statistic, ["top_acc", "nf_acc", "total"]),
           "fictional": (lama_scores, fictional.statistic, ["last_acc", "last_nf_acc"]),
           "temporalwiki": (temporalwiki_scores, temporalwiki.statistic_over(list(LEARN_PERIODS)), ["changed", "unchanged"])}


def main(bench: str, new: Path, old: Path, new_method: str = "taalm", old_method: str = "taalm",
         seeds=(0, 1, 2)) -> None:
    scores, statistic, keys = BENCHES[bench]
    runs = [{"old": scores(old / f"seed-{s}/methods/{old_method}"), "new": scores(new / f"seed-{s}/methods/{new_method}")}
            for s in seeds]
    result = bootstrap(runs, statistic, baseline="old")
    for k in keys:
        d = result["new"]["vs_old"][k]
        print(f"{bench} {k}: new {result['new']['stats'][k]['mean']:.3f}, old {result['old']['stats'][k]['mean']:.3f}, "
              f"new − old {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], per seed "
              + ", ".join(f"{x:+.3f}" for x in d["per_seed"]))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:6])
