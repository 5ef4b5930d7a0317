"""Paired difference between two φs' taalm rows on the same benchmark seeds and sets, with the benchmark's own
per-fact scores, statistic and bootstrap (taalm.stats): new φ − old φ. Used for the 16-layer φ against A1 and for
Gemma's floor 0.05 against floor 0.1 (GA1). Now `taalm bench compare` (taalm.bench.compare), which also checks that
both runs learned the same sets; this script keeps the one-line output of the files committed with it.

    python results/phi/smollm2-135m-layers/paired_vs_a1.py lama results/lama_ckl/smollm2-135m-cpu-phi-l16 \
        results/lama_ckl/smollm2-135m-cpu-phi-a1        # or fictional / temporalwiki

Two more arguments name other rows than taalm's: new's method and old's, e.g. `... taalm oracle` for taalm against
the oracle's rows of the same seeds and sets.
"""
import sys

from taalm.bench.compare import compare_runs

KEYS = {"lama": ["top_acc", "nf_acc", "total"], "fictional": ["last_acc", "last_nf_acc"],
        "temporalwiki": ["changed", "unchanged"]}


def main(bench: str, new: str, old: str, new_method: str = "taalm", old_method: str = "taalm") -> None:
    report = compare_runs(new, old, new_method, old_method)
    for k in KEYS[bench]:
        row = report["statistics"][k]
        d = row["difference"]
        print(f"{bench} {k}: new {row['new']:.3f}, old {row['old']:.3f}, "
              f"new − old {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], per seed "
              + ", ".join(f"{x:+.3f}" for x in d["per_seed"]))


if __name__ == "__main__":
    main(*sys.argv[1:6])
