"""Both arguments' weights against uniform weights, the oracle and GB1 on the 144 fresh held-out fictional pairs: each
way's gain over uniform weights and paired differences, 95 % paired percentile bootstrap over the pairs (2,000
replicates, seed 0), from the per-pair validate-phi records.

    python compare.py FIRST REST    # both_arguments.py's records (OUT/gemma3-270m) on the 48 and on the rest
"""

import json
import sys
from pathlib import Path

import numpy as np

PHI = Path(__file__).parents[2]
FRESH = PHI / "gemma3-270m-fresh-validation"
GB1 = PHI / "gemma3-270m-mix-gb1"
PARTS = {  # the pairs file, then each way's record on it (the both-argument records come from the command line)
    "oracle": (FRESH / "oracle/first/oracle", FRESH / "oracle/rest/oracle"),
    "GB1, floor 0.05": (GB1 / "fresh-validation/gb1-export", GB1 / "floor/all-pairs/gb1-export"),
    "GB1, floor 0": (GB1 / "floor/gb1-f0-export", GB1 / "floor/all-pairs/gb1-f0-export"),
    "both arguments": tuple(Path(p) for p in sys.argv[1:3]),
}
PAIRS = (FRESH / "fresh.jsonl", FRESH / "all-pairs/rest.jsonl")


def fictional(run: Path, pairs: Path) -> dict[str, tuple[float, float]]:
    """source -> (held-out accuracy, uniform weights' accuracy) of the run's fictional pairs."""
    kinds = [json.loads(line)["kind"] for line in pairs.read_text().splitlines()]
    scores = json.loads((run / "selection.json").read_text())["validation"]
    prefix = "fictional/" if "fictional/val_pair_accuracy" in scores else ""  # a one-kind record has no prefix
    held = [json.loads(line)["source"] for line in (run / "held_out.jsonl").read_text().splitlines()]
    held = [s for s in held if kinds[int(s.rsplit(":", 1)[1]) - 1] == "fictional"]
    return dict(zip(held, zip(scores[f"{prefix}val_pair_accuracy"], scores[f"{prefix}uniform_pair_accuracy"],
                              strict=True), strict=True))


accuracy, uniform = {}, None
for name, runs in PARTS.items():
    records = [fictional(run, pairs) for run, pairs in zip(runs, PAIRS, strict=True)]
    merged = {f"{i}:{source}": value for i, record in enumerate(records) for source, value in record.items()}
    keys = sorted(merged)
    accuracy[name] = np.array([merged[k][0] for k in keys])
    own_uniform = np.array([merged[k][1] for k in keys])
    assert uniform is None or np.allclose(uniform, own_uniform), name  # the same pairs, the same uniform runs
    uniform = own_uniform
draws = np.random.default_rng(0).integers(0, len(uniform), size=(2000, len(uniform)))


def interval(values: np.ndarray) -> str:
    low, high = np.percentile(values[draws].mean(1), [2.5, 97.5])
    return f"{values.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


print(f"{len(uniform)} fictional pairs; uniform weights' accuracy {uniform.mean():.3f}\n")
print("| weights | gain over uniform weights | both arguments − this |")
print("|---|---|---|")
for name, values in accuracy.items():
    versus = "—" if name == "both arguments" else interval(accuracy["both arguments"] - values)
    print(f"| {name} | {interval(values - uniform)} | {versus} |")
