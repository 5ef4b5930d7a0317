"""T = 3 − floor 0.05 on the 144 fresh TemporalWiki pairs, answer NLL and accuracy gains over uniform weights with
paired 95 % intervals over the pairs (compare-phi's bootstrap), at 8 θ steps per group (this directory's run) and at
36 (the first 48 pairs and the other 96, measured before, pooled in file order as ../all-pairs/pool.py does).

    python margins.py           # from this directory
"""
import json
from dataclasses import replace
from pathlib import Path

from taalm import phi_compare
from taalm.validation import Score, gain_record, kinds_record

KIND = "temporalwiki"
here = Path(__file__).parent
measurements = {"8 steps": [[here / "val" / "gemma3-270m"], [here / "val" / "gT3-export"]],
                "36 steps": [[here.parent / "gemma3-270m", here.parent / "all-pairs" / "gemma3-270m"],
                             [here.parent / "layers-4-T3", here.parent / "all-pairs" / "layers-4-T3"]]}


def key(validation: dict, name: str):
    """A record of one kind names its keys without the kind."""
    return validation.get(f"{KIND}/{name}", validation.get(name))


def pooled_score(parts: list[phi_compare.Candidate], run: str) -> Score:
    accuracy = tuple(a for p in parts for a in key(p.validation, f"{run}_pair_accuracy"))
    nll = tuple(x for p in parts for x in key(p.validation, f"{run}_pair_nll"))
    return Score.of_pairs(accuracy, nll)


def pooled(dirs: list[Path]) -> phi_compare.Candidate:
    parts = [phi_compare.load_candidate(d) for d in dirs]
    record = gain_record(pooled_score(parts, "val"), pooled_score(parts, "uniform"))
    return replace(parts[0], run=dirs[0], validation=kinds_record({KIND: record}, "accuracy"))


report = {}
for steps, (shipped_dirs, t3_dirs) in measurements.items():
    shipped, t3 = pooled(shipped_dirs), pooled(t3_dirs)
    report[steps] = {"pairs": len(key(shipped.validation, "val_pair_accuracy"))}
    for metric in ("nll", "accuracy"):
        iv = phi_compare.paired_intervals([shipped, t3], shipped, metric)
        report[steps][metric] = {"floor 0.05 gain": iv["gains"][str(shipped.run)]["gain"],
                                 "T = 3 gain": iv["gains"][str(t3.run)]["gain"],
                                 "T = 3 − floor 0.05": iv["vs_chosen"][str(t3.run)]["difference"],
                                 "ci95": iv["vs_chosen"][str(t3.run)]["ci95"]}
(here / "margins.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps(report, indent=1))
