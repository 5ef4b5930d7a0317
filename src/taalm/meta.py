"""Bilevel meta-training of Train-Attention φ (TAALM, Seo et al. 2024, §3).

For a pair (D, T_D) and θ's LoRA parameters p:

    w      = φ(D)                                             token weights, [batch, seq-1]
    p      ← AdamW(p, ∇_p L_w(p; D))   × dummy_steps         non-differentiable warm-up (fills AdamW's moments)
    p'     = AdamW(p, ∇_p L_w(p; D))                          one differentiable step: p' is a function of w
    L_out  = objective(θ_{p'}, T_D)                           NLL of T_D's answer tokens (or a loss change)
    φ      ← AdamW(φ, mean over the meta-batch of ∇_φ L_out)

with L_w(p; D) = mean_batch Σ_t nll_t·w_t / Σ_t w_t. The second-order path (∇_φ through ∇_p) is built with
``torch.func.functional_call`` and a hand-written AdamW step on stock PyTorch; θ restarts from its initial LoRA
parameters for every inner problem, as in the official implementation.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call

from taalm import losses
from taalm.data import Encoded, Pair, encode, pad_batch
from taalm.weighting import weight_statistics

log = logging.getLogger("taalm")
Params = dict[str, torch.Tensor]


@dataclass
class InnerProblem:
    """Padded tensors for one inner problem: the documents θ learns, their tasks, and optional unrelated tasks."""

    document: dict[str, torch.Tensor]
    task: dict[str, torch.Tensor]
    unrelated: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device) -> InnerProblem:
        move = lambda batch: None if batch is None else {k: v.to(device) for k, v in batch.items()}
        return InnerProblem(move(self.document), move(self.task), move(self.unrelated))


@dataclass
class EncodedPair:
    document: Encoded
    task: Encoded
    source: str = ""  # file:line, for messages


def encode_pair(tokenizer, pair: Pair, max_length: int) -> EncodedPair:
    document = encode(tokenizer, pair.document, max_length, where=pair.source)
    task = encode(tokenizer, pair.task, max_length, answer=pair.answer, where=pair.source)
    return EncodedPair(document, task, pair.source)


def make_problem(items: list[EncodedPair], pad_id: int, unrelated: list[EncodedPair] | None = None) -> InnerProblem:
    return InnerProblem(pad_batch([p.document for p in items], pad_id), pad_batch([p.task for p in items], pad_id),
                        pad_batch([p.task for p in unrelated], pad_id) if unrelated else None)


@dataclass
class AdamWState:
    """AdamW's moments as plain tensors, so an update can stay inside the autograd graph."""

    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)
    step: int = 0


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    # sqrt has an infinite derivative at 0; entries with v == 0 (e.g. LoRA A while B == 0) would turn the double
    # backward into NaN. Same forward value, zero gradient there.
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def adamw_step(params: Params, grads: Params, state: AdamWState, lr: float, weight_decay: float = 0.01,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, differentiable: bool = False) -> Params:
    """One AdamW update (Loshchilov & Hutter), identical to ``torch.optim.AdamW``'s; keeps the graph if asked."""
    beta1, beta2 = betas
    state.step += 1
    bias1, bias2 = 1 - beta1**state.step, 1 - beta2**state.step
    new = {}
    for name, p in params.items():
        g = grads[name]
        if not differentiable:
            p, g = p.detach(), g.detach()
        m = beta1 * state.m.get(name, torch.zeros_like(p)) + (1 - beta1) * g
        v = beta2 * state.v.get(name, torch.zeros_like(p)) + (1 - beta2) * g * g
        state.m[name], state.v[name] = m, v
        update = (m / bias1) / (_safe_sqrt(v / bias2) + eps)
        new[name] = p * (1 - lr * weight_decay) - lr * update
        if not differentiable:
            new[name] = new[name].requires_grad_()
    return new


def _nll(model: torch.nn.Module, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = functional_call(model, params, args=(), kwargs={"input_ids": batch["input_ids"],
                                                          "attention_mask": batch["attention_mask"]})
    return losses.token_nll(out.logits, batch["input_ids"])


def outer_objective(name: str, nll_after: torch.Tensor, nll_before: torch.Tensor | None,
                    label_mask: torch.Tensor) -> torch.Tensor:
    """The outer loss on T_D's answer tokens: ``obj`` = NLL after the step; ``change2``/``change3`` = signed
    square / cube of the per-token NLL change (before → after), as in the official code."""
    if name == "obj":
        return losses.masked_mean(nll_after, label_mask).mean()
    change = nll_after - nll_before
    power = change.pow(2) * torch.sign(change) if name == "change2" else change.pow(3)
    return losses.masked_mean(power, label_mask).mean()


@dataclass
class MetaStepResult:
    objective: float
    outer_loss: float
    restrict: float
    mean_weight: float
    top3_share: float  # share of each document's weight on its 3 largest tokens
    effective_fraction: float  # exp(entropy of w / Σw) / n: 1 when uniform


def warm_up(theta: torch.nn.Module, start: Params, doc: dict[str, torch.Tensor], weights: torch.Tensor,
            dummy_steps: int, lr: float, weight_decay: float) -> tuple[Params, AdamWState]:
    """The non-differentiable inner steps: θ's parameters and AdamW moments the differentiable step starts from."""
    params = {n: p.detach().clone().requires_grad_() for n, p in start.items()}
    state = AdamWState()
    theta.train()
    for _ in range(dummy_steps):
        inner_loss = losses.weighted_loss(_nll(theta, params, doc), weights.detach(), doc["loss_mask"])
        grads = torch.autograd.grad(inner_loss, list(params.values()))
        params = adamw_step(params, dict(zip(params, grads)), state, lr, weight_decay)
    return params, state


def differentiable_step(theta: torch.nn.Module, params: Params, state: AdamWState, doc: dict[str, torch.Tensor],
                        weights: torch.Tensor, lr: float, weight_decay: float) -> Params:
    """p' = AdamW(p, ∇_p L_w(p; D)) with the graph kept, so p' is differentiable with respect to the weights."""
    state = AdamWState(dict(state.m), dict(state.v), state.step)
    theta.train()
    inner_loss = losses.weighted_loss(_nll(theta, params, doc), weights, doc["loss_mask"])
    grads = torch.autograd.grad(inner_loss, list(params.values()), create_graph=True)
    return adamw_step(params, dict(zip(params, grads)), state, lr, weight_decay, differentiable=True)


@dataclass
class Outer:
    total: torch.Tensor  # objective + restrict term: what φ minimises
    restrict: torch.Tensor
    nll_after: torch.Tensor


def evaluate_outer(theta: torch.nn.Module, start: Params, params: Params, problem: InnerProblem,
                   objective: str) -> Outer:
    """The outer loss of θ' (``params``) on T_D, plus the restrict term on unrelated tasks when there are any."""
    task = problem.task
    theta.eval()
    with torch.no_grad():  # reference losses before learning D (change objectives, restrict term)
        before = _nll(theta, start, task) if objective != "obj" else None
        unrelated_before = _nll(theta, start, problem.unrelated) if problem.unrelated is not None else None
    after = _nll(theta, params, task)
    value = outer_objective(objective, after, before, task["label_mask"])
    restrict = torch.zeros((), dtype=value.dtype, device=value.device)
    if problem.unrelated is not None:
        change = (_nll(theta, params, problem.unrelated) - unrelated_before).abs()
        restrict = losses.masked_mean(change, problem.unrelated["loss_mask"]).mean()
    return Outer(value + restrict, restrict, after)


def meta_gradient(theta: torch.nn.Module, phi: torch.nn.Module, start: Params, problem: InnerProblem, *,
                  dummy_steps: int = 1, inner_lr: float = 2e-4, inner_weight_decay: float = 0.01,
                  objective: str = "obj", scale: float = 1.0) -> MetaStepResult:
    """Meta-gradient of one inner problem, added (times ``scale``) to the ``.grad`` of φ's trainable parameters."""
    doc = problem.document
    weights = phi(doc["input_ids"], doc["attention_mask"])
    params, state = warm_up(theta, start, doc, weights, dummy_steps, inner_lr, inner_weight_decay)
    params = differentiable_step(theta, params, state, doc, weights, inner_lr, inner_weight_decay)
    outer = evaluate_outer(theta, start, params, problem, objective)
    phi_params = [p for p in phi.parameters() if p.requires_grad]
    for p, g in zip(phi_params, torch.autograd.grad(outer.total * scale, phi_params, allow_unused=True)):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g
    stats = weight_statistics([w[m > 0] for w, m in zip(weights.detach(), doc["loss_mask"])])
    return MetaStepResult(
        objective=outer.total.item(),
        outer_loss=losses.masked_mean(outer.nll_after.detach(), problem.task["label_mask"]).mean().item(),
        restrict=outer.restrict.item(),
        mean_weight=stats["mean"],
        top3_share=stats["top3_share"],
        effective_fraction=stats["effective_fraction"],
    )


def trainable_params(model: torch.nn.Module) -> Params:
    """θ's LoRA parameters, detached: the start point of every inner problem."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def meta_batch_indices(update: int, meta_batch: int, n: int, seed: int) -> list[int]:
    """Pairs of φ update ``update``: a stream of per-epoch shuffles, so position alone resumes the data order."""
    out = []
    for k in range(update * meta_batch, (update + 1) * meta_batch):
        epoch, offset = divmod(k, n)
        order = list(range(n))
        random.Random(seed * 1000003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


def total_updates(updates: int, epochs: int, n: int, meta_batch: int) -> int:
    return updates or max(1, math.ceil(epochs * n / meta_batch))


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / "checkpoint"
