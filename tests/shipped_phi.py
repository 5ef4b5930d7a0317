"""The checks of the shipped φs (used by tests/test_integration.py for SmolLM2's φs and tests/test_gemma.py for
Gemma's): each loads within the package budget and weighs a fact-dense sentence like a trained φ, and on documents of
each kind the benchmarks evaluate (and, for the current aliases, on kinds of document no φ trains on) its
answer-token ROC-AUC is compared with what a random ranking reaches."""

from __future__ import annotations

FACT_SENTENCE = ("John Herbert McCluskey (born 12 June 1929) is a Scottish lawyer, judge and politician, who served as "
                 "Solicitor General for Scotland from 1974 to 1979.")
FACT_WORDS = {"Scottish", "Scotland", "Solicitor", "McCluskey", "Herbert", "1929", "1974", "1979", "John"}


def check_shipped_phi(alias: str, backbone: str, tokenizer) -> None:
    from taalm.weighting import TrainAttention, document_weights, resolve_phi, shipped_phis

    assert alias in shipped_phis()
    directory = resolve_phi(alias)
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 10 * 2**20  # the package budget: 10 MB
    phi = TrainAttention.load(directory)
    assert phi.backbone_name == backbone
    ids = tokenizer(FACT_SENTENCE)["input_ids"]
    (weights,) = document_weights(phi, [ids])
    assert len(weights) == len(ids) - 1 and all(0.0 < w < 1.0 for w in weights)
    # trained: far from the untrained φ's flat ≈ 0.98 (spread ~1e-3); how sharp is a φ's own (smollm2-135m: 0.0001-0.29,
    # smollm2-135m-v2: 0.47-0.96, gemma3-270m: 0.05-0.34, gemma3-270m-v5: 0.05-0.20, gemma3-270m-v4: 0.05-0.38)
    assert max(weights) - min(weights) > 0.1
    tokens = [tokenizer.decode([i]).strip() for i in ids[1:]]
    top = {tokens[i] for i in sorted(range(len(weights)), key=weights.__getitem__)[-8:]}
    assert top & FACT_WORDS, top


def answer_ranking_against_chance(alias: str, tokenizer, per_kind: int = 32,
                                  unseen: bool = False) -> dict[str, tuple[float, float]]:
    """Per kind of document (with ``unseen``, the kinds no φ trains on too): (φ's answer-token ROC-AUC, a random
    ranking's 99.9th percentile on the same documents)."""
    from taalm.bench.answer_ranking import ranking_against_chance
    from taalm.weighting import TrainAttention, resolve_phi

    rows = ranking_against_chance(TrainAttention.load(resolve_phi(alias)), tokenizer, per_kind, unseen=unseen)
    return {kind: (row["answer_auc"], row["chance_99.9"]) for kind, row in rows.items()}


def check_answer_ranking(alias: str, tokenizer, at_least: float = 0.0, unseen: bool = False) -> None:
    """φ ranks the answer tokens above a random ranking's 99.9th percentile on every kind (with ``unseen``, the
    kinds no φ trains on too), and above ``at_least``."""
    from taalm.bench.answer_ranking import KINDS, UNSEEN_KINDS

    margins = answer_ranking_against_chance(alias, tokenizer, unseen=unseen)
    assert set(margins) == set(KINDS + (UNSEEN_KINDS if unseen else ())), margins
    assert all(auc > bound and auc > at_least for auc, bound in margins.values()), margins
