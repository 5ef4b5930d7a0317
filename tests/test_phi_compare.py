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


def fake_run(root: Path, name: str, gains: dict[str, tuple[float, float]], held: str = HELD, **options) -> Path:
    """A meta-train output whose chosen checkpoint has these (accuracy, NLL) gains per kind."""
    run = root / name
    run.mkdir()
    save_config(MetaTrainConfig(pairs="pairs.jsonl", out=str(run), **options), run / "config.yaml")
    worst = min(gains, key=lambda k: gains[k])
    validation = {"gain_accuracy": gains[worst][0], "gain_nll": gains[worst][1], "worst_kind": worst}
    for kind, (accuracy, nll) in gains.items():
        validation |= {f"{kind}/gain_accuracy": accuracy, f"{kind}/gain_nll": nll}
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
