"""GB1's weights on the first 48 fresh held-out pairs per kind, per kind of document: its sigmoid mass, and the share
of each document's weight that its floor and its answer tokens carry under a fixed floor (0, 0.05) and the per-document
floor share 0.6. A diagnostic of φ's weights only (no θ is trained).

    python weight_shares.py PHI_DIR > weight_shares.md     # PHI_DIR: GB1 as shipped (src/taalm/resources/phi/gemma3-270m)
"""

import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from taalm import models
from taalm.data import encode, load_pairs
from taalm.meta_train import windowed
from taalm.weighting import TrainAttention, document_weights, floor_for_share

PAIRS = Path(__file__).parents[2] / "gemma3-270m-fresh-validation" / "fresh.jsonl"
SETTINGS = {"floor 0": ("floor", 0.0), "floor 0.05 (GB1)": ("floor", 0.05), "floor share 0.6": ("share", 0.6)}

phi = TrainAttention.from_pretrained(sys.argv[1])
phi.weight_floor, phi.weight_floor_share = 0.0, 0.0  # the sigmoid itself; the settings are applied below
tokenizer = models.load_tokenizer(phi.backbone_name)
report = {"pairs": 0, "windowed": 0, "skipped": []}
pairs = windowed(tokenizer, load_pairs(str(PAIRS), "descriptive"), 128, report, held_out=True)  # as validation does
encoded = [encode(tokenizer, p.document, 128, answer=p.answer, where=p.source) for p in pairs]
kinds = [p.kind for p in pairs]
sigmoids = document_weights(phi, [e.input_ids for e in encoded], progress=False)
rows = defaultdict(lambda: defaultdict(list))
for document, sigmoid, kind in zip(encoded, sigmoids, kinds):
    s = torch.tensor(sigmoid)
    answer = torch.tensor(document.label[1:])  # weights are aligned to predicted tokens
    rows[kind]["tokens"].append(len(s))
    rows[kind]["sigmoid mass"].append(float(s.sum()))
    for name, (how, value) in SETTINGS.items():
        floor = value if how == "floor" else float(floor_for_share(s[None], torch.ones(1, len(s)), value))
        w = floor + (1 - floor) * s
        rows[kind][f"{name}: floor's share"].append(floor * len(s) / float(w.sum()))
        rows[kind][f"{name}: answer's share"].append(float(w[answer].sum() / w.sum()))
columns = list(next(iter(rows.values())))
print("| kind | documents | " + " | ".join(columns) + " |")
print("|---|---|" + "---|" * len(columns))
for kind, values in sorted(rows.items()):
    print(f"| {kind} | {len(values['tokens'])} | " + " | ".join(f"{statistics.mean(values[c]):.3f}" for c in columns)
          + " |")
