import importlib.util

import pytest

from taalm import tracking
from taalm.errors import TaalmError


def test_no_tracking_by_default(tmp_path):
    tracker = tracking.make_tracker("none", tmp_path, {})
    tracker.log({"loss": 1.0}, 1)
    tracker.close()
    assert list(tmp_path.iterdir()) == []  # nothing written, no account needed


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_missing_tracking_package_is_a_user_error(tmp_path, monkeypatch, kind):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == kind else real(name))
    with pytest.raises(TaalmError, match=f"option --log: {kind} asked for but the package is not installed"):
        tracking.make_tracker(kind, tmp_path, {})
