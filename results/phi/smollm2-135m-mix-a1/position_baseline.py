"""Does the position of the answer in LAMA-ckl's evaluated documents give φ a shortcut? Answer-token ROC-AUC, on each
seed's To-Learn documents, of two position-only rankings (closeness to the window's centre; lateness) beside φ's.

    python results/phi/smollm2-135m-mix-a1/position_baseline.py PHI RUN_DIR --out position_baseline.json

RUN_DIR: a `taalm bench lama-ckl` output (its seed-N/sets/to_learn.jsonl); documents encoded as the benchmark does
(128 tokens, the answer's last occurrence marked)."""

import argparse
import json
from pathlib import Path

import torch

from taalm import models
from taalm.data import encode
from taalm.weighting import TrainAttention, answer_auc, document_weights

parser = argparse.ArgumentParser()
parser.add_argument("phi")
parser.add_argument("run")
parser.add_argument("--out", required=True)
args = parser.parse_args()
phi = TrainAttention.load(args.phi)
tokenizer = models.load_tokenizer(phi.backbone_name)
report = {"phi": args.phi, "seeds": {}}
for sets in sorted(Path(args.run).glob("seed-*/sets/to_learn.jsonl")):
    rows = [json.loads(line) for line in sets.read_text().splitlines() if line.strip()]
    docs = [encode(tokenizer, r["document"], 128, answer=r["answer"]) for r in rows]
    labels, lengths = [d.label for d in docs], [len(d.input_ids) - 1 for d in docs]
    centre = [torch.tensor([-abs((i + 1) / n - 0.5) for i in range(n)]) for n in lengths]
    late = [torch.tensor([(i + 1) / n for i in range(n)]) for n in lengths]
    weights = [torch.tensor(w) for w in document_weights(phi, [d.input_ids for d in docs], progress=False)]
    report["seeds"][sets.parent.parent.name] = {
        "documents": len(docs), "centre_auc": answer_auc(centre, labels), "late_auc": answer_auc(late, labels),
        "phi_auc": answer_auc(weights, labels)}
Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
