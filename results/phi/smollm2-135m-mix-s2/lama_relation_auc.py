"""φ's answer-token ROC-AUC on LAMA-ckl documents by side and relation type: 64 seeded facts each of the meta pool's
variant facts (the variant split's φ part), its invariant facts, and the variant split's evaluation part (where
every seed's To-Learn set comes from), beside a random ranking's 99.9th percentile on the same documents.

    python results/phi/smollm2-135m-mix-s2/lama_relation_auc.py PHI POOL [--out FILE]

PHI: an alias or φ directory; POOL: the meta_pool.jsonl of `taalm tailor` (here runs/lama-smollm2-cpu/split).
"""

from __future__ import annotations

import argparse
import json
import random

from taalm import models
from taalm.bench import lama_split
from taalm.bench.answer_ranking import answer_ranking, chance_bound
from taalm.bench.lama_data import data_file, read_rows
from taalm.io import read_jsonl
from taalm.weighting import TrainAttention, resolve_phi


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("phi")
    parser.add_argument("pool")
    parser.add_argument("--per_side", type=int, default=64)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    phi = TrainAttention.load(resolve_phi(args.phi))
    tokenizer = models.load_tokenizer(phi.backbone_name)
    evaluation, phi_part = lama_split.split_variant(read_rows(data_file("variant")))
    variant = {r["uuid"] for r in evaluation + phi_part}
    pool = [r for _, r in read_jsonl(args.pool)]
    sides = {"pool_variant": [(r["document"], r["answer"]) for r in pool if r["uuid"] in variant],
             "pool_invariant": [(r["document"], r["answer"]) for r in pool if r["uuid"] not in variant],
             "evaluation_variant": [(r["evidence"], r["object"]) for r in evaluation]}
    rng = random.Random(0)
    documents = {side: rng.sample([(d, a) for d, a in pairs if a in d], args.per_side) for side, pairs in sides.items()}
    auc, chance = answer_ranking(phi, tokenizer, documents), chance_bound(tokenizer, documents)
    result = {side: {"documents": len(documents[side]), "answer_auc": auc[side], "chance_99.9": chance[side]}
              for side in documents}
    print(f"| {args.phi} | " + " | ".join(f"{result[s]['answer_auc']:.3f} ({result[s]['chance_99.9']:.3f})"
                                         for s in documents) + " |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"phi": args.phi, "pool": args.pool, **result}, f, indent=1)


if __name__ == "__main__":
    main()
