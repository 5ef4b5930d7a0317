"""LAMA-ckl's fixed variant split and φ's leak-free pool, built for the shipped presets on the shipped data.

python -m pytest -q tests/test_lama_split.py

Tailoring needs a model's accuracies; a stand-in scorer gives each row a fixed accuracy drawn from a hash of the
stand-in's name and the row (no model is loaded), so two stand-ins are two different "models".
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import pytest

from taalm.bench import lama_ckl, lama_data, lama_split
from taalm.bench.config import LamaCklConfig, TailorConfig
from taalm.config import apply_preset
from taalm.io import read_jsonl

SEEDS = (0, 1)
STAND_INS = ("stand-in-a", "stand-in-b")


class StandInScorer(lama_ckl.RowScorer):
    """A model-free scorer: most variant facts unknown (as small models do), invariant facts known at random."""

    def __init__(self, name: str):  # no model to load
        self.name = name
        self.skipped: list[dict] = []

    def _draw(self, row: dict, form: str) -> int:
        return int(hashlib.sha256(f"{self.name}|{row['uuid']}|{form}".encode()).hexdigest(), 16) % 10

    def accuracy(self, row: dict, form: str = "descriptive") -> float:
        draw = self._draw(row, form)
        if row["_where"].startswith("variant"):
            return 1.0 if draw == 0 else 0.0
        return 1.0 if draw < 4 else (0.5 if draw < 7 else 0.0)

    def usable(self, row: dict, document: bool = False, forms: tuple[str, ...] = ("descriptive",)) -> bool:
        texts = [row[f"task_{f}"] for f in forms if isinstance(row.get(f"task_{f}"), str)]
        if all(row["object"] in text for text in texts + ([row["evidence"]] if document else [])):
            return True
        self.skipped.append({"row": row["_where"], "uuid": row["uuid"], "reason": "answer not found"})
        return False

    def __call__(self, rows: list[dict], form: str = "descriptive") -> list[float]:
        return [self.accuracy(r, form) for r in rows]


@functools.cache
def shipped_rows() -> dict[str, list[dict]]:
    return {name: lama_data.read_rows(lama_data.data_file(name)) for name in lama_data.FILES}


def bench_config(preset: str, seed: int = 0) -> LamaCklConfig:
    # no window: it needs the model's tokenizer, and cuts documents without changing which rows are chosen
    return LamaCklConfig(**apply_preset(LamaCklConfig, {"out": "unused", "preset": preset, "seed": seed,
                                                         "window": False, "device": "cpu"}))


def read_set(directory: Path, name: str) -> list[dict]:
    return [r for _, r in read_jsonl(directory / f"{name}.jsonl")]


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, dict]:
    """Per shipped preset and stand-in, the split as the benchmark builds it: one tailoring without limits, then per
    seed its To-Learn and NF subsample (``prepare_sets``); and, for the tailored presets, ``taalm tailor`` with the
    preset's limits and each seed (rows scored in a seeded order)."""
    root = tmp_path_factory.mktemp("lama-split")
    splits: dict[str, dict] = {"bench": {}, "seed_sets": {}, "limited": {}}
    for preset in ("cpu", "quick", "paper"):
        bench = bench_config(preset)
        for name in STAND_INS:
            out = root / f"{preset}-{name}"
            splits["bench"][preset, name] = lama_ckl.tailor(TailorConfig(model=name, out=str(out / "split"),
                                                                         split=bench.split), scorer=StandInScorer(name))
            for seed in SEEDS:
                sets = out / f"seed-{seed}"
                lama_ckl.prepare_sets(bench_config(preset, seed), out / "split", sets, lama_data.SEED_SETS)
                splits["seed_sets"][preset, seed, name] = sets
                if bench.split == "tailored":
                    cfg = TailorConfig(model=name, out=str(out / f"limited-{seed}"), split=bench.split, seed=seed,
                                       to_learn=bench.to_learn, not_to_forget=bench.not_to_forget)
                    splits["limited"][preset, seed, name] = lama_ckl.tailor(cfg, scorer=StandInScorer(name))
    return splits


def tailorings(splits: dict[str, dict], preset: str) -> list[tuple[str, Path]]:
    """Every tailored directory of ``preset``, with the stand-in it was tailored for."""
    found = [(key[-1], out) for kind in ("bench", "limited") for key, out in splits[kind].items() if key[0] == preset]
    assert found
    return found


def evaluated_rows(preset: str, stand_in: str) -> list[dict]:
    """Every row some seed's split of ``preset`` could evaluate, worked out here from the rules, not from tailor."""
    rows = shipped_rows()
    if preset == "paper":
        return rows["variant"] + rows["invariant_descriptive"]
    scorer = StandInScorer(stand_in)
    evaluation = [r for r in rows["variant"] if lama_split.side(r) == lama_split.EVALUATION]
    nf_candidates = [r for r in rows["invariant_descriptive"] if scorer.usable(r) and scorer.accuracy(r) == 1.0]
    return evaluation + nf_candidates


# --- the fixed rule --------------------------------------------------------------------------------------------------


def test_a_rows_side_never_changes_when_other_rows_come_or_go():
    variant = shipped_rows()["variant"]
    evaluation, phi = lama_split.split_variant(variant)
    in_evaluation = {r["uuid"] for r in evaluation}
    assert len(evaluation) + len(phi) == len(variant) and not in_evaluation & {r["uuid"] for r in phi}
    fewer = variant[::3]
    more = fewer + [{**r, "uuid": f"new-{i}", "evidence": f"A new paragraph number {i} about {r['subject']}."}
                    for i, r in enumerate(variant[:40])]
    for rows in (fewer, more, list(reversed(variant))):
        part, _ = lama_split.split_variant(rows)
        assert {r["uuid"] for r in part if not r["uuid"].startswith("new-")} == \
            {r["uuid"] for r in rows if r["uuid"] in in_evaluation}
    assert {lama_split.side(r) for r in more[len(fewer):]} == {lama_split.EVALUATION, lama_split.PHI}
    # rows that share a paragraph (up to case and spacing) share a side
    row = variant[0]
    twin = {**row, "uuid": "twin", "evidence": "  " + row["evidence"].upper().replace(" ", "\n ")}
    assert lama_split.side(twin) == lama_split.side(row)


def test_the_split_is_fixed_once_on_the_shipped_rows():
    # The committed results depend on this split: a change to the rule must bump SPLIT_VERSION and re-measure.
    evaluation, phi = lama_split.split_variant(shipped_rows()["variant"])
    assert (len(evaluation), len(phi), lama_split.SPLIT_VERSION) == (259, 241, 1)
    assert abs(len(evaluation) / 500 - lama_split.EVAL_FRACTION) < 0.05


def test_leak_filter_names_each_reason():
    evaluated = [{"_where": "v:1", "uuid": "1", "subject": "Cairo", "object": "Egypt", "evidence": "Cairo, Egypt."},
                 {"_where": "v:2", "uuid": "2", "subject": "Dhaka", "object": "Bangladesh", "evidence": "Dhaka!"}]
    rows = [{"_where": "p:1", "uuid": "a", "subject": "Egypt", "object": "Cairo", "evidence": "Egypt's capital."},
            {"_where": "p:2", "uuid": "b", "subject": "Nile", "object": "Africa", "evidence": " cairo,  EGYPT. "},
            {"_where": "p:3", "uuid": "c", "subject": "dhaka ", "object": "bangladesh", "evidence": "Other text."},
            {"_where": "p:4", "uuid": "d", "subject": "Lima", "object": "Peru", "evidence": "Lima, Peru."}]
    kept, left_out = lama_split.leak_filter(rows, evaluated)
    assert [r["uuid"] for r in kept] == ["d"]
    assert left_out == {"shared_evidence": ["p:2"], "same_fact": ["p:3"], "swapped_fact": ["p:1"]}
    # a row is listed under every reason it meets
    both = {**rows[0], "_where": "p:5", "evidence": "Dhaka!"}
    assert lama_split.leak_filter([both], evaluated)[1] == {"shared_evidence": ["p:5"], "same_fact": [],
                                                             "swapped_fact": ["p:5"]}


# --- the shipped presets on the shipped data -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["cpu", "quick"])
def test_every_seeds_to_learn_comes_from_the_evaluation_part_and_the_phi_part_joins_the_pool(splits, preset):
    variant = shipped_rows()["variant"]
    evaluation = {r["uuid"] for r in variant if lama_split.side(r) == lama_split.EVALUATION}
    phi = {r["uuid"] for r in variant} - evaluation
    limit = LamaCklConfig.PRESETS[preset]["to_learn"]
    # (a) one partition, the fixed rule's, whatever the seed, the model and the limits
    fingerprints = {json.loads((out / "tailor.json").read_text())["variant_split"]["evaluation_sha256"]
                    for _, out in tailorings(splits, preset)}
    assert fingerprints == {lama_split.fingerprint([r for r in variant if r["uuid"] in evaluation])}
    to_learn, pools = {}, {}
    for (name, seed, stand_in), sets in splits["seed_sets"].items():
        if name == preset:
            to_learn["bench", seed, stand_in] = {r["uuid"] for r in read_set(sets, "to_learn")}
    for (name, seed, stand_in), out in splits["limited"].items():
        if name == preset:
            to_learn["limited", seed, stand_in] = {r["uuid"] for r in read_set(out, "to_learn")}
            pools[seed, stand_in] = {r["uuid"] for r in read_set(out, "meta_pool")}
    assert len(to_learn) == 2 * len(SEEDS) * len(STAND_INS)
    for key, uuids in to_learn.items():
        assert len(uuids) == limit and uuids <= evaluation, key
    for route in ("bench", "limited"):  # the seeds do pick different facts from the one evaluation part
        assert all(to_learn[route, 0, name] != to_learn[route, 1, name] for name in STAND_INS)
    for stand_in in STAND_INS:  # a model's pool depends on neither the seed nor the limits: one φ serves every seed
        unlimited = {r["uuid"] for r in read_set(splits["bench"][preset, stand_in], "meta_pool")}
        assert pools[0, stand_in] == pools[1, stand_in] == unlimited
        pooled_variant = unlimited & (evaluation | phi)
        assert pooled_variant <= phi and len(pooled_variant) > len(phi) // 2  # the φ part covers To-Learn relations
        pool_relations = {r["relation"] for r in read_set(splits["bench"][preset, stand_in], "meta_pool")
                          if r["uuid"] in phi}
        learned = {r["relation"] for r in read_set(splits["bench"][preset, stand_in], "to_learn")}
        assert len(pool_relations & learned) >= len(learned) - 2  # P264 and P413 have 3 variant rows each
    assert pools[0, STAND_INS[0]] != pools[0, STAND_INS[1]]  # the models know different facts


@pytest.mark.parametrize("preset", ["cpu", "quick", "paper"])
def test_no_pool_fact_shares_a_paragraph_with_or_reverses_an_evaluated_fact(splits, preset):
    norm = lama_split.normalise
    for stand_in, out in tailorings(splits, preset):
        evaluated = evaluated_rows(preset, stand_in)
        paragraphs = {norm(r["evidence"]) for r in evaluated}
        facts = {(norm(r["subject"]), norm(r["object"])) for r in evaluated}
        pool = read_set(out, "meta_pool")
        assert pool and not {r["uuid"] for r in pool} & {r["uuid"] for r in evaluated}
        # (b) no shared evidence paragraph
        assert not [r["row"] for r in pool if norm(r["document"]) in paragraphs]
        # (c) no evaluated fact, straight or with subject and object swapped
        assert not [r["row"] for r in pool if (norm(r["subject"]), norm(r["answer"])) in facts]
        assert not [r["row"] for r in pool if (norm(r["answer"]), norm(r["subject"])) in facts]
        # the filters had leaks to remove, and tailor.json counts them
        filters = json.loads((out / "tailor.json").read_text())["meta_pool_filters"]
        left_out = filters["left_out"]
        assert left_out["for_shared_evidence"] > 0 and left_out["for_swapped_fact"] > 0
        assert {f"for_{k}": len(v) for k, v in filters["left_out_rows"].items()} == \
            {k: v for k, v in left_out.items() if k != "rows"}
        before, after = sum(filters["candidates"].values()), sum(filters["after_leak_filters"].values())
        assert before - after == left_out["rows"] == len(set().union(*filters["left_out_rows"].values()))
        assert sum(filters["meta_pool"].values()) == len(pool)


def test_the_paper_preset_takes_the_official_split(splits):
    rows = shipped_rows()
    for stand_in, out in tailorings(splits, "paper"):
        report = json.loads((out / "tailor.json").read_text())
        assert report["split"] == "official"
        assert [r["uuid"] for r in read_set(out, "to_learn")] == [r["uuid"] for r in rows["variant"]]
        assert [r["uuid"] for r in read_set(out, "not_to_forget")] == [r["uuid"] for r in rows["invariant_descriptive"]]
        for seed in SEEDS:  # the paper has no limits: every seed learns all 500 and keeps all 500
            sets = splits["seed_sets"]["paper", seed, stand_in]
            assert len(read_set(sets, "to_learn")) == len(read_set(sets, "not_to_forget")) == 500
        pool = read_set(out, "meta_pool")
        descriptive = {r["uuid"] for r in rows["invariant_descriptive"]}
        assert {r["uuid"] for r in pool} <= {r["uuid"] for r in rows["invariant_schematic"]} - descriptive
        official = report["official_phi_rule"]
        assert official["rows_meeting_it"] == 0 and official["differences"]  # why the pool differs, in tailor.json
        assert report["meta_pool_filters"]["known"] == 0  # no knowledge filter: every remaining fact is pooled
