"""``taalm meta-train``: the φ training driver around ``taalm.meta``: data, models, validation, selection, resume.

    taalm meta-train --theta smollm2-135m --pairs pairs.jsonl --out runs/phi

A seeded held-out split of the pairs is never trained on. At update 0, every ``--val_every`` updates and at the end,
θ learns the held-out documents for a few epochs with φ's weights and with uniform weights (``taalm.validation``);
φ is checkpointed at each validation and the output directory holds the best one (``--select best``) or the last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from taalm import answer_mask, fingerprint, meta, models, runtime
from taalm.ckl import rng_of_this_process
from taalm.config import LoopOptions, MetaTrainConfig, build_config, load_config_file, save_config, to_dict
from taalm.data import Pair, encode, load_pairs, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from taalm.validation import HeldOut, Score, best_validation, gain_record, kinds_record, learn_and_score_groups
from taalm.weighting import TrainAttention, answer_auc, document_weights, weight_statistics
from taalm.windowing import answer_window

log = logging.getLogger("taalm")
CHECKPOINT = "checkpoint"
VALIDATION_CHECKPOINTS = "checkpoints"
ANSWER_MASK_RECORD = "answer_mask.json"  # the warm start's fit (--answer_mask_steps)


def build_theta(cfg: MetaTrainConfig, device: torch.device) -> torch.nn.Module:
    """θ with fresh LoRA (seeded: every run with the same options starts from the same θ), eager attention."""
    runtime.seed_everything(cfg.seed)
    theta = models.load_causal_lm(cfg.theta, dtype=cfg.dtype, attn_implementation="eager")
    return models.add_lora(theta, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout).to(device)


def build_models(cfg: MetaTrainConfig, device: torch.device) -> tuple[torch.nn.Module, TrainAttention]:
    """θ with fresh LoRA and φ, both with eager attention: the meta step needs a double backward."""
    theta = build_theta(cfg, device)
    phi = TrainAttention.create(cfg.phi_model or cfg.theta, cfg.phi_lora_r or cfg.lora_r, cfg.lora_alpha,
                                cfg.lora_dropout, dtype=cfg.dtype, attn_implementation="eager",
                                num_layers=cfg.phi_layers, weight_floor=cfg.weight_floor,
                                weight_temperature=cfg.weight_temperature,
                                weight_floor_share=cfg.weight_floor_share, echo=cfg.phi_echo).to(device)
    return theta, phi


def split_held_out(pairs: list[Pair], n_held: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-out pairs): a seeded random subset is held out, ``n_held`` of each kind of document
    when the pairs name kinds (so that every kind is validated); both keep the file's order."""
    held: set[int] = set()
    for kind in sorted({p.kind for p in pairs}):
        of_kind = [i for i, p in enumerate(pairs) if p.kind == kind]
        stream = f"held-out/{seed}" if not kind else f"held-out/{seed}/{kind}"
        held.update(random.Random(stream).sample(of_kind, n_held))
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def copy_mixture(cfg: MetaTrainConfig, out: Path) -> None:
    """The record ``taalm phi-data`` writes beside its pairs (``PAIRS.json``) goes with φ as ``mixture.json``: the
    model card names the kinds of documents from it."""
    record = Path(cfg.pairs).with_suffix(".json")
    if not record.is_file() or record == Path(cfg.pairs):
        return
    try:
        mixture = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return  # some other file of that name: not φ's record
    if isinstance(mixture, dict) and {"counts", "rules"} <= set(mixture):
        atomic_write_json(out / "mixture.json", mixture)


def kind_sizes(pairs: list[Pair]) -> dict[str, int]:
    return {kind: sum(p.kind == kind for p in pairs) for kind in sorted({p.kind for p in pairs})}


def windowed(tokenizer, pairs: list[Pair], max_length: int, report: dict, held_out: bool = False) -> list[Pair]:
    """Pairs whose documents fit ``max_length`` tokens, over-long ones cut to a window around the answer; a pair
    that cannot keep its answer (absent from an over-long document) is skipped. Both are counted in ``report``.
    A held-out pair is skipped too when its document has no token of the answer to predict (the answer absent, or
    only opening the text): validation ranks φ's weights on the answer's tokens."""
    kept = []
    for pair in pairs:
        try:
            window = answer_window(tokenizer, pair.document, pair.answer, max_length, where=pair.source)
            if held_out:
                encode(tokenizer, window.text, max_length, answer=pair.answer, where=pair.source)
        except TaalmError as e:
            report["skipped"].append({"pair": pair.source, "reason": str(e)})
            continue
        report["windowed"] += window.windowed
        kept.append(Pair(window.text, pair.task, pair.answer, pair.source, pair.kind))
    return kept


def validation_options(cfg: MetaTrainConfig, kind: str = "") -> LoopOptions:
    return LoopOptions(epochs=cfg.val_epochs, lr=cfg.val_lr_by_kind.get(kind, cfg.val_lr),
                       batch_size=cfg.val_batch_size, micro_batch=min(cfg.val_batch_size, 4),
                       max_length=cfg.max_length, seed=cfg.seed)


def prepare(cfg: MetaTrainConfig, tokenizer) -> tuple[list[meta.EncodedPair], list[Pair], dict]:
    """Training pairs (encoded), held-out pairs and the data report (counts, windowed, skipped with file:line)."""
    pairs = load_pairs(cfg.pairs, cfg.task_format)
    sizes = kind_sizes(pairs)
    smallest = min(sizes, key=sizes.get)
    n_held = cfg.held_out_count(sizes[smallest])  # per kind when the pairs name kinds
    if n_held >= sizes[smallest]:
        of = f" of kind {smallest!r}" if smallest else ""
        raise TaalmError(f"option --held_out: {n_held} leaves no training pairs out of {sizes[smallest]}{of}")
    unknown = set(cfg.val_lr_by_kind) - set(sizes)
    if unknown:
        raise TaalmError(f"option --val_lr_by_kind: {cfg.pairs} has no pairs of kind {', '.join(sorted(unknown))} "
                         f"(kinds: {', '.join(sorted(k for k in sizes if k)) or 'none named'})")
    report = {"pairs": len(pairs), "task_format": cfg.task_format, "max_length": cfg.max_length, "windowed": 0,
              "skipped": [], **({"kinds": sizes, "held_out_per_kind": n_held} if len(sizes) > 1 else {})}
    train, held = (windowed(tokenizer, part, cfg.max_length, report, held_out=k == 1)
                   for k, part in enumerate(split_held_out(pairs, n_held, cfg.seed)))
    report.update(train=len(train), held_out=len(held))
    if not train:
        raise TaalmError(f"{cfg.pairs}: no usable training pairs ({len(report['skipped'])} skipped)")
    if cfg.restrict and len(train) < 2:
        raise TaalmError("option --restrict: needs at least 2 training pairs (unrelated tasks come from other pairs)")
    if report["windowed"] or report["skipped"]:
        log.warning("%d of %d documents cut to a window of --max_length %d tokens around the answer; %d pairs skipped",
                    report["windowed"], len(pairs), cfg.max_length, len(report["skipped"]))
    return [meta.encode_pair(tokenizer, p, cfg.max_length) for p in train], held, report


class Validator:
    """Validation on the held-out pairs, per kind of document when the pairs name kinds: a validation's gain is the
    smallest over the kinds (φ must help on every kind, not on average), each kind's gain recorded beside it. The
    uniform-weight runs are the same every time, so each runs once. With ``--val_group``, each kind's pairs are
    learned in groups of about that many (``learn_and_score_groups``)."""

    def __init__(self, cfg: MetaTrainConfig, theta, start, held: list[Pair], tokenizer, device, out: Path):
        self.cfg, self.theta, self.start, self.device, self.out = cfg, theta, start, device, out
        # documents encoded with their answer marked: the weights' answer-token ROC-AUC is recorded beside the gain
        groups = {kind: [p for p in held if p.kind == kind] for kind in kind_sizes(held)}
        self.held = {kind: HeldOut([encode(tokenizer, p.document, cfg.max_length, answer=p.answer, where=p.source)
                                    for p in group],
                                   [encode(tokenizer, p.task, cfg.max_length, answer=p.answer, where=p.source)
                                    for p in group])
                     for kind, group in groups.items()}
        self.options = {kind: validation_options(cfg, kind) for kind in self.held}
        self.pad_id = pad_token_id(tokenizer)
        self.uniform: dict[str, Score] = {}

    def __call__(self, phi: TrainAttention, update: int, known: dict[str, dict] | None = None,
                 save: bool = True) -> dict:
        """φ's validation record (φ checkpointed for ``update`` unless not ``save``); ``known`` holds kinds already
        validated for this φ with the same options (their records are taken, not recomputed: a validation is
        deterministic)."""
        records, all_weights = dict(known or {}), []
        for kind, held in self.held.items():
            weights = [torch.tensor(w) for w in document_weights(phi, [d.input_ids for d in held.docs])]
            all_weights += weights
            if kind in records:
                continue
            if kind not in self.uniform:
                self.uniform[kind] = self.learn(kind, None, "uniform weights")
            score = self.learn(kind, weights, "φ's weights")
            records[kind] = {**gain_record(score, self.uniform[kind]),
                             "answer_auc": answer_auc(weights, [d.label for d in held.docs])}
        if save:
            phi.save(self.checkpoint_dir(update))
        aucs = [r["answer_auc"] for r in records.values() if r["answer_auc"] is not None]
        return {**kinds_record(records, self.cfg.val_metric),
                "val_answer_auc": sum(aucs) / len(aucs) if aucs else None,
                **{f"val_w_{k}": v for k, v in weight_statistics(all_weights).items()}}

    def learn(self, kind: str, weights: list[torch.Tensor] | None, label: str) -> Score:
        """θ learns ``kind``'s held-out documents with ``weights`` (None: uniform) and is scored on their tasks."""
        return learn_and_score_groups(self.theta, self.start, self.held[kind], weights, self.options[kind],
                                      self.pad_id, self.device, self.cfg.dtype,
                                      f"validate {kind or 'held-out'}: {label}", self.cfg.val_group)

    def uniform_state(self) -> dict[str, dict]:
        return {kind: vars(score) for kind, score in self.uniform.items()}

    def restore_uniform(self, saved: dict | None) -> None:
        """The checkpoint's uniform scores; checkpoints written before kinds hold one score (no kind)."""
        if saved:
            saved = {"": saved} if "accuracy" in saved else saved
            self.uniform = {kind: Score(**score) for kind, score in saved.items()}

    def checkpoint_dir(self, update: int) -> Path:
        return self.out / VALIDATION_CHECKPOINTS / f"update-{update:05d}"


def meta_train(cfg: MetaTrainConfig) -> Path:
    """Meta-train φ; returns the output directory, which is a loadable Train-Attention directory. Under
    ``accelerate launch`` / ``torchrun`` the meta-batch's inner problems are shared out; the main process validates
    and writes."""
    if cfg.revalidate:
        return revalidate(cfg)
    tokenizer = models.load_tokenizer(cfg.theta)
    if cfg.phi_model and cfg.phi_model != cfg.theta and not models.same_tokenizer(
            tokenizer, models.load_tokenizer(cfg.phi_model)):
        raise TaalmError(f"option --phi_model: {cfg.phi_model!r} does not share θ's tokenizer; its weights could not "
                         "be aligned")
    encoded, held, report = prepare(cfg, tokenizer)
    # checked before any model is loaded: a run that cannot lend its uniform scores fails at once
    recorded = uniform_of_run(cfg, Path(cfg.uniform_from), list(kind_sizes(held))) if cfg.uniform_from and held else None
    out = runtime.check_output_dir(cfg.out, cfg.resume, CHECKPOINT)
    procs = Processes(cfg.device, cfg.log, out)
    procs.wait_for_everyone()  # every process has checked --out before the main one writes into it
    device, pad_id = procs.device, pad_token_id(tokenizer)

    theta, phi = build_models(cfg, device)
    start_params = meta.trainable_params(theta)
    optimizer = torch.optim.AdamW([p for p in phi.parameters() if p.requires_grad], lr=cfg.outer_lr)
    total = meta.total_updates(cfg.updates, cfg.epochs, len(encoded), cfg.meta_batch)
    validate = Validator(cfg, theta, start_params, held, tokenizer, device, out) if held and procs.is_main_process else None
    if validate is not None and recorded is not None:
        validate.uniform = recorded
    history: list[dict] = []
    first = 0
    state = runtime.load_checkpoint(out / CHECKPOINT) if cfg.resume else None
    if state is not None:
        missing = set(phi.trainable_state()) - set(state["phi"])
        if missing:
            raise TaalmError(f"option --resume: the checkpoint in {out} does not match this φ (e.g. {min(missing)})")
        phi.load_state_dict(state["phi"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        runtime.set_rng_state(rng_of_this_process(state["rng"], procs))
        history, first = state["history"], state["update"]
        if validate is not None:
            validate.restore_uniform(state.get("uniform"))
        log.warning("resuming %s at φ update %d of %d", out, first, total)
    fit = None
    if state is None and cfg.answer_mask_steps:  # every process fits the same φ: same seed, same batches
        fit = answer_mask.fit_answer_masks(phi, [p.document for p in encoded], cfg.answer_mask_steps,
                                           cfg.answer_mask_lr, cfg.meta_batch, cfg.seed, pad_id, device,
                                           progress=procs.is_main_process, pos_weight=cfg.answer_mask_pos_weight)
    if procs.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if fit is not None:
            atomic_write_json(out / ANSWER_MASK_RECORD, fit)
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "data.json", report)
        copy_mixture(cfg, out)
    procs.start_tracking(to_dict(cfg))

    def checkpoint(update: int) -> None:
        rng = procs.gather_in_order([runtime.rng_state()])
        if procs.is_main_process:
            runtime.save_checkpoint(out / CHECKPOINT, {
                "phi": phi.trainable_state(), "optimizer": optimizer.state_dict(), "rng": rng,
                "history": history, "update": update,
                "uniform": validate.uniform_state() if validate is not None else None})
            write_jsonl(out / "history.jsonl", history)

    progress = tqdm(range(first, total), initial=first, total=total, desc="meta-train φ", dynamic_ncols=True,
                    disable=not procs.is_main_process)
    last_gain = ""
    if first == 0 and held:
        history.append({"update": 0, **(validate(phi, 0) if validate else {})})
        last_gain = f"{history[-1].get('gain_accuracy', 0.0):+.3f}"
        checkpoint(0)
    try:
        phi.train()
        for update in progress:
            started = time.time()
            indices = meta.meta_batch_indices(update, cfg.meta_batch, len(encoded), cfg.seed)
            results = update_gradient(cfg, theta, phi, start_params, encoded, indices, pad_id, procs)
            check_finite(phi, results, [encoded[i].source for i in indices], update)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = {"update": update + 1, "seconds": round(time.time() - started, 3)}
            for key in ("objective", "outer_loss", "restrict", "mean_weight", "top3_share", "effective_fraction"):
                record[key] = sum(getattr(r, key) for r in results) / len(results)
            validating = bool(held) and ((update + 1) % cfg.val_every == 0 or update + 1 == total)
            if validating and validate is not None:
                record.update(validate(phi, update + 1))
                phi.train()
                last_gain = f"{record['gain_accuracy']:+.3f}"
            history.append(record)
            procs.log({k: v for k, v in record.items() if k != "update" and isinstance(v, int | float)}, step=update + 1)
            progress.set_postfix(outer=f"{record['outer_loss']:.3f}", w=f"{record['mean_weight']:.3f}",
                                 eff=f"{record['effective_fraction']:.2f}", gain=last_gain or "-")
            if validating or (update + 1) % cfg.checkpoint_every == 0 or update + 1 == total:
                checkpoint(update + 1)
    finally:  # the bar ends its line, so an error message starts on its own
        progress.close()
        procs.end_tracking()
    if procs.is_main_process:
        finish(cfg, out, phi, history, held)
    procs.wait_for_everyone()
    return out


def is_validation_key(key: str) -> bool:
    """A history key a validation writes (the validation's own, or a kind's as ``kind/key``)."""
    return key.startswith(("val_", "uniform_", "gain_", "worst_kind")) or "/" in key


def same_validation(a: MetaTrainConfig, b: MetaTrainConfig, kind: str) -> bool:
    """Whether two runs' validations of ``kind`` learn alike (so their uniform runs are the same)."""
    return validation_options(a, kind) == validation_options(b, kind) and a.val_group == b.val_group


def recorded_uniform(history: list[dict], kinds: list[str], per_kind: bool) -> dict[str, Score]:
    """The uniform-weight scores a run's validations recorded for ``kinds`` (under ``kind/`` when ``per_kind``)."""
    uniform = {}
    for kind in kinds:
        prefix = f"{kind}/" if per_kind else ""
        for record in history:
            if f"{prefix}uniform_accuracy" in record:
                uniform[kind] = Score(record[f"{prefix}uniform_accuracy"], record[f"{prefix}uniform_nll"],
                                      record.get(f"{prefix}uniform_pair_accuracy", ()),
                                      record.get(f"{prefix}uniform_pair_nll", ()))
                break
    return uniform


def uniform_of_run(cfg: MetaTrainConfig, run: Path, kinds: list[str]) -> dict[str, Score]:
    """``--uniform_from``: the uniform-weight scores ``run`` recorded for the held-out ``kinds``, for a run whose θ
    start, held-out pairs and validation options are this one's (checked: otherwise they would not be this run's
    uniform runs)."""
    before = run_config(run, "uniform_from")
    check_same_start(cfg, before, run, "uniform_from")
    for kind in kinds:
        if not same_validation(before, cfg, kind):
            raise TaalmError(f"option --uniform_from: the validation options for {kind or 'the pairs'} are not the "
                             f"run's ({run / 'config.yaml'}): its uniform runs learned otherwise")
    history = [record for _, record in read_jsonl(run / "history.jsonl")] if (run / "history.jsonl").is_file() else []
    uniform = recorded_uniform(history, kinds, len(kinds) > 1)
    if len(uniform) < len(kinds):
        missing = sorted(set(kinds) - set(uniform))
        raise TaalmError(f"option --uniform_from: {run / 'history.jsonl'} records no uniform run for "
                         f"{', '.join(k or 'the pairs' for k in missing)}")
    return uniform


def run_config(run: Path, option: str) -> MetaTrainConfig:
    if not (run / "config.yaml").is_file():
        raise TaalmError(f"option --{option}: {run / 'config.yaml'} does not exist")
    return build_config(MetaTrainConfig, load_config_file(run / "config.yaml"), str(run / "config.yaml"))


# what fixes θ's start and the held-out pairs: a re-validation with another value would compare its φs against
# another θ, and mix its validations with the run's recorded ones
SAME_START = ("theta", "seed", "lora_r", "lora_alpha", "lora_dropout", "qlora", "dtype", "held_out", "task_format",
              "max_length")


def check_same_start(cfg: MetaTrainConfig, before: MetaTrainConfig, run: Path, option: str = "revalidate") -> None:
    for name in SAME_START:
        if getattr(cfg, name) != getattr(before, name):
            raise TaalmError(f"option --{option}: --{name} {getattr(cfg, name)} is not the run's "
                             f"{getattr(before, name)} ({run / 'config.yaml'}); it needs the run's θ start "
                             "and held-out pairs")


# fixed when φ is built, unlike its weight settings (which act at use)
PHI_STRUCTURE = ("phi_model", "phi_layers", "phi_lora_r", "phi_echo")


def weight_settings(cfg: MetaTrainConfig) -> tuple[float, float, float]:
    return cfg.weight_floor, cfg.weight_temperature, cfg.weight_floor_share


def revalidate(cfg: MetaTrainConfig) -> Path:
    """Validate the φ checkpoints of the run in ``cfg.revalidate`` again with ``cfg``'s validation options (another
    lr per kind, more epochs, another metric) or weight settings (``--weight_floor``, ``--weight_temperature``,
    ``--weight_floor_share``, then stored with the φ chosen) and write ``cfg.out`` as that run would have been
    written: its history with the new validations, the φ the new selection chooses, selection.json, the curve and
    the card. θ's start is rebuilt from the seed, so θ, its LoRA options, the seed and the held-out split must be the
    run's (checked); φ's structure (backbone, layers, LoRA rank, echo) is the run's and recorded as such."""
    run = Path(cfg.revalidate)
    checkpoints = sorted((run / VALIDATION_CHECKPOINTS).glob("update-*")) if run.is_dir() else []
    if not checkpoints:
        raise TaalmError(f"option --revalidate: {run / VALIDATION_CHECKPOINTS} holds no φ checkpoints")
    before = run_config(run, "revalidate")
    check_same_start(cfg, before, run)
    # φ's structure is the run's (each checkpoint loads with its own), whatever this command says: record that
    cfg = dataclasses.replace(cfg, **{name: getattr(before, name) for name in PHI_STRUCTURE})
    tokenizer = models.load_tokenizer(cfg.theta)
    _, held, report = prepare(cfg, tokenizer)
    if not held:
        raise TaalmError("option --revalidate: no held-out pairs to validate on (--held_out 0)")
    out = runtime.check_output_dir(cfg.out, False, CHECKPOINT)
    device = models.pick_device(cfg.device)
    theta = build_theta(cfg, device)
    validate = Validator(cfg, theta, meta.trainable_params(theta), held, tokenizer, device, out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    shutil.copyfile(run / "config.yaml", out / "run_config.yaml")  # the card names the run's command too
    atomic_write_json(out / "data.json", report)
    copy_mixture(cfg, out)
    recorded = {record["update"]: record for _, record in read_jsonl(run / "history.jsonl")}
    # kinds whose validation options are the run's keep their recorded uniform runs, and their recorded validations
    # too when φ's weight settings are the run's (the same θ start: a validation is deterministic)
    unchanged = [kind for kind in validate.held if same_validation(before, cfg, kind)]
    validate.uniform = recorded_uniform(list(recorded.values()), unchanged, len(validate.held) > 1)
    same = unchanged if weight_settings(cfg) == weight_settings(before) else []
    by_update = {update: {k: v for k, v in record.items() if not is_validation_key(k)}
                 for update, record in recorded.items()}

    def history() -> list[dict]:
        return sorted(by_update.values(), key=lambda r: r["update"])

    for path in tqdm(checkpoints, desc="revalidate φ", dynamic_ncols=True):
        update = int(path.name.removeprefix("update-"))
        old = recorded.get(update, {})
        known = {kind: {k.split("/", 1)[1]: v for k, v in old.items() if k.startswith(f"{kind}/")} for kind in same}
        known = {kind: record for kind, record in known.items() if record}
        phi = TrainAttention.load(path)
        # φ's weight settings act at use, so they can be chosen after training
        phi.weight_floor, phi.weight_temperature, phi.weight_floor_share = weight_settings(cfg)
        by_update.setdefault(update, {"update": update}).update(validate(phi, update, known))
        write_jsonl(out / "history.jsonl", history())
    finish(cfg, out, None, history(), held)
    return out


def update_gradient(cfg: MetaTrainConfig, theta, phi: TrainAttention, start: dict, encoded: list[meta.EncodedPair],
                    indices: list[int], pad_id: int, procs: Processes) -> list[meta.MetaStepResult]:
    """φ's meta-gradient for one update, left in φ's ``.grad``: the mean over the meta-batch's inner problems
    (``inner_batch`` pairs each, every one from θ's start; ``pair_batch`` one-pair problems are stacked into one
    batch). Each process takes its share and the gradients are summed over processes; returns the results of every
    group, in order, on every process."""
    positions = list(range(len(indices)))
    if cfg.pair_batch > 1:  # stacked: similar lengths together, less padding
        positions.sort(key=lambda k: len(encoded[indices[k]].document.input_ids))
    size = cfg.pair_batch if cfg.pair_batch > 1 else cfg.inner_batch
    groups = [positions[k:k + size] for k in range(0, len(positions), size)]
    results = []
    for group in procs.shard(groups):
        # restrict: each pair's unrelated task is the next pair's task in this meta-batch
        unrelated = [encoded[indices[(k + 1) % len(indices)]] for k in group] if cfg.restrict else None
        problem = meta.make_problem([encoded[indices[k]] for k in group], pad_id, unrelated).to(procs.device)
        results.append(meta.meta_gradient(theta, phi, start, problem, dummy_steps=cfg.dummy_steps,
                                          inner_lr=cfg.inner_lr, inner_weight_decay=cfg.inner_weight_decay,
                                          objective=cfg.objective, scale=cfg.inner_batch / cfg.meta_batch,
                                          stacked=cfg.pair_batch > 1))
    procs.sum_gradients([p for p in phi.parameters() if p.requires_grad])
    return procs.gather_in_order(results)


def check_finite(phi: TrainAttention, results: list[meta.MetaStepResult], sources: list[str], update: int) -> None:
    """A non-finite outer loss or φ gradient stops meta-training before the update; the last checkpoint stays."""
    if all(math.isfinite(r.objective) for r in results) and all(
            torch.isfinite(p.grad).all() for p in phi.parameters() if p.grad is not None):
        return
    raise TaalmError(f"non-finite meta-gradient at φ update {update + 1} (pairs: {', '.join(sources)}); stopped before "
                     "the update, the last checkpoint is intact")


def finish(cfg: MetaTrainConfig, out: Path, phi: TrainAttention | None, history: list[dict], held: list[Pair]) -> None:
    """Write the selected φ (best validation gain, or the last), the history, the curve and the held-out pairs."""
    from taalm.viz import plot_meta_curve

    best = best_validation(history, cfg.val_metric) if cfg.select == "best" else None
    chosen = history[-1]["update"] if best is None else best["update"]
    if best is None and phi is not None:
        phi.save(out)
    else:
        for path in (out / VALIDATION_CHECKPOINTS / f"update-{chosen:05d}").iterdir():  # the φ directory's files
            atomic_write_bytes(out / path.name, path.read_bytes())
    selection = {"select": cfg.select, "metric": cfg.val_metric, "update": chosen,
                 "validation": {k: v for k, v in (best or {}).items() if is_validation_key(k)}}
    atomic_write_json(out / "selection.json", selection)
    write_jsonl(out / "history.jsonl", history)
    plot_meta_curve(history, out / "meta_curve.png", selected=chosen if best is not None else None,
                    title=f"meta-training φ for {cfg.theta}")
    if held:
        write_held_out(out, held)
    write_card(out)
    done = {"updates": history[-1]["update"], "selected": chosen, "inputs": fingerprint.meta_train_inputs(cfg)}
    atomic_write_text(out / fingerprint.DONE, json.dumps(done) + "\n")  # what a benchmark checks before reuse


def write_held_out(out: Path, held: list[Pair]) -> None:
    """The pairs φ was validated on (``held_out.jsonl``): compare-phi checks that compared runs share them."""
    write_jsonl(out / "held_out.jsonl", [{"document": p.document, "task": p.task, "answer": p.answer,
                                          "source": p.source} for p in held])


def write_card(out: Path) -> None:
    """φ's model card (README.md) from the run's records: θ, data, settings, the validation table, the command."""
    from taalm.model_card import phi_card, read_records
    from taalm.weighting import CARD_FILE, CONFIG_FILE

    config = json.loads((out / CONFIG_FILE).read_text())
    atomic_write_text(out / CARD_FILE, phi_card(config, read_records(out), name=str(out)))
