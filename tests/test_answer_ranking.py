"""Tests for taalm.bench.answer_ranking: fixed evaluation-side documents of each kind, and φ's answer-token AUC.

python -m pytest -q tests/test_answer_ranking.py
"""

from __future__ import annotations

import pytest

from taalm import models
from taalm.bench import answer_ranking, fictional_data, lama_split, phi_data
from taalm.bench import twiki_data as twiki
from taalm.bench.lama_data import data_file, read_rows


@pytest.fixture(scope="module")
def documents():
    return answer_ranking.evaluation_documents(per_kind=6, seed=3)


def test_documents_come_from_the_evaluated_sides_only(documents):
    assert {k: len(v) for k, v in documents.items()} == {k: 6 for k in answer_ranking.KINDS}
    assert all(answer in text for pairs in documents.values() for text, answer in pairs)
    evaluation, phi_part = lama_split.split_variant(read_rows(data_file("variant")))
    evidence = {r["evidence"] for r in evaluation}
    assert all(text in evidence for text, _ in documents["lama"])
    assert not {text for text, _ in documents["lama"]} & {r["evidence"] for r in phi_part}
    test_side = {f.document for f in fictional_data.generate("test", 6, 3)}
    assert {text for text, _ in documents["fictional"]} == test_side
    for text, answer in documents["temporalwiki"]:  # a learned period's document: evaluation-side context only
        context = [p for p in text.split("\n\n")[1:] if answer not in p]
        assert all(twiki.context_side(p) == twiki.EVALUATION_SIDE for p in context)
    mixture_kinds = set(phi_data.RULES)
    assert set(answer_ranking.KINDS) == mixture_kinds  # every kind φ trains on is checked


def test_a_phi_weighing_the_answers_ranks_them_perfectly_and_a_flat_one_at_chance(documents, tiny_model,
                                                                                  monkeypatch):
    tokenizer = models.load_tokenizer(tiny_model)
    some = {kind: pairs[:2] for kind, pairs in documents.items()}
    labels = {}
    original = answer_ranking.encode

    def remember(tok, text, max_length, answer=None, where=""):
        encoded = original(tok, text, max_length, answer=answer, where=where)
        labels[tuple(encoded.input_ids)] = encoded.label
        return encoded

    monkeypatch.setattr(answer_ranking, "encode", remember)
    answers = lambda phi, ids, progress=True: [[1.0 if x else 0.1 for x in labels[tuple(i)][1:]] for i in ids]
    monkeypatch.setattr(answer_ranking, "document_weights", answers)
    assert answer_ranking.answer_ranking(None, tokenizer, some) == {k: 1.0 for k in answer_ranking.KINDS}
    flat = lambda phi, ids, progress=True: [[0.5] * (len(i) - 1) for i in ids]
    monkeypatch.setattr(answer_ranking, "document_weights", flat)
    assert answer_ranking.answer_ranking(None, tokenizer, some) == {k: 0.5 for k in answer_ranking.KINDS}


def test_chance_bound_is_a_random_rankings_quantile(documents, tiny_model):
    tokenizer = models.load_tokenizer(tiny_model)
    median = answer_ranking.chance_bound(tokenizer, documents, quantile=0.5, draws=400)
    high = answer_ranking.chance_bound(tokenizer, documents, quantile=0.999, draws=400)
    assert all(0.4 < median[k] < 0.6 for k in answer_ranking.KINDS), median  # a random ranking: AUC 0.5 on average
    assert all(high[k] > median[k] + 0.05 for k in answer_ranking.KINDS), (median, high)
    assert answer_ranking.chance_bound(tokenizer, documents, draws=400) == \
        answer_ranking.chance_bound(tokenizer, documents, draws=400)  # seeded: the same bound every time


def test_unseen_kinds_are_test_side_facts_in_other_styles_never_on_phis_side():
    documents = answer_ranking.evaluation_documents(per_kind=5, seed=2, unseen=True)
    assert set(documents) == set(answer_ranking.KINDS + answer_ranking.UNSEEN_KINDS)
    letters, cards = documents["fictional-letter"], documents["fictional-record"]
    assert all(text.startswith("Dear ") and text.count(answer) == 1 for text, answer in letters)
    assert all(text.startswith("Archive card ") and "\nSummary: " in text for text, _ in cards)
    prose = {answer for _, answer in documents["fictional"]}
    assert prose.isdisjoint(a for _, a in letters + cards)  # each style draws its own facts
    assert set(answer_ranking.evaluation_documents(per_kind=5, seed=2)) == set(answer_ranking.KINDS)


def test_cli_answer_ranking_prints_each_kind_and_writes_json(tiny_model, tmp_path, capsys):
    import json

    import torch

    from taalm import cli
    from taalm.weighting import TrainAttention

    torch.manual_seed(0)
    TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0).save(tmp_path / "phi")
    out = tmp_path / "ranking.json"
    assert cli.main(["weights", "--phi", str(tmp_path / "phi"), "--answer_ranking", "--per_kind", "3",
                     "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["per_kind"] == 3
    assert set(saved["kinds"]) == set(answer_ranking.KINDS + answer_ranking.UNSEEN_KINDS)  # unseen kinds reported too
    for kind, row in saved["kinds"].items():
        assert f"| {kind} | {row['answer_auc']:.3f} | {row['chance_99.9']:.3f} |" in printed
        assert 0.0 <= row["answer_auc"] <= 1.0 and row["chance_99.9"] > 0.5


@pytest.mark.parametrize("extra, expected", [
    (["--text", "Paris ."], "option --answer_ranking: uses its own documents"),
    (["--position_check"], "option --answer_ranking: give one of --position_check and --answer_ranking"),
    (["--per_kind", "0"], "option --per_kind: must be positive"),
])
def test_cli_answer_ranking_rejects_bad_options(tiny_model, capsys, extra, expected):
    from taalm import cli

    assert cli.main(["weights", "--phi", tiny_model, "--answer_ranking", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("taalm: ") == 1 and expected in err and "Traceback" not in err
