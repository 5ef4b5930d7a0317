"""Tests for ``taalm compare-phi``: φ runs chosen by their worst kind's validation gain, only when comparable.

python -m pytest -q tests/test_phi_compare.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.test_cli import check_one_line_error

from taalm import cli
from taalm.config import ComparePhiConfig, MetaTrainConfig, save_config
from taalm.errors import TaalmError
from taalm.phi_compare import compare_phi

HELD = '{"document": "Ann lives in Oslo .", "task": "Ann lives in", "answer": "Oslo", "source": "x:1"}\n'


def fake_run(root: Path, name: str, gains: dict[str, tuple[float, float]], held: str = HELD,
             pairs: dict[str, list[float]] | None = None, **options) -> Path:
    """A meta-train output whose chosen checkpoint has these (accuracy, NLL) gains per kind; with ``pairs``, each
    kind's per-pair accuracies (uniform weights scoring 0 on every pair, so the gain is their mean)."""
    run = root / name
    run.mkdir()
    save_config(MetaTrainConfig(pairs="pairs.jsonl", out=str(run), **options), run / "config.yaml")
    worst = min(gains, key=lambda k: gains[k])
    validation = {"gain_accuracy": gains[worst][0], "gain_nll": gains[worst][1], "worst_kind": worst}
    for kind, (accuracy, nll) in gains.items():
        validation |= {f"{kind}/gain_accuracy": accuracy, f"{kind}/gain_nll": nll}
    for kind, scores in (pairs or {}).items():
        validation |= {f"{kind}/val_pair_accuracy": scores, f"{kind}/uniform_pair_accuracy": [0.0] * len(scores),
                       f"{kind}/val_pair_nll": [1.0] * len(scores), f"{kind}/uniform_pair_nll": [1.0] * len(scores)}
    (run / "selection.json").write_text(json.dumps({"update": 12, "validation": validation}))
    (run / "held_out.jsonl").write_text(held)
    return run


def test_the_worst_kind_decides_with_nll_breaking_ties_and_the_differing_knob_is_shown(tmp_path):
    runs = [fake_run(tmp_path, "mean-best", {"a": (0.5, 1.0), "b": (-0.1, 0.0)}, weight_temperature=1.0),
            fake_run(tmp_path, "tie-low-nll", {"a": (0.1, 0.0), "b": (0.05, 0.2)}, weight_temperature=2.0),
            fake_run(tmp_path, "tie-high-nll", {"a": (0.1, 0.0), "b": (0.05, 0.3)}, weight_temperature=3.0)]
    out = tmp_path / "choice.json"
    report, table = compare_phi(ComparePhiConfig(runs=[str(r) for r in runs], out=str(out)))
    assert report["chosen"] == str(runs[2])  # not the best mean: its worst kind loses
    assert json.loads(out.read_text()) == report
    assert [c["weight_temperature"] for c in report["candidates"]] == [1.0, 2.0, 3.0]
    assert "weight_temperature" in table and "phi_layers" not in table  # only what differs
    assert f"**{runs[2]}**" in table and "+0.050 / +0.300" in table


def test_equal_runs_keep_the_first_given(tmp_path):
    runs = [fake_run(tmp_path, name, {"a": (0.1, 0.2)}, phi_layers=layers) for name, layers in (("L8", 8), ("L4", 4))]
    report, _ = compare_phi(ComparePhiConfig(runs=[str(r) for r in runs]))
    assert report["chosen"] == str(runs[0])


def test_the_same_held_out_pairs_read_from_another_path_compare(tmp_path):
    first = fake_run(tmp_path, "first", {"a": (0.1, 0.2)})
    moved = HELD.replace('"source": "', '"source": "/elsewhere/')
    assert moved != HELD
    other = fake_run(tmp_path, "other", {"a": (0.3, 0.2)}, held=moved)
    report, _ = compare_phi(ComparePhiConfig(runs=[str(first), str(other)]))
    assert report["chosen"] == str(other)


@pytest.mark.parametrize(("change", "fragment"), [
    ({"val_lr": 1e-3}, "val_lr 0.001 is not 0.0002"),
    ({"held": HELD.replace("Oslo", "Bergen")}, "held_out.jsonl: not the held-out pairs"),
])
def test_runs_measured_differently_are_refused(tmp_path, change, fragment):
    first = fake_run(tmp_path, "first", {"a": (0.1, 0.2)})
    other = fake_run(tmp_path, "other", {"a": (0.3, 0.2)}, **change)
    with pytest.raises(TaalmError, match="not comparable") as error:
        compare_phi(ComparePhiConfig(runs=[str(first), str(other)]))
    assert fragment in str(error.value) and str(other) in str(error.value)


def test_cli_errors_are_one_line(tmp_path, capsys):
    run = fake_run(tmp_path, "run", {"a": (0.1, 0.2)})
    (tmp_path / "bare").mkdir()
    assert cli.main(["compare-phi", "--runs", str(run), str(tmp_path / "bare")]) == 2
    check_one_line_error(2, capsys.readouterr().err, "bare/config.yaml not found")
    (tmp_path / "bare" / "config.yaml").write_text((run / "config.yaml").read_text())
    (tmp_path / "bare" / "held_out.jsonl").write_text(HELD)
    (tmp_path / "bare" / "selection.json").write_text('{"update": 12,\n "validation": {"gain_accuracy": 0.1,,}}')
    assert cli.main(["compare-phi", "--runs", str(run), str(tmp_path / "bare")]) == 2
    check_one_line_error(2, capsys.readouterr().err, "bare/selection.json:2", "malformed")
    assert cli.main(["compare-phi", "--runs", str(run)]) == 2
    check_one_line_error(2, capsys.readouterr().err, "option --runs", "at least two")
    other = fake_run(tmp_path, "other", {"a": (0.3, 0.2)})
    assert cli.main(["compare-phi", "--runs", f"{run},{other}"]) == 0
    assert f"chosen: {other}" in capsys.readouterr().out


def with_pairs(root: Path, name: str, pairs: dict[str, list[float]]) -> Path:
    return fake_run(root, name, {kind: (sum(p) / len(p), 0.0) for kind, p in pairs.items()}, pairs=pairs)


def test_the_margin_over_each_other_run_has_a_paired_interval_over_the_held_out_pairs(tmp_path):
    n = 40
    chosen = with_pairs(tmp_path, "chosen", {"a": [1.0] * 30 + [0.0] * 10, "b": [1.0] * 20 + [0.0] * 20})
    # one pair fewer on the worst kind: within the pairs' noise
    close = with_pairs(tmp_path, "close", {"a": [1.0] * 30 + [0.0] * 10, "b": [1.0] * 19 + [0.0] * 21})
    # worse on every pair of both kinds: shown
    worse = with_pairs(tmp_path, "worse", {"a": [0.0] * n, "b": [0.0] * n})
    report, table = compare_phi(ComparePhiConfig(runs=[str(chosen), str(close), str(worse)]))
    assert report["chosen"] == str(chosen)
    vs = report["intervals"]["vs_chosen"]
    assert set(vs) == {str(close), str(worse)}  # the chosen run is the baseline, not compared with itself
    assert vs[str(close)]["difference"] == pytest.approx(-1 / n)  # the recorded worst-kind gains' difference
    assert vs[str(close)]["ci95"][0] < 0 <= vs[str(close)]["ci95"][1]
    assert vs[str(worse)]["difference"] == pytest.approx(-0.5) and vs[str(worse)]["ci95"][1] < 0
    # every kind's margin too: close is the chosen run itself on kind a
    assert vs[str(close)]["kinds"]["a"] == {"difference": 0.0, "ci95": [0.0, 0.0]}
    assert vs[str(worse)]["kinds"]["a"]["difference"] == pytest.approx(-0.75)
    assert vs[str(worse)]["kinds"]["b"]["ci95"][1] < 0
    assert "worst-kind gain − chosen's [95 %]" in table
    rows = {line.split(" | ")[0].strip("| *"): line for line in table.splitlines()[2:]}
    assert "(no difference shown)" in rows[str(close)] and "(no difference shown)" not in rows[str(worse)]
    assert rows[str(chosen)].endswith("| — |")
    # each run's own gain over uniform weights, with its interval
    gains = report["intervals"]["gains"]
    assert set(gains) == {str(chosen), str(close), str(worse)}
    assert gains[str(chosen)]["gain"] == pytest.approx(0.5) and gains[str(chosen)]["kinds"]["a"]["gain"] == 0.75
    assert 0 < gains[str(chosen)]["ci95"][0] < 0.5 < gains[str(chosen)]["ci95"][1]
    assert gains[str(worse)]["kinds"]["b"] == {"gain": 0.0, "ci95": [0.0, 0.0]}  # no pair gains: no spread


def test_a_written_comparison_has_its_plot_beside_it(tmp_path):
    runs = [with_pairs(tmp_path, "one", {"a": [1.0, 0.0], "b": [1.0, 1.0]}),
            with_pairs(tmp_path, "two", {"a": [0.0, 0.0], "b": [1.0, 0.0]}),
            fake_run(tmp_path, "old", {"a": (0.1, 0.2), "b": (0.3, 0.0)})]  # no per-pair scores: no intervals
    for compared, name in ((runs[:2], "with.json"), (runs, "without.json")):
        compare_phi(ComparePhiConfig(runs=[str(r) for r in compared], out=str(tmp_path / name)))
    assert (tmp_path / "with.png").read_bytes()[:8] == (tmp_path / "without.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "with.png").read_bytes() != (tmp_path / "without.png").read_bytes()


def test_runs_without_per_pair_scores_are_compared_without_intervals(tmp_path):
    old = fake_run(tmp_path, "old", {"a": (0.1, 0.2)})
    new = with_pairs(tmp_path, "new", {"a": [0.0, 1.0]})
    report, table = compare_phi(ComparePhiConfig(runs=[str(old), str(new)]))
    assert report["chosen"] == str(new) and report["intervals"] is None
    assert "[95 %]" not in table
