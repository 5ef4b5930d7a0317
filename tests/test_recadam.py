"""RecAdam: the annealing schedule, exact agreement with AdamW when λ ≡ 1, the recall effect, exact resume."""

from __future__ import annotations

import io

import pytest
import torch

from taalm.errors import TaalmError
from taalm.recadam import RecAdam, anneal_lambda


def _quadratic_run(opt_factory, steps: int, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minimise ||θ − target||² from ``start`` and return the final θ."""
    theta = torch.nn.Parameter(start.clone())
    opt = opt_factory([theta])
    for _ in range(steps):
        opt.zero_grad()
        ((theta - target) ** 2).sum().backward()
        opt.step()
    return theta.detach()


def test_anneal_lambda_values():
    assert anneal_lambda("sigmoid", 250, k=0.5, t0=250) == 0.5
    assert anneal_lambda("sigmoid", 250, k=0.5, t0=250, w=0.8) == 0.4
    assert anneal_lambda("sigmoid", 1, k=0.5, t0=250) < 1e-50  # the TAALM setting starts at ~pure recall
    assert anneal_lambda("sigmoid", 10**6, k=50.0, t0=0) == 1.0
    assert anneal_lambda("sigmoid", 1, k=50.0, t0=10**6) == 0.0  # no OverflowError far below t0
    assert anneal_lambda("linear", 125, k=0.5, t0=250) == 0.5
    assert anneal_lambda("linear", 900, k=0.5, t0=250) == 1.0
    assert anneal_lambda("constant", 3, k=0.5, t0=250, w=0.7) == 0.7
    opt = RecAdam([torch.nn.Parameter(torch.zeros(2))])
    assert opt.anneal_lambda(250) == 0.5


def test_bad_options_name_the_option():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(TaalmError, match="anneal_fun.*'cosine'"):
        RecAdam(params, anneal_fun="cosine")
    with pytest.raises(TaalmError, match="anneal_fun"):
        anneal_lambda("cosine", 1, 0.5, 250)
    with pytest.raises(TaalmError, match="^lr:"):
        RecAdam(params, lr=-1.0)
    with pytest.raises(TaalmError, match="^anneal_t0:"):
        RecAdam(params, anneal_fun="linear", anneal_t0=0)
    with pytest.raises(TaalmError, match="^pretrain_cof:"):
        RecAdam([{"params": params, "pretrain_cof": -1.0}])


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("options", [{"anneal_fun": "constant"}, {"anneal_w": 0.0}])
def test_no_recall_is_adamw_bit_for_bit(weight_decay, options):
    """λ ≡ 1 ("constant", w = 1) or an exempt group (w = 0) leaves exactly torch's AdamW."""
    g = torch.Generator().manual_seed(0)
    start, target = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    kwargs = {"lr": 0.03, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": weight_decay}
    ours = _quadratic_run(lambda p: RecAdam(p, **kwargs, **options), 12, start, target)
    ref = _quadratic_run(lambda p: torch.optim.AdamW(p, **kwargs, foreach=False), 12, start, target)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, start)


def test_two_steps_by_hand():
    """f(θ) = (θ − 3)², θ* = θ0 = 1, linear anneal with t0 = 4 (λ1 = 0.25, λ2 = 0.5), γ = 10."""
    lr, b1, b2, eps, gamma = 0.1, 0.9, 0.999, 1e-8, 10.0
    theta = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = RecAdam([theta], lr=lr, betas=(b1, b2), eps=eps, anneal_fun="linear", anneal_t0=4, pretrain_cof=gamma)
    seen = []
    for _ in range(2):
        opt.zero_grad()
        ((theta - 3.0) ** 2).sum().backward()
        opt.step()
        seen.append(theta.item())

    th, m, v = 1.0, 0.0, 0.0
    expected = []
    for t, lam in [(1, 0.25), (2, 0.5)]:
        grad = 2 * (th - 3.0)
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
        adam_dir = (m / (1 - b1**t)) / ((v / (1 - b2**t)) ** 0.5 + eps)
        th = th - lr * lam * adam_dir - lr * (1 - lam) * gamma * (th - 1.0)
        expected.append(th)
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    assert seen[0] == pytest.approx(1.025, abs=1e-8)


def test_recall_keeps_parameters_nearer_their_start_than_adamw():
    g = torch.Generator().manual_seed(1)
    start = torch.randn(8, generator=g)
    target = start + 5.0  # the task optimum is far from θ*
    kwargs = {"lr": 0.05, "weight_decay": 0.0}
    rec = _quadratic_run(
        lambda p: RecAdam(p, **kwargs, anneal_fun="sigmoid", anneal_k=0.5, anneal_t0=30, pretrain_cof=10.0),
        60,
        start,
        target,
    )
    adamw = _quadratic_run(lambda p: torch.optim.AdamW(p, **kwargs), 60, start, target)
    d_rec, d_adamw = (rec - start).norm().item(), (adamw - start).norm().item()
    assert 0.5 < d_rec < 0.75 * d_adamw  # it learns, but later and less


def _steps(opt: torch.optim.Optimizer, theta: torch.Tensor, target: torch.Tensor, n: int) -> None:
    for _ in range(n):
        opt.zero_grad()
        ((theta - target) ** 2).sum().backward()
        opt.step()


def test_state_dict_resume_is_exact():
    g = torch.Generator().manual_seed(2)
    start, target = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) + 2.0
    options = {"lr": 0.05, "weight_decay": 0.01, "anneal_k": 0.5, "anneal_t0": 5, "pretrain_cof": 10.0}

    straight = torch.nn.Parameter(start.clone())
    _steps(RecAdam([straight], **options), straight, target, 10)

    first = torch.nn.Parameter(start.clone())
    opt = RecAdam([first], **options)
    _steps(opt, first, target, 5)
    buf = io.BytesIO()
    torch.save({"theta": first.detach().clone(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    resumed = torch.nn.Parameter(saved["theta"].clone())
    fresh = RecAdam([resumed], **options)  # its own θ* would be the mid-run values ...
    unloaded = torch.nn.Parameter(saved["theta"].clone())
    _steps(RecAdam([unloaded], **options), unloaded, target, 5)
    fresh.load_state_dict(saved["optimizer"])  # ... until the saved θ* and step count replace them
    _steps(fresh, resumed, target, 5)

    assert torch.equal(resumed, straight)
    assert not torch.equal(unloaded, straight)  # the check above is sensitive to the restored state
    assert fresh.state[resumed]["step"] == 10
    assert torch.equal(fresh.state[resumed]["pretrained"], start)


def test_the_pull_overshoots_past_lr_times_coefficient_two_and_coefficient_minus_one_keeps_the_papers_product(caplog):
    """The recall step θ ← θ − lr·γ·(θ − θ*) multiplies the drift by (1 − lr·γ): it grows once lr·γ > 2."""
    from taalm.ckl import _make_optimizer
    from taalm.config import LearnConfig
    from taalm.methods import parse_method

    def drift_after(lr: float, coefficient: float) -> float:
        theta = torch.nn.Parameter(torch.ones(3))
        opt = RecAdam([theta], lr=lr, pretrain_cof=coefficient, anneal_t0=10**6)  # λ ≈ 0: pure recall
        with torch.no_grad():
            theta.add_(0.1)  # drift from θ*
        for _ in range(5):
            opt.zero_grad()
            (theta * 0).sum().backward()
            opt.step()
        return float((theta.detach() - 1).abs().max())

    assert drift_after(1e-3, 5000) > 0.1 * 4.0**5 * 0.99  # |1 − 5| = 4 per step: diverges
    assert drift_after(1e-3, 500) < 0.1 * 0.5**5 * 1.01  # lr·γ = 0.5: halves per step

    params = [torch.nn.Parameter(torch.zeros(2))]
    base = {"model": "m", "docs": "d.jsonl", "out": "o", "method": "recadam"}
    opt = _make_optimizer(LearnConfig(**base, lr=3e-3, recadam_coefficient=-1.0), parse_method("recadam"), params)
    assert opt.param_groups[0]["pretrain_cof"] * 3e-3 == pytest.approx(0.5)
    assert "overshoots" not in caplog.text
    _make_optimizer(LearnConfig(**base, lr=1e-3, recadam_coefficient=5000.0), parse_method("recadam"), params)
    assert "lr × coefficient = 5 ≥ 2" in caplog.text
