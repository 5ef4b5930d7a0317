"""Tests for ``taalm bench compare``: paired differences of two finished runs' methods, and the check that they were
learned on the same sets.

python -m pytest -q tests/test_bench_compare.py
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from tests.test_cli import check_one_line_error

from taalm import cli
from taalm.bench import fictional, lama_ckl
from taalm.bench.compare import compare_runs
from taalm.errors import TaalmError
from taalm.io import read_jsonl
from taalm.stats import bootstrap

PROBES = {"to_learn": "t1", "not_to_forget": "n1"}


def write_run(run: Path, benchmark: str = "fictional", seeds=(0, 1), periods=None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": benchmark, "settings": {"seeds": list(seeds)}}
    if periods:
        summary["periods"] = periods
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def finish(directory: Path, records: list[dict], inputs: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (directory / "DONE").write_text(json.dumps({"epochs": 1, **({"inputs": inputs} if inputs else {})}))
    return directory


def write_method(run: Path, seed: int, method: str, last: list[float], nf: list[float] | None = None,
                 inputs: dict | None = None) -> Path:
    """A fictional / LAMA-ckl method run: all-zero accuracy at epoch 0, ``last`` per fact at epoch 1."""
    nf = nf if nf is not None else [1.0] * len(last)
    records = [{"epoch": e, "probe": probe, "accuracy": float(np.mean(v)), "per_probe": {"accuracy": v}}
               for e, (learn, keep) in enumerate([([0.0] * len(last), nf), (last, nf)])
               for probe, v in (("to_learn", learn), ("not_to_forget", keep))]
    default = {"docs": "d1", "probes": PROBES}
    return finish(run / f"seed-{seed}" / "methods" / method, records, default if inputs is None else inputs)


@pytest.fixture
def two_runs(tmp_path):
    new, old = write_run(tmp_path / "new"), write_run(tmp_path / "old")
    write_method(new, 0, "taalm", [1, 1, 0, 0])
    write_method(old, 0, "taalm", [1, 0, 0, 0])
    write_method(new, 1, "taalm", [1, 1, 1, 0])
    write_method(old, 1, "taalm", [0, 0, 0, 0])
    return new, old


def test_the_difference_is_new_minus_old_per_seed_and_over_seeds(two_runs):
    new, old = two_runs
    report = compare_runs(str(new), str(old))
    assert report["benchmark"] == "fictional" and report["seeds"] == [0, 1]
    last = report["statistics"]["last_acc"]
    assert last["new"] == pytest.approx((0.5 + 0.75) / 2) and last["old"] == pytest.approx((0.25 + 0.0) / 2)
    assert last["difference"]["per_seed"] == pytest.approx([0.25, 0.75])
    assert last["difference"]["mean"] == pytest.approx(0.5)
    low, high = last["difference"]["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0  # every fact's difference is 0 or +1
    assert report["statistics"]["last_nf_acc"]["difference"]["mean"] == pytest.approx(0.0)


def test_against_finetune_of_the_same_run_it_gives_the_benchmark_tables_interval(two_runs):
    new, _ = two_runs
    write_method(new, 0, "finetune", [0, 1, 0, 1], nf=[1, 0, 1, 1])
    write_method(new, 1, "finetune", [1, 0, 0, 0], nf=[0, 0, 1, 1])
    scores = lambda s, m: lama_ckl.fact_scores([r for _, r in read_jsonl(new / f"seed-{s}/methods/{m}/metrics.jsonl")])
    table = bootstrap([{m: scores(s, m) for m in ("finetune", "taalm")} for s in (0, 1)], fictional.statistic)
    report = compare_runs(str(new), str(new), old_method="finetune")
    for name in ("last_acc", "last_nf_acc", "top_acc"):
        assert report["statistics"][name]["difference"] == table["taalm"]["vs_finetune"][name]


def test_seeds_can_be_chosen_and_must_be_in_both_runs(two_runs):
    new, old = two_runs
    assert compare_runs(str(new), str(old), seeds=[1])["statistics"]["last_acc"]["difference"]["mean"] == \
        pytest.approx(0.75)
    with pytest.raises(TaalmError, match="no seed 2 in both"):
        compare_runs(str(new), str(old), seeds=[2])


@pytest.mark.parametrize("inputs, other", [({"docs": "d2", "probes": PROBES}, "docs"),
                                           ({"docs": "d1", "probes": {**PROBES, "not_to_forget": "n2"}}, "probes")])
def test_runs_learned_on_other_sets_are_not_paired(two_runs, inputs, other):
    new, old = two_runs
    write_method(old, 1, "taalm", [0, 0, 0, 0], inputs=inputs)
    with pytest.raises(TaalmError, match=f"other {other} than .*not paired"):
        compare_runs(str(new), str(old))


def keep_sets(run: Path, seed: int, method: str, not_to_forget: str) -> None:
    """A run from before taalm recorded its inputs: DONE without them, its config naming sets it keeps (under
    another path: the run was copied)."""
    sets = run / f"seed-{seed}" / "sets"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "to_learn.jsonl").write_text('{"text": "a"}\n')
    (sets / "not_to_forget.jsonl").write_text(not_to_forget)
    gone = f"/elsewhere/seed-{seed}/sets"
    write_method(run, seed, method, [0, 0, 0, 0], inputs={})
    (run / f"seed-{seed}" / "methods" / method / "config.yaml").write_text(
        f"docs: {gone}/to_learn.jsonl\nprobes:\n- to_learn={gone}/to_learn.jsonl\n"
        f"- not_to_forget={gone}/not_to_forget.jsonl\n")


def test_runs_that_recorded_no_inputs_are_paired_by_the_sets_they_keep(tmp_path):
    new, old = write_run(tmp_path / "new", seeds=(0,)), write_run(tmp_path / "old", seeds=(0,))
    keep_sets(new, 0, "taalm", '{"text": "b"}\n')
    keep_sets(old, 0, "finetune", '{"text": "b"}\n')
    assert compare_runs(str(new), str(old), old_method="finetune")["seeds"] == [0]
    keep_sets(old, 0, "finetune", '{"text": "c"}\n')
    with pytest.raises(TaalmError, match="other probes"):
        compare_runs(str(new), str(old), old_method="finetune")


def test_a_pairing_that_cannot_be_checked_is_said(two_runs, caplog):
    new, old = two_runs
    write_method(old, 0, "taalm", [1, 0, 0, 0], inputs={})  # no inputs recorded, no sets kept
    with caplog.at_level(logging.WARNING, logger="taalm"):
        compare_runs(str(new), str(old))
    assert "checked by their sizes only" in caplog.text
    write_method(old, 0, "taalm", [1, 0, 0], inputs={})  # another number of facts
    with pytest.raises(TaalmError, match="not paired"):
        compare_runs(str(new), str(old))


def test_temporalwiki_averages_the_object_nll_over_periods(tmp_path):
    periods = ["0901-1001", "1001-1101"]
    new = write_run(tmp_path / "new", "temporalwiki", seeds=(0,), periods=periods)
    old = write_run(tmp_path / "old", "temporalwiki", seeds=(0,), periods=periods)
    nll = {("new", "0901-1001"): 2.0, ("new", "1001-1101"): 3.0, ("old", "0901-1001"): 4.0, ("old", "1001-1101"): 4.0}
    for (name, period), value in nll.items():
        records = [{"epoch": 1, "probe": kind, "nll": value, "per_probe": {"nll": [value, value]}}
                   for kind in ("changed", "unchanged")]
        finish(tmp_path / name / "seed-0" / "methods" / "taalm" / period, records,
               {"docs": f"docs-{period}", "probes": {"changed": "c", "unchanged": "u"}})
    changed = compare_runs(str(new), str(old))["statistics"]["changed"]
    assert changed["new"] == pytest.approx(2.5) and changed["difference"]["mean"] == pytest.approx(-1.5)


def test_runs_of_two_benchmarks_are_refused(two_runs, tmp_path):
    new, _ = two_runs
    other = write_run(tmp_path / "lama", "lama-ckl")
    with pytest.raises(TaalmError, match="not comparable"):
        compare_runs(str(new), str(other))


def test_the_command_prints_the_table_and_writes_json(two_runs, tmp_path, capsys):
    new, old = two_runs
    out = tmp_path / "report.json"
    assert cli.main(["bench", "compare", "--new", str(new), "--old", str(old), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| last_acc | 0.625 | 0.125 | +0.500 [" in printed
    assert json.loads(out.read_text())["statistics"]["last_acc"]["difference"]["per_seed"] == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize("args, fragments", [
    (["--new", "NOWHERE", "--old", "NOWHERE2"], ["summary.json", "not a finished benchmark run"]),
    (["--new", "RUN", "--old", "RUN"], ["option --old_method", "with itself"]),
    (["--new", "RUN", "--old", "RUN", "--old_method", "oracle"], ["oracle", "no finished run here"]),
])
def test_bad_input_is_one_line(two_runs, tmp_path, capsys, args, fragments):
    new, _ = two_runs
    args = [str(new) if a == "RUN" else str(tmp_path / a) if a.startswith("NOWHERE") else a for a in args]
    code = cli.main(["bench", "compare", *args])
    check_one_line_error(code, capsys.readouterr().err, *fragments)
