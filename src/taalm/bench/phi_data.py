"""φ's meta-training pairs from several kinds of documents, so that φ learns where a new fact is rather than the
habits of one benchmark's documents (common nouns on LAMA-ckl, the fact block's place in built TemporalWiki
documents).

    taalm tailor --model smollm2-135m --out runs/split            # LAMA-ckl meta pool for this model
    taalm phi-data --lama_pool runs/split/meta_pool.jsonl --out runs/phi-mix/pairs.jsonl
    taalm meta-train --pairs runs/phi-mix/pairs.jsonl ...          # validated per kind, selected by the worst kind

Each pair names its ``kind``; every kind is disjoint from every set a benchmark evaluates:

- ``lama``: the tailored LAMA-ckl meta pool (the variant split's φ part and invariant facts, less every fact leaking
  into an evaluated set), less the facts whose evidence is a TemporalWiki evaluation context paragraph. With
  ``split_lama`` it is two kinds, ``lama_variant`` (the variant split's φ part: LAMA-ckl's To-Learn relations) and
  ``lama_invariant``, each validated on its own: in one kind the invariant facts are about 70 % of it, so the
  worst-kind selection hardly sees the To-Learn relations (the general SmolLM2 φ chosen that way ranks answers of
  the pool's invariant facts at ROC-AUC 0.91, of its variant facts at 0.70), and LAMA-ckl is half of the mixture.
- ``fictional``: generated facts of the generator's train side (its names and six of its relations are never on the
  test side that ``taalm bench fictional`` evaluates).
- ``temporalwiki``: 0801-0901 changed facts (a period no benchmark evaluates) in builder documents whose context
  paragraphs are on φ's side of the context split (``twiki_data.context_side``) and are no LAMA-ckl evaluation or
  Not-To-Forget evidence.

The kinds are balanced (``per_kind`` pairs each, seeded), so a meta-batch draws them about equally.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from taalm.bench import fictional_data, lama_split
from taalm.bench import twiki_data as twiki
from taalm.bench.lama_data import NF_FILE, data_file, read_rows
from taalm.errors import TaalmError
from taalm.io import atomic_write_json, read_jsonl, write_jsonl

DATA_VERSION = "1"
LAMA_RULE = ("the tailored LAMA-ckl meta pool (leak-filtered against every evaluated set), less facts whose evidence "
             "is on the TemporalWiki evaluation side of the context split")


def fictional_rule(version: str) -> str:
    """What φ's fictional pairs are in generator ``version``: which relations the evaluated test side asks too."""
    overlap = fictional_data.relation_overlap(version)
    asked = f"{len(overlap['shared'])} that it asks too" if overlap["shared"] else "none that it asks"
    return (f"generated train-side facts, generator version {version} (names never on the evaluated test side; "
            f"{len(overlap['train_only'])} relations it never asks, {asked})")


RULES = {"lama": LAMA_RULE,
         "fictional": fictional_rule(fictional_data.GENERATOR_VERSION),
         "temporalwiki": "0801-0901 changed facts (never evaluated) in built documents whose context paragraphs are "
                         "on φ's side of the context split and are no LAMA-ckl evaluated evidence"}
SPLIT_LAMA_RULES = {"lama_variant": f"{LAMA_RULE}: the variant split's φ part (LAMA-ckl's To-Learn relations)",
                    "lama_invariant": f"{LAMA_RULE}: the other (invariant) facts"}


def lama_kinds(pool: Path, split: bool) -> dict[str, list[dict]]:
    """The rows of a ``taalm tailor`` meta pool by kind: all as ``lama``, or (``split``) the variant split's φ part
    as ``lama_variant`` and the other facts as ``lama_invariant``."""
    rows = [r for _, r in read_jsonl(pool)]
    if not rows:
        raise TaalmError(f"{pool}: empty meta pool")
    if not split:
        return {"lama": rows}
    _, phi_part = lama_split.split_variant(read_rows(data_file("variant")))
    variant = {r["uuid"] for r in phi_part}
    return {"lama_variant": [r for r in rows if r.get("uuid") in variant],
            "lama_invariant": [r for r in rows if r.get("uuid") not in variant]}


def lama_pairs(rows: list[dict], pool: Path, n: int, rng: random.Random,
               kind: str = "lama") -> tuple[list[dict], dict[str, Any]]:
    """``n`` seeded pairs of meta-pool ``rows`` (of ``pool``) whose evidence is on φ's side of the context split."""
    kept = [r for r in rows if twiki.context_side(r["document"]) == twiki.PHI_SIDE]
    if not kept:
        raise TaalmError(f"{pool}: no {kind} fact has its evidence on φ's side of the context split")
    chosen = rng.sample(kept, min(n, len(kept)))
    return ([{"document": r["document"], "task": r["task"], "answer": r["answer"], "source": f"lama:{r.get('uuid', '')}"}
             for r in chosen],
            {"source": str(pool), "pool": len(rows), "evidence_on_temporalwiki_side": len(rows) - len(kept),
             "pairs": len(chosen)})


def fictional_pairs(n: int, seed: int, filler: int, version: str) -> tuple[list[dict], dict[str, Any]]:
    facts = fictional_data.generate("train", n, seed, filler, version)
    return ([{**f.pair(), "source": f"fictional:{f.uuid}"} for f in facts],
            {"generator_version": version, "side": "train", "seed": seed, "filler": filler,
             **fictional_data.describe(facts)})


def lama_evaluated_evidence() -> list[str]:
    """Every LAMA-ckl evidence paragraph a benchmark may evaluate: the variant split's evaluation part and every
    Not-To-Forget candidate (all rows of the Not-To-Forget file, whatever the model)."""
    evaluation, _ = lama_split.split_variant(read_rows(data_file("variant")))
    return [r["evidence"] for r in evaluation + read_rows(data_file(NF_FILE)) if isinstance(r.get("evidence"), str)]


def temporalwiki_pairs(n: int, seed: int, wording: str = "shared") -> tuple[list[dict], dict[str, Any]]:
    """``n`` pairs of 0801-0901 changed facts in built documents whose context is on φ's side of the split and is
    no LAMA-ckl evaluated evidence (a paragraph is left out when its first 100 characters occur in such evidence);
    their fact sentences in the benchmark's phrasings (``shared``) or φ's own (``own``: no evaluated document's)."""
    facts = twiki.load_all_facts()
    evaluated = lama_evaluated_evidence()
    context = [p for p in twiki.context_sides(facts, seed)[twiki.PHI_SIDE] if not any(p[:100] in e for e in evaluated)]
    changed = facts[twiki.PHI_PERIOD]["changed"]
    build_seed = twiki.period_seed(seed, twiki.PHI_PERIOD)
    docs = twiki.build_documents(changed, context, build_seed, wording)
    pairs = [{**p, "source": f"temporalwiki:{twiki.PHI_PERIOD}"} for p in twiki.meta_pairs(docs)]
    chosen = random.Random(seed).sample(pairs, min(n, len(pairs)))
    return chosen, {"period": twiki.PHI_PERIOD, "wording": wording, "context_paragraphs": len(context),
                    "pairs_built": len(pairs), "pairs": len(chosen), **twiki.provenance(changed, docs, build_seed)}


def build(lama_pool: str, out: str, per_kind: int = 256, seed: int = 0, filler: int = 4,
          generator_version: str = fictional_data.GENERATOR_VERSION, split_lama: bool = False,
          temporalwiki_wording: str = "shared") -> Path:
    """Write ``out`` (JSONL of document, task, answer, kind, source) and ``<out>.json`` (the mixture's record)."""
    if not Path(lama_pool).is_file():
        raise TaalmError(f"option --lama_pool: {lama_pool} not found (make it with `taalm tailor --model M --out DIR`: "
                         "DIR/meta_pool.jsonl)")
    rng = random.Random(f"phi-data/{seed}")
    lama = {kind: lama_pairs(rows, Path(lama_pool), per_kind, rng, kind)
            for kind, rows in lama_kinds(Path(lama_pool), split_lama).items()}
    parts = {**lama,
             "fictional": fictional_pairs(per_kind, seed, filler, generator_version),
             "temporalwiki": temporalwiki_pairs(per_kind, seed, temporalwiki_wording)}
    pairs = [{**p, "kind": kind} for kind, (kind_pairs, _) in parts.items() for p in kind_pairs]
    random.Random(seed).shuffle(pairs)
    rules = {**RULES, **SPLIT_LAMA_RULES, "fictional": fictional_rule(generator_version)}
    record = {"version": DATA_VERSION, "seed": seed, "per_kind": per_kind, "split_lama": split_lama,
              "counts": {kind: len(kind_pairs) for kind, (kind_pairs, _) in parts.items()},
              "kinds": {kind: info for kind, (_, info) in parts.items()},
              "rules": {kind: rules[kind] for kind in parts},
              "sha256": hashlib.sha256(json.dumps(pairs, sort_keys=True).encode("utf-8")).hexdigest()}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, pairs)
    atomic_write_json(path.with_suffix(".json"), record)
    print(f"φ's mixture: {record['counts']} pairs -> {path}")
    return path
