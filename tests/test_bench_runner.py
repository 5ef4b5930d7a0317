"""The benchmark skeleton (``runner.run``) with a stand-in benchmark: no model, so every hook's part is visible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taalm import ckl
from taalm.bench import runner
from taalm.bench.config import LamaCklConfig
from taalm.errors import TaalmError


class Counting(runner.Benchmark):
    """A benchmark whose methods 'learn' by returning a fixed row: method m of seed s scores (s + 1) * [1, 0, 1]
    on its facts."""

    name = "counting"
    settings = ("epochs", "seed")

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def prepare(self, cfg, out: Path) -> None:
        self.calls.append(("prepare",))

    def prepare_seed(self, cfg, out: Path) -> runner.SeedRun:
        self.calls.append(("prepare_seed", cfg.seed, out.name))
        return runner.SeedRun(cfg.seed, data={"facts": 3})

    def run_method(self, cfg, name: str, out: Path, run: runner.SeedRun):
        self.calls.append(("run_method", cfg.seed, name))
        facts = (cfg.seed + 1) * np.array([1.0, 0.0, 1.0])
        return {"score": float(facts.mean())}, {"probes": {"accuracy": facts}}

    def statistic(self, cfg):
        return lambda means: {"score": means["probes"]["accuracy"]}  # per replicate: the mean over facts

    def summary(self, cfg, runs, bootstraps, out: Path) -> dict:
        return {"facts": runs[0].data["facts"],
                "methods": {m: runner.with_intervals({"seeds": {str(r.seed): r.methods[m] for r in runs}},
                                                     bootstraps.get(m)) for m in cfg.method_list()}}

    def table(self, summary: dict) -> str:
        return "".join(f"| {m} |\n" for m in summary["methods"])

    def plots(self, cfg, summary, runs, out: Path) -> None:
        self.calls.append(("plots", len(runs)))


def test_the_skeleton_calls_the_hooks_in_order_and_writes_the_summary(tmp_path, capsys):
    cfg = LamaCklConfig(out=str(tmp_path / "run"), methods="finetune,oracle", seeds="0,1", device="cpu")
    bench = Counting()
    summary = runner.run(bench, cfg, command="taalm bench counting")
    assert bench.calls == [("prepare",), ("prepare_seed", 0, "seed-0"), ("run_method", 0, "finetune"),
                           ("run_method", 0, "oracle"), ("prepare_seed", 1, "seed-1"), ("run_method", 1, "finetune"),
                           ("run_method", 1, "oracle"), ("plots", 2)]
    out = tmp_path / "run"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert list(summary)[:9] == ["benchmark", "model", "device", "command", "wall_seconds", "settings", "intervals",
                                 "lr_selection", "phi"]
    assert summary["benchmark"] == "counting" and summary["command"] == "taalm bench counting"
    assert summary["settings"] == {"epochs": cfg.epochs, "seed": 0, "seeds": [0, 1]}
    assert summary["facts"] == 3 and summary["lr_selection"] is None and summary["phi"] is None
    assert summary["intervals"]["seeds"] == [0, 1] and summary["intervals"]["baseline"] == "finetune"
    assert summary["methods"]["oracle"]["seeds"] == {"0": {"score": pytest.approx(2 / 3)},
                                                     "1": {"score": pytest.approx(4 / 3)}}
    assert summary["methods"]["oracle"]["ci95"]["score"][0] <= 1.0 <= summary["methods"]["oracle"]["ci95"]["score"][1]
    assert (out / "table.md").read_text() == "| finetune |\n| oracle |\n"
    assert (out / "config.yaml").is_file() and all((out / f"seed-{s}" / "config.yaml").is_file() for s in (0, 1))
    err = capsys.readouterr().err
    assert "bench counting" in err and "4/4" in err  # one progress bar over seeds × methods


def test_a_run_refused_part_way_leaves_the_records_of_the_run_that_made_them(tmp_path):
    """A part refusing to be reused (``taalm.fingerprint``) stops the run before OUT's config.yaml says otherwise."""
    out = tmp_path / "run"
    runner.run(Counting(), LamaCklConfig(out=str(out), methods="finetune,oracle", seeds="0,1", epochs=3, device="cpu"))
    before = {path: path.read_text() for path in out.rglob("*") if path.is_file()}

    class Refusing(Counting):
        def run_method(self, cfg, name, out, run):
            raise TaalmError(f"{out}: finished with other epochs than this run's")

    with pytest.raises(TaalmError, match="other epochs"):
        runner.run(Refusing(), LamaCklConfig(out=str(out), methods="finetune,oracle", seeds="0,1", epochs=5,
                                             device="cpu"))
    assert {path: path.read_text() for path in out.rglob("*") if path.is_file()} == before


def test_baseline_names_the_method_the_others_are_paired_with(tmp_path):
    class Better(Counting):  # oracle scores 0.5 above finetune on every fact
        def run_method(self, cfg, name, out, run):
            row, scores = super().run_method(cfg, name, out, run)
            shift = 0.5 if name == "oracle" else 0.0
            return row, {"probes": {"accuracy": scores["probes"]["accuracy"] + shift}}

    cfg = LamaCklConfig(out=str(tmp_path / "run"), methods="finetune,oracle,rho1", seeds="0,1", device="cpu",
                        baseline="oracle")
    summary = runner.run(Better(), cfg)
    assert summary["intervals"]["baseline"] == "oracle"
    methods = summary["methods"]
    assert "vs_oracle" not in methods["oracle"] and not any("vs_finetune" in row for row in methods.values())
    assert methods["finetune"]["vs_oracle"]["score"]["per_seed"] == pytest.approx([-0.5, -0.5])
    assert methods["rho1"]["vs_oracle"]["score"]["mean"] == pytest.approx(-0.5)


def test_a_method_without_per_fact_scores_means_no_intervals(tmp_path):
    class Old(Counting):
        def run_method(self, cfg, name, out, run):
            row, scores = super().run_method(cfg, name, out, run)
            return row, None if name == "oracle" else scores

    summary = runner.run(Old(), LamaCklConfig(out=str(tmp_path / "run"), methods="finetune,oracle", device="cpu"))
    assert summary["intervals"]["method"] is None and "ci95" not in summary["methods"]["finetune"]


def test_learn_run_takes_the_metrics_the_run_returns(tmp_path, monkeypatch):
    """A run's metrics come back from ``ckl.learn`` in memory; a finished run's are read from its metrics.jsonl."""
    records = [{"epoch": 0, "probe": "p", "seconds": 1.5}, {"epoch": 1, "probe": "p", "seconds": 2.0}]
    out = tmp_path / "run"
    monkeypatch.setattr(ckl, "learn", lambda cfg: ckl.LearnResult(Path(cfg.out), records))
    cfg = runner.learn_config(LamaCklConfig(out=str(tmp_path), device="cpu"), method="finetune", docs="d.jsonl",
                              out=str(out))
    assert runner.learn_run(cfg) == (records, 3.5)
    assert not out.exists()  # nothing read back from disk
    out.mkdir()
    (out / "DONE").write_text("{}\n")
    (out / "metrics.jsonl").write_text(json.dumps(records[0]) + "\n")
    monkeypatch.setattr(ckl, "learn", lambda cfg: pytest.fail("a finished run is not learned again"))
    assert runner.learn_run(cfg) == (records[:1], 1.5)


def test_a_rebuilt_command_parses_back_to_the_same_config(monkeypatch):
    """A Python-API run records a command; the CLI reads it back as the very same config (nested --meta.*, lists)."""
    import shlex

    from taalm import cli
    from taalm.bench.config import LamaCklConfig

    cfg = LamaCklConfig(out="runs/x", seeds=[0, 2], methods=["finetune", "taalm"], meta={"inner_lr": 1e-3},
                        lr_candidates=[1e-3, 3e-3])
    command = runner.command_line(cfg, "", "lama-ckl")
    real = cli._commands()
    parsed = []
    monkeypatch.setattr(cli, "_commands", lambda argv=None: {
        name: (cls, parsed.append if name == "bench lama-ckl" else run, text) for name, (cls, run, text) in real.items()})
    assert cli.main(shlex.split(command)[1:]) == 0
    assert parsed == [cfg]
