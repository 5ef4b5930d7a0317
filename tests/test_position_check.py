"""The position check: φ's fact-weight lift with the fact sentences in place, moved first and moved last.

python -m pytest -q tests/test_position_check.py

Crafted φs with the interface ``document_weights`` uses (weights ``[batch, seq-1]`` from token ids) make the outcome
known in advance: one that favours early positions loses its lift when the facts move back, one that favours the fact
tokens themselves keeps it, and uniform weights give 1.0 everywhere. The CLI runs on a tiny random-init φ.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from taalm import cli, models
from taalm.bench import twiki_data as tw
from taalm.bench.twiki_data import BuiltDocument, Fact
from taalm.position_check import fact_token_mask, fact_weight_lift, position_check, position_check_for_benchmark, table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = ("The quick brown fox jumps over the lazy dog near the river bank every single morning.",
           "Solicitor General for Scotland is a legal term in Scotland used for a senior law officer.",
           "Marie Curie was born in Warsaw and worked in Paris for most of her scientific life.")


def documents(slot: int) -> list[BuiltDocument]:
    """Hand-built documents: a title, three context paragraphs and the fact sentences at ``slot``."""
    facts = [("Santiago", "capital of", "Chile"), ("Libya", "diplomatic relation", "Brazil"),
             ("Eiffel Tower", "located in", "Paris"), ("Warsaw", "country", "Poland")]
    docs = []
    for i, (subject, relation, obj) in enumerate(facts):
        statement = f"{subject} has {obj} as its {relation}. Records give {obj} for {subject}."
        context = CONTEXT[i % 3:] + CONTEXT[:i % 3]
        docs.append(BuiltDocument.assemble(subject, (Fact(subject, relation, obj),), statement, context, slot))
    return docs


class CraftedPhi(nn.Module):
    """Weights from token ids and positions alone: ``rule(ids, positions) -> weights`` for predicted tokens."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule
        self.anchor = nn.Parameter(torch.zeros(1))  # document_weights reads the device from φ's parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(1, input_ids.shape[1], dtype=torch.float32).expand(input_ids.shape[0], -1)
        return self.rule(input_ids[:, 1:], positions)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return models.load_tokenizer(tiny_model)


def test_fact_tokens_and_lift_by_hand():
    offsets = [(0, 0), (0, 5), (5, 9), (9, 15), (15, 20)]  # the first token is never predicted
    assert fact_token_mask(offsets, (6, 12)) == [False, True, True, False]
    assert fact_token_mask(offsets, (20, 25)) == [False, False, False, False]
    # weight share on facts 3/5 over token share 1/3
    assert fact_weight_lift([1.0, 3.0, 1.0], [False, True, False]) == pytest.approx(1.8)
    assert fact_weight_lift([2.0, 2.0, 2.0, 2.0], [True, False, False, True]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fact_weight_lift([1.0, 1.0], [False, False])


def test_a_phi_that_favours_early_tokens_loses_its_lift_when_the_facts_move(tokenizer):
    early = CraftedPhi(lambda ids, pos: torch.sigmoid(3.0 - pos / 15.0))
    result = position_check(early, tokenizer, documents(slot=1), max_length=2048)
    lift = result["lift"]
    assert lift["first"] > lift["in_place"] > lift["last"]
    assert lift["first"] > 1.5 and lift["last"] < 0.5
    assert result["kept"] == pytest.approx(lift["last"] / lift["in_place"]) and result["kept"] < 0.5
    assert not result["keeps_lift"] and result["documents"] == 4 and result["skipped_too_long"] == 0
    assert result["in_place_slots"] == {"first": 0, "middle": 4, "last": 0}
    late = CraftedPhi(lambda ids, pos: torch.sigmoid(pos / 15.0 - 3.0))  # the mirror image: the last slot wins
    lift = position_check(late, tokenizer, documents(slot=1), max_length=2048)["lift"]
    assert lift["last"] > lift["in_place"] > lift["first"] and lift["last"] > 1.1


def test_a_phi_that_favours_the_fact_tokens_keeps_its_lift(tokenizer):
    docs = documents(slot=2)
    fact_ids = {i for d in docs for i in tokenizer(d.statement)["input_ids"]}
    context_ids = {i for p in CONTEXT for i in tokenizer(p)["input_ids"]}
    marked = torch.tensor(sorted(fact_ids - context_ids))
    by_token = CraftedPhi(lambda ids, pos: torch.where(torch.isin(ids, marked), 0.9, 0.1))
    result = position_check(by_token, tokenizer, docs, max_length=2048)
    assert all(v > 1.5 for v in result["lift"].values())
    assert result["kept"] > 0.9 and result["keeps_lift"]


def test_uniform_weights_give_a_lift_of_one_everywhere(tokenizer):
    uniform = CraftedPhi(lambda ids, pos: torch.full(ids.shape, 0.7))
    result = position_check(uniform, tokenizer, documents(slot=3), max_length=2048)
    assert result["lift"] == pytest.approx({"in_place": 1.0, "first": 1.0, "last": 1.0})
    assert result["kept"] == pytest.approx(1.0)
    for row in result["layouts"].values():
        assert row["fact_weight_share"] == pytest.approx(row["fact_token_share"])
        assert 0.1 < row["fact_token_share"] < 0.5
    printed = table(result)
    assert "| moved last (after the context) | 1.00 |" in printed and "kept = min(first, last) / in place = 1.00" in printed


def test_documents_longer_than_max_length_are_skipped_in_every_layout(tokenizer):
    uniform = CraftedPhi(lambda ids, pos: torch.full(ids.shape, 0.5))
    docs = documents(slot=0)
    lengths = sorted(len(tokenizer(d.text)["input_ids"]) for d in docs)
    result = position_check(uniform, tokenizer, docs, max_length=lengths[1])
    assert result["documents"] + result["skipped_too_long"] == 4 and 1 <= result["skipped_too_long"] <= 3


@pytest.fixture(scope="module")
def tiny_phi(tiny_model, tmp_path_factory) -> str:
    from taalm.weighting import TrainAttention

    directory = tmp_path_factory.mktemp("phi")
    torch.manual_seed(0)
    TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0).save(directory)
    return str(directory)


def test_benchmark_entry_point_is_json_and_an_untrained_phi_has_no_preference(tiny_phi):
    docs = tw.period_documents("0901-1001", 3, seed=0)
    result = position_check_for_benchmark(tiny_phi, docs, device="cpu", max_length=4096)
    assert json.loads(json.dumps(result)) == result
    assert result["phi"] == tiny_phi and result["builder_version"] == tw.BUILDER_VERSION and result["documents"] == 3
    # the head starts at weight ~ N(0, 1e-3), bias 4: every token ≈ sigmoid(4), so no layout stands out
    assert result["lift"] == pytest.approx({"in_place": 1.0, "first": 1.0, "last": 1.0}, abs=0.02)


def test_cli_position_check_prints_the_table_and_writes_json(tiny_phi, tmp_path, capsys):
    out = tmp_path / "check" / "position.json"
    code = cli.main(["weights", "--phi", tiny_phi, "--position_check", "--subjects", "3", "--seed", "1",
                     "--max_length", "4096", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    saved = json.loads(out.read_text())
    assert (saved["period"], saved["subjects"], saved["seed"], saved["documents"]) == ("0901-1001", 3, 1, 3)
    assert "| facts | lift |" in printed and "moved first" in printed and "moved last" in printed
    assert f"{saved['lift']['in_place']:.2f}" in printed and f"wrote {out}" in printed


@pytest.mark.parametrize("extra, expected", [
    (["--text", "Paris ."], "option --position_check: builds its own documents"),
    (["--period", "0701-0801"], "option --period: '0701-0801' is not one of"),
    (["--subjects", "-1"], "option --subjects: must be >= 0"),
])
def test_cli_position_check_rejects_bad_options(tiny_phi, capsys, extra, expected):
    assert cli.main(["weights", "--phi", tiny_phi, "--position_check", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("taalm: ") == 1 and expected in err and "Traceback" not in err
