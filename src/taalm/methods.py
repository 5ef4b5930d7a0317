"""Continual-knowledge-learning methods as data.

A method is a token-weight source plus optional modifiers, parsed from a name such as ``taalm+kadapter``:

    weights     ones (finetune) | oracle (answer tokens) | taalm (φ, cached) | rho1 (top-k excess loss),
                each a ``taalm.weight_sources.WeightSource``
    optimizer   adamw | recadam (annealed pull toward the pretrained weights)
    replay      Mix-Review: review documents mixed into every batch at a decaying rate
    adapter     lora | kadapter (frozen base, parallel knowledge adapter)

The one loop in ``taalm.ckl`` consumes these fields; no method has a loop of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from taalm.errors import TaalmError
from taalm.weight_sources import ExcessLoss, OracleMask, PhiWeights, WeightSource

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

    def weight_source(self, phi: str = "", rho1_ratio: float = 0.6) -> WeightSource:
        """A fresh source of this method's token weights: ``phi`` is TAALM's trained φ (``--phi``), ``rho1_ratio``
        the share of tokens RHO-1 keeps; the reference of RHO-1 is θ's base, a K-Adapter's frozen base included."""
        if self.weights == "oracle":
            return OracleMask()
        if self.weights == "taalm":
            return PhiWeights(phi)
        if self.weights == "rho1":
            return ExcessLoss(rho1_ratio, frozen_base=self.kadapter)
        return WeightSource()


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

