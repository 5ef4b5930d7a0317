"""Run-level plumbing shared by every command: seeding, devices, autocast, RNG snapshots for exact resume."""

from __future__ import annotations

import contextlib
import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taalm.errors import TaalmError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU when dtype is auto or bfloat16; full precision elsewhere."""
    if device.type == "cuda" and dtype in ("auto", "bfloat16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_output_dir(out: str | Path, resume: bool, marker: str) -> Path:
    """Refuse to overwrite a finished or foreign run unless resuming it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TaalmError(f"option --out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise TaalmError(f"option --out: {out} is not empty; pass --resume to continue it or choose another directory")
    if resume and out.is_dir() and any(out.iterdir()) and not (out / marker).exists():
        raise TaalmError(f"option --resume: {out} has no {marker} to resume from")
    return out


CHECKPOINT_STATE, CHECKPOINT_TENSORS = "state.json", "tensors.safetensors"


def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """``value`` as JSON, its tensors moved to ``tensors`` (named by their path) and tagged: tuples, numpy arrays
    and dicts with non-string keys (an optimizer's parameter indices) are tagged too, so decoding is exact."""
    if isinstance(value, torch.Tensor):
        tensors[where] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": where}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors, f"{where}.key{i}"), _encode(v, tensors, f"{where}.{i}")]
                              for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store {type(value).__name__} at {where}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """``state`` (tensors, optimizer state, RNG states, metrics) as safetensors + JSON, replaced atomically: no
    pickle, so loading a checkpoint runs no code."""
    from safetensors.torch import save_file

    from taalm.io import atomic_dir

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(state, tensors, "state")
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / CHECKPOINT_TENSORS))
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(encoded), encoding="utf-8")


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The state ``save_checkpoint`` wrote, or None. A checkpoint of an older taalm (``state.pt``) is read with
    ``weights_only=True``, which allows tensors and plain containers but no other objects."""
    if (directory / CHECKPOINT_STATE).is_file():
        from safetensors.torch import load_file

        tensors = load_file(str(directory / CHECKPOINT_TENSORS))
        return _decode(json.loads((directory / CHECKPOINT_STATE).read_text(encoding="utf-8")), tensors)
    legacy = directory / "state.pt"
    if not legacy.is_file():
        return None
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            return torch.load(legacy, weights_only=True)
    except pickle.UnpicklingError as e:  # it names the object it refused
        raise TaalmError(f"option --resume: {legacy} cannot be read safely ({str(e).splitlines()[0]}); start the run "
                         "again without --resume") from None


# What a pre-safetensors checkpoint holds besides tensors: numpy's RNG state (an array of uint32 and its dtype).
_LEGACY_NUMPY = [(getattr(np, "_core", None) or np.core).multiarray._reconstruct, np.ndarray, np.dtype,
                 type(np.dtype(np.uint32))]
