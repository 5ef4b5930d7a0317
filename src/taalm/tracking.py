"""Optional experiment tracking: TensorBoard or Weights & Biases, only when asked for and installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from taalm.errors import TaalmError


class Tracker:
    """Logs scalars; the default does nothing."""

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class _TensorBoard(Tracker):
    def __init__(self, directory: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class _WandB(Tracker):
    def __init__(self, directory: Path, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project="taalm", dir=str(directory), config=config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(kind: str, directory: Path, config: dict[str, Any]) -> Tracker:
    if kind == "none":
        return Tracker()
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}[kind]
    if importlib.util.find_spec(package) is None:
        raise TaalmError(f"option --log: {kind} asked for but the package is not installed (pip install {package})")
    return _TensorBoard(directory / "tensorboard") if kind == "tensorboard" else _WandB(directory, config)
