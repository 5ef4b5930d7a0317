"""Tests for taalm.bench.phi_data (φ's mixture of kinds of documents) and the context split it relies on.

python -m pytest -q tests/test_phi_data.py
"""

from __future__ import annotations

import json

import pytest

from taalm.bench import fictional_data, lama_data, lama_split, phi_data
from taalm.bench import twiki_data as twiki
from taalm.data import load_pairs
from taalm.errors import TaalmError
from taalm.io import read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def lama_pool(tmp_path_factory):
    """A meta pool as `taalm tailor` writes it: LAMA-ckl invariant rows as pairs, both sides of the context split."""
    rows = [r for r in lama_data.read_rows(lama_data.data_file("invariant_schematic"))][:120]
    path = tmp_path_factory.mktemp("pool") / "meta_pool.jsonl"
    write_jsonl(path, [{"document": r["evidence"], "task": r["task_descriptive"], "answer": r["object"],
                        "uuid": r["uuid"]} for r in rows])
    return path


@pytest.fixture(scope="module")
def mixture(lama_pool, tmp_path_factory):
    return phi_data.build(str(lama_pool), str(tmp_path_factory.mktemp("mix") / "pairs.jsonl"), per_kind=24, seed=1)


def test_the_mixture_is_balanced_and_loads_with_kinds(mixture):
    pairs = load_pairs(mixture)
    assert {k: sum(p.kind == k for p in pairs) for k in phi_data.RULES} == {k: 24 for k in phi_data.RULES}
    record = json.loads(mixture.with_suffix(".json").read_text())
    assert record["counts"] == {k: 24 for k in phi_data.RULES} and set(record["rules"]) == set(phi_data.RULES)
    assert record["rules"]["fictional"] == phi_data.fictional_rule(record["kinds"]["fictional"]["generator_version"])
    assert [p.kind for p in pairs[:12]] != sorted(p.kind for p in pairs[:12])  # shuffled, not grouped by kind


def test_the_fictional_rule_says_which_relations_the_test_side_asks_too():
    # versions 1-3 share six relations with the test side, version 4 none (its 22 are all the train side's own)
    assert phi_data.fictional_rule("3").endswith("6 relations it never asks, 6 that it asks too)")
    assert phi_data.fictional_rule("4").endswith("22 relations it never asks, none that it asks)")


def test_each_kind_is_disjoint_from_what_the_benchmarks_evaluate(mixture):
    rows = [r for _, r in read_jsonl(mixture)]
    evaluated = phi_data.lama_evaluated_evidence()
    for row in rows:
        if row["kind"] == "fictional":  # only train-side invented words
            fact = next(f for f in fictional_data.generate("train", 24, 1) if f.document == row["document"])
            assert all(fictional_data.side_of(w) == "train" for w in fact.words)
        if row["kind"] == "lama":  # never evidence the TemporalWiki benchmark puts around its facts
            assert twiki.context_side(row["document"]) == twiki.PHI_SIDE
        if row["kind"] == "temporalwiki":  # 0801-0901 facts, context from φ's side only, no evaluated LAMA evidence
            paragraphs = row["document"].split("\n\n")[1:]
            context = [p for p in paragraphs if row["answer"] not in p]
            assert context and all(twiki.context_side(p) == twiki.PHI_SIDE for p in context)
            assert not any(p[:100] in e for p in context for e in evaluated)


def test_the_context_split_keeps_evaluated_documents_and_phi_apart():
    facts = twiki.load_all_facts()
    sides = twiki.context_sides(facts, 0)
    evaluation, phi = (set(sides[side]) for side in (twiki.EVALUATION_SIDE, twiki.PHI_SIDE))
    assert evaluation and phi and not evaluation & phi
    assert 0.4 < len(evaluation) / (len(evaluation) + len(phi)) < 0.6
    review, context = twiki.review_and_context(sides, 64)
    assert set(context) == evaluation and set(review) <= phi  # θ's replayed text never surrounds an evaluated fact
    docs = twiki.period_documents("0901-1001", 8, 0)
    assert all(p in evaluation for doc in docs for p in doc.context)


def test_split_lama_makes_the_to_learn_relations_a_kind_of_their_own(tmp_path):
    _, phi_part = lama_split.split_variant(lama_data.read_rows(lama_data.data_file("variant")))
    invariant = lama_data.read_rows(lama_data.data_file("invariant_schematic"))[:80]
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [{"document": r["evidence"], "task": r["task_descriptive"], "answer": r["object"],
                        "uuid": r["uuid"]} for r in phi_part[:80] + invariant])
    out = phi_data.build(str(pool), str(tmp_path / "pairs.jsonl"), per_kind=12, seed=2, split_lama=True)
    rows = [r for _, r in read_jsonl(out)]
    variant_ids = {r["uuid"] for r in phi_part}
    by_kind = {k: [r["source"].removeprefix("lama:") for r in rows if r["kind"] == k]
               for k in ("lama_variant", "lama_invariant")}
    assert len(by_kind["lama_variant"]) == 12 and set(by_kind["lama_variant"]) <= variant_ids
    assert len(by_kind["lama_invariant"]) == 12 and not set(by_kind["lama_invariant"]) & variant_ids
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["split_lama"] and set(record["rules"]) == set(record["counts"]) == \
        {"lama_variant", "lama_invariant", "fictional", "temporalwiki"}


def test_own_temporalwiki_wording_changes_only_the_fact_sentences(lama_pool, mixture, tmp_path):
    from taalm import cli

    out = tmp_path / "pairs.jsonl"
    assert cli.main(["phi-data", "--lama_pool", str(lama_pool), "--out", str(out), "--per_kind", "24", "--seed", "1",
                     "--temporalwiki_wording", "own"]) == 0
    own, shared = ([r for _, r in read_jsonl(path)] for path in (out, mixture))
    assert [r for r in own if r["kind"] != "temporalwiki"] == [r for r in shared if r["kind"] != "temporalwiki"]
    tw_own, tw_shared = ([r for r in rows if r["kind"] == "temporalwiki"] for rows in (own, shared))
    assert [(r["task"], r["answer"]) for r in tw_own] == [(r["task"], r["answer"]) for r in tw_shared]  # same facts
    assert all(r["answer"] in r["document"] for r in tw_own)
    assert sum(a["document"] != b["document"] for a, b in zip(tw_own, tw_shared)) >= 20
    records = [json.loads(path.with_suffix(".json").read_text())["kinds"]["temporalwiki"] for path in (out, mixture)]
    assert [r["wording"] for r in records] == ["own", "shared"]


def test_a_missing_pool_is_a_one_line_error(tmp_path):
    with pytest.raises(TaalmError, match="--lama_pool"):
        phi_data.build(str(tmp_path / "nope.jsonl"), str(tmp_path / "pairs.jsonl"))
    assert not (tmp_path / "pairs.jsonl").exists()


def test_the_command_writes_the_mixture_and_refuses_a_missing_pool(lama_pool, tmp_path, capsys):
    from taalm import cli

    out = tmp_path / "pairs.jsonl"
    assert cli.main(["phi-data", "--lama_pool", str(lama_pool), "--out", str(out), "--per_kind", "4"]) == 0
    assert sum(1 for _ in read_jsonl(out)) == 12 and out.with_suffix(".json").is_file()
    assert cli.main(["phi-data", "--lama_pool", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lama_pool" in err[0] and not (tmp_path / "x.jsonl").exists()
