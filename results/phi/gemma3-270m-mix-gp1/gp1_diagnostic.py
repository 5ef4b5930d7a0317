"""Where GB1 loses fictional facts at floor 0: the 144 fresh held-out fictional pairs sorted into quartiles by the
lowest weight GB1 gives any token of the pair's answer, with each quartile's held-out accuracy under uniform weights,
the oracle, GB1 at floor 0 and GB1 at floor 0.05 (the committed per-pair records of validate-phi; only φ's weights
are computed here, no θ is trained).

    python gp1_diagnostic.py [PHI_DIR [FIRST REST]]
    # PHI_DIR: the φ whose weights sort the pairs (default GB1 as shipped, src/taalm/resources/phi/gemma3-270m);
    # FIRST, REST: that φ's validate-phi records on the 48 and the rest, added as a column ("this φ")
"""

import json
import statistics
import sys
from pathlib import Path

from taalm import models
from taalm.data import encode
from taalm.weighting import TrainAttention, document_weights

PHI = Path(__file__).parents[1]
REPO = PHI.parents[1]
FRESH = PHI / "gemma3-270m-fresh-validation"
GB1 = PHI / "gemma3-270m-mix-gb1"
PARTS = [  # pairs file, then the oracle's, floor 0's and floor 0.05's records on it
    (FRESH / "fresh.jsonl", FRESH / "oracle/first/oracle", GB1 / "floor/gb1-f0-export", GB1 / "fresh-validation/gb1-export"),
    (FRESH / "all-pairs/rest.jsonl", FRESH / "oracle/rest/oracle", GB1 / "floor/all-pairs/gb1-f0-export",
     GB1 / "floor/all-pairs/gb1-export"),
]
COLUMNS = ["uniform", "oracle", "GB1 floor 0", "GB1 floor 0.05"]
OWN = sys.argv[2:4]  # the sorting φ's own records, if given


def fictional_records(run: Path, kinds: list[str]) -> dict[str, tuple[float, float, dict]]:
    """source -> (φ's held-out accuracy, uniform weights' accuracy, the pair) for the run's fictional pairs."""
    scores = json.loads((run / "selection.json").read_text())["validation"]
    held = [json.loads(line) for line in (run / "held_out.jsonl").read_text().splitlines()]
    fictional = [h for h in held if kinds[int(h["source"].rsplit(":", 1)[1]) - 1] == "fictional"]
    return {h["source"]: (a, u, h) for h, a, u in zip(fictional, scores["fictional/val_pair_accuracy"],
                                                       scores["fictional/uniform_pair_accuracy"], strict=True)}


rows = []
if OWN:
    COLUMNS.append("this φ")
for i, (pairs, *runs) in enumerate(PARTS):
    kinds = [json.loads(line)["kind"] for line in pairs.read_text().splitlines()]
    oracle, floor0, gb1 = (fictional_records(run, kinds) for run in runs)
    own = fictional_records(Path(OWN[i]), kinds) if OWN else {}
    for source, (accuracy, uniform, pair) in oracle.items():
        rows.append({"pair": pair, "uniform": uniform, "oracle": accuracy, "GB1 floor 0": floor0[source][0],
                     "GB1 floor 0.05": gb1[source][0], **({"this φ": own[source][0]} if own else {})})
phi = TrainAttention.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else REPO / "src/taalm/resources/phi/gemma3-270m")
phi.weight_floor = 0.0  # the sigmoid itself
tokenizer = models.load_tokenizer(phi.backbone_name)
encoded = [encode(tokenizer, r["pair"]["document"], 128, answer=r["pair"]["answer"]) for r in rows]
for row, document, sigmoid in zip(rows, encoded, document_weights(phi, [e.input_ids for e in encoded], progress=False)):
    row["lowest"] = min(w for w, is_answer in zip(sigmoid, document.label[1:]) if is_answer)
rows.sort(key=lambda r: r["lowest"])
quarter = len(rows) // 4
print(f"| quartile of the answer's lowest weight (pairs) | {' | '.join(COLUMNS)} |")
print("|---|" + "---|" * len(COLUMNS))
for i in range(4):
    part = rows[i * quarter:(i + 1) * quarter if i < 3 else len(rows)]
    print(f"| {part[0]['lowest']:.2f}–{part[-1]['lowest']:.2f} ({len(part)}) | "
          + " | ".join(f"{statistics.mean(r[c] for r in part):.3f}" for c in COLUMNS) + " |")
