"""RecAdam (Chen et al. 2020, "Recall and Learn"): Adam(W) that anneals from "stay near θ*" to "fit the new task".

The objective at step t is

    L(θ, t) = λ(t) · L_task(θ) + (w − λ(t)) · (γ/2) · Σ_i (θ_i − θ*_i)²

with θ* the parameters when the optimizer was built (the pretrained values; for LoRA parameters, their
initialisation), γ = ``pretrain_cof`` and the annealing coefficient

    λ(t) = w · sigmoid(k · (t − t0))     "sigmoid" (the TAALM runs: k = 0.5, t0 = 250, w = 1, γ = 5000)
    λ(t) = w · min(1, t / t0)            "linear"
    λ(t) = w                             "constant" (w = 1: no penalty, plain Adam(W))

As in the reference implementation the two terms are optimised differently: the task term takes the Adam step
scaled by λ(t) (scaling the gradient instead would be cancelled by Adam's normalisation), the recall term takes a
plain gradient step of size lr · (w − λ(t)) · γ · (θ − θ*). Both are evaluated at the current θ_t, and weight decay
is decoupled as in ``torch.optim.AdamW``, so with λ ≡ 1 an update is bit-for-bit that of AdamW (foreach=False).
A parameter group with ``anneal_w == 0`` is trained with plain AdamW (the reference code's way to exempt newly added
parameters).

Note lr · γ must stay below 2 or the recall step overshoots θ* (the TAALM setting gives 1e-4 · 5000 = 0.5).
θ* and the step count live in the optimizer state, so ``state_dict()`` / ``load_state_dict()`` resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from taalm.errors import TaalmError

ANNEAL_FUNCTIONS = ("sigmoid", "linear", "constant")


def anneal_lambda(fun: str, step: int, k: float, t0: float, w: float = 1.0) -> float:
    """λ(t): the weight of the task loss at (1-based) optimizer step ``step``."""
    if fun == "sigmoid":
        z = k * (step - t0)
        # numerically stable logistic: exp never overflows
        s = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        return w * s
    if fun == "linear":
        return w * min(1.0, step / t0)
    if fun == "constant":
        return w
    raise _unknown_anneal_fun(fun)


def _unknown_anneal_fun(fun: object) -> TaalmError:
    return TaalmError(f"anneal_fun: unknown annealing function {fun!r} (choose from {', '.join(ANNEAL_FUNCTIONS)})")


def _check_options(group: dict[str, Any]) -> None:
    """Raise a TaalmError naming the first invalid option of a parameter group."""
    if group["anneal_fun"] not in ANNEAL_FUNCTIONS:
        raise _unknown_anneal_fun(group["anneal_fun"])
    beta1, beta2 = group["betas"]
    checks = [
        ("lr", group["lr"] >= 0.0, "must be >= 0"),
        ("betas", 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0, "both must be in [0, 1)"),
        ("eps", group["eps"] >= 0.0, "must be >= 0"),
        ("weight_decay", group["weight_decay"] >= 0.0, "must be >= 0"),
        ("anneal_w", group["anneal_w"] >= 0.0, "must be >= 0"),
        ("pretrain_cof", group["pretrain_cof"] >= 0.0, "must be >= 0"),
        ("anneal_t0", group["anneal_fun"] != "linear" or group["anneal_t0"] > 0, "must be > 0 for 'linear'"),
    ]
    for name, ok, rule in checks:
        if not ok:
            value = group[name]
            raise TaalmError(f"{name}: {rule}, got {value!r}")


class RecAdam(torch.optim.Optimizer):
    """Adam(W) with an annealed quadratic pull towards the parameters' values at construction (θ*)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        anneal_fun: str = "sigmoid",
        anneal_k: float = 0.5,
        anneal_t0: float = 250,
        anneal_w: float = 1.0,
        pretrain_cof: float = 5000.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "anneal_fun": anneal_fun,
            "anneal_k": anneal_k,
            "anneal_t0": anneal_t0,
            "anneal_w": anneal_w,
            "pretrain_cof": pretrain_cof,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (options validated) and record θ* = a detached copy of each of its parameters now."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_options(group)
        for p in group["params"]:
            self.state[p]["pretrained"] = p.detach().clone()

    def anneal_lambda(self, step: int, group: dict[str, Any] | None = None) -> float:
        """λ(step) under the options of ``group`` (default: the first parameter group)."""
        g = self.param_groups[0] if group is None else group
        return anneal_lambda(g["anneal_fun"], step, g["anneal_k"], g["anneal_t0"], g["anneal_w"])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        if grad.is_sparse:
            raise RuntimeError("RecAdam does not support sparse gradients")
        state = self.state[p]
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t = state["step"]
        lr, (beta1, beta2), w = group["lr"], group["betas"], group["anneal_w"]

        # λ(t) scales the task step; (w − λ(t))·γ is the stiffness of the pull towards θ*
        lam = self.anneal_lambda(t, group) if w > 0.0 else 1.0
        recall = (w - lam) * group["pretrain_cof"] if w > 0.0 else 0.0
        drift = p - state["pretrained"] if recall != 0.0 else None  # θ_t − θ*, before θ moves

        if group["weight_decay"] != 0.0:
            p.mul_(1 - lr * group["weight_decay"])

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**t)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-step_size * lam)

        if drift is not None:
            p.add_(drift, alpha=-lr * recall)
