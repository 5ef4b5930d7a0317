"""Tests for ``taalm validate-phi``: trained φs validated on pairs of one's own, as meta-training validates its
checkpoints, then chosen by compare-phi's rule; uniform runs computed once, reruns resumed, other pairs refused.

python -m pytest -q tests/test_phi_validate.py
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from tests.test_cli import check_one_line_error

from conftest import FACT_ANSWERS, FACT_DOCS
from taalm import cli, validation
from taalm.config import MetaTrainConfig, ValidatePhiConfig, save_config
from taalm.errors import TaalmError
from taalm.meta_train import run_config
from taalm.phi_validate import measure_config, validate_phis
from taalm.weighting import TrainAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path, tiny_model) -> dict[str, str]:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"document": d, "task": d[: d.index(a) + len(a)], "answer": a,
                                         "kind": "even" if i % 2 == 0 else "odd"}) + "\n"
                             for i, (d, a) in enumerate(zip(FACT_DOCS, FACT_ANSWERS))))
    run = tmp_path / "like"
    run.mkdir()
    save_config(MetaTrainConfig(theta=tiny_model, pairs="p.jsonl", out=str(run), lora_r=4, lora_alpha=8,
                                max_length=64, val_epochs=2, val_lr=5e-3, val_batch_size=2, device="cpu"),
                run / "config.yaml")
    phis = {}
    for name, floor in (("sharp", 0.0), ("floored", 0.5)):
        torch.manual_seed(len(phis))
        phi = TrainAttention.create(tiny_model, r=4, weight_floor=floor)
        torch.nn.init.normal_(phi.head.weight, std=1.0)  # weights far from uniform: the two φs differ
        phi.save(tmp_path / name)
        phis[name] = str(tmp_path / name)
    return {"pairs": str(pairs), "like": str(run), **phis}


def test_phis_are_validated_per_kind_against_one_uniform_run_and_chosen_by_the_worst_kind(setup, tmp_path,
                                                                                        monkeypatch):
    runs = []
    real = validation.learn_and_score

    def counted(*args, **kwargs):
        runs.append(args[3] is None)
        return real(*args, **kwargs)

    monkeypatch.setattr("taalm.validation.learn_and_score", counted)
    out = tmp_path / "out"
    cfg = ValidatePhiConfig(phi=[setup["sharp"], setup["floored"]], pairs=setup["pairs"], like=setup["like"],
                            out=str(out))
    report, table = validate_phis(cfg)
    assert runs == [True, False, True, False, False, False]  # a uniform run per kind, once; a φ run per kind per φ
    records = {Path(c["run"]).name: c["validation"] for c in report["candidates"]}
    assert set(records) == {"sharp", "floored"}
    for v in records.values():
        for kind in ("even", "odd"):
            assert v[f"{kind}/gain_accuracy"] == pytest.approx(v[f"{kind}/val_accuracy"] - v[f"{kind}/uniform_accuracy"])
        worst = v["worst_kind"]
        assert worst in ("even", "odd") and v["gain_accuracy"] == v[f"{worst}/gain_accuracy"]
        assert v["gain_accuracy"] == min(v["even/gain_accuracy"], v["odd/gain_accuracy"])
        assert v["gain_nll"] == v[f"{worst}/gain_nll"]
        for kind in ("even", "odd"):  # each pair's score, kept per kind only, averages to the kind's score
            for run in ("val", "uniform"):
                scores = v[f"{kind}/{run}_pair_accuracy"]
                assert len(scores) == len(FACT_DOCS) // 2
                assert sum(scores) / len(scores) == pytest.approx(v[f"{kind}/{run}_accuracy"])
                assert sum(v[f"{kind}/{run}_pair_nll"]) / len(scores) == pytest.approx(v[f"{kind}/{run}_nll"])
        assert not any("_pair_" in key and "/" not in key for key in v)
    # the same uniform run under both φs, and the like run's validation options in their records
    assert records["sharp"]["odd/uniform_nll"] == records["floored"]["odd/uniform_nll"]
    chosen = max(records, key=lambda n: (records[n]["gain_accuracy"], records[n]["gain_nll"]))
    assert Path(report["chosen"]).name == chosen and json.loads((out / "compare.json").read_text()) == report
    assert "weight_floor" in table and (out / "table.md").read_text().strip() == table
    other = next(name for name in records if name != chosen)
    margin = report["intervals"]["vs_chosen"][str(out / other)]
    assert margin["difference"] == pytest.approx(records[other]["gain_accuracy"] - records[chosen]["gain_accuracy"])
    recorded = run_config(out / "floored", "runs")
    assert (recorded.val_epochs, recorded.val_lr, recorded.weight_floor) == (2, 5e-3, 0.5)
    assert recorded.phi_lora_r == 4  # φ's own rank, not the like run's option
    assert len((out / "sharp" / "held_out.jsonl").read_text().splitlines()) == len(FACT_DOCS)

    # a rerun with one more φ (a copy of one, elsewhere) validates only that one, with the recorded uniform runs
    shutil.copytree(setup["sharp"], tmp_path / "copy" / "sharp")
    runs.clear()
    again, _ = validate_phis(ValidatePhiConfig(phi=[*cfg.phi, str(tmp_path / "copy" / "sharp")],
                                               pairs=setup["pairs"], like=setup["like"], out=str(out)))
    assert runs == [False, False]
    copy = next(c for c in again["candidates"] if c["run"].endswith("sharp-2"))
    assert copy["validation"] == records["sharp"]  # deterministic


def test_other_pairs_into_the_same_out_are_refused(setup, tmp_path):
    out = tmp_path / "out"
    validate_phis(ValidatePhiConfig(phi=[setup["sharp"]], pairs=setup["pairs"], like=setup["like"], out=str(out)))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(Path(setup["pairs"]).read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(TaalmError, match=r"uniform.json was measured on other pairs or options"):
        validate_phis(ValidatePhiConfig(phi=[setup["sharp"]], pairs=str(other), like=setup["like"], out=str(out)))
    with pytest.raises(TaalmError, match=r"is not empty and holds no validate-phi run"):
        validate_phis(ValidatePhiConfig(phi=[setup["sharp"]], pairs=setup["pairs"], like=setup["like"],
                                        out=setup["sharp"]))  # a φ directory is no place for the records


def test_cli_errors_are_one_line(setup, tmp_path, capsys):
    code = cli.main(["validate-phi", "--phi", '["no-such-phi"]', "--pairs", setup["pairs"], "--out",
                     str(tmp_path / "o")])
    check_one_line_error(code, capsys.readouterr().err, "no-such-phi")
    assert not (tmp_path / "o").exists()  # nothing written before every φ is found
    code = cli.main(["validate-phi", "--phi", f'["{setup["sharp"]}"]', "--pairs", setup["pairs"], "--like",
                     str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    check_one_line_error(code, capsys.readouterr().err, "--like", "config.yaml")


def test_device_defaults_to_the_like_runs_and_can_be_set(setup, tmp_path):
    gpu_run = tmp_path / "gpu-run"
    gpu_run.mkdir()
    save_config(dataclasses.replace(run_config(Path(setup["like"]), "like"), device="cuda:0", out=str(gpu_run)),
                gpu_run / "config.yaml")
    cfg = ValidatePhiConfig(phi=[setup["sharp"]], pairs=setup["pairs"], like=str(gpu_run), out=str(tmp_path / "o"))
    assert measure_config(cfg).device == "cuda:0"
    here = measure_config(dataclasses.replace(cfg, device="cpu"))
    assert here.device == "cpu" and here.val_lr == 5e-3  # the like run's options, measured on this machine


def test_pairs_in_groups_are_learned_group_by_group_and_recorded_as_measured(setup, tmp_path, monkeypatch):
    sizes = []
    real = validation.learn_and_score
    monkeypatch.setattr("taalm.validation.learn_and_score",
                        lambda *a, **k: sizes.append(len(a[2].docs)) or real(*a, **k))
    out = tmp_path / "grouped"
    report, _ = validate_phis(ValidatePhiConfig(phi=[setup["sharp"]], pairs=setup["pairs"], like=setup["like"],
                                                out=str(out), group=2))
    per_kind = len(FACT_DOCS) // 2
    assert per_kind == 3 and sorted(sizes) == [1] * 4 + [2] * 4  # 3 pairs per kind in groups of about 2: 1 and 2,
    # for the uniform and the φ run of each of the two kinds
    assert run_config(out / "sharp", "runs").val_group == 2
    assert len(report["candidates"][0]["validation"]["even/val_pair_accuracy"]) == per_kind
    # a grouped measurement is another measurement: its OUT refuses the ungrouped one
    with pytest.raises(TaalmError, match="measured on other pairs or options"):
        validate_phis(ValidatePhiConfig(phi=[setup["sharp"]], pairs=setup["pairs"], like=setup["like"], out=str(out)))
