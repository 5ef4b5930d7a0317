"""``taalm learn``: the one continual-knowledge-learning loop. Every method plugs into it (see ``taalm.methods``).

    taalm learn --docs new_facts.jsonl --method taalm --phi runs/phi --probes to_learn=probes.jsonl --out runs/taalm

Per optimizer step: a chunk of ``batch_size`` documents (plus Mix-Review documents), split into length-sorted
micro-batches whose gradients are accumulated; the loss of each sequence is TAALM's weighted mean
Σ nll_t·w_t / Σ w_t with w from the method's ``taalm.weight_sources.WeightSource`` (1, oracle mask, cached φ
weights, or RHO-1's selection). Scoring lives in ``taalm.scoring``, the adapter's build/load/save in ``taalm.adapters``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from taalm import fingerprint, losses, models, runtime
from taalm.adapters import build_model, initial_adapter_dir, load_initial_adapter, save_adapter, trainable_state
from taalm.config import LearnConfig, LoopOptions, probe_sets, save_config, to_dict
from taalm.data import Encoded, encode_all, length_sorted_chunks, load_documents, load_probes, pad_batch, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_write_text, write_jsonl
from taalm.methods import Method, parse_method
from taalm.scoring import encode_probes, evaluate, scalars
from taalm.weight_sources import Preparation, WeightSource

log = logging.getLogger("taalm")
PAPER_RECADAM_LR_PULL = 1e-4 * 5000  # lr·γ of the official RecAdam runs; --recadam_coefficient -1 keeps it at any lr
CHECKPOINT = "checkpoint"


@dataclass
class LearnResult:
    out: Path
    metrics: list[dict]


def review_count(n_docs: int, epoch: int, ratio: float, decay: float) -> int:
    """Mix-Review: review documents that accompany ``n_docs`` training documents at ``epoch`` (0-based)."""
    return round(n_docs * ratio * decay**epoch)


class Learner:
    """State of one run: the model, optimizer, documents and the source of their token weights (a prepared
    ``WeightSource``; None: every token weighs 1). ``options`` are the loop's settings (``LoopOptions``: micro-batch,
    Mix-Review rate, seed); ``dtype`` picks autocast."""

    def __init__(self, options: LoopOptions, method: Method, model, optimizer, docs, review,
                 source: WeightSource | None, pad_id, device, dtype: str = "auto",
                 names: dict[str, list[str]] | None = None, procs: Processes | None = None):
        self.cfg, self.method, self.model, self.optimizer = options, method, model, optimizer
        self.docs, self.review, self.source = docs, review, source or WeightSource()
        self.pad_id, self.device, self.dtype = pad_id, device, dtype
        self.names = names or {}  # "doc"/"review" -> file:line of each document, for error messages
        self.procs = procs or Processes.single()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The documents of each optimizer step of ``epoch``: a fresh seeded shuffle per epoch, so the position alone
        (epoch, step) replays the order on resume."""
        order = list(range(len(self.docs)))
        random.Random(self.cfg.seed * 1000003 + epoch).shuffle(order)
        size = self.cfg.batch_size
        return [order[k:k + size] for k in range(0, len(order), size)]

    def review_sample(self, n_docs: int, epoch: int, step: int) -> list[int]:
        if not self.method.mixreview:
            return []
        k = review_count(n_docs, epoch, self.cfg.review_ratio, self.cfg.review_decay)
        rng = random.Random(f"{self.cfg.seed}/{epoch}/{step}")
        if k <= len(self.review):
            return rng.sample(range(len(self.review)), k)
        return [rng.randrange(len(self.review)) for _ in range(k)]

    def step(self, doc_ids: list[int], epoch: int, step: int) -> float:
        """One optimizer step on ``doc_ids`` (+ review documents); returns the mean loss over the step's documents.

        With several processes each takes its share of the step's documents; its loss is scaled by the process count
        because DistributedDataParallel averages the gradients at the step's last micro-batch."""
        items = [("doc", i) for i in doc_ids] + [("review", i) for i in self.review_sample(len(doc_ids), epoch, step)]
        encoded = [self.docs[i] if kind == "doc" else self.review[i] for kind, i in items]
        mine = self.procs.shard(list(range(len(items))))
        chunks = length_sorted_chunks(mine, [len(e.input_ids) for e in encoded], self.cfg.micro_batch) or [[]]
        self.model.train()
        total, finite = 0.0, True
        for k, chunk in enumerate(chunks):
            with self.procs.no_sync(self.model) if k < len(chunks) - 1 else contextlib.nullcontext():
                if chunk:
                    loss = self.chunk_loss([items[j] for j in chunk], [encoded[j] for j in chunk])
                    loss = loss * (len(chunk) * self.procs.world / len(items))
                else:  # an empty share still takes part in the gradient average
                    loss = self.model(input_ids=torch.tensor([encoded[0].input_ids[:2]], device=self.device)
                                      ).logits.sum() * 0.0
                finite &= bool(torch.isfinite(loss))
                loss.backward()
                total += float(loss.detach())
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite &= all(bool(torch.isfinite(p.grad).all()) for p in params)
        if self.procs.any(not finite):
            self.non_finite("loss or gradient", items, epoch, step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(self.procs.sum(torch.tensor([total], dtype=torch.float64))) / self.procs.world

    def chunk_loss(self, items: list[tuple[str, int]], encoded: list[Encoded]) -> torch.Tensor:
        """TAALM's weighted loss of one micro-batch: per sequence Σ nll·w / Σ w, then the mean."""
        batch = {k: v.to(self.device) for k, v in pad_batch(encoded, self.pad_id).items()}
        with runtime.autocast(self.device, self.dtype):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = losses.token_nll(logits, batch["input_ids"]).float()
        weights = self.source.weights(items, nll, batch["loss_mask"])
        return losses.weighted_loss(nll, weights, batch["loss_mask"])

    def non_finite(self, what: str, items: list[tuple[str, int]], epoch: int, step: int) -> None:
        """Stop before the optimizer step: the last checkpoint on disk stays the last good state."""
        self.optimizer.zero_grad(set_to_none=True)
        shown = [self.names.get(kind, [])[i] if self.names.get(kind) else f"{kind} {i}" for kind, i in items]
        raise TaalmError(f"non-finite {what} at epoch {epoch + 1}, step {step + 1} (documents: {', '.join(shown)}); "
                         "stopped before the update, the last checkpoint is intact")


def _make_optimizer(cfg: LearnConfig, method: Method, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if method.recadam:
        from taalm.recadam import RecAdam

        stiffness = PAPER_RECADAM_LR_PULL / cfg.lr if cfg.recadam_coefficient < 0 else cfg.recadam_coefficient
        if cfg.lr * stiffness >= 2:
            log.warning("RecAdam: lr × coefficient = %g ≥ 2: the pull towards the initial weights overshoots and "
                        "diverges; lower --recadam_coefficient (-1: 0.5 / lr)", cfg.lr * stiffness)
        return RecAdam(params, lr=cfg.lr, anneal_k=cfg.recadam_k, anneal_t0=cfg.recadam_t0, pretrain_cof=stiffness)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


def _records(epoch: int, results: dict[str, dict[str, Any]], train_loss: float | None, seconds: float) -> list[dict]:
    """metrics.jsonl lines, one per probe set: the scalars first, the per-probe lists last (long lines stay readable)."""
    return [{"epoch": epoch, "probe": name, **{k: v for k, v in values.items() if k != "per_probe"},
             "train_loss": train_loss, "seconds": round(seconds, 2), "per_probe": values["per_probe"]}
            for name, values in results.items()]


def read_inputs(cfg: LearnConfig, method: Method, source: WeightSource):
    """Documents, review documents and probe sets, each file (and what the weight source needs, e.g. --phi) checked
    with file:line errors before anything is written."""
    documents = load_documents(cfg.docs)
    source.check(documents)
    probes = {name: load_probes(path) for name, path in probe_sets(cfg.probes).items()}
    review = load_documents(cfg.review_docs) if method.mixreview else []
    return documents, review, probes


def rng_of_this_process(saved, procs: Processes):
    """A checkpoint keeps one RNG state per process: resuming needs the same process count."""
    if not isinstance(saved, list):  # written by a single process before per-process states existed
        saved = [saved]
    if len(saved) != procs.world:
        raise TaalmError(f"option --resume: the checkpoint was written by {len(saved)} process(es); resume with the "
                         f"same number, not {procs.world}")
    return saved[procs.rank]


def learn(cfg: LearnConfig) -> LearnResult:
    """Run ``cfg.method`` over ``cfg.docs`` for ``cfg.epochs`` epochs; resumable; returns the metrics. Under
    ``accelerate launch`` / ``torchrun`` every process runs this and the main one writes the outputs."""
    method = parse_method(cfg.method)
    source = method.weight_source(cfg.phi, cfg.rho1_ratio)
    documents, review, probes = read_inputs(cfg, method, source)
    init_adapter = initial_adapter_dir(cfg.init_from, method) if cfg.init_from else None
    tokenizer = models.load_tokenizer(cfg.model)
    answers = [d.answer for d in documents] if source.labels_answers else None
    docs = encode_all(tokenizer, documents, cfg.max_length, "documents", answers)
    review_enc = encode_all(tokenizer, review, cfg.max_length, "review documents")
    probe_enc = encode_probes(tokenizer, probes, cfg.max_length)
    out = runtime.check_output_dir(cfg.out, cfg.resume, CHECKPOINT)
    procs = Processes(cfg.device, cfg.log, out)
    procs.wait_for_everyone()  # every process has checked --out before the main one writes into it
    device, pad_id = procs.device, pad_token_id(tokenizer)

    runtime.seed_everything(cfg.seed)
    model = build_model(cfg, method, device)
    if init_adapter is not None:  # before the optimizer: RecAdam anchors at the parameters it is built with
        load_initial_adapter(model, method, init_adapter, cfg)
    optimizer = _make_optimizer(cfg, method, [p for p in model.parameters() if p.requires_grad])
    if procs.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    rng = runtime.rng_state()  # building φ draws random numbers: keep θ's dropout stream that of plain finetuning
    source.prepare(Preparation(model, docs, tokenizer, pad_id, cfg.micro_batch, device, out, procs))
    runtime.set_rng_state(rng)
    state = runtime.load_checkpoint(out / CHECKPOINT) if cfg.resume else None
    if state is not None:
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        runtime.set_rng_state(rng_of_this_process(state["rng"], procs))
        log.warning("resuming %s at epoch %d, step %d", out, state["epoch"] + 1, state["step"])
    learner = Learner(cfg, method, procs.prepare(model), optimizer, docs, review_enc, source, pad_id, device, cfg.dtype,
                      names={"doc": [d.source for d in documents], "review": [d.source for d in review]},
                      procs=procs)
    answers = {name: [p.answer for p in items] for name, items in probes.items()} if cfg.exact_match else None
    metrics = train(cfg, learner, model, probe_enc, out, state, answers, tokenizer)
    if procs.is_main_process:
        save_adapter(model, method, out)
        write_jsonl(out / "metrics.jsonl", metrics)
        if probes:
            from taalm.viz import plot_learning_curves

            plot_learning_curves(metrics, out / "learning_curve.png", title=f"{method.name} on {Path(cfg.docs).name}")
        done = {"epochs": cfg.epochs, "inputs": fingerprint.learn_inputs(cfg)}  # what a benchmark checks before reuse
        atomic_write_text(out / fingerprint.DONE, json.dumps(done) + "\n")
    procs.wait_for_everyone()
    return LearnResult(out, metrics)


def train(cfg: LearnConfig, learner: Learner, model: torch.nn.Module, probes: dict[str, list[Encoded]], out: Path,
          state: dict | None, answers: dict[str, list[str]] | None = None, tokenizer=None) -> list[dict]:
    """The epochs: steps, evaluation after each epoch, checkpoints (the main process writes them); returns the
    metrics. ``model`` is the unwrapped model (evaluation and checkpoints); the learner trains its wrapped one.
    ``answers`` (per probe set) and ``tokenizer`` turn on exact match."""
    procs, optimizer = learner.procs, learner.optimizer
    evaluate_now = lambda: evaluate(model, probes, learner.pad_id, cfg.eval_batch, learner.device, cfg.dtype, procs,
                                    answers, tokenizer)
    if state is not None:
        metrics, epoch0, step0, epoch_losses = state["metrics"], state["epoch"], state["step"], state["losses"]
    else:
        started = time.time()
        metrics, epoch0, step0, epoch_losses = _records(0, evaluate_now(), None, time.time() - started), 0, 0, []

    def checkpoint(epoch: int, step: int) -> None:
        rng = procs.gather_in_order([runtime.rng_state()])
        if procs.is_main_process:
            runtime.save_checkpoint(out / CHECKPOINT, {
                "trainable": trainable_state(model), "optimizer": optimizer.state_dict(), "rng": rng,
                "metrics": metrics, "epoch": epoch, "step": step, "losses": epoch_losses})

    chunks_per_epoch = math.ceil(len(learner.docs) / cfg.batch_size)
    procs.start_tracking(to_dict(cfg))
    progress = tqdm(total=cfg.epochs * chunks_per_epoch, initial=epoch0 * chunks_per_epoch + step0,
                    desc=f"learn [{learner.method.name}]", dynamic_ncols=True, disable=not procs.is_main_process)
    try:
        for epoch in range(epoch0, cfg.epochs):
            started = time.time()
            batches = learner.epoch_batches(epoch)
            for step in range(step0 if epoch == epoch0 else 0, chunks_per_epoch):
                epoch_losses.append(learner.step(batches[step], epoch, step))
                progress.update(1)
                progress.set_postfix(epoch=epoch + 1, loss=f"{epoch_losses[-1]:.3f}")
                done = epoch * chunks_per_epoch + step + 1
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and step + 1 < chunks_per_epoch:
                    checkpoint(epoch, step + 1)
            train_loss = sum(epoch_losses) / len(epoch_losses)
            results = evaluate_now()
            metrics += _records(epoch + 1, results, train_loss, time.time() - started)
            procs.log({"train_loss": train_loss, **scalars(results)}, step=epoch + 1)
            epoch_losses = []
            checkpoint(epoch + 1, 0)
            if procs.is_main_process:
                write_jsonl(out / "metrics.jsonl", metrics)
    finally:  # the bar ends its line, so an error message starts on its own
        progress.close()
        procs.end_tracking()
    return metrics
