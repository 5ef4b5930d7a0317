"""LAMA-ckl on the tiny model: tailoring rules, bad input, the paper's columns, the quick bench and its resume.

python -m pytest -q tests/test_lama_ckl.py

A random tiny model knows nothing, so most tailoring tests give the scorer chosen accuracies per uuid; one test runs
the real scorer. Documents are cut to a window around the answer so they fit the bench's short --max_length.
"""

from __future__ import annotations

import collections
import functools
import json
import sys
from pathlib import Path

import pytest

from taalm import ckl, cli, fingerprint, stats, weight_sources
from taalm.bench import lama_ckl, lama_data, lama_split
from taalm.bench.config import LamaCklConfig, TailorConfig
from taalm.config import apply_preset
from taalm.errors import TaalmError
from taalm.io import read_jsonl

N_ROWS = 20
DESCRIPTIVE_PICK = [390, 365] + list(range(18))  # 390 and 365 share their uuid with schematic rows 0 and 9


def shipped(name: str) -> list[dict]:
    return [r for _, r in read_jsonl(lama_data.data_file(name))]


def short_evidence(row: dict) -> dict:
    """The row with its evidence cut to a window around the answer's last occurrence (fits --max_length 96)."""
    evidence, answer = row["evidence"], row["object"]
    at = evidence.rfind(answer)
    return {**row, "evidence": evidence[max(0, at - 30): at + len(answer) + 4]}


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_data(directory: Path) -> dict[str, list[dict]]:
    """Small LAMA-ckl files with three unusable rows: two answers absent from their task, one cut from its document."""
    variant = [short_evidence(r) for r in shipped("variant")[:N_ROWS]]
    descriptive_all = shipped("invariant_descriptive")
    descriptive = [short_evidence(descriptive_all[i]) for i in DESCRIPTIVE_PICK]
    schematic = [short_evidence(r) for r in shipped("invariant_schematic")[:N_ROWS]]
    assert {r["uuid"] for r in descriptive} & {r["uuid"] for r in schematic}  # the pool has duplicates to drop
    variant.insert(3, {**variant[0], "uuid": "bad-variant-absent", "object": "Qzxv"})  # variant.jsonl:4
    variant.insert(6, {**variant[1], "uuid": "bad-variant-cut", "evidence": "filler " * 80 + variant[1]["object"]})
    schematic.insert(2, {**schematic[1], "uuid": "bad-schematic-absent", "object": "Qzxv"})  # invariant_schematic:3
    data = {"variant": variant, "invariant_descriptive": descriptive, "invariant_schematic": schematic}
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in data.items():
        write_rows(directory / f"{name}.jsonl", rows)
    return data


BAD = {"bad-variant-absent": "variant.jsonl:4", "bad-variant-cut": "variant.jsonl:7",
       "bad-schematic-absent": "invariant_schematic.jsonl:3"}


def chosen_accuracy(data: dict[str, list[dict]]) -> dict[str, float]:
    """Variant rows: 0 for every other row (To-Learn), else 0.5 or 1; descriptive rows: 1 for every other row (NF)."""
    acc = {r["uuid"]: (0.0 if i % 2 == 0 else 0.5 + 0.5 * (i % 4 == 1)) for i, r in enumerate(data["variant"])}
    acc.update({r["uuid"]: (1.0 if i % 2 == 0 else 0.25) for i, r in enumerate(data["invariant_descriptive"])})
    acc.update({r["uuid"]: 0.0 for r in data["invariant_schematic"] if r["uuid"] not in acc})
    # one shared-uuid row in the NF set, one in the meta pool: the schematic copy must be dropped in both cases
    acc[data["invariant_descriptive"][0]["uuid"]], acc[data["invariant_descriptive"][1]["uuid"]] = 0.25, 1.0
    return acc


def fake_scorer(monkeypatch, acc: dict[str, float]) -> list[str]:
    """Make RowScorer return ``acc[uuid]``; returns the list of rows scored (file:line), in order."""
    scored: list[str] = []

    def call(self, rows, form="descriptive"):
        scored.extend(r["_where"] for r in rows if form == "descriptive")
        return [acc[r["uuid"]] for r in rows]

    monkeypatch.setattr(lama_ckl.RowScorer, "__call__", call)
    return scored


def read_set(path: Path) -> list[dict]:
    return [r for _, r in read_jsonl(path)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckl_data(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    directory = tmp_path_factory.mktemp("lama-data")
    return directory, make_data(directory)


@pytest.fixture(scope="module")
def tailored(tiny_model, ckl_data, tmp_path_factory) -> Path:
    """A tailored split with chosen accuracies: non-empty To-Learn, NF and pool, for the bench tests."""
    directory, data = ckl_data
    out = tmp_path_factory.mktemp("split") / "split"
    with pytest.MonkeyPatch.context() as mp:
        fake_scorer(mp, chosen_accuracy(data))
        lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(out), data_dir=str(directory), max_length=96))
    return out


def expected_sets(data: dict[str, list[dict]], acc: dict[str, float], max_accuracy: float | None = 0.5,
                  official: bool = False) -> dict[str, set[str]]:
    """The sets the rules give, worked out here: To-Learn from the fixed split's evaluation part (official: every
    variant row), the pool its φ part and the other invariant facts, less any that shares a paragraph or a (swapped)
    subject and object with an evaluated row, and those the model knows (accuracy not below ``max_accuracy``)."""
    ok = lambda r: r["uuid"] not in BAD
    norm = lama_split.normalise
    evaluation = [r for r in data["variant"] if official or lama_split.side(r) == lama_split.EVALUATION]
    to_learn = {r["uuid"] for r in evaluation if ok(r) and (official or acc[r["uuid"]] == 0.0)}
    nf_rows = [r for r in data["invariant_descriptive"] if ok(r) and (official or acc[r["uuid"]] == 1.0)]
    evaluated = evaluation + nf_rows
    paragraphs = {norm(r["evidence"]) for r in evaluated}
    facts = {(norm(r["subject"]), norm(r["object"])) for r in evaluated}
    leaks = lambda r: norm(r["evidence"]) in paragraphs or (norm(r["subject"]), norm(r["object"])) in facts \
        or (norm(r["object"]), norm(r["subject"])) in facts
    taken = {r["uuid"] for r in evaluated + data["variant"]}
    candidates = [r for r in data["variant"] if r not in evaluation] + \
        [r for r in data["invariant_descriptive"] + data["invariant_schematic"] if r["uuid"] not in taken]
    unknown = lambda r: max_accuracy is None or acc[r["uuid"]] < max_accuracy
    pool = {r["uuid"] for r in candidates if ok(r) and not leaks(r) and unknown(r)}
    return {"to_learn": to_learn, "not_to_forget": {r["uuid"] for r in nf_rows}, "meta_pool": pool}


# --- tailoring -------------------------------------------------------------------------------------------------------


def test_tailor_selects_by_base_accuracy(tailored, ckl_data):
    _, data = ckl_data
    acc = chosen_accuracy(data)
    expected = expected_sets(data, acc)
    sets = {name: read_set(tailored / f"{name}.jsonl") for name in expected}
    uuids = {name: [r["uuid"] for r in rows] for name, rows in sets.items()}
    for name in expected:
        assert len(uuids[name]) == len(set(uuids[name])), f"{name} has a duplicate uuid"
        assert set(uuids[name]) == expected[name], name
    assert all(acc[u] == 0.0 for u in uuids["to_learn"]) and all(acc[u] == 1.0 for u in uuids["not_to_forget"])
    assert not set(uuids["to_learn"]) & set(uuids["not_to_forget"])
    assert not set(uuids["to_learn"]) & set(uuids["meta_pool"])
    assert not set(uuids["not_to_forget"]) & set(uuids["meta_pool"])
    # the shared-uuid rows: NF's copy keeps the schematic one out; the pooled one is there once
    assert data["invariant_descriptive"][1]["uuid"] in uuids["not_to_forget"]
    assert uuids["meta_pool"].count(data["invariant_descriptive"][0]["uuid"]) == 1
    # records are generic pairs the other commands read: the evidence is the document, the cloze is the task
    first = sets["to_learn"][0]
    assert first["answer"] in first["task"] and first["answer"] in first["document"]

    report = json.loads((tailored / "tailor.json").read_text())
    counts = report["counts"]
    assert {k: counts[k] for k in expected} == {k: len(v) for k, v in uuids.items()}
    assert counts["skipped"] == len(report["skipped"]) == len(BAD)
    assert counts["scored"] == len(report["base_accuracy"])
    assert report["files"]["variant"]["rows"] == N_ROWS + 2
    assert report["base_accuracy"]["variant.jsonl:1"] == acc[data["variant"][0]["uuid"]]
    assert (tailored / "config.yaml").is_file()
    # the variant rows' fixed split: To-Learn from its evaluation part, its φ part in the pool (facts not known)
    evaluation, phi = lama_split.split_variant(data["variant"])
    assert report["variant_split"]["evaluation"] == len(evaluation) and report["variant_split"]["phi"] == len(phi)
    assert set(uuids["to_learn"]) <= {r["uuid"] for r in evaluation}
    assert set(uuids["meta_pool"]) & {r["uuid"] for r in phi}
    assert report["meta_pool_filters"]["meta_pool"]["variant_phi_part"] == len(set(uuids["meta_pool"]) &
                                                                              {r["uuid"] for r in phi})


def test_tailor_reports_unusable_rows_with_file_and_line(tailored):
    report = json.loads((tailored / "tailor.json").read_text())
    skipped = {s["uuid"]: s for s in report["skipped"]}
    assert {u: s["row"] for u, s in skipped.items()} == BAD
    assert "not found" in skipped["bad-variant-absent"]["reason"]
    assert "cut off" in skipped["bad-variant-cut"]["reason"]
    everything = {r["uuid"] for name in ("to_learn", "not_to_forget", "meta_pool")
                  for r in read_set(tailored / f"{name}.jsonl")}
    assert not everything & set(BAD)
    assert report["base_accuracy"]["variant.jsonl:4"] is None


def test_tailor_reuses_recorded_accuracies_once_a_sample_scored_again_agrees(tiny_model, ckl_data, tailored, tmp_path,
                                                                           monkeypatch):
    directory, data = ckl_data
    acc = chosen_accuracy(data)
    scored = fake_scorer(monkeypatch, acc)
    options = {"model": tiny_model, "data_dir": str(directory), "max_length": 96,
               "reuse_scores": str(tailored / "tailor.json")}
    out = lama_ckl.tailor(TailorConfig(out=str(tmp_path / "again"), reuse_check=3, **options))
    for name in ("to_learn", "not_to_forget", "meta_pool"):
        assert read_set(out / f"{name}.jsonl") == read_set(tailored / f"{name}.jsonl"), name
    assert len(scored) == 3  # only the check's descriptive sample was scored; every other accuracy was reused
    report, before = (json.loads((d / "tailor.json").read_text()) for d in (out, tailored))
    assert report["base_accuracy"] == before["base_accuracy"] and report["skipped"] == before["skipped"]
    assert report["reused_scores"]["rows"] >= len(before["base_accuracy"]) - len(BAD)

    fake_scorer(monkeypatch, {u: 1.0 - a for u, a in acc.items()})  # another model, as far as the record can tell
    with pytest.raises(TaalmError, match=r"--reuse_scores: .*tailor.json: \d+ of \d+ descriptive accuracies scored "
                                         r"again differ \(e.g. \w+.jsonl:\d+: recorded"):
        lama_ckl.tailor(TailorConfig(out=str(tmp_path / "refused"), reuse_check=100, **options))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(TaalmError, match="tailored for .*, not smollm2-135m"):
        lama_ckl.tailor(TailorConfig(out=str(tmp_path / "other"), **{**options, "model": "smollm2-135m"}))


def test_official_split_keeps_every_usable_row(tiny_model, ckl_data, tmp_path, monkeypatch):
    directory, data = ckl_data
    fake_scorer(monkeypatch, chosen_accuracy(data))
    out = lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(tmp_path / "split"), data_dir=str(directory),
                                       split="official", max_length=96))
    to_learn = [r["uuid"] for r in read_set(out / "to_learn.jsonl")]
    nf = [r["uuid"] for r in read_set(out / "not_to_forget.jsonl")]
    assert to_learn == [r["uuid"] for r in data["variant"] if r["uuid"] not in BAD]
    assert nf == [r["uuid"] for r in data["invariant_descriptive"]]
    pool = {r["uuid"] for r in read_set(out / "meta_pool.jsonl")}
    unfiltered = {r["uuid"] for r in data["invariant_schematic"] if r["uuid"] not in BAD} - set(nf)
    assert pool == expected_sets(data, chosen_accuracy(data), None, official=True)["meta_pool"]
    assert pool and pool <= unfiltered  # no variant fact, no NF fact
    report = json.loads((out / "tailor.json").read_text())
    assert report["split"] == "official" and report["variant_split"]["phi"] == 0
    assert report["meta_pool_filters"]["left_out"]["rows"] == len(unfiltered - pool)


def test_tailor_limits_select_exactly_n_and_the_pool_avoids_every_nf_candidate(tiny_model, ckl_data, tmp_path,
                                                                               monkeypatch):
    directory, data = ckl_data
    acc = chosen_accuracy(data)
    scored = fake_scorer(monkeypatch, acc)
    monkeypatch.setattr(lama_ckl, "_select", functools.partial(lama_ckl._select, chunk=4))
    out = lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(tmp_path / "split"), data_dir=str(directory),
                                       to_learn=3, not_to_forget=2, max_length=96))
    to_learn, nf = read_set(out / "to_learn.jsonl"), read_set(out / "not_to_forget.jsonl")
    assert len(to_learn) == 3 and all(acc[r["uuid"]] == 0.0 for r in to_learn)
    assert len(nf) == 2 and all(acc[r["uuid"]] == 1.0 for r in nf)
    line = {r["uuid"]: f"variant.jsonl:{i}" for i, r in enumerate(data["variant"], start=1)}
    evaluation = {line[r["uuid"]] for r in lama_split.split_variant(data["variant"])[0]}
    n_evaluation = sum(w in evaluation for w in scored)
    n_descriptive = sum(w.startswith("invariant_descriptive") for w in scored)
    assert 3 <= n_evaluation < len(evaluation) - 1  # To-Learn scoring stopped once enough were found
    assert all(line[r["uuid"]] in evaluation for r in to_learn)  # To-Learn comes from the evaluation part only
    assert n_descriptive == N_ROWS  # every NF candidate is scored, so the pool can leave all of them out
    report = json.loads((out / "tailor.json").read_text())
    assert report["counts"]["to_learn"] == 3 and report["counts"]["not_to_forget"] == 2
    assert report["rule"]["limits"]["to_learn"] == 3
    # base_accuracy holds exactly the rows looked at: those scored, and unusable ones (None) met on the way
    accuracy = report["base_accuracy"]
    assert all(accuracy[w] is not None for w in scored) and set(accuracy) - set(scored) <= set(BAD.values())
    pool = {r["uuid"] for r in read_set(out / "meta_pool.jsonl")}
    candidates = {r["uuid"] for r in data["invariant_descriptive"] if acc[r["uuid"]] == 1.0}
    assert len(candidates) > 2 and not pool & candidates
    assert pool == expected_sets(data, acc)["meta_pool"]  # the same pool as without limits


def test_tailor_with_the_real_scorer(tiny_model, ckl_data, tmp_path):
    directory, data = ckl_data
    out = lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(tmp_path / "split"), data_dir=str(directory),
                                       device="cpu", max_length=96, eval_batch=8))
    report = json.loads((out / "tailor.json").read_text())
    accuracy = report["base_accuracy"]
    scored_files = [f"variant.jsonl:{i}" for i in range(1, len(data["variant"]) + 1)]
    scored_files += [f"invariant_descriptive.jsonl:{i}" for i in range(1, len(data["invariant_descriptive"]) + 1)]
    pool_rows = {f"invariant_schematic.jsonl:{i}" for i, r in enumerate(data["invariant_schematic"], start=1)
                 if r["uuid"] not in {d["uuid"] for d in data["invariant_descriptive"]}}
    assert set(scored_files) <= set(accuracy) <= set(scored_files) | pool_rows  # the pool's other facts: scored too
    for where, value in accuracy.items():
        if where in BAD.values():
            assert value is None
        else:
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (where, value)
    line_of = {r["uuid"]: f"variant.jsonl:{i}" for i, r in enumerate(data["variant"], start=1)}
    to_learn = read_set(out / "to_learn.jsonl")
    assert report["counts"]["to_learn"] == len(to_learn)
    assert all(accuracy[line_of[r["uuid"]]] == 0.0 for r in to_learn)


def test_the_meta_pool_keeps_facts_the_model_does_not_know_in_both_task_forms(tiny_model, ckl_data, tmp_path,
                                                                              monkeypatch):
    directory, data = ckl_data
    acc = chosen_accuracy(data)
    schematic_known = data["invariant_schematic"][5]["uuid"]  # unknown in the cloze form, known in the schematic one

    def call(self, rows, form="descriptive"):
        return [1.0 if form == "schematic" and r["uuid"] == schematic_known else acc[r["uuid"]] for r in rows]

    monkeypatch.setattr(lama_ckl.RowScorer, "__call__", call)
    strict = lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(tmp_path / "strict"), data_dir=str(directory),
                                          max_length=96, pool_max_accuracy=0.2))
    loose = lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(tmp_path / "loose"), data_dir=str(directory),
                                         max_length=96, pool_max_accuracy=1.0))
    strict_pool = {r["uuid"] for r in read_set(strict / "meta_pool.jsonl")}
    loose_pool = {r["uuid"] for r in read_set(loose / "meta_pool.jsonl")}
    assert loose_pool == expected_sets(data, acc, None)["meta_pool"]
    assert strict_pool == {u for u in loose_pool if acc[u] < 0.2 and u != schematic_known}
    assert len(strict_pool) < len(loose_pool) and strict_pool
    report = json.loads((strict / "tailor.json").read_text())
    assert report["counts"]["meta_pool"] == len(strict_pool) and "does not know" in report["rule"]["meta_pool"]


def test_the_row_scorer_ticks_tailorings_progress_bar_once_per_row(tiny_model, ckl_data):
    import io

    from tqdm import tqdm

    _, data = ckl_data
    scorer = lama_ckl.RowScorer(tiny_model, eval_batch=4, max_length=96, device="cpu")
    rows = [{**r, "_where": f"variant.jsonl:{i}"} for i, r in enumerate(data["variant"][:6], start=1)]
    rows = [r for r in rows if scorer.usable(r)]  # variant.jsonl:4's answer is not in its task
    with tqdm(file=io.StringIO()) as scorer.progress:
        accuracy = scorer(rows[:2])
        accuracy += scorer(rows[2:])
    assert scorer.progress.n == len(accuracy) == len(rows) == 5


# --- bad input -------------------------------------------------------------------------------------------------------


def bad_copy(ckl_data, tmp_path: Path, name: str, line: int, text: str) -> Path:
    source, _ = ckl_data
    directory = tmp_path / "data"
    directory.mkdir()
    for f in lama_data.FILES:
        lines = (source / f"{f}.jsonl").read_text().splitlines()
        if f == name:
            lines[line - 1] = text
        (directory / f"{f}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def missing_evidence(ckl_data) -> str:
    row = dict(ckl_data[1]["variant"][1])
    del row["evidence"]
    return json.dumps(row)


@pytest.mark.parametrize(("name", "line", "kind"), [("invariant_schematic", 3, "malformed"),
                                                   ("variant", 2, "evidence")])
def test_tailor_bad_input_names_file_and_line(tiny_model, ckl_data, tmp_path, capsys, name, line, kind):
    text = '{"uuid": "x", "subject":' if kind == "malformed" else missing_evidence(ckl_data)
    directory = bad_copy(ckl_data, tmp_path, name, line, text)
    out = tmp_path / "out"
    what = "malformed JSON" if kind == "malformed" else "missing field 'evidence'"
    with pytest.raises(TaalmError, match=rf"{name}\.jsonl:{line}: {what}"):
        lama_ckl.tailor(TailorConfig(model=tiny_model, out=str(out), data_dir=str(directory)))
    code = cli.main(["tailor", "--model", tiny_model, "--out", str(out), "--data_dir", str(directory)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("taalm: ") and f"{name}.jsonl:{line}" in err[0], err
    assert not out.exists()


# --- the paper's columns ---------------------------------------------------------------------------------------------


def test_summarize_curve_known_values():
    curve = [(0.0, 1.0), (0.5, 0.9), (0.75, 0.8), (0.75, 0.6), (0.25, 0.5)]
    summary = lama_ckl.summarize_curve(curve)
    assert summary["top_acc"] == 0.75 and summary["epoch"] == 2  # tie between epochs 2 and 3: the earliest
    assert summary["nf_acc"] == 0.8 and summary["total"] == pytest.approx(1.55)
    assert summary["curve"] == [list(p) for p in curve]


def test_summarize_curve_ignores_epoch_zero():
    summary = lama_ckl.summarize_curve([(0.9, 1.0), (0.1, 0.7), (0.2, 0.4)])
    assert (summary["top_acc"], summary["epoch"], summary["nf_acc"]) == (0.2, 2, 0.4)
    assert summary["total"] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        lama_ckl.summarize_curve([(0.5, 0.5)])


def test_curve_from_metrics_orders_epochs_and_pairs_probes():
    records = [{"epoch": e, "probe": p, "accuracy": a, "perplexity": 3.0}
               for e, p, a in [(2, "not_to_forget", 0.6), (0, "to_learn", 0.0), (1, "to_learn", 0.5),
                               (0, "not_to_forget", 1.0), (2, "to_learn", 0.7), (1, "not_to_forget", 0.8)]]
    assert lama_ckl.curve_from_metrics(records) == [(0.0, 1.0), (0.5, 0.8), (0.7, 0.6)]


# --- the bench -------------------------------------------------------------------------------------------------------

EPOCHS = 2
QUICK_METHODS = LamaCklConfig.PRESETS["quick"]["methods"]


def bench_config(tiny_model: str, tailored: Path, out: Path, **overrides) -> LamaCklConfig:
    values = {"preset": "quick", "model": tiny_model, "out": str(out), "lora_r": 4, "to_learn": 4,
              "not_to_forget": 4, "meta_pool": 8, "epochs": EPOCHS, "tailor_dir": str(tailored), "device": "cpu",
              "meta": {"updates": 1, "meta_batch": 2, "phi_layers": 1, "held_out": 2, **overrides.pop("meta", {})},
              **overrides}
    return LamaCklConfig(**apply_preset(LamaCklConfig, values))


def check_bench_output(out: Path, methods: list[str]) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for key in ("model", "split", "device", "command", "wall_seconds", "methods"):
        assert key in summary, key
    assert summary["split"] == {"to_learn": 4, "not_to_forget": 4, "meta_pool": 8}
    assert list(summary["methods"]) == methods
    for name, m in summary["methods"].items():
        assert {"top_acc", "epoch", "nf_acc", "total", "curve", "seconds"} <= set(m), name
        assert len(m["curve"]) == EPOCHS + 1 and 1 <= m["epoch"] <= EPOCHS
        assert m["top_acc"] == m["curve"][m["epoch"]][0] and m["nf_acc"] == m["curve"][m["epoch"]][1]
        assert m["total"] == pytest.approx(m["top_acc"] + m["nf_acc"])
        assert all(0.0 <= a <= 1.0 for point in m["curve"] for a in point)
        assert (out / "seed-0" / "methods" / name / "DONE").is_file()
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(methods)
    assert [row.split("|")[1].strip() for row in table[2:]] == methods
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_set(out / "seed-0" / "sets" / "to_learn.jsonl")) == 4
    return summary


@pytest.fixture(scope="module")
def bench_run(tiny_model, tailored, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "run"
    return out, lama_ckl.run_bench(bench_config(tiny_model, tailored, out))


def test_quick_bench_end_to_end(bench_run):
    out, returned = bench_run
    summary = check_bench_output(out, QUICK_METHODS)
    assert summary == returned
    assert summary["device"].startswith("CPU")
    assert (out / "phi" / "config.json").is_file() and summary["phi"]["dir"] == str(out / "phi")
    assert summary["phi"]["digest"] == fingerprint.phi_digest(str(out / "phi"))
    assert (out / "seed-0" / "methods" / "taalm" / weight_sources.WEIGHTS_CACHE).is_file()  # φ weighed the To-Learn documents
    history = read_set(out / "phi" / "history.jsonl")
    assert [h["update"] for h in history] == [0, 1]  # validated at update 0 and after --meta_updates 1
    assert summary["phi"]["source"] == "meta-trained" and summary["phi"]["selection"]["update"] in (0, 1)


def test_quick_bench_through_the_cli(tiny_model, tailored, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["bench", "lama-ckl", "--preset", "quick", "--model", tiny_model, "--out", str(out), "--lora_r", "4",
            "--to_learn", "4", "--not_to_forget", "4", "--meta_pool", "8", "--meta.updates", "1", "--meta.meta_batch",
            "2", "--epochs", str(EPOCHS), "--meta.phi_layers", "1", "--tailor_dir", str(tailored), "--device", "cpu",
            "--methods", "finetune,oracle", "--meta.held_out", "2"]
    monkeypatch.setattr(sys, "argv", ["taalm", *argv])  # as the console script runs it
    assert cli.main() == 0
    summary = check_bench_output(out, ["finetune", "oracle"])
    assert summary["command"] == "taalm " + " ".join(argv)
    assert summary["phi"] is None and not (out / "phi").exists()  # no taalm method: no φ to meta-train


class Killed(Exception):
    """Stands for the process being killed."""


def count_learn(monkeypatch, fail_on: str = "") -> list[str]:
    calls: list[str] = []
    real = ckl.learn

    def learn(cfg):
        calls.append(cfg.method)
        if cfg.method == fail_on:
            raise Killed(cfg.method)
        return real(cfg)

    monkeypatch.setattr(ckl, "learn", learn)
    return calls


def count_steps(monkeypatch, fail_on: tuple[str, int] | None = None) -> collections.Counter:
    steps: collections.Counter = collections.Counter()
    real = ckl.Learner.step

    def step(self, doc_ids, epoch, index):
        steps[self.method.name] += 1
        if fail_on and (self.method.name, steps[self.method.name]) == fail_on:
            raise Killed(f"{self.method.name} step {steps[self.method.name]}")
        return real(self, doc_ids, epoch, index)

    monkeypatch.setattr(ckl.Learner, "step", step)
    return steps


def test_bench_resumes_after_a_kill_between_methods(tiny_model, tailored, tmp_path, monkeypatch):
    cfg = bench_config(tiny_model, tailored, tmp_path / "run")
    with monkeypatch.context() as mp:
        calls = count_learn(mp, fail_on=QUICK_METHODS[1])
        with pytest.raises(Killed):
            lama_ckl.run_bench(cfg)
    assert calls == QUICK_METHODS[:2]
    first = tmp_path / "run" / "seed-0" / "methods" / QUICK_METHODS[0] / "metrics.jsonl"
    stamp = first.stat().st_mtime_ns
    meta_calls = []
    monkeypatch.setattr("taalm.meta_train.meta_train", lambda c: meta_calls.append(c))
    calls = count_learn(monkeypatch)
    summary = lama_ckl.run_bench(cfg)
    assert calls == QUICK_METHODS[1:]  # the finished method is not redone
    assert meta_calls == []  # nor is φ
    assert first.stat().st_mtime_ns == stamp
    assert list(summary["methods"]) == QUICK_METHODS


def test_bench_resumes_a_method_from_its_checkpoint(tiny_model, tailored, tmp_path, monkeypatch, bench_run):
    cfg = bench_config(tiny_model, tailored, tmp_path / "run")
    killed_in = QUICK_METHODS[1]
    with monkeypatch.context() as mp:
        count_steps(mp, fail_on=(killed_in, 2))  # one step per epoch: killed in epoch 2, after epoch 1's checkpoint
        with pytest.raises(Killed):
            lama_ckl.run_bench(cfg)
    run_dir = tmp_path / "run" / "seed-0" / "methods" / killed_in
    assert (run_dir / "checkpoint").is_dir() and not (run_dir / "DONE").exists()
    steps = count_steps(monkeypatch)
    summary = lama_ckl.run_bench(cfg)
    assert steps == {killed_in: 1, QUICK_METHODS[2]: EPOCHS}  # resumed at epoch 2; the first method not redone
    epochs = [r["epoch"] for r in read_set(run_dir / "metrics.jsonl") if r["probe"] == "to_learn"]
    assert epochs == list(range(EPOCHS + 1))
    assert list(summary["methods"]) == QUICK_METHODS
    # resume is exact: the same curves as the uninterrupted run
    uninterrupted = bench_run[1]["methods"]
    assert {n: m["curve"] for n, m in summary["methods"].items()} == {n: m["curve"] for n, m in uninterrupted.items()}


def test_bench_restarts_a_method_killed_before_its_first_checkpoint(tiny_model, tailored, tmp_path, monkeypatch):
    cfg = bench_config(tiny_model, tailored, tmp_path / "run", methods="finetune,oracle")
    with monkeypatch.context() as mp:
        count_steps(mp, fail_on=("oracle", 1))
        with pytest.raises(Killed):
            lama_ckl.run_bench(cfg)
    run_dir = tmp_path / "run" / "seed-0" / "methods" / "oracle"
    assert run_dir.is_dir() and not (run_dir / "checkpoint").exists()  # a partial run with nothing to resume
    steps = count_steps(monkeypatch)
    summary = lama_ckl.run_bench(cfg)
    assert steps == {"oracle": EPOCHS}
    assert list(summary["methods"]) == ["finetune", "oracle"]
    assert (run_dir / "DONE").is_file()


# --- lr selection, windowing, φ sources ------------------------------------------------------------------------------


def test_bench_chooses_the_lr_on_held_out_pool_pairs_only(tiny_model, tailored, tmp_path):
    out = tmp_path / "run"
    summary = lama_ckl.run_bench(bench_config(tiny_model, tailored, out, methods="finetune",
                                              lr_candidates="1e-4,3e-2"))
    selection = summary["lr_selection"]
    scores = selection["candidates"]
    assert set(scores) == {"0.0001", "0.03"}
    best = max(scores, key=lambda k: (scores[k]["best"], -float(k)))
    assert selection["chosen"] == float(best) == summary["settings"]["lr"]
    learned = yaml_lr(out / "seed-0" / "methods" / "finetune" / "config.yaml")
    assert learned == selection["chosen"]
    # the lr is chosen on φ's held-out meta-pool pairs: never on To-Learn or Not-To-Forget facts
    held_tasks = {r["task"] for r in read_set(out / "lr_selection" / "tasks.jsonl")}
    pool_tasks = {r["task"] for r in read_set(out / "sets" / "meta_pool.jsonl")}
    evaluated = {r["task"] for name in ("to_learn", "not_to_forget")
                 for r in read_set(out / "seed-0" / "sets" / f"{name}.jsonl")}
    assert len(held_tasks) == 2 and held_tasks <= pool_tasks and not held_tasks & evaluated


def yaml_lr(path: Path) -> float:
    import yaml

    return float(yaml.safe_load(path.read_text())["lr"])


def test_bench_windows_documents_around_their_answer(tiny_model, tailored, tmp_path):
    import shutil

    from taalm import models
    from taalm.windowing import n_tokens

    split = tmp_path / "long-split"  # the tailored split with documents that need a window
    shutil.copytree(tailored, split)
    for name in ("to_learn", "not_to_forget"):
        rows = read_set(split / f"{name}.jsonl")
        write_rows(split / f"{name}.jsonl", [{**r, "document": "The lazy dog sleeps . " * 4 + r["document"] + " The end .",
                                              "text": None} for r in rows])
    out = tmp_path / "run"
    summary = lama_ckl.run_bench(bench_config(tiny_model, split, out, methods="oracle", window=True, max_length=40))
    tokenizer = models.load_tokenizer(tiny_model)
    for name in ("to_learn", "not_to_forget"):
        for record in read_set(out / "seed-0" / "sets" / f"{name}.jsonl"):
            assert n_tokens(tokenizer, record["text"]) <= 40 and record["answer"] in record["text"]
    assert summary["windowed"]["to_learn"] > 0 and summary["settings"]["window"] is True


def test_bench_takes_a_shipped_phi_by_alias(tiny_model, tailored, tmp_path, monkeypatch):
    from taalm import weighting

    shipped = tmp_path / "shipped"
    weighting.TrainAttention.create(tiny_model, r=4, num_layers=1).save(shipped / "tiny-phi")
    monkeypatch.setattr(weighting, "SHIPPED_DIR", shipped)
    monkeypatch.setattr("taalm.meta_train.meta_train", lambda c: pytest.fail("a shipped φ needs no meta-training"))
    summary = lama_ckl.run_bench(bench_config(tiny_model, tailored, tmp_path / "run", methods="taalm", phi="tiny-phi"))
    assert summary["phi"]["source"] == "shipped" and summary["phi"]["dir"] == str(shipped / "tiny-phi")
    assert not (tmp_path / "run" / "phi").exists()


@pytest.mark.skipif(not __import__("torch").distributed.is_available(), reason="torch.distributed is not available")
def test_bench_on_two_processes_matches_one(tiny_model, tailored, tmp_path):
    from test_distributed import launch

    options = {"model": tiny_model, "lora_r": 4, "to_learn": 4, "not_to_forget": 4, "meta_pool": 8,
               "epochs": EPOCHS, "tailor_dir": str(tailored), "device": "cpu", "methods": "finetune,rho1",
               "lora_dropout": 0.0, "batch_size": 4, "micro_batch": 1}
    one = lama_ckl.run_bench(LamaCklConfig(**options, out=str(tmp_path / "one")))
    argv = ["-m", "taalm", "bench", "lama-ckl", "--out", str(tmp_path / "two")]
    argv += [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    done = launch(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert list(two["methods"]) == list(one["methods"]) and (tmp_path / "two" / "table.md").is_file()
    for name in ("finetune", "rho1"):
        a, b = (read_set(tmp_path / run / "seed-0" / "methods" / name / "metrics.jsonl") for run in ("one", "two"))
        assert [r["nll"] for r in b] == pytest.approx([r["nll"] for r in a], rel=1e-4)
        assert [r["accuracy"] for r in b] == [r["accuracy"] for r in a]
        assert a[-1]["nll"] != a[0]["nll"]  # the run learned


def test_bench_meta_trains_phi_on_a_separate_backbone_sharing_the_tokenizer(tiny_model, tailored, tmp_path, capsys):
    import shutil

    from conftest import build_tiny_model

    other = tmp_path / "other-backbone"  # same tokenizer, another network: 3 layers, other weights
    shutil.copytree(tiny_model, other)
    build_tiny_model(other, vocab_size=len(__import__("taalm.models").models.load_tokenizer(tiny_model)), seed=7,
                     layers=3)
    out = tmp_path / "run"
    summary = lama_ckl.run_bench(bench_config(tiny_model, tailored, out, methods="taalm", meta={"phi_model": str(other)}))
    phi_config = json.loads((out / "phi" / "config.json").read_text())
    assert phi_config["backbone"] == str(other) and summary["methods"]["taalm"]["epoch"] >= 1

    wrong = tmp_path / "other-tokenizer"  # a tokenizer with another vocabulary
    wrong.mkdir()
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", "the", "is"])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(wrong)
    build_tiny_model(wrong, vocab_size=len(vocab))
    argv = ["bench", "lama-ckl", "--preset", "quick", "--model", tiny_model, "--out", str(tmp_path / "refused"),
            "--tailor_dir", str(tailored), "--meta.phi_model", str(wrong), "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("taalm: ")]
    assert len(errors) == 1 and "option --meta.phi_model:" in errors[0] and "tokenizer" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "refused").exists()


# --- seeds and intervals ---------------------------------------------------------------------------------------------


def metrics_records(learn: list[list[float]], keep: list[list[float]], match: list[list[float]]) -> list[dict]:
    """metrics.jsonl records (the ckl contract): per epoch and probe set the means and the per-probe lists."""
    records = []
    for epoch, (a, k, m) in enumerate(zip(learn, keep, match, strict=True)):
        for probe, accuracy, matches in (("to_learn", a, m), ("not_to_forget", k, [0.0] * len(k))):
            records.append({"epoch": epoch, "probe": probe, "accuracy": sum(accuracy) / len(accuracy),
                            "exact_match": sum(matches) / len(matches), "nll": 1.0,
                            "per_probe": {"accuracy": accuracy, "nll": [1.0] * len(accuracy), "exact_match": matches}})
    return records


def test_the_bootstrap_statistic_is_the_papers_columns_on_per_fact_scores():
    learn = [[0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 0.0, 0.5], [1.0, 0.5, 0.5, 0.0], [1.0, 1.0, 0.0, 0.5]]
    keep = [[1.0, 1.0, 1.0], [1.0, 0.5, 1.0], [0.5, 0.5, 1.0], [0.0, 0.5, 0.5]]
    match = [[0.0] * 4, [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    records = metrics_records(learn, keep, match)
    expected = lama_ckl.summarize_curve(lama_ckl.curve_from_metrics(records))
    assert (expected["top_acc"], expected["epoch"]) == (0.625, 3)
    scores = lama_ckl.fact_scores(records)
    assert scores["to_learn"]["accuracy"].shape == (4, 4) and scores["not_to_forget"]["accuracy"].shape == (4, 3)
    result = stats.bootstrap([{"finetune": scores}], lama_ckl.statistic)["finetune"]["stats"]
    assert result["top_acc"]["mean"] == pytest.approx(0.625) and result["nf_acc"]["mean"] == pytest.approx(1 / 3)
    assert result["total"]["mean"] == pytest.approx(0.625 + 1 / 3)
    assert result["exact_match"]["mean"] == pytest.approx(0.5) == lama_ckl.exact_match_at(records, 3)
    assert result["curve_to_learn"]["mean"] == pytest.approx([p[0] for p in expected["curve"]])
    lo, hi = result["top_acc"]["ci95"]
    assert lo < 0.625 < hi <= 1.0  # resampled facts; the max over epochs of each replicate's curve
    # ties: epochs 1 and 2 both reach 0.5; the earliest counts, in the statistic as in the summary
    tied = metrics_records(learn[:3], keep[:3], match[:3])
    assert lama_ckl.summarize_curve(lama_ckl.curve_from_metrics(tied))["epoch"] == 1
    point = stats.bootstrap([{"finetune": lama_ckl.fact_scores(tied)}], lama_ckl.statistic)["finetune"]["stats"]
    assert point["nf_acc"]["per_seed"] == [pytest.approx(2.5 / 3)]  # NF at epoch 1, not epoch 2's 2/3
    # a run from before per-probe lists: no per-fact scores
    assert lama_ckl.fact_scores([{k: v for k, v in r.items() if k != "per_probe"} for r in records]) is None


def table_summary(seeds: list[int]) -> dict:
    ci = {"top_acc": [0.4, 0.6], "nf_acc": [0.2, 0.3], "total": [0.65, 0.85], "exact_match": [0.0, 0.25]}
    row = {"top_acc": 0.5, "nf_acc": 0.25, "total": 0.75, "exact_match": 0.125, "seconds": 12.3,
           "epochs": seeds and [2 + s for s in seeds], "ci95": ci}
    return {"intervals": {"seeds": seeds, "baseline": "finetune"},
            "methods": {"finetune": row, "taalm": {**row, "exact_match": None, "vs_finetune": {
                "top_acc": {"mean": 0.0125, "ci95": [-0.05, 0.075]}, "nf_acc": {"mean": -0.1, "ci95": [-0.2, -0.05]}}}}}


def test_the_table_prints_mean_plus_minus_half_width_and_the_difference_to_finetune():
    lines = lama_ckl.table(table_summary([0, 1, 2])).splitlines()
    assert lines[0].startswith("| Method (3 seeds) | Top Acc | Epoch | NF Acc | Total Knowledge | Exact Match | "
                               "Δ Top Acc vs finetune [95%] | Δ NF Acc vs finetune [95%] |")
    cells = lambda line: [c.strip() for c in line.split("|")[1:-1]]
    assert cells(lines[2]) == ["finetune", "0.500 ± 0.100", "2,3,4", "0.250 ± 0.050", "0.750 ± 0.100",
                               "0.125 ± 0.125", "—", "—", "12"]
    assert cells(lines[3])[5:8] == ["—", "+0.013 [-0.050, +0.075]", "-0.100 [-0.200, -0.050]"]
    one = lama_ckl.table(table_summary([0]))
    assert one.startswith("| Method (1 seed: ± over facts only) |") and len(one.splitlines()) == 4
    no_interval = table_summary([0])
    del no_interval["methods"]["finetune"]["ci95"]
    assert cells(lama_ckl.table(no_interval).splitlines()[2])[1] == "0.500"  # the mean alone without an interval


def test_seeds_run_in_their_own_directories_resume_and_pool_into_intervals(tiny_model, tailored, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "run"
    methods = ["finetune", "oracle"]
    calls = count_learn(monkeypatch)
    one = lama_ckl.run_bench(bench_config(tiny_model, tailored, out, methods="finetune,oracle", seeds="0"))
    assert calls == methods
    # one seed: valid, its interval covers the facts only and says so
    assert one["intervals"]["seeds"] == [0] and not one["intervals"]["across_seeds"]
    assert "1 seed" in one["intervals"]["note"] and "bootstrap" in one["intervals"]["method"]
    oracle = one["methods"]["oracle"]
    assert set(oracle["ci95"]) >= {"top_acc", "nf_acc", "total", "exact_match", "curve_to_learn"}
    assert set(oracle["vs_finetune"]) == {"top_acc", "nf_acc", "total", "exact_match"}
    assert "vs_finetune" not in one["methods"]["finetune"]
    assert list(oracle["seeds"]) == ["0"] and oracle["top_acc"] == oracle["seeds"]["0"]["top_acc"]
    assert "1 seed" in (out / "table.md").read_text().splitlines()[0]

    stamp = (out / "seed-0" / "methods" / "finetune" / "metrics.jsonl").stat().st_mtime_ns
    calls.clear()
    two = lama_ckl.run_bench(bench_config(tiny_model, tailored, out, methods="finetune,oracle", seeds="0,1"))
    assert calls == methods  # only seed 1's: seed 0's finished methods are skipped
    assert (out / "seed-0" / "methods" / "finetune" / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert two["intervals"]["seeds"] == [0, 1] and two["intervals"]["across_seeds"] and "note" not in two["intervals"]
    # a seed changes the split and the learning run's seed (data order, LoRA init); the meta pool is shared
    nf = [{r["uuid"] for r in read_set(out / f"seed-{s}" / "sets" / "not_to_forget.jsonl")} for s in (0, 1)]
    assert nf[0] != nf[1] and all(len(u) == 4 for u in nf)  # 4 of the tailored split's 10 NF rows
    assert yaml_seed(out / "seed-1" / "methods" / "oracle" / "config.yaml") == 1
    assert (out / "sets" / "meta_pool.jsonl").is_file() and not (out / "seed-1" / "sets" / "meta_pool.jsonl").exists()
    for name in methods:
        m = two["methods"][name]
        per_seed = [m["seeds"][s] for s in ("0", "1")]
        assert m["top_acc"] == pytest.approx(sum(p["top_acc"] for p in per_seed) / 2)
        assert m["epochs"] == [p["epoch"] for p in per_seed]
        for point, a, b in zip(m["curve"], per_seed[0]["curve"], per_seed[1]["curve"], strict=True):
            assert point == pytest.approx([(a[i] + b[i]) / 2 for i in range(2)])
        lo, hi = m["ci95"]["top_acc"]
        assert lo <= m["top_acc"] <= hi
    assert two["methods"]["oracle"]["vs_finetune"]["top_acc"]["per_seed"] == pytest.approx(
        [two["methods"]["oracle"]["seeds"][s]["top_acc"] - two["methods"]["finetune"]["seeds"][s]["top_acc"]
         for s in ("0", "1")])
    assert json.loads((out / "summary.json").read_text()) == two
    assert (out / "table.md").read_text().splitlines()[0].startswith("| Method (2 seeds) |")


def yaml_seed(path: Path) -> int:
    import yaml

    return int(yaml.safe_load(path.read_text())["seed"])


def test_the_seeds_option_is_validated(tiny_model, tmp_path):
    assert LamaCklConfig(out=str(tmp_path), seeds="").seed_list() == [0]
    assert LamaCklConfig(out=str(tmp_path), seeds="", seed=5).seed_list() == [5]
    assert LamaCklConfig(out=str(tmp_path), seeds="2, 0,1").seed_list() == [2, 0, 1]
    for bad in ("0,0", "a,1", "-1"):
        with pytest.raises(TaalmError, match="option --seeds"):
            LamaCklConfig(out=str(tmp_path), seeds=bad)


def test_runs_without_per_fact_scores_get_means_but_no_interval():
    from taalm.bench import runner

    learn, keep = [[0.0, 0.0], [0.5, 1.0]], [[1.0, 1.0], [1.0, 0.5]]
    old = [{k: v for k, v in r.items() if k != "per_probe"} for r in metrics_records(learn, keep, learn)]
    runs = [runner.SeedRun(s, {"finetune": {**lama_ckl.summarize_curve(lama_ckl.curve_from_metrics(old)),
                                            "exact_match": None, "seconds": 1.0}}, None) for s in (0, 1)]
    bootstraps, record = runner.intervals(runs, lama_ckl.statistic)
    assert bootstraps == {} and record["method"] is None and "no interval" in record["note"]
    row = lama_ckl.method_summary("finetune", runs, None, epochs=1)
    assert (row["top_acc"], row["epochs"], row["seconds"], row["exact_match"]) == (0.75, [1, 1], 2.0, None)
    assert "ci95" not in row
    line = lama_ckl.table({"intervals": record, "methods": {"finetune": row}}).splitlines()[2]
    assert [c.strip() for c in line.split("|")[1:-1]][1:7] == ["0.750", "1,1", "0.750", "1.500", "—", "—"]
    assert runner.mean_over_seeds([{"a": [1, 2.0], "b": None, "c": "x"}, {"a": [3, 4.0], "b": None, "c": "y"}]) == \
        {"a": [2.0, 3.0], "b": None, "c": None}
