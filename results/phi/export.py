"""Copy a meta-trained φ into the package as a shipped alias, stored in bf16, and check what the storage changes.

    python results/phi/export.py RUN_DIR ALIAS [HELD_OUT_JSONL]

The weights of the bf16 copy are compared with the float32 original on the run's held-out documents.
"""

import json
import sys
from pathlib import Path

import torch

from taalm import models
from taalm.data import encode
from taalm.io import read_jsonl
from taalm.weighting import SHIPPED_DIR, TrainAttention, document_weights


def main(run: str, alias: str) -> None:
    original = TrainAttention.load(run)
    target = SHIPPED_DIR / alias
    original.save(target, storage_dtype=torch.bfloat16)
    shipped = TrainAttention.load(target)
    tokenizer = models.load_tokenizer(original.backbone_name)
    docs = [encode(tokenizer, r["document"], 512).input_ids for _, r in read_jsonl(Path(run) / "held_out.jsonl")]
    a, b = document_weights(original, docs), document_weights(shipped, docs)
    diff = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
    rel = max(abs(x - y) / max(max(u), 1e-12) for u, v in zip(a, b) for x, y in zip(u, v))
    size = sum(p.stat().st_size for p in target.iterdir())
    print(json.dumps({"alias": alias, "dir": str(target), "bytes": size, "max_abs_weight_change": diff,
                      "max_change_relative_to_document_max": rel, "documents": len(docs)}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
