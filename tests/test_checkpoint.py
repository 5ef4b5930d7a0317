"""Run checkpoints as safetensors + JSON: every kind of state a run keeps comes back exactly, without unpickling.

python -m pytest -q tests/test_checkpoint.py
"""

from __future__ import annotations

import io
import pickle
import random

import numpy as np
import pytest
import torch

from taalm import runtime
from taalm.errors import TaalmError


def run_state() -> dict:
    """What `learn` and `meta-train` checkpoint: tensors, an optimizer's state (integer keys, tuples, a 0-d step),
    per-process RNG states (python's tuple, numpy's array, torch's bytes), metrics with per-probe lists."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    (params[0].sum() + params[1].pow(2).sum()).backward()
    optimizer.step()
    random.seed(5)
    np.random.seed(6)
    return {"trainable": {"lora_A": params[0].detach().clone(), "lora_B": params[1].detach().clone()},
            "optimizer": optimizer.state_dict(), "rng": [runtime.rng_state()],
            "metrics": [{"epoch": 0, "probe": "to_learn", "accuracy": 0.25, "train_loss": None,
                         "per_probe": [0.0, 1.0, 0.5], "nll": float("inf")}],
            "epoch": 1, "step": 0, "losses": [1.5, 0.1 + 0.2], "uniform": None}


def assert_same(a, b, where="state") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b, where


def test_checkpoint_round_trip_is_exact_and_never_unpickles(tmp_path, monkeypatch):
    state = run_state()
    runtime.save_checkpoint(tmp_path / "checkpoint", state)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["state.json", "tensors.safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint must load without pickle")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = runtime.load_checkpoint(tmp_path / "checkpoint")
    assert_same(state, loaded)
    assert isinstance(next(iter(loaded["optimizer"]["state"])), int)  # parameter indices stay integers


def test_loaded_rng_and_optimizer_continue_exactly(tmp_path):
    state = run_state()
    runtime.save_checkpoint(tmp_path / "checkpoint", state)
    loaded = runtime.load_checkpoint(tmp_path / "checkpoint")

    def continue_from(s):
        runtime.set_rng_state(s["rng"][0])
        params = [torch.nn.Parameter(s["trainable"]["lora_A"].clone()), torch.nn.Parameter(s["trainable"]["lora_B"].clone())]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        optimizer.load_state_dict(s["optimizer"])
        params[0].sum().backward()
        params[1].grad = torch.zeros(4)
        optimizer.step()
        return params[0].detach(), random.random(), float(np.random.rand()), torch.rand(2)

    first, second = continue_from(run_state()), continue_from(loaded)
    assert torch.equal(first[0], second[0]) and first[1:3] == second[1:3] and torch.equal(first[3], second[3])


def test_an_older_pickled_checkpoint_loads_with_weights_only(tmp_path):
    state = run_state()
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / "state.pt")  # how checkpoints were written before
    assert_same(state, runtime.load_checkpoint(tmp_path / "old"))
    assert runtime.load_checkpoint(tmp_path / "none") is None

    class Payload:  # any other object is refused, not run
        def __reduce__(self):
            return (print, ("unpickled",))

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.pt").write_bytes(buffer.getvalue())
    with pytest.raises(TaalmError, match=r"^option --resume: .*state.pt cannot be read safely"):
        runtime.load_checkpoint(tmp_path / "bad")


def test_an_unstorable_value_is_a_programming_error(tmp_path):
    with pytest.raises(TypeError, match="cannot store object at state.metrics.0"):
        runtime.save_checkpoint(tmp_path / "checkpoint", {"metrics": [object()]})
    assert not (tmp_path / "checkpoint").exists()
