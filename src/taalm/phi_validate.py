"""Validate φs that are already trained on held-out pairs of your own: the multi-epoch learning meta-training uses to
choose a checkpoint (``meta_train.Validator``: θ learns the held-out documents with φ's weights and with uniform
weights, per kind of document), then the rule that chooses among runs (``taalm.phi_compare``).

    taalm validate-phi --phi smollm2-135m runs/phi-L16 --pairs fresh.jsonl --like runs/phi-A1 --out runs/fresh-val

A run's held-out pairs have chosen its checkpoint and often its knobs, so their gains carry some winner's luck; fresh
pairs (none in any candidate's training or held-out pairs) measure the candidates again without it. Each φ gets a
meta-train-style record (``OUT/<name>/``: config.yaml, selection.json, held_out.jsonl) that ``compare-phi`` reads;
the uniform-weight runs are computed once (``OUT/uniform.json``), and a rerun skips the φs already validated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

from taalm import fingerprint, meta, models
from taalm.config import ComparePhiConfig, MetaTrainConfig, ValidatePhiConfig, save_config
from taalm.data import load_pairs
from taalm.errors import TaalmError
from taalm.io import atomic_write_json, atomic_write_text
from taalm.meta_train import Validator, build_theta, is_validation_key, run_config, windowed, write_held_out
from taalm.phi_compare import SAME_MEASURE, compare_phi
from taalm.validation import Score
from taalm.weighting import TrainAttention, resolve_phi

log = logging.getLogger("taalm")
UNIFORM = "uniform.json"


def measure_config(cfg: ValidatePhiConfig) -> MetaTrainConfig:
    """How the φs are measured: the ``--like`` run's θ start and validation options, or meta-train's defaults (on
    ``--device`` where given: a run made on a GPU can be measured again on a CPU)."""
    base = run_config(Path(cfg.like), "like") if cfg.like else MetaTrainConfig(theta=cfg.theta, pairs=cfg.pairs,
                                                                                 out=cfg.out)
    return dataclasses.replace(base, pairs=cfg.pairs, out=cfg.out, held_out=0, revalidate="", uniform_from="",
                               resume=False, device=cfg.device or base.device, val_group=cfg.group or base.val_group)


def record_names(phis: list[str]) -> list[str]:
    """A directory name per φ: its alias or its directory's name, numbered where two would clash."""
    names = []
    for phi in phis:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(phi).name or phi).strip("-") or "phi"
        names.append(name if name not in names else f"{name}-{len(names)}")
    return names


def validate_phis(cfg: ValidatePhiConfig) -> tuple[dict[str, Any], str]:
    """Every φ of ``cfg`` validated on all of ``cfg.pairs``; returns compare-phi's report and table (one φ: its
    record and a one-row table)."""
    base = measure_config(cfg)
    directories = [resolve_phi(phi) for phi in cfg.phi]  # every --phi checked before anything is computed
    tokenizer = models.load_tokenizer(base.theta)
    report = {"pairs": 0, "windowed": 0, "skipped": []}
    held = windowed(tokenizer, load_pairs(cfg.pairs, base.task_format), base.max_length, report, held_out=True)
    if not held:
        raise TaalmError(f"{cfg.pairs}: no pair can be validated ({len(report['skipped'])} skipped: each needs its "
                         "answer in its document)")
    if report["skipped"] or report["windowed"]:
        log.warning("%d documents cut to a window of %d tokens around the answer; %d pairs skipped (first: %s)",
                    report["windowed"], base.max_length, len(report["skipped"]),
                    report["skipped"][0]["reason"] if report["skipped"] else "none")
    measure = {**{name: getattr(base, name) for name in SAME_MEASURE if name != "held_out"},
               "pairs": fingerprint.file_digest(cfg.pairs)}
    out = Path(cfg.out)
    recorded = json.loads((out / UNIFORM).read_text()) if (out / UNIFORM).is_file() else None
    if recorded is not None and recorded["measure"] != measure:
        raise TaalmError(f"option --out: {out / UNIFORM} was measured on other pairs or options; choose another --out")
    if recorded is None and out.is_dir() and any(out.iterdir()):
        raise TaalmError(f"option --out: {out} is not empty and holds no validate-phi run; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    device = models.pick_device(base.device)
    theta = build_theta(base, device)
    validate = Validator(base, theta, meta.trainable_params(theta), held, tokenizer, device, out)
    if recorded is not None:
        validate.uniform = {kind: Score(**score) for kind, score in recorded["uniform"].items()}
    runs = []
    for phi_name, directory, name in zip(cfg.phi, directories, record_names(cfg.phi)):
        run, digest = out / name, fingerprint.phi_digest(str(directory))
        runs.append(str(run))
        if (run / "phi.json").is_file() and json.loads((run / "phi.json").read_text())["digest"] == digest:
            continue  # validated by an earlier invocation (same pairs and options: checked above)
        phi = TrainAttention.load(directory).to(device)
        record = validate(phi, 0, save=False)
        atomic_write_json(out / UNIFORM, {"measure": measure, "uniform": validate.uniform_state()})
        write_record(base, run, phi, record, held, {"phi": phi_name, "dir": str(directory), "digest": digest})
    if len(runs) == 1:
        validation = json.loads((Path(runs[0]) / "selection.json").read_text())["validation"]
        return {"chosen": runs[0], "candidates": [{"run": runs[0], "validation": validation}]}, ""
    result, table = compare_phi(ComparePhiConfig(runs=runs, out=str(out / "compare.json")))
    atomic_write_text(out / "table.md", table + "\n")
    return result, table


def write_record(base: MetaTrainConfig, run: Path, phi: TrainAttention, record: dict, held: list,
                 source: dict[str, str]) -> None:
    """What meta-train writes about a validated checkpoint, for ``compare-phi``: the options (with φ's own layers,
    LoRA rank, echo, floor and temperature), the validation (as selection.json's) and the held-out pairs; ``phi.json``
    names φ."""
    run.mkdir(parents=True, exist_ok=True)
    save_config(dataclasses.replace(base, out=str(run), phi_layers=phi.num_layers, phi_lora_r=int(phi.lora["r"]),
                                    weight_floor=phi.weight_floor, weight_temperature=phi.weight_temperature,
                                    weight_floor_share=phi.weight_floor_share, phi_echo=phi.echo),
                run / "config.yaml")
    validation = {k: v for k, v in record.items() if is_validation_key(k)}
    atomic_write_json(run / "selection.json", {"select": "best", "metric": base.val_metric, "update": 0,
                                               "validation": validation})
    write_held_out(run, held)
    atomic_write_json(run / "phi.json", source)  # written last: its presence marks the φ as validated
