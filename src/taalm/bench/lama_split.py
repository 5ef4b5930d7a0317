"""Which LAMA-ckl row may go where: the variant rows' fixed split, and the facts φ's pool must leave out.

The 500 variant rows are split once, by a hash of each row's evidence paragraph, into an *evaluation* part (every
seed's To-Learn set is tailored from it) and a *φ* part (it joins the meta pool, so φ meets the To-Learn relations
with other facts, as the official φ data did). The rule depends on neither the model nor the seed, rows that share a
paragraph fall on the same side, and a row's side never changes when other rows are added or removed.

The meta pool then leaves out every fact that could leak into what some seed evaluates: a fact whose evidence
paragraph is the document of an evaluation-part row or of a Not-To-Forget candidate, the very same fact under another
uuid, and such a fact with subject and object swapped (pool "Egypt → Cairo" beside NF "Cairo → Egypt").
"""

from __future__ import annotations

import hashlib
from typing import Any

SPLIT_VERSION = 1  # changing the rule changes every tailored split: bump it, and re-measure
EVAL_FRACTION = 0.5  # ~240 evaluation rows: small models get 90+% of them wrong, ample for 64 To-Learn facts a seed
EVALUATION, PHI = "evaluation", "phi"
LEAK_REASONS = ("shared_evidence", "same_fact", "swapped_fact")
RULE = (f"variant rows split once by sha256('taalm lama-ckl split v{SPLIT_VERSION}' + normalised evidence paragraph): "
        f"the first {EVAL_FRACTION:g} of the hash range is the evaluation part (To-Learn is tailored from it, for "
        "every seed), the rest is the φ part (joins the meta pool); normalised = whitespace collapsed, case folded")
LEAK_RULE = ("the meta pool leaves out every fact whose evidence paragraph is that of an evaluation-part variant row "
             "or a Not-To-Forget candidate (shared_evidence), that same fact under another uuid (same_fact), and such "
             "a fact with subject and object swapped (swapped_fact); subjects, objects and paragraphs compared "
             "normalised")


def normalise(text: str) -> str:
    """The form every comparison here uses: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def side(row: dict[str, Any]) -> str:
    """``EVALUATION`` or ``PHI``: a fixed function of the row's evidence paragraph alone."""
    key = f"taalm lama-ckl split v{SPLIT_VERSION}\n{normalise(row['evidence'])}".encode()
    position = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0 ** 64
    return EVALUATION if position < EVAL_FRACTION else PHI


def split_variant(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The variant rows' evaluation part and φ part, each in file order."""
    return [r for r in rows if side(r) == EVALUATION], [r for r in rows if side(r) == PHI]


def fingerprint(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows' sorted uuids: two tailorings on the same split record the same one."""
    return hashlib.sha256("\n".join(sorted(r["uuid"] for r in rows)).encode()).hexdigest()


def fact(row: dict[str, Any]) -> tuple[str, str]:
    return normalise(row["subject"]), normalise(row["object"])


def leak_filter(rows: list[dict[str, Any]], evaluated: list[dict[str, Any]]
                ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """``rows`` without those that leak into ``evaluated`` (every row any seed could evaluate); returns the rows kept
    and, per reason in ``LEAK_REASONS``, the file:line of the rows left out for it (a row under every reason it
    meets: a reversed fact mostly comes from the very paragraph of the fact it reverses)."""
    paragraphs = {normalise(r["evidence"]) for r in evaluated}
    facts = {fact(r) for r in evaluated}
    kept: list[dict[str, Any]] = []
    left_out: dict[str, list[str]] = {reason: [] for reason in LEAK_REASONS}
    for row in rows:
        subject, obj = fact(row)
        checks = (normalise(row["evidence"]) in paragraphs, (subject, obj) in facts, (obj, subject) in facts)
        for reason, hit in zip(LEAK_REASONS, checks):
            if hit:
                left_out[reason].append(row["_where"])
        if not any(checks):
            kept.append(row)
    return kept, left_out


OFFICIAL_PHI_RULE = ("the official φ pairs (train_attention_traindata.jsonl, not released) are T-REx facts whose evidence "
                     "is > 200 characters and holds subject and object, with a mean accuracy < 0.5 of the 4 official "
                     "models on both task forms, of every relation (P530 capped at 350), the 500 variant rows excluded")
OFFICIAL_POOL_DIFFERENCES = (
    ("the official pairs come from T-REx facts outside the shipped files; here the pool can only hold facts of those "
     "files, and none of them outside the To-Learn set meets the official rule (rows_meeting_it: every invariant row "
     "is known to the official models by its own `scores`)"),
    ("so the pool is every invariant fact that is no Not-To-Forget row (invariant_schematic rows whose uuid is not in "
     "invariant_descriptive), known or not: each official model, Llama-2-7B among them, knows every one of them in "
     "one task form at least, so the knowledge filter would leave no pool (the rule's evidence condition holds for "
     "every shipped row)"),
    ("no pool fact is of a To-Learn relation (all 500 variant rows are To-Learn); the official pairs covered them with "
     "other facts"),
    "the leak filters apply as in the tailored split (shared evidence paragraph, same or swapped fact)",
)


def official_evidence(row: dict[str, Any]) -> bool:
    """The official φ data's condition on the document: evidence over 200 characters holding subject and object."""
    return len(row["evidence"]) > 200 and row["subject"] in row["evidence"] and row["object"] in row["evidence"]


def meets_official_phi_rule(row: dict[str, Any]) -> bool:
    """Whether the row could be an official φ pair: ``official_evidence`` and, by the row's shipped ``scores`` of the
    4 official models, a mean accuracy below 0.5 on both task forms (False where the scores are missing)."""
    scores = row.get("scores")
    if not official_evidence(row) or not isinstance(scores, dict):
        return False
    means = []
    for form in ("descriptive", "schematic"):
        values = list((scores.get(form) or {}).values())
        means.append(sum(values) / len(values) if values else 1.0)
    return all(m < 0.5 for m in means)
