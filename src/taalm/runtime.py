"""Run-level plumbing shared by every command: seeding, devices, autocast, RNG snapshots for exact resume."""

from __future__ import annotations

import contextlib
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


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    from taalm.io import atomic_dir

    with atomic_dir(directory) as tmp:
        torch.save(state, tmp / "state.pt")


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    path = directory / "state.pt"
    return torch.load(path, weights_only=False) if path.is_file() else None
