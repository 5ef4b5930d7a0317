"""The paired bootstrap over facts (taalm.stats) on synthetic scores with known answers.

python -m pytest -q tests/test_stats.py
"""

from __future__ import annotations

import numpy as np
import pytest

from taalm import stats


def mean_of(metric: str = "accuracy", name: str = "facts"):
    """The simplest statistic: the mean score over a set's facts."""
    return lambda means: {"mean": means[name][metric]}


def scores(values) -> dict:
    return {"facts": {"accuracy": np.asarray(values, dtype=float)}}


def test_the_point_estimate_is_the_mean_and_the_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    facts = rng.integers(0, 2, size=400).astype(float)
    result = stats.bootstrap([{"finetune": scores(facts)}], mean_of(), replicates=4000)
    estimate = result["finetune"]["stats"]["mean"]
    assert estimate["per_seed"] == [pytest.approx(facts.mean())] and estimate["mean"] == pytest.approx(facts.mean())
    lo, hi = estimate["ci95"]
    se = facts.std() / np.sqrt(len(facts))
    assert lo < facts.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert "vs_finetune" not in result["finetune"]  # no difference of the baseline to itself


def test_identical_methods_differ_by_exactly_zero():
    facts = np.random.default_rng(2).random(50)
    result = stats.bootstrap([{"finetune": scores(facts), "same": scores(facts.copy())}], mean_of())
    diff = result["same"]["vs_finetune"]["mean"]
    assert diff["mean"] == 0.0 and diff["ci95"] == [0.0, 0.0]
    assert result["same"]["stats"] == result["finetune"]["stats"]


def test_a_method_better_on_every_fact_is_ahead_with_an_interval_that_excludes_zero():
    rng = np.random.default_rng(3)
    facts = rng.random(30)
    better = facts + rng.uniform(0.01, 0.05, size=30)
    diff = stats.bootstrap([{"finetune": scores(facts), "better": scores(better)}], mean_of())["better"]["vs_finetune"]
    lo, hi = diff["mean"]["ci95"]
    assert 0.0 < lo < diff["mean"]["mean"] < hi
    assert diff["mean"]["mean"] == pytest.approx((better - facts).mean())


def test_pairing_matters_the_same_facts_are_drawn_for_both_methods():
    """Facts differ a lot from each other, the method is a little better on each: judged on independent draws the
    difference would be lost in the facts' spread; paired, it is clearly ahead."""
    rng = np.random.default_rng(4)
    facts = rng.uniform(0, 1, size=40)
    better = facts + 0.03
    a, b = scores(facts), scores(better)
    paired = stats.bootstrap([{"finetune": a, "better": b}], mean_of())["better"]["vs_finetune"]["mean"]["ci95"]
    assert paired[0] == pytest.approx(0.03) and paired[1] == pytest.approx(0.03)  # +0.03 on every fact, every draw
    # the unpaired interval, from the module's own pieces: each method's facts drawn independently
    draw = np.random.default_rng(0)
    unpaired = (stats.weighted_means(b, stats.draw_counts({"facts": 40}, 2000, draw))["facts"]["accuracy"]
                - stats.weighted_means(a, stats.draw_counts({"facts": 40}, 2000, draw))["facts"]["accuracy"])
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert lo < 0 < hi


def test_seeds_are_resampled_within_each_seed_and_pooled():
    rng = np.random.default_rng(5)
    runs = [{"finetune": scores(rng.random(n)), "taalm": scores(rng.random(n) * 0.5)} for n in (20, 35, 50)]
    result = stats.bootstrap(runs, mean_of(), seed=7)
    per_seed = [r["finetune"]["facts"]["accuracy"].mean() for r in runs]
    estimate = result["finetune"]["stats"]["mean"]
    assert estimate["per_seed"] == pytest.approx(per_seed) and estimate["mean"] == pytest.approx(np.mean(per_seed))
    diff = result["taalm"]["vs_finetune"]["mean"]
    expected = [r["taalm"]["facts"]["accuracy"].mean() - r["finetune"]["facts"]["accuracy"].mean() for r in runs]
    assert diff["per_seed"] == pytest.approx(expected) and diff["ci95"][1] < 0  # taalm's facts are halved: behind
    # pooling three seeds narrows the interval against one of them alone
    one = stats.bootstrap(runs[:1], mean_of(), seed=7)["finetune"]["stats"]["mean"]["ci95"]
    assert estimate["ci95"][1] - estimate["ci95"][0] < one[1] - one[0]
    assert stats.bootstrap(runs, mean_of(), seed=7) == result  # seeded: the same numbers again


def test_curves_and_sets_the_statistic_combines():
    """A vector statistic (a curve over epochs) gets a band; two sets are resampled independently of each other."""
    rng = np.random.default_rng(6)
    run = {"finetune": {"learn": {"accuracy": rng.random((3, 12))}, "keep": {"accuracy": rng.random((3, 8))}}}
    statistic = lambda m: {"curve": m["learn"]["accuracy"], "last": m["learn"]["accuracy"][:, -1] + m["keep"][
        "accuracy"][:, -1]}
    result = stats.bootstrap([run], statistic)["finetune"]["stats"]
    curve = result["curve"]
    assert curve["mean"] == pytest.approx(run["finetune"]["learn"]["accuracy"].mean(axis=1).tolist())
    lo, hi = curve["ci95"]
    assert len(lo) == len(hi) == 3 and all(a < m < b for a, m, b in zip(lo, curve["mean"], hi, strict=True))
    assert isinstance(result["last"]["mean"], float)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no seed"):
        stats.bootstrap([], mean_of())
    with pytest.raises(ValueError, match="other sets"):
        stats.bootstrap([{"finetune": scores([1, 0, 1]), "taalm": scores([1, 0])}], mean_of())
    with pytest.raises(ValueError, match="methods"):
        stats.bootstrap([{"finetune": scores([1, 0])}, {"taalm": scores([1, 0])}], mean_of())
    with pytest.raises(ValueError, match="facts"):
        stats.bootstrap([{"finetune": {"facts": {"accuracy": np.zeros(3), "nll": np.zeros(4)}}}], mean_of())


def test_description_and_formats():
    one, three = stats.describe([0]), stats.describe([0, 1, 2])
    assert one["across_seeds"] is False and "1 seed" in one["note"] and one["level"] == 0.95
    assert three["across_seeds"] is True and "note" not in three and "2.5th to 97.5th" in three["method"]
    assert stats.plus_minus(0.5, [0.4, 0.7]) == "0.500 ± 0.150"
    assert stats.plus_minus(0.5, None) == "0.500"
    assert stats.difference({"mean": -0.0125, "ci95": [-0.05, 0.025]}) == "-0.013 [-0.050, +0.025]"
    assert stats.difference(None) == "—"
