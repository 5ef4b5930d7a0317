"""Not in the paper: a supervised warm start of φ on the answer tokens of its own training pairs.

For a pair (D, T_D), the meta-gradient of T_D's NLL with respect to D's token weights ranks the tokens of T_D's answer
in D first (answer-token ROC-AUC ≈ 0.99 on held-out documents), but a few dozen meta-updates on a CPU show φ too few
pairs to learn that ranking from the meta-gradient alone. This warm start fits φ to that target directly before
meta-training: binary cross-entropy between φ's logits and the answer-token mask of each training document,

    L_mask = mean over D's predicted tokens t of BCE(logit_t, [t is a token of D's answer])

the oracle's weights as φ's labels. ``pos_weight`` (p) scales the answer tokens' terms, p·y·log σ + (1 − y)·log(1 − σ):
at learning time an answer token φ misses gets almost no gradient and is never learned, while a non-answer token it
weights only dilutes the others, so p > 1 trades precision for recall (the fitted weight of a token that is an answer
with probability q is p·q / (p·q + 1 − q) instead of q). Only φ's training pairs are used (the held-out pairs
validate it, as they validate meta-learning); meta-training then starts from the warm φ, and the selection compares
the warm φ (update 0) with the meta-trained ones by the same worst-kind validation.
"""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from taalm.data import Encoded, pad_batch
from taalm.errors import TaalmError
from taalm.weighting import TrainAttention


def has_answer(document: Encoded) -> bool:
    """The document marks tokens of its answer that a causal LM predicts (not only the first token)."""
    return document.label is not None and any(document.label[1:])


def answer_mask_loss(phi: TrainAttention, batch: dict[str, torch.Tensor], pos_weight: float = 1.0) -> torch.Tensor:
    """Token-mean binary cross-entropy of φ's logits (aligned to predicted tokens) against the answer mask, the answer
    tokens' terms scaled by ``pos_weight``."""
    logits = phi.logits(batch["input_ids"], batch["attention_mask"]).float()
    per_token = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, batch["label_mask"], reduction="none", pos_weight=torch.tensor(pos_weight, device=logits.device))
    mask = batch["loss_mask"]
    return (per_token * mask).sum() / mask.sum()


def batches(n_items: int, batch_size: int, steps: int, seed: int):
    """``steps`` batches of indices: seeded passes over the items, each a fresh shuffle."""
    rng, queue = random.Random(f"answer-mask/{seed}"), []
    for _ in range(steps):
        while len(queue) < batch_size:
            order = list(range(n_items))
            rng.shuffle(order)
            queue += order
        yield queue[:batch_size]
        queue = queue[batch_size:]


def fit_answer_masks(phi: TrainAttention, documents: list[Encoded], steps: int, lr: float, batch_size: int,
                     seed: int, pad_id: int, device: torch.device, progress: bool = True,
                     pos_weight: float = 1.0) -> dict:
    """Train φ's LoRA and head on ``documents``' answer masks for ``steps`` AdamW steps; returns a record of the fit
    (documents used and skipped, the loss at the start and the end)."""
    labelled = [d for d in documents if has_answer(d)]
    if not labelled:
        raise TaalmError("option --answer_mask_steps: no training document holds a predictable token of its answer")
    optimizer = torch.optim.AdamW([p for p in phi.parameters() if p.requires_grad], lr=lr)
    was_training = phi.training
    phi.train()
    losses = []
    bar = tqdm(batches(len(labelled), batch_size, steps, seed), total=steps, desc="φ answer-mask warm start",
               dynamic_ncols=True, disable=not progress)
    for chunk in bar:
        batch = {k: v.to(device) for k, v in pad_batch([labelled[i] for i in chunk], pad_id).items()}
        loss = answer_mask_loss(phi, batch, pos_weight)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(bce=f"{losses[-1]:.3f}")
    phi.train(was_training)
    window = max(1, min(10, steps // 4))  # a few batches' mean: one batch's loss is noisy
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "pos_weight": pos_weight, "documents": len(labelled),
            "skipped_no_answer": len(documents) - len(labelled),
            "bce_first": sum(losses[:window]) / window, "bce_last": sum(losses[-window:]) / window}
