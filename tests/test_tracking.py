"""--log: Accelerate's trackers through ``Processes``; nothing without one, a one-line error without its package."""

import importlib.util
import json

import pytest

from taalm import distributed
from taalm.distributed import Processes
from taalm.errors import TaalmError


def test_no_tracking_by_default(tmp_path):
    procs = Processes("cpu", "none", tmp_path)
    procs.start_tracking({"lr": 0.1})
    procs.log({"loss": 1.0}, step=1)
    procs.end_tracking()
    assert list(tmp_path.iterdir()) == []  # nothing written, no account needed


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_missing_tracking_package_is_a_user_error(tmp_path, monkeypatch, kind):
    real = importlib.util.find_spec
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None if name == kind else real(name))
    with pytest.raises(TaalmError, match=f"option --log: {kind} asked for but the package is not installed"):
        Processes("cpu", kind, tmp_path)


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in directory.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_events_hold_the_logged_values(tmp_path):
    pytest.importorskip("tensorboard")
    procs = Processes("cpu", "tensorboard", tmp_path)
    procs.start_tracking({"lr": 0.1, "probes": ["a=b.jsonl"], "phi": None})  # lists and None: only W&B stores them
    procs.log({"train_loss": 1.5, "to_learn/accuracy": 0.25}, step=1)
    procs.log({"train_loss": 0.75, "to_learn/accuracy": 0.5}, step=2)
    procs.end_tracking()
    scalars = _scalars(tmp_path / "taalm")
    assert scalars == {"train_loss": [(1, 1.5), (2, 0.75)], "to_learn/accuracy": [(1, 0.25), (2, 0.5)]}


@pytest.mark.usefixtures("one_torch_thread")
def test_learn_logs_each_epoch_to_tensorboard(tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    from taalm.ckl import learn
    from taalm.config import LearnConfig

    docs, probes = tmp_path / "docs.jsonl", tmp_path / "probes.jsonl"
    docs.write_text(json.dumps({"text": "Santiago is the capital of Chile ."}) + "\n")
    probes.write_text(json.dumps({"task": "Santiago is the capital of Chile", "answer": "Chile"}) + "\n")
    result = learn(LearnConfig(model=tiny_model, docs=str(docs), out=str(tmp_path / "run"), method="finetune",
                               epochs=2, lora_r=4, batch_size=1, seed=0, device="cpu", log="tensorboard",
                               probes=[f"to_learn={probes}"]))
    scalars = _scalars(tmp_path / "run")
    trained = [m for m in result.metrics if m["train_loss"] is not None]
    assert scalars["train_loss"] == [(m["epoch"], pytest.approx(m["train_loss"])) for m in trained]
    assert scalars["to_learn/accuracy"] == [(m["epoch"], pytest.approx(m["accuracy"])) for m in trained]
