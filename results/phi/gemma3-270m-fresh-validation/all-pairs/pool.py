"""Pool two validate-phi measurements of the same φs on disjoint held-out pairs: each φ's per-pair scores (and the
uniform runs') concatenated per kind, its gains over uniform weights recomputed, and compare-phi's rule and paired
intervals applied to the pooled pairs. Every group of pairs was learned from θ's start, so pairs pool exactly.

    python pool.py FIRST_DIR SECOND_DIR OUT_PREFIX NAME...     # NAME: a φ's record directory in both dirs
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

from taalm import phi_compare, stats
from taalm.validation import Score, gain_record, kinds_record, selection_key

first, second, out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
names = sys.argv[4:]


def pooled_score(records: list[dict], kind: str, run: str) -> Score:
    accuracy = [a for r in records for a in r[f"{kind}/{run}_pair_accuracy"]]
    nll = [x for r in records for x in r[f"{kind}/{run}_pair_nll"]]
    return Score.of_pairs(accuracy, nll)


candidates = []
for name in names:
    parts = [phi_compare.load_candidate(d / name) for d in (first, second)]
    # measured alike (groups aside: the first run's one group of 48 per kind is --group 48's size) on disjoint pairs
    differ = [k for k in phi_compare.SAME_MEASURE if k != "val_group"
              and getattr(parts[0].config, k) != getattr(parts[1].config, k)]
    assert not differ, (name, differ)
    held = [{p[0] for p in phi_compare.held_out_pairs(d / name)} for d in (first, second)]
    assert not held[0] & held[1], (name, "pairs measured twice")
    validations = [p.validation for p in parts]
    kinds = phi_compare.kinds_of(validations[0])
    assert kinds == phi_compare.kinds_of(validations[1]), (name, kinds)
    records = {kind: gain_record(pooled_score(validations, kind, "val"), pooled_score(validations, kind, "uniform"))
               for kind in kinds}
    candidates.append(replace(parts[1], run=Path(name), validation=kinds_record(records, "accuracy")))

chosen = max(candidates, key=lambda c: selection_key(c.validation, "accuracy"))
intervals = phi_compare.paired_intervals(candidates, chosen, "accuracy")
report = {"pooled": [str(first), str(second)], "metric": "accuracy", "chosen": str(chosen.run),
          "pairs": {k: len(chosen.validation[f"{k}/val_pair_accuracy"])
                    for k in phi_compare.kinds_of(chosen.validation)},
          "candidates": [{"run": str(c.run), "validation": c.validation} for c in candidates],
          "intervals": {"method": phi_compare.INTERVAL_METHOD.format(replicates=stats.REPLICATES),
                        "level": stats.LEVEL, **intervals}}
Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n")
Path(f"{out}.md").write_text(phi_compare.markdown_table(candidates, chosen, [], intervals["vs_chosen"]) + "\n")
phi_compare.plot_gains(report, Path(f"{out}.png"))
print(Path(f"{out}.md").read_text())
print(json.dumps({"chosen": report["chosen"], "pairs": report["pairs"], "vs_chosen": intervals["vs_chosen"]},
                 indent=1))
