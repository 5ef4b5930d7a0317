"""Continual-knowledge-learning methods as data.

A method is a token-weight source plus optional modifiers, parsed from a name such as ``taalm+kadapter``:

    weights     ones (finetune) | oracle (answer tokens) | taalm (φ, cached) | rho1 (top-k excess loss)
    optimizer   adamw | recadam (annealed pull toward the pretrained weights)
    replay      Mix-Review: review documents mixed into every batch at a decaying rate
    adapter     lora | kadapter (frozen base, parallel knowledge adapter)

The one loop in ``taalm.ckl`` consumes these fields; no method has a loop of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from taalm.errors import TaalmError

WEIGHT_SOURCES = ("finetune", "oracle", "taalm", "rho1")
MODIFIERS = ("recadam", "mixreview", "kadapter")
ALL_METHODS = ("finetune", "oracle", "taalm", "rho1", "recadam", "mixreview", "kadapter",
               "taalm+kadapter", "taalm+mixreview", "taalm+recadam")


@dataclass(frozen=True)
class Method:
    name: str
    weights: str = "finetune"
    recadam: bool = False
    mixreview: bool = False
    kadapter: bool = False


def parse_method(name: str) -> Method:
    """``taalm+recadam`` → Method(weights="taalm", recadam=True); at most one weight source per method."""
    parts = [p.strip() for p in name.lower().split("+") if p.strip()]
    if not parts:
        raise TaalmError("option --method: empty method name")
    unknown = [p for p in parts if p not in WEIGHT_SOURCES + MODIFIERS]
    if unknown:
        raise TaalmError(f"option --method: unknown method {unknown[0]!r} "
                         f"(choose from {', '.join(WEIGHT_SOURCES + MODIFIERS)}, combined with '+')")
    sources = [p for p in parts if p in WEIGHT_SOURCES]
    if len(sources) > 1:
        raise TaalmError(f"option --method: {name!r} combines two token-weight sources ({' and '.join(sources)})")
    if len(set(parts)) != len(parts):
        raise TaalmError(f"option --method: {name!r} repeats a part")
    return Method(name="+".join(parts), weights=sources[0] if sources else "finetune", recadam="recadam" in parts,
                  mixreview="mixreview" in parts, kadapter="kadapter" in parts)


def rho1_weights(excess: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """RHO-1 selective language modeling: per sequence keep the top k = ceil(ratio · n) real tokens by excess loss
    (θ's loss minus the reference model's), weight 1 on kept tokens and 0 elsewhere.

    Ties are broken by position (earlier first), so the selection is deterministic. Padding is never kept.
    """
    real = mask > 0
    n = real.sum(-1)
    k = torch.ceil(n.to(torch.float64) * ratio).to(torch.long).clamp(max=n)
    scores = torch.where(real, excess.to(torch.float64), torch.full_like(excess, -math.inf, dtype=torch.float64))
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.size(-1), device=order.device).expand_as(order))
    return ((rank < k.unsqueeze(-1)) & real).to(excess.dtype)
