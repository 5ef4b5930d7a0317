"""A benchmark reuses a finished learning run only for the same inputs: documents, probes and φ by content (not by
path), settings a method does not read left out, older runs without a record reused as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FACT_ANSWERS, FACT_DOCS
from taalm import ckl, fingerprint
from taalm.bench import runner
from taalm.config import LearnConfig
from taalm.errors import TaalmError
from taalm.weighting import TrainAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def inputs(tmp_path, tiny_model) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir()
    phi = tmp_path / "phi"
    torch.manual_seed(0)
    TrainAttention.create(tiny_model, r=4).save(phi)
    return {"docs": _jsonl(data / "docs.jsonl", [{"text": t} for t in FACT_DOCS[:4]]),
            "probes": _jsonl(data / "probes.jsonl", [{"task": t.split(" .")[0], "answer": a}
                                                     for t, a in zip(FACT_DOCS[:4], FACT_ANSWERS)]),
            "review": _jsonl(data / "review.jsonl", [{"text": t} for t in FACT_DOCS[4:]]),
            "phi": str(phi)}


def _config(tiny_model: str, inputs: dict[str, str], out: Path, method: str = "taalm", **values) -> LearnConfig:
    values = {"epochs": 1, "lr": 1e-3, "lora_r": 4, "batch_size": 2, "micro_batch": 2, "eval_batch": 4, **values}
    return LearnConfig(model=tiny_model, docs=inputs["docs"], probes=[f"to_learn={inputs['probes']}"], out=str(out),
                       method=method, phi=inputs["phi"], review_docs=inputs["review"], **values)


def _moved(inputs: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The same files and φ under another directory."""
    shutil.copytree(Path(inputs["docs"]).parent, tmp_path / "elsewhere")
    shutil.copytree(inputs["phi"], tmp_path / "elsewhere" / "phi")
    return {k: str(tmp_path / "elsewhere" / Path(v).name) for k, v in inputs.items()}


def _other_floor(phi: str, floor: float, out: Path) -> str:
    shutil.copytree(phi, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "weight_floor": floor}))
    (out / "README.md").write_text("another card")
    return str(out)


def test_inputs_are_contents_not_paths_and_only_what_the_method_reads(tiny_model, inputs, tmp_path):
    taalm = fingerprint.learn_inputs(_config(tiny_model, inputs, tmp_path / "a"))
    assert taalm == fingerprint.learn_inputs(_config(tiny_model, _moved(inputs, tmp_path), tmp_path / "b",
                                                     device="cpu", micro_batch=1, eval_batch=2))
    assert "review_docs" not in taalm and "out" not in taalm
    other_phi = _other_floor(inputs["phi"], 0.05, tmp_path / "phi-floor")
    assert fingerprint.learn_inputs(_config(tiny_model, {**inputs, "phi": other_phi}, tmp_path / "a"))["phi"] != \
        taalm["phi"]
    finetune = fingerprint.learn_inputs(_config(tiny_model, inputs, tmp_path / "a", method="finetune"))
    assert "phi" not in finetune and finetune == fingerprint.learn_inputs(
        _config(tiny_model, {**inputs, "phi": other_phi}, tmp_path / "a", method="finetune"))
    review = fingerprint.learn_inputs(_config(tiny_model, inputs, tmp_path / "a", method="mixreview"))
    assert review["review_docs"] == fingerprint.file_digest(inputs["review"])


def test_a_phi_card_rewritten_is_the_same_phi(inputs, tmp_path):
    same = tmp_path / "same"
    shutil.copytree(inputs["phi"], same)
    (same / "README.md").write_text("a card written again")
    assert fingerprint.phi_digest(str(same)) == fingerprint.phi_digest(inputs["phi"])


def test_a_finished_run_is_reused_for_its_inputs_and_refused_for_another_phi(tiny_model, inputs, tmp_path,
                                                                             monkeypatch):
    first = ckl.learn(_config(tiny_model, inputs, tmp_path / "run"))
    done = json.loads((tmp_path / "run" / "DONE").read_text())
    assert done["inputs"] == fingerprint.learn_inputs(_config(tiny_model, inputs, tmp_path / "run"))
    # an OUT copied elsewhere, its inputs moved too: reused without learning
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    monkeypatch.setattr(ckl, "learn", lambda cfg: pytest.fail("a finished run with the same inputs is reused"))
    metrics, _ = runner.learn_run(_config(tiny_model, _moved(inputs, tmp_path), tmp_path / "copy"))
    assert metrics == first.metrics
    other_phi = _other_floor(inputs["phi"], 0.05, tmp_path / "phi-floor")
    with pytest.raises(TaalmError, match=r"copy: finished with other phi than this run's"):
        runner.learn_run(_config(tiny_model, {**inputs, "phi": other_phi}, tmp_path / "copy"))
    with pytest.raises(TaalmError, match=r"other epochs, lr than"):
        runner.learn_run(_config(tiny_model, inputs, tmp_path / "copy", epochs=2, lr=3e-3))


def test_a_run_finished_before_inputs_were_recorded_is_reused(tiny_model, inputs, tmp_path, monkeypatch):
    out = tmp_path / "old"
    out.mkdir()
    (out / "DONE").write_text(json.dumps({"epochs": 1}) + "\n")
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "probe": "to_learn", "seconds": 2.0}) + "\n")
    monkeypatch.setattr(ckl, "learn", lambda cfg: pytest.fail("an older finished run is reused"))
    assert runner.learn_run(_config(tiny_model, inputs, out)) == ([{"epoch": 1, "probe": "to_learn", "seconds": 2.0}],
                                                                  2.0)


def test_a_setting_added_since_a_run_finished_is_not_a_change(tiny_model, inputs, tmp_path):
    cfg = _config(tiny_model, inputs, tmp_path / "run")
    recorded = fingerprint.learn_inputs(cfg)
    recorded.pop("seed")
    recorded["a_setting_removed_since"] = 1
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "DONE").write_text(json.dumps({"epochs": 1, "inputs": recorded}) + "\n")
    fingerprint.check_reusable(cfg)


def test_a_meta_trained_phi_is_reused_for_its_inputs_and_refused_for_others(tiny_model, tmp_path):
    from taalm import meta_train
    from taalm.config import MetaTrainConfig

    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"document": t, "task": t.split(" .")[0], "answer": a}
                                              for t, a in zip(FACT_DOCS, FACT_ANSWERS)])
    values = {"theta": tiny_model, "pairs": pairs, "out": str(tmp_path / "phi"), "updates": 1, "meta_batch": 2,
              "lora_r": 4, "lora_alpha": 8, "max_length": 64, "device": "cpu", "held_out": 0}
    cfg = MetaTrainConfig(**values)
    meta_train.meta_train(cfg)
    assert json.loads((tmp_path / "phi" / "DONE").read_text())["inputs"] == fingerprint.meta_train_inputs(cfg)
    shutil.copy(pairs, tmp_path / "moved.jsonl")
    fingerprint.check_reusable(MetaTrainConfig(**{**values, "pairs": str(tmp_path / "moved.jsonl"), "pair_batch": 2}))
    with pytest.raises(TaalmError, match=r"phi: finished with other outer_lr, weight_floor than"):
        fingerprint.check_reusable(MetaTrainConfig(**{**values, "outer_lr": 1e-3, "weight_floor": 0.1}))


def test_a_deleted_input_of_a_finished_run_is_a_one_line_error(tiny_model, inputs, tmp_path):
    cfg = _config(tiny_model, inputs, tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "DONE").write_text(json.dumps({"inputs": fingerprint.learn_inputs(cfg)}) + "\n")
    Path(inputs["docs"]).unlink()
    with pytest.raises(TaalmError, match=r"docs\.jsonl: no such file") as error:
        fingerprint.check_reusable(cfg)
    assert "\n" not in str(error.value)


def test_every_finished_part_with_another_phi_is_refused_before_anything_is_learned(tiny_model, inputs, tmp_path):
    """A benchmark checks φ across all of its seeds' finished parts up front: a stale part of the last seed stops
    the run before the first seed learns anything."""
    from taalm.bench.config import LamaCklConfig
    from test_bench_runner import Counting

    digest = fingerprint.phi_digest(inputs["phi"])
    out = tmp_path / "bench"
    for seed, phi in ((0, digest), (1, "0123456789abcdef")):
        part = out / f"seed-{seed}" / "methods" / "taalm"
        part.mkdir(parents=True)
        (part / "DONE").write_text(json.dumps({"inputs": {"phi": phi, "lr": 1e-3}}) + "\n")
    finetune = out / "seed-1" / "methods" / "finetune"
    finetune.mkdir()
    (finetune / "DONE").write_text(json.dumps({"inputs": {"lr": 1e-3}}) + "\n")  # reads no φ: never stale
    bench = Counting()
    cfg = LamaCklConfig(out=str(out), methods="finetune,taalm", seeds="0,1", phi=inputs["phi"], device="cpu")
    with pytest.raises(TaalmError, match=r"seed-1/methods/taalm: finished with other phi than this run's"):
        runner.run(bench, cfg)
    assert not any(call[0] == "run_method" for call in bench.calls)
    fingerprint.check_phi_of_finished_runs([out / "seed-0", finetune], digest)  # the same φ: nothing refused
    (out / "seed-0" / "methods" / "taalm" / "DONE").write_text(json.dumps({"inputs": {"phi": "fedcba9876543210"}}))
    with pytest.raises(TaalmError, match=r"seed-0/methods/taalm \(and 1 more\)"):
        fingerprint.check_phi_of_finished_runs([out / "seed-0", out / "seed-1"], digest)
