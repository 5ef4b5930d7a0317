"""Choose among trained φs — other layer counts, weight floors or temperatures, objectives — by the rule that chooses
a checkpoint within one run: the worst kind's validation gain over uniform weights (``selection_key``).

    taalm compare-phi --runs runs/phi-T1 runs/phi-T2 runs/phi-L8 --out choice.json

Each run is a ``taalm meta-train`` output (or a ``--revalidate`` one). Gains are comparable only between runs
validated on the same held-out pairs, from the same θ start, with the same validation options: that is checked, so
a knob is never chosen on a difference in what was measured. Where the runs recorded each held-out pair's score,
every other run's worst-kind gain is given minus the chosen one's with a paired 95 % interval over the held-out
pairs: a pick whose margin's interval includes 0 is no order shown, only the rule's tie-break. With ``--out``, a
plot of every run's gain per kind (with its interval where known) is written beside the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taalm import stats
from taalm.config import ComparePhiConfig, MetaTrainConfig, build_config, load_config_file
from taalm.errors import TaalmError
from taalm.io import atomic_write_json, read_jsonl
from taalm.meta_train import SAME_START
from taalm.validation import selection_key

# what makes two runs' validation gains comparable, beside the held-out pairs themselves
SAME_MEASURE = (*SAME_START, "val_epochs", "val_lr", "val_lr_by_kind", "val_batch_size", "val_group", "val_metric")
# what a comparison is usually about: shown in the table when the runs differ in it
KNOBS = ("answer_mask_steps", "answer_mask_lr", "answer_mask_pos_weight", "phi_model", "phi_layers", "phi_lora_r",
         "phi_echo", "weight_floor", "weight_temperature", "weight_floor_share", "objective", "restrict", "dummy_steps",
         "inner_lr", "outer_lr", "meta_batch", "updates", "pairs")


@dataclass
class Candidate:
    run: Path
    config: MetaTrainConfig
    update: int
    validation: dict


def load_candidate(run: Path) -> Candidate:
    for name in ("config.yaml", "selection.json", "held_out.jsonl"):
        if not (run / name).is_file():
            raise TaalmError(f"option --runs: {run / name} not found (not a taalm meta-train output with held-out pairs)")
    config = build_config(MetaTrainConfig, load_config_file(run / "config.yaml"), str(run / "config.yaml"))
    selection = load_config_file(run / "selection.json")  # JSON is YAML: malformed files are named with their line
    if not selection.get("validation") or "update" not in selection:
        raise TaalmError(f"{run / 'selection.json'}: no validation recorded (the run kept its last φ unvalidated)")
    return Candidate(run, config, selection["update"], selection["validation"])


def held_out_pairs(run: Path) -> list[tuple]:
    """The run's held-out pairs, in order, without their sources: the same pairs file reached by another path (a
    relative or absolute --pairs) holds the same pairs."""
    return [(r.get("document"), r.get("task"), r.get("answer")) for _, r in read_jsonl(run / "held_out.jsonl")]


def check_comparable(candidates: list[Candidate]) -> None:
    first = candidates[0]
    held = held_out_pairs(first.run)
    for other in candidates[1:]:
        for name in SAME_MEASURE:
            mine, theirs = getattr(other.config, name), getattr(first.config, name)
            if mine != theirs:
                raise TaalmError(f"{other.run / 'config.yaml'}: {name} {mine!r} is not {theirs!r} as in "
                                 f"{first.run}; their validation gains are not comparable")
        if held_out_pairs(other.run) != held:
            raise TaalmError(f"{other.run / 'held_out.jsonl'}: not the held-out pairs of {first.run}; their "
                             "validation gains are not comparable")


def kinds_of(validation: dict) -> list[str]:
    return sorted({key.split("/", 1)[0] for key in validation if "/" in key})


INTERVAL_METHOD = ("paired percentile bootstrap over the held-out pairs ({replicates} replicates): each kind's pairs "
                   "resampled with replacement, the same pairs for every run, the worst kind's mean gain over uniform "
                   "weights computed per run; it covers which pairs were drawn, not θ's seed")


def pair_gains(validation: dict, kind: str, metric: str) -> np.ndarray | None:
    """φ's gain over uniform weights on each held-out pair of ``kind`` (None: the run recorded no per-pair scores)."""
    prefix = f"{kind}/" if kind else ""
    mine, uniform = validation.get(f"{prefix}val_pair_{metric}"), validation.get(f"{prefix}uniform_pair_{metric}")
    if not mine or not uniform:
        return None
    gain = np.subtract(mine, uniform)
    return gain if metric == "accuracy" else -gain  # an NLL gain is uniform − φ


def paired_intervals(candidates: list[Candidate], chosen: Candidate, metric: str) -> dict | None:
    """Every other run's worst-kind gain minus the chosen run's, with its paired interval over the held-out pairs,
    and the same for each kind's gain (``{"vs_chosen": {run: {"difference", "ci95", "kinds": {kind: {"difference",
    "ci95"}}}}, "gains": {run: {"gain", "ci95", "kinds": …}}}``: ``gains`` is each run's own gain over uniform
    weights, paired with them on each pair); None when a run recorded no per-pair scores."""
    kinds = kinds_of(chosen.validation) or [""]
    scores = {}
    for c in candidates:
        gains = {kind: pair_gains(c.validation, kind, metric) for kind in kinds}
        if any(g is None for g in gains.values()):
            return None
        scores[str(c.run)] = {kind: {"gain": g} for kind, g in gains.items()}
    statistic = lambda means: {"worst": np.min(np.stack([means[k]["gain"] for k in kinds]), axis=0),
                               **{f"kind:{k}": means[k]["gain"] for k in kinds}}
    result = stats.bootstrap([scores], statistic, baseline=str(chosen.run))
    per_kind = lambda name, d: {name: d["worst"]["mean"], "ci95": d["worst"]["ci95"],
                                "kinds": {k: {name: d[f"kind:{k}"]["mean"], "ci95": d[f"kind:{k}"]["ci95"]}
                                          for k in kinds if k}}
    return {"vs_chosen": {str(c.run): per_kind("difference", result[str(c.run)][f"vs_{chosen.run}"])
                          for c in candidates if str(c.run) != str(chosen.run)},
            "gains": {str(c.run): per_kind("gain", result[str(c.run)]["stats"]) for c in candidates}}


def interval_cell(interval: dict | None) -> str:
    if interval is None:
        return "—"
    lo, hi = interval["ci95"]
    shown = "" if lo > 0 or hi < 0 else " (no difference shown)"
    return f"{interval['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]{shown}"


def markdown_table(candidates: list[Candidate], chosen: Candidate, knobs: list[str],
                   intervals: dict | None = None) -> str:
    """One row per run (the chosen one in bold): the knobs that differ, the worst kind, every kind's gain, and the
    worst-kind gain's difference from the chosen run's where ``intervals`` are known."""
    kinds = kinds_of(chosen.validation) or [""]
    prefix = {kind: f"{kind}/" if kind else "" for kind in kinds}
    header = ["run", *knobs, "update", "worst kind", *[f"{kind or 'all'}: acc / NLL gain" for kind in kinds]]
    if intervals is not None:
        header.append("worst-kind gain − chosen's [95 %]")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for c in candidates:
        v = c.validation
        cells = [str(c.run), *(str(getattr(c.config, k)) for k in knobs), str(c.update), v.get("worst_kind", ""),
                 *(f"{v[prefix[k] + 'gain_accuracy']:+.3f} / {v[prefix[k] + 'gain_nll']:+.3f}" for k in kinds)]
        if intervals is not None:
            cells.append(interval_cell(intervals.get(str(c.run))))
        if c is chosen:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_phi(cfg: ComparePhiConfig) -> tuple[dict, str]:
    """The chosen run and every candidate's validation (written to ``cfg.out`` when given), and the table."""
    candidates = [load_candidate(Path(run)) for run in cfg.runs]
    check_comparable(candidates)
    metric = candidates[0].config.val_metric
    chosen = max(candidates, key=lambda c: selection_key(c.validation, metric))  # the first given among equals
    knobs = [k for k in KNOBS if len({json.dumps(getattr(c.config, k)) for c in candidates}) > 1]
    report = {"rule": "the highest gain of the worst kind: accuracy, its NLL breaking ties" if metric == "accuracy"
              else "the highest NLL gain of the worst kind", "metric": metric, "chosen": str(chosen.run),
              "candidates": [{"run": str(c.run), **{k: getattr(c.config, k) for k in knobs}, "update": c.update,
                              "validation": c.validation} for c in candidates]}
    intervals = paired_intervals(candidates, chosen, metric) if len(candidates) > 1 else None
    report["intervals"] = None if intervals is None else {
        "method": INTERVAL_METHOD.format(replicates=stats.REPLICATES), "level": stats.LEVEL, **intervals}
    if cfg.out:
        atomic_write_json(cfg.out, report)
        plot_gains(report, Path(cfg.out).with_suffix(".png"))
    return report, markdown_table(candidates, chosen, knobs, intervals and intervals["vs_chosen"])


def plot_gains(report: dict, path: Path) -> None:
    """Each run's gain over uniform weights per kind and on its worst kind, with its 95 % interval where known."""
    from taalm.viz import plot_kind_gains

    metric = report["metric"]
    kinds = kinds_of(report["candidates"][0]["validation"]) or [""]
    gains = (report["intervals"] or {}).get("gains", {})
    runs = {}
    for c in report["candidates"]:
        v, known = c["validation"], gains.get(c["run"])
        if kinds == [""]:  # one kind: its gain is the worst kind's
            runs[c["run"]] = {"held-out pairs": (v[f"gain_{metric}"], known and known["ci95"])}
            continue
        runs[c["run"]] = {"worst kind": (v[f"gain_{metric}"], known and known["ci95"]),
                          **{k: (v[f"{k}/gain_{metric}"], known and known["kinds"][k]["ci95"]) for k in kinds}}
    plot_kind_gains(runs, path, chosen=report["chosen"], ylabel=f"{metric} gain over uniform weights")
