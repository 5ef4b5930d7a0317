"""Does φ weight the fact tokens, or the place where a benchmark's builder puts them?

    taalm weights --phi smollm2-135m --position_check --period 0901-1001 --subjects 32 --out check.json

φ's fact-weight lift on a document is (the share of φ's total weight on the fact sentences' tokens) / (the fact
sentences' share of the tokens): 1 when φ weighs fact tokens like any other, above 1 when it favours them. It is
measured three times on the same documents: with the fact sentences where the builder put them, moved to the first
slot (right after the title) and moved to the last (after every context paragraph). A φ that learned which tokens are
facts keeps its lift when they move (``kept`` = min(first, last) / in place near 1); one that learned a place loses
it. Lifts are the arithmetic mean over documents of each document's lift.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taalm.errors import TaalmError

if TYPE_CHECKING:
    from taalm.bench.twiki_data import BuiltDocument

KEEP_AT_LEAST = 0.8  # issue 16: a φ meta-trained on builder v2 must keep at least this share of its lift
LAYOUTS = ("in_place", "first", "last")
AVERAGE = "arithmetic mean over documents of each document's lift"


def fact_token_mask(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> list[bool]:
    """For each predicted token (every token but the first, as φ's weights are aligned), whether its characters
    overlap ``span``."""
    start, end = span
    return [s < end and e > start and e > s for s, e in offsets[1:]]


def fact_weight_lift(weights: Sequence[float], mask: Sequence[bool]) -> float:
    """(Σ weight on fact tokens / Σ weight) / (fact tokens / tokens)."""
    if len(weights) != len(mask):
        raise ValueError(f"{len(weights)} weights for {len(mask)} tokens")
    n_fact, total = sum(mask), sum(weights)
    if not n_fact or total <= 0:
        raise ValueError("no fact token or no weight")
    return (sum(w for w, m in zip(weights, mask) if m) / total) / (n_fact / len(mask))


def _encode(tokenizer, doc: BuiltDocument) -> tuple[list[int], list[bool]]:
    enc = tokenizer(doc.text, add_special_tokens=True, return_offsets_mapping=True)
    return list(enc["input_ids"]), fact_token_mask(enc["offset_mapping"], doc.fact_span)


def position_check(phi, tokenizer, documents: Sequence[BuiltDocument], max_length: int = 512,
                   batch_size: int = 8) -> dict[str, Any]:
    """φ's fact-weight lift on ``documents`` in place, with the fact sentences moved first and moved last, and
    ``kept`` = min(first, last) / in place. Documents longer than ``max_length`` tokens in any layout are skipped
    (counted), so every lift is over the same documents and no fact token is truncated away."""
    from taalm.weighting import document_weights

    if not getattr(tokenizer, "is_fast", False):
        raise TaalmError("the tokenizer must be a fast (Rust) tokenizer: the check needs its offsets")
    layouts = {"in_place": list(documents), "first": [d.placed(0) for d in documents],
               "last": [d.placed(-1) for d in documents]}
    encoded = {name: [_encode(tokenizer, d) for d in docs] for name, docs in layouts.items()}
    kept = [i for i in range(len(documents))
            if all(len(encoded[n][i][0]) <= max_length and any(encoded[n][i][1]) for n in LAYOUTS)]
    if not kept:
        raise TaalmError(f"position check: none of {len(documents)} documents fits in {max_length} tokens")
    result: dict[str, Any] = {"layouts": {}}
    for name in LAYOUTS:
        ids = [encoded[name][i][0] for i in kept]
        masks = [encoded[name][i][1] for i in kept]
        weights = document_weights(phi, ids, batch_size=batch_size)
        lifts = [fact_weight_lift(w, m) for w, m in zip(weights, masks)]
        result["layouts"][name] = {
            "lift": sum(lifts) / len(lifts),
            "fact_weight_share": sum(sum(x for x, f in zip(w, m) if f) / sum(w) for w, m in zip(weights, masks))
            / len(kept),
            "fact_token_share": sum(sum(m) / len(m) for m in masks) / len(kept)}
    lift = {name: result["layouts"][name]["lift"] for name in LAYOUTS}
    in_place = [documents[i].fact_place for i in kept]
    result.update({
        "lift": lift, "kept": min(lift["first"], lift["last"]) / lift["in_place"], "keep_at_least": KEEP_AT_LEAST,
        "documents": len(kept), "skipped_too_long": len(documents) - len(kept), "max_length": max_length,
        "in_place_slots": {p: in_place.count(p) for p in ("first", "middle", "last")}, "average": AVERAGE,
        "definition": "lift = (share of φ's weight on the fact sentences' tokens) / (their share of the tokens); "
                      "kept = min(lift first, lift last) / lift in place"})
    result["keeps_lift"] = result["kept"] >= KEEP_AT_LEAST
    return result


def position_check_for_benchmark(phi_dir: str | Path, documents: Sequence[BuiltDocument], tokenizer=None,
                                 device: str = "auto", max_length: int = 512) -> dict[str, Any]:
    """``position_check`` for a φ directory or shipped alias, JSON-able, for a benchmark's summary (the tokenizer of
    φ's backbone unless one is given)."""
    from taalm import models
    from taalm.bench.twiki_data import BUILDER_VERSION
    from taalm.weighting import TrainAttention, resolve_phi

    phi = TrainAttention.load(resolve_phi(phi_dir)).to(models.pick_device(device))
    tokenizer = tokenizer or models.load_tokenizer(phi.backbone_name)
    return {"phi": str(phi_dir), "builder_version": BUILDER_VERSION,
            **position_check(phi, tokenizer, documents, max_length=max_length)}


def table(result: dict[str, Any]) -> str:
    """The lifts as a Markdown table, with ``kept`` under it."""
    names = {"in_place": "in place (the builder's slots)", "first": "moved first (after the title)",
             "last": "moved last (after the context)"}
    lines = [f"φ's fact-weight lift ({result['documents']} documents, {result['average']}; 1.0 = no preference)", "",
             "| facts | lift | φ weight on facts | fact tokens |", "|---|---|---|---|"]
    for name in LAYOUTS:
        row = result["layouts"][name]
        lines.append(f"| {names[name]} | {row['lift']:.2f} | {row['fact_weight_share']:.3f} | "
                     f"{row['fact_token_share']:.3f} |")
    verdict = "kept" if result["keeps_lift"] else "NOT kept"
    kept = f"kept = min(first, last) / in place = {result['kept']:.2f} ({verdict}: at least {result['keep_at_least']})"
    lines += ["", kept]
    return "\n".join(lines) + "\n"


def run_position_check(cfg) -> dict[str, Any]:
    """``taalm weights --position_check``: build ``cfg.subjects`` documents of ``cfg.period`` (seed ``cfg.seed``, as
    the TemporalWiki benchmark builds them), print the table, and write the JSON to ``--out`` when given."""
    from taalm.bench.twiki_data import period_documents
    from taalm.io import atomic_write_json
    from taalm.weighting import resolve_phi

    resolve_phi(cfg.phi)  # the user-facing check before the documents are built
    documents = period_documents(cfg.period, cfg.subjects, cfg.seed)
    result = {"period": cfg.period, "subjects": cfg.subjects, "seed": cfg.seed,
              **position_check_for_benchmark(cfg.phi, documents, device=cfg.device, max_length=cfg.max_length)}
    print(table(result))
    if cfg.out:
        atomic_write_json(Path(cfg.out), result)
        print(f"wrote {cfg.out}")
    return result
