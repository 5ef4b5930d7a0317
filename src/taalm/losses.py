"""Per-token losses and their reductions.

Everything is aligned to *predicted* tokens: position j of a ``[batch, seq-1]`` tensor is about token j+1, predicted
from tokens 0..j. One function computes the per-token NLL; weighting and reduction are separate, visible steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_TINY = 1e-12


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """NLL of each next token, shape ``[batch, seq-1]`` (computed in float32 or better)."""
    logits = logits[:, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return nll.view_as(targets).to(logits.dtype)


def weighted_loss(nll: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TAALM's token-weighted loss: per sequence Σ nll_t·w_t / Σ w_t over real tokens, then the batch mean.

    ``mask`` (``[batch, seq-1]``, 1 for predicted tokens that are not padding) keeps padding out. With ``weights == 1``
    this is the ordinary per-sequence mean LM loss.
    """
    return weighted_sequence_loss(nll, weights, mask).mean()


def weighted_sequence_loss(nll: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ nll_t·w_t / Σ w_t over each sequence's real tokens; shape ``[batch]``."""
    w = weights.to(nll.dtype) * mask.to(nll.dtype)
    return (nll * w).sum(-1) / w.sum(-1).clamp_min(_TINY)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean of ``values`` over ``mask``; shape ``[batch]``."""
    m = mask.to(values.dtype)
    return (values * m).sum(-1) / m.sum(-1).clamp_min(_TINY)


def label_accuracy(logits: torch.Tensor, input_ids: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced label-token accuracy per sequence: mean over label tokens of ``argmax == label``."""
    hits = (logits[:, :-1].argmax(-1) == input_ids[:, 1:]).to(torch.float32)
    return masked_mean(hits, label_mask)


def perplexity(total_nll: float, n_tokens: int) -> float:
    """exp of the mean NLL over ``n_tokens`` tokens (inf when there are none, or when a diverged model's mean NLL
    is past exp's float range, ~709)."""
    if not n_tokens:
        return math.inf
    try:
        return math.exp(total_nll / n_tokens)
    except OverflowError:
        return math.inf
