"""φ's validation during meta-training: does θ learn unseen documents better with φ's weights than without them?

The one-step meta-objective rewards piling weight onto a few tokens (the loss Σ nll·w / Σ w ignores the weights'
scale, so φ can sharpen without bound), while what counts is multi-step learning of documents φ never saw. So a
validation runs the real learning loop (``taalm.ckl.Learner``) on held-out documents for a few epochs from θ's start,
once with φ's weights and once with uniform weights (finetune), and scores the documents' tasks. The gain is
φ minus uniform: accuracy (higher is better) and label NLL (lower is better, so the gain is uniform − φ).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from taalm import runtime
from taalm.ckl import Learner
from taalm.config import LoopOptions
from taalm.data import Encoded
from taalm.methods import Method
from taalm.scoring import score_probes
from taalm.weight_sources import FixedWeights

Params = dict[str, torch.Tensor]


@dataclass
class HeldOut:
    """Held-out pairs: the documents θ learns and their tasks (answer tokens labelled)."""

    docs: list[Encoded]
    tasks: list[Encoded]


@dataclass(frozen=True)
class Score:
    """The mean over the held-out tasks, and each task's own score (in the pairs' order; empty where a score was
    recorded before per-pair scores were), which intervals between φs resample."""

    accuracy: float
    nll: float
    pair_accuracy: tuple[float, ...] = ()
    pair_nll: tuple[float, ...] = ()

    def __post_init__(self) -> None:  # restored from JSON, the per-pair scores are lists: equal Scores compare equal
        object.__setattr__(self, "pair_accuracy", tuple(self.pair_accuracy))
        object.__setattr__(self, "pair_nll", tuple(self.pair_nll))

    @classmethod
    def of_pairs(cls, accuracy: Sequence[float], nll: Sequence[float]) -> Score:
        """The Score of these per-pair scores: their means, and the scores themselves."""
        return cls(sum(accuracy) / len(accuracy), sum(nll) / len(nll), tuple(accuracy), tuple(nll))


def learn_and_score(theta: torch.nn.Module, start: Params, held: HeldOut, weights: list[torch.Tensor] | None,
                    options: LoopOptions, pad_id: int, device: torch.device, dtype: str = "auto",
                    desc: str = "validate") -> Score:
    """θ learns the held-out documents from ``start`` (its trainable parameters) with ``weights`` (None: uniform)
    and is scored on their tasks. θ's parameters and every random stream are left exactly as they were, so
    validating never changes meta-training (the official validation fine-tuned θ's start point in place). A
    transient progress bar (``desc``) counts θ's steps."""
    params = dict(theta.named_parameters())
    rng = runtime.rng_state()
    try:
        torch.manual_seed(options.seed)  # the same dropout masks and order for φ's run and the uniform run
        method = Method("taalm", weights="taalm") if weights is not None else Method("finetune")
        optimizer = torch.optim.AdamW([params[n] for n in start], lr=options.lr, weight_decay=0.0)
        source = FixedWeights(weights) if weights is not None else None
        learner = Learner(options, method, theta, optimizer, held.docs, [], source, pad_id, device, dtype)
        batches = [learner.epoch_batches(epoch) for epoch in range(options.epochs)]
        with tqdm(total=sum(map(len, batches)), desc=desc, leave=False, dynamic_ncols=True) as progress:
            for epoch, epoch_batches in enumerate(batches):
                for step, batch in enumerate(epoch_batches):
                    learner.step(batch, epoch, step)
                    progress.update(1)
        scores = score_probes(theta, held.tasks, pad_id, options.eval_batch, device, dtype)
    finally:
        with torch.no_grad():
            for name, value in start.items():
                params[name].copy_(value)
        runtime.set_rng_state(rng)
    return Score.of_pairs(scores.accuracy, scores.nll)


def learn_and_score_groups(theta: torch.nn.Module, start: Params, held: HeldOut, weights: list[torch.Tensor] | None,
                           options: LoopOptions, pad_id: int, device: torch.device, dtype: str = "auto",
                           desc: str = "validate", group: int = 0) -> Score:
    """``learn_and_score`` on groups of about ``group`` pairs (0: all together), each learned from θ's start on its
    own, the scores of all pairs pooled: a large held-out set is measured at the step count of a small one (θ's
    steps grow with the documents learned together, and so does what uniform weights already learn)."""
    n = len(held.docs)
    count = -(-n // group) if group else 1
    bounds = [n * i // count for i in range(count + 1)]  # sizes differ by at most one
    accuracy, nll = [], []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        part = learn_and_score(theta, start, HeldOut(held.docs[a:b], held.tasks[a:b]),
                               None if weights is None else weights[a:b], options, pad_id, device, dtype,
                               desc if count == 1 else f"{desc}, group {i + 1}/{count}")
        accuracy += part.pair_accuracy
        nll += part.pair_nll
    return Score.of_pairs(accuracy, nll)


def gain_record(phi: Score, uniform: Score) -> dict[str, float]:
    """What history.jsonl logs for a validation: both runs' scores and φ's gain over uniform weights, and both runs'
    per-pair scores where both have them (what ``compare-phi``'s intervals resample)."""
    record = {"val_accuracy": phi.accuracy, "val_nll": phi.nll, "uniform_accuracy": uniform.accuracy,
              "uniform_nll": uniform.nll, "gain_accuracy": phi.accuracy - uniform.accuracy,
              "gain_nll": uniform.nll - phi.nll}
    if phi.pair_accuracy and uniform.pair_accuracy:
        record.update({f"{run}_pair_{metric}": list(getattr(score, f"pair_{metric}"))
                       for run, score in (("val", phi), ("uniform", uniform)) for metric in ("accuracy", "nll")})
    return record


def kinds_record(records: dict[str, dict], metric: str) -> dict:
    """One validation record from each kind's (``gain_record``'s): the worst kind's at the top, and with several
    kinds ``worst_kind`` and every kind's under ``kind/`` (per-pair scores there only: the worst kind's would be
    there twice). A kind's ``answer_auc`` is kept under its kind only."""
    worst = min(records, key=lambda k: selection_key(records[k], metric))
    record = {k: v for k, v in records[worst].items() if k != "answer_auc" and not (len(records) > 1 and "_pair_" in k)}
    if len(records) > 1:
        record["worst_kind"] = worst
        record.update({f"{kind}/{k}": v for kind, r in records.items() for k, v in r.items()})
    return record


def selection_key(record: dict, metric: str) -> tuple[float, ...]:
    """Higher is better: the accuracy gain with the NLL gain breaking ties, or the NLL gain alone."""
    return (record["gain_accuracy"], record["gain_nll"]) if metric == "accuracy" else (record["gain_nll"],)


def best_validation(history: list[dict], metric: str) -> dict | None:
    """The validated record with the highest gain (the earliest among equals), or None if nothing was validated."""
    validated = [r for r in history if "gain_accuracy" in r]
    if not validated:
        return None
    return max(validated, key=lambda r: (*selection_key(r, metric), -r["update"]))
