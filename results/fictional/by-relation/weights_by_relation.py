"""φ's weights on the fictional test side's documents by relation group: the mean weight of answer tokens and of
the other tokens, the answers' share of the document's weight, and the answer-token ROC-AUC, on 96 documents (seed 0)
in prose and as letters. Forward passes only.

    python results/fictional/by-relation/weights_by_relation.py gemma3-270m     # or any φ alias or directory
"""
import sys

import numpy as np
import torch

from taalm import models
from taalm.bench import fictional_data as gen
from taalm.data import encode
from taalm.weighting import TrainAttention, answer_auc, document_weights, resolve_phi


def main(phi_name: str, n: int = 96) -> None:
    phi = TrainAttention.load(resolve_phi(phi_name))
    tokenizer = models.load_tokenizer(phi.backbone_name)
    for style in ("prose", "letter"):
        facts = gen.generate("test", n, 0, style=style)
        encoded = [encode(tokenizer, f.document, 256, answer=f.answer, where=f.uuid) for f in facts]
        weights = document_weights(phi, [e.input_ids for e in encoded], progress=False)
        for group, relations in (("shared", gen.SHARED), ("test-only", gen.TEST_ONLY)):
            rows = [(np.array(w), np.array(e.label[1:len(w) + 1], dtype=bool), w, e.label)
                    for f, e, w in zip(facts, encoded, weights, strict=True) if f.relation in relations]
            answer = np.mean([w[is_answer].mean() for w, is_answer, _, _ in rows])
            other = np.mean([w[~is_answer].mean() for w, is_answer, _, _ in rows])
            share = np.mean([w[is_answer].sum() / w.sum() for w, is_answer, _, _ in rows])
            auc = answer_auc([torch.tensor(w) for _, _, w, _ in rows], [label for _, _, _, label in rows])
            print(f"{phi_name} {style} {group}: answer weight {answer:.3f}, other {other:.3f}, answers' share "
                  f"{share:.3f}, ROC-AUC {auc:.3f} ({len(rows)} documents)")


if __name__ == "__main__":
    main(sys.argv[1])
