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

import contextlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call

from taalm import losses
from taalm.data import Encoded, Pair, encode, pad_batch
from taalm.errors import TaalmError
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
    """D marks its answer's tokens where it can (the answer-mask warm start's labels; the meta step ignores them)."""
    try:
        document = encode(tokenizer, pair.document, max_length, answer=pair.answer, where=pair.source)
    except TaalmError:  # the answer is absent, cut off or only opens D: D is still learned, unlabelled
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


class InnerModel:
    """θ as the inner problems see it: per-token NLL for given LoRA parameters, and the inner loss.

    One inner problem: ``functional_call`` with the parameters, loss = the batch mean of the weighted sequence losses.
    ``stacked``: every batch row is an inner problem of its own; each LoRA parameter carries a leading row dimension,
    row p is computed with its own parameters (``stacked_lora``), and the loss is the sum over rows, so row p's
    gradient is exactly its own problem's. The same result as one problem at a time, batched.
    """

    def __init__(self, model: torch.nn.Module, stacked: bool = False):
        self.model, self.stacked = model, stacked

    def nll(self, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.stacked:
            with stacked_lora(self.model, params):
                logits = self.model(**inputs).logits
        else:
            logits = functional_call(self.model, params, args=(), kwargs=inputs).logits
        return losses.token_nll(logits, batch["input_ids"])

    def inner_loss(self, params: Params, batch: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        per_sequence = losses.weighted_sequence_loss(self.nll(params, batch), weights, batch["loss_mask"])
        return per_sequence.sum() if self.stacked else per_sequence.mean()


@contextlib.contextmanager
def stacked_lora(model: torch.nn.Module, params: Params) -> Iterator[None]:
    """While active, row p of every batch goes through θ's LoRA layers with its own parameters ``params[name][p]``
    (peft's adapter is switched off and the same update, dropout(x)·Aᵀ·Bᵀ·scaling, is added per row)."""
    from peft.tuners.lora import LoraLayer

    handles = []

    def add_rows(a: torch.Tensor, b: torch.Tensor, scaling: float, dropout: torch.nn.Module):
        def hook(module, args, output):
            return output + torch.bmm(torch.bmm(dropout(args[0]), a.transpose(1, 2)), b.transpose(1, 2)) * scaling
        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                a, b = params[f"{name}.lora_A.default.weight"], params[f"{name}.lora_B.default.weight"]
                hook = add_rows(a, b, module.scaling["default"], module.lora_dropout["default"])
                handles.append(module.register_forward_hook(hook))
        with model.disable_adapter():
            yield
    finally:
        for handle in handles:
            handle.remove()


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


def warm_up(theta: InnerModel, start: Params, doc: dict[str, torch.Tensor], weights: torch.Tensor,
            dummy_steps: int, lr: float, weight_decay: float) -> tuple[Params, AdamWState]:
    """The non-differentiable inner steps: θ's parameters and AdamW moments the differentiable step starts from."""
    params = {n: p.detach().clone().requires_grad_() for n, p in start.items()}
    state = AdamWState()
    theta.model.train()
    for _ in range(dummy_steps):
        inner_loss = theta.inner_loss(params, doc, weights.detach())
        grads = torch.autograd.grad(inner_loss, list(params.values()))
        params = adamw_step(params, dict(zip(params, grads)), state, lr, weight_decay)
    return params, state


def differentiable_step(theta: InnerModel, params: Params, state: AdamWState, doc: dict[str, torch.Tensor],
                        weights: torch.Tensor, lr: float, weight_decay: float) -> Params:
    """p' = AdamW(p, ∇_p L_w(p; D)) with the graph kept, so p' is differentiable with respect to the weights."""
    state = AdamWState(dict(state.m), dict(state.v), state.step)
    theta.model.train()
    inner_loss = theta.inner_loss(params, doc, weights)
    grads = torch.autograd.grad(inner_loss, list(params.values()), create_graph=True)
    return adamw_step(params, dict(zip(params, grads)), state, lr, weight_decay, differentiable=True)


@dataclass
class Outer:
    total: torch.Tensor  # objective + restrict term: what φ minimises
    restrict: torch.Tensor
    nll_after: torch.Tensor


def evaluate_outer(theta: InnerModel, start: Params, params: Params, problem: InnerProblem,
                   objective: str) -> Outer:
    """The outer loss of θ' (``params``) on T_D, plus the restrict term on unrelated tasks when there are any."""
    task = problem.task
    theta.model.eval()
    with torch.no_grad():  # reference losses before learning D (change objectives, restrict term)
        before = theta.nll(start, task) if objective != "obj" else None
        unrelated_before = theta.nll(start, problem.unrelated) if problem.unrelated is not None else None
    after = theta.nll(params, task)
    value = outer_objective(objective, after, before, task["label_mask"])
    restrict = torch.zeros((), dtype=value.dtype, device=value.device)
    if problem.unrelated is not None:
        change = (theta.nll(params, problem.unrelated) - unrelated_before).abs()
        restrict = losses.masked_mean(change, problem.unrelated["loss_mask"]).mean()
    return Outer(value + restrict, restrict, after)


def meta_gradient(theta: torch.nn.Module, phi: torch.nn.Module, start: Params, problem: InnerProblem, *,
                  dummy_steps: int = 1, inner_lr: float = 2e-4, inner_weight_decay: float = 0.01,
                  objective: str = "obj", scale: float = 1.0, stacked: bool = False) -> MetaStepResult:
    """Meta-gradient of one inner problem, added (times ``scale``) to the ``.grad`` of φ's trainable parameters.

    ``stacked``: every row of ``problem`` (one document and its task) is an inner problem of its own, all computed
    in one batch; the gradient added is the sum of the rows' (each times ``scale``), as one call per row would add."""
    doc = problem.document
    inner = InnerModel(theta, stacked)
    rows = doc["input_ids"].size(0)
    first = {n: p.expand(rows, *p.shape) for n, p in start.items()} if stacked else start
    weights = phi(doc["input_ids"], doc["attention_mask"])
    params, state = warm_up(inner, first, doc, weights, dummy_steps, inner_lr, inner_weight_decay)
    params = differentiable_step(inner, params, state, doc, weights, inner_lr, inner_weight_decay)
    outer = evaluate_outer(inner, first, params, problem, objective)
    total = outer.total * scale * (rows if stacked else 1)  # stacked: the rows' mean times their number
    phi_params = [p for p in phi.parameters() if p.requires_grad]
    for p, g in zip(phi_params, torch.autograd.grad(total, phi_params, allow_unused=True)):
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
    """φ updates of a run: as asked, or ``epochs`` passes over ``n`` pairs (none when ``epochs`` is 0)."""
    return updates or (math.ceil(epochs * n / meta_batch) if epochs else 0)


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / "checkpoint"
