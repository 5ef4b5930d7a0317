"""How sure a benchmark number is: a paired bootstrap over facts, resampled within each seed and pooled over seeds.

    from taalm.stats import bootstrap
    result = bootstrap([{"finetune": scores_0, "taalm": taalm_0}, ...], statistic)  # one dict per seed

A benchmark's numbers (LAMA-ckl's Top Acc, TemporalWiki's average NLL, ...) are functions of per-fact scores averaged
over sets of facts. Each bootstrap replicate draws, within each seed, every set's facts with replacement (the SAME
draw for every method, so a difference between two methods is paired: both are judged on the same facts), computes
the statistic per seed from the resampled means, and averages it over seeds. The 95% interval is the 2.5th to 97.5th
percentile of the replicates. With one seed it covers only which facts were sampled, not the run-to-run variation
(split, data order, LoRA init) that more seeds add. numpy only; the replicates are seeded, so a summary is
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REPLICATES = 2000
LEVEL = 0.95
METHOD = ("paired percentile bootstrap over facts: in each of {replicates} replicates every seed's facts are "
          "resampled with replacement, each probe set separately and the same facts for every method, the statistic "
          "is computed per seed and averaged over seeds; the interval is the {lo:g}th to {hi:g}th percentile")

# set name -> metric -> values whose LAST axis is the set's facts (other axes, e.g. epochs, come first)
FactScores = dict[str, dict[str, Any]]
# set name -> metric -> mean over the (resampled) facts, with a leading replicate axis: (replicates, *other axes)
Means = dict[str, dict[str, np.ndarray]]
# means -> named statistics, each with the replicate axis first: (replicates,) or (replicates, k) for a curve
Statistic = Callable[[Means], dict[str, np.ndarray]]


def set_sizes(scores: FactScores) -> dict[str, int]:
    """The number of facts in each set; ValueError if a set's metrics disagree or a set is empty."""
    sizes = {}
    for name, metrics in scores.items():
        lengths = {np.shape(values)[-1] for values in metrics.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"set {name!r}: its metrics have {sorted(lengths)} facts (need one non-zero count)")
        sizes[name] = lengths.pop()
    return sizes


def draw_counts(sizes: dict[str, int], replicates: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per set, how often each fact is drawn in each replicate of a resampling with replacement: (replicates, n)."""
    return {name: rng.multinomial(n, np.full(n, 1.0 / n), size=replicates) for name, n in sizes.items()}


def weighted_means(scores: FactScores, counts: dict[str, np.ndarray]) -> Means:
    """Every metric's mean over its set's facts, each fact counted ``counts`` times: (replicates, *other axes)."""
    means: Means = {}
    for name, metrics in scores.items():
        c = counts[name]
        means[name] = {}
        for metric, values in metrics.items():
            v = np.asarray(values, dtype=float)
            flat = v.reshape(-1, v.shape[-1])  # (other, facts)
            means[name][metric] = (c @ flat.T / c.shape[1]).reshape(c.shape[0], *v.shape[:-1])
    return means


def _values(x: np.ndarray) -> float | list:
    return x.tolist() if np.ndim(x) else float(x)


def estimate(per_seed: Sequence[np.ndarray], replicates: np.ndarray) -> dict[str, Any]:
    """``per_seed`` point values, their mean, and the percentile interval of ``replicates`` (replicate axis first)."""
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return {"per_seed": [_values(v) for v in per_seed], "mean": _values(np.mean(per_seed, axis=0)),
            "ci95": [_values(lo), _values(hi)]}


def bootstrap(runs: Sequence[dict[str, FactScores]], statistic: Statistic, baseline: str | None = "finetune",
              replicates: int = REPLICATES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``runs[s][method]``: seed s's per-fact scores of a method (every method of a seed scored on the same facts).
    Returns per method ``{"stats": {name: estimate}, "vs_<baseline>": {name: estimate}}``: each statistic's per-seed
    values, mean over seeds and interval, and for every other method its paired difference (method − baseline) in
    the scalar statistics; no difference without ``baseline`` among the methods."""
    if not runs:
        raise ValueError("bootstrap: no seed")
    methods = list(runs[0])
    rng = np.random.default_rng(seed)
    points: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in methods}
    draws: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in methods}
    for s, run in enumerate(runs):
        if list(run) != methods:
            raise ValueError(f"bootstrap: seed {s} has methods {list(run)}, seed 0 {methods}")
        sizes = set_sizes(run[methods[0]])
        for m in methods:
            if set_sizes(run[m]) != sizes:
                raise ValueError(f"bootstrap: seed {s}: {m} is scored on other sets than {methods[0]} ({sizes})")
        counts = draw_counts(sizes, replicates, rng)
        everything = {name: np.ones((1, n)) for name, n in sizes.items()}
        for m in methods:
            points[m].append({k: v[0] for k, v in statistic(weighted_means(run[m], everything)).items()})
            draws[m].append(statistic(weighted_means(run[m], counts)))
    pooled = lambda m, k: np.mean([d[k] for d in draws[m]], axis=0)  # the mean over seeds, per replicate
    result = {}
    for m in methods:
        names = list(points[m][0])
        result[m] = {"stats": {k: estimate([p[k] for p in points[m]], pooled(m, k)) for k in names}}
        if baseline in methods and m != baseline:
            scalar = [k for k in names if np.ndim(points[m][0][k]) == 0]
            result[m][f"vs_{baseline}"] = {
                k: estimate([p[k] - b[k] for p, b in zip(points[m], points[baseline], strict=True)],
                            pooled(m, k) - pooled(baseline, k)) for k in scalar}
    return result


def describe(seeds: Sequence[int], replicates: int = REPLICATES, baseline: str | None = "finetune") -> dict[str, Any]:
    """What the summaries' intervals are, and what they cannot cover with one seed."""
    tail = 100 * (1 - LEVEL) / 2
    record = {"method": METHOD.format(replicates=replicates, lo=tail, hi=100 - tail), "level": LEVEL,
              "replicates": replicates, "seeds": list(seeds), "across_seeds": len(seeds) > 1, "baseline": baseline}
    if len(seeds) == 1:
        record["note"] = ("1 seed: no interval across seeds; the interval covers only which facts were sampled, not "
                          "the variation of the split, data order and LoRA init that more seeds add")
    return record


def plus_minus(mean: float, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``mean ± half-width`` of the interval (half-width = (hi − lo) / 2); the mean alone without one."""
    if ci is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(ci[1] - ci[0]) / 2:.{digits}f}"


def difference(diff: dict[str, Any] | None, digits: int = 3) -> str:
    """A paired difference as ``+0.012 [-0.020, +0.045]``; an em dash without one."""
    if not diff:
        return "—"
    lo, hi = diff["ci95"]
    return f"{diff['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
