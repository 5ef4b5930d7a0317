"""``taalm learn``: the one continual-knowledge-learning loop. Every method plugs into it (see ``taalm.methods``).

    taalm learn --docs new_facts.jsonl --method taalm --phi runs/phi --probes to_learn=probes.jsonl --out runs/taalm

Per optimizer step: a chunk of ``batch_size`` documents (plus Mix-Review documents), split into length-sorted
micro-batches whose gradients are accumulated; the loss of each sequence is TAALM's weighted mean
Σ nll_t·w_t / Σ w_t with w from the method (1, oracle mask, cached φ weights, or RHO-1's selection).
"""

from __future__ import annotations

import contextlib
import io
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

from taalm import losses, models, runtime
from taalm.config import LearnConfig, LoopOptions, probe_sets, save_config, to_dict
from taalm.data import (
    Encoded,
    Probe,
    encode,
    length_sorted_chunks,
    load_documents,
    load_probes,
    pad_batch,
    pad_token_id,
)
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.exact_match import exact_match
from taalm.io import atomic_dir, atomic_write_bytes, atomic_write_text, write_jsonl
from taalm.methods import Method, parse_method, rho1_weights
from taalm.tracking import make_tracker

log = logging.getLogger("taalm")
PAPER_RECADAM_LR_PULL = 1e-4 * 5000  # lr·γ of the official RecAdam runs; --recadam-coefficient -1 keeps it at any lr
CHECKPOINT = "checkpoint"
WEIGHTS_CACHE = "token_weights.pt"


@dataclass
class LearnResult:
    out: Path
    metrics: list[dict]


def _encode_all(tokenizer, texts, max_length: int, what: str, answers=None) -> list[Encoded]:
    encoded = [encode(tokenizer, t.text if hasattr(t, "text") else t.task, max_length,
                      answer=answers[i] if answers else None, where=t.source) for i, t in enumerate(texts)]
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        log.warning("%d of %d %s truncated to --max-length %d tokens", truncated, len(encoded), what, max_length)
    return encoded


def encode_probes(tokenizer, probes: dict[str, list[Probe]], max_length: int) -> dict[str, list[Encoded]]:
    """Each probe set tokenized with its answer tokens labelled."""
    return {name: _encode_all(tokenizer, items, max_length, f"{name} probes", [p.answer for p in items])
            for name, items in probes.items()}


def build_model(cfg: LearnConfig, method: Method, device: torch.device) -> torch.nn.Module:
    """θ with fresh LoRA, or the frozen base with a K-Adapter; only the adapter is trainable."""
    base = models.load_causal_lm(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation,
                                 qlora=cfg.use_qlora())
    if cfg.gradient_checkpointing:  # recompute each layer's activations in the backward pass (non-reentrant)
        enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name before
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method.kadapter:
        from taalm.kadapter import KAdapterForCausalLM

        model = KAdapterForCausalLM(base)
    else:
        model = models.add_lora(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, qlora=cfg.use_qlora())
    return model.to(device)


def initial_adapter_dir(init_from: str, method: Method) -> Path:
    """The adapter directory of the run ``--init-from`` names; checked before any output is written."""
    kind = "kadapter" if method.kadapter else "adapter"
    path = Path(init_from) / kind
    if not path.is_dir():
        other = "a LoRA" if method.kadapter else "a K-Adapter"
        found = f" (it holds {other} adapter)" if (Path(init_from) / ("adapter" if method.kadapter else "kadapter")
                                                  ).is_dir() else ""
        raise TaalmError(f"option --init-from: {init_from} has no {kind}/ from a finished `taalm learn` run{found}")
    return path


def load_initial_adapter(model: torch.nn.Module, method: Method, path: Path, cfg: LearnConfig) -> None:
    """Continue from an earlier run's adapter: same adapter kind and LoRA settings, loaded into the fresh model."""
    if method.kadapter:
        model.load_adapter(path)
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((path / "adapter_config.json").read_text())
    for key, value in (("r", cfg.lora_r), ("lora_alpha", cfg.lora_alpha)):
        if saved.get(key) != value:
            raise TaalmError(f"option --init-from: {path} has {key} {saved.get(key)}, this run {value}")
    result = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise TaalmError(f"option --init-from: {path} does not fit this model (e.g. {result.unexpected_keys[0]})")


def static_weights(cfg: LearnConfig, method: Method, docs: list[Encoded], tokenizer, out: Path,
                   procs: Processes) -> list[torch.Tensor] | None:
    """Token weights that do not change during learning: the oracle mask, or φ's weights computed once (each
    process weighs its share of the documents) and cached in the run directory."""
    if method.weights == "oracle":
        return [torch.tensor(e.label[1:], dtype=torch.float32) for e in docs]
    if method.weights != "taalm":
        return None
    cache = out / WEIGHTS_CACHE
    if cache.is_file():
        return torch.load(cache)
    from taalm.weighting import TrainAttention, document_weights, resolve_phi

    phi = TrainAttention.load(resolve_phi(cfg.phi)).to(procs.device)
    if not models.same_tokenizer(tokenizer, models.load_tokenizer(phi.backbone_name)):
        raise TaalmError(f"option --phi: φ's backbone {phi.backbone_name!r} does not share θ's tokenizer")
    started = time.time()
    mine = procs.shard(docs)
    weights = procs.gather_in_order([torch.tensor(w, dtype=torch.float32)
                                     for w in document_weights(phi, [e.input_ids for e in mine])])
    n_tokens = sum(len(e.input_ids) for e in mine)
    log.info("φ weights: %d documents, %.2f s per 1k tokens", len(mine), (time.time() - started) / max(1, n_tokens) * 1000)
    del phi
    if procs.is_main:
        buffer = io.BytesIO()
        torch.save(weights, buffer)
        atomic_write_bytes(cache, buffer.getvalue())  # a killed run never leaves half a cache
    return weights


@torch.no_grad()
def reference_nll(model: torch.nn.Module, method: Method, docs: list[Encoded], pad_id: int, micro_batch: int,
                  device: torch.device, procs: Processes | None = None) -> list[torch.Tensor]:
    """RHO-1's reference losses: the model before learning (LoRA disabled / K-Adapter's frozen base), once per doc
    (each process scores its share)."""
    procs = procs or Processes.single()
    model.eval()
    mine = procs.shard(list(range(len(docs))))
    out: list[torch.Tensor] = [torch.empty(0)] * len(docs)
    for chunk in length_sorted_chunks(mine, [len(e.input_ids) for e in docs], micro_batch):
        batch = pad_batch([docs[i] for i in chunk], pad_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if method.kadapter:
            logits = model.base(input_ids=ids, attention_mask=mask).logits
        else:
            with model.disable_adapter():
                logits = model(input_ids=ids, attention_mask=mask).logits
        nll = losses.token_nll(logits, ids).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = nll[row, : len(docs[i].input_ids) - 1]
    return procs.gather_in_order([out[i] for i in mine])


@dataclass
class ProbeScores:
    """Per probe (input order): teacher-forced label-token accuracy and mean label-token NLL; plus the totals over
    all label tokens (for a token-level perplexity)."""

    accuracy: list[float]
    nll: list[float]
    total_nll: float
    n_tokens: int


@torch.no_grad()
def score_probes(model: torch.nn.Module, items: list[Encoded], pad_id: int, batch_size: int, device: torch.device,
                 dtype: str = "auto") -> ProbeScores:
    """Score every probe's answer tokens, teacher-forced, in length-sorted batches."""
    model.eval()
    accuracy, nll = [0.0] * len(items), [0.0] * len(items)
    total_nll, n_tokens = 0.0, 0
    for chunk in length_sorted_chunks(list(range(len(items))), [len(e.input_ids) for e in items], batch_size):
        batch = {k: v.to(device) for k, v in pad_batch([items[i] for i in chunk], pad_id).items()}
        with runtime.autocast(device, dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["label_mask"]
        token_nll = losses.token_nll(logits, batch["input_ids"]).float()
        hits = losses.label_accuracy(logits, batch["input_ids"], labels).tolist()
        for i, a, n in zip(chunk, hits, losses.masked_mean(token_nll, labels).tolist()):
            accuracy[i], nll[i] = a, n
        total_nll += float((token_nll * labels).sum())
        n_tokens += int(labels.sum())
    return ProbeScores(accuracy, nll, total_nll, n_tokens)


def evaluate(model: torch.nn.Module, probes: dict[str, list[Encoded]], pad_id: int, batch_size: int,
             device: torch.device, dtype: str, procs: Processes | None = None,
             answers: dict[str, list[str]] | None = None, tokenizer=None) -> dict[str, dict[str, Any]]:
    """Per probe set: label-token accuracy and label NLL (each the mean over probes of the probe's mean over its
    answer tokens), the perplexity over all answer tokens, whole-answer exact match (``taalm.exact_match``, decoded
    with ``tokenizer``; None without ``answers``), and ``per_probe`` lists of accuracy, NLL and exact match in the
    probes' order (for bootstraps over facts). Each process scores its share of the probes."""
    procs = procs or Processes.single()
    results = {}
    for name, items in probes.items():
        scores = score_probes(model, procs.shard(items), pad_id, batch_size, device, dtype)
        accuracy, nll = procs.gather_in_order(scores.accuracy), procs.gather_in_order(scores.nll)
        totals = procs.sum(torch.tensor([scores.total_nll, scores.n_tokens], dtype=torch.float64, device=device))
        matches = None
        if answers is not None:
            matches = procs.gather_in_order(exact_match(model, procs.shard(items), procs.shard(answers[name]), tokenizer,
                                                        pad_id, batch_size, device, dtype))
        results[name] = {"accuracy": sum(accuracy) / len(items), "nll": sum(nll) / len(items),
                         "perplexity": losses.perplexity(float(totals[0]), int(totals[1])),
                         "exact_match": sum(matches) / len(items) if matches is not None else None,
                         "per_probe": {"accuracy": accuracy, "nll": nll, "exact_match": matches}}
    return results


def scalars(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"SET/metric": value}`` of an evaluation's numbers, for the experiment tracker: no lists, no None."""
    return {f"{name}/{key}": value for name, values in results.items() for key, value in values.items()
            if isinstance(value, (int, float))}


def review_count(n_docs: int, epoch: int, ratio: float, decay: float) -> int:
    """Mix-Review: review documents that accompany ``n_docs`` training documents at ``epoch`` (0-based)."""
    return round(n_docs * ratio * decay**epoch)


def _padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class Learner:
    """State of one run: the model, optimizer, documents and per-document weight sources. ``options`` are the loop's
    settings (``LoopOptions``: micro-batch, Mix-Review rate, RHO-1 ratio, seed); ``dtype`` picks autocast."""

    def __init__(self, options: LoopOptions, method: Method, model, optimizer, docs, review, weights, reference, pad_id,
                 device, dtype: str = "auto", names: dict[str, list[str]] | None = None,
                 procs: Processes | None = None):
        self.cfg, self.method, self.model, self.optimizer = options, method, model, optimizer
        self.docs, self.review, self.weights, self.reference = docs, review, weights, reference
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
        weights = self.token_weights(items, nll, batch["loss_mask"])
        return losses.weighted_loss(nll, weights, batch["loss_mask"])

    def non_finite(self, what: str, items: list[tuple[str, int]], epoch: int, step: int) -> None:
        """Stop before the optimizer step: the last checkpoint on disk stays the last good state."""
        self.optimizer.zero_grad(set_to_none=True)
        shown = [self.names.get(kind, [])[i] if self.names.get(kind) else f"{kind} {i}" for kind, i in items]
        raise TaalmError(f"non-finite {what} at epoch {epoch + 1}, step {step + 1} (documents: {', '.join(shown)}); "
                         "stopped before the update, the last checkpoint is intact")

    def token_weights(self, items: list[tuple[str, int]], nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = nll.size(1)
        ones = mask.new_ones(mask.shape)
        if self.weights is not None:  # oracle / taalm: fixed per document; review documents weigh every token
            rows = [self.weights[i] if kind == "doc" else torch.ones(width) for kind, i in items]
            return _padded(rows, width).to(nll.device)
        if self.method.weights == "rho1":
            reference = _padded([self.reference[i] if kind == "doc" else torch.zeros(width) for kind, i in items],
                                width).to(nll.device)
            selected = rho1_weights(nll.detach() - reference, mask, self.cfg.rho1_ratio)
            is_doc = torch.tensor([kind == "doc" for kind, _ in items], device=nll.device).unsqueeze(-1)
            return torch.where(is_doc, selected, ones)
        return ones


def _make_optimizer(cfg: LearnConfig, method: Method, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if method.recadam:
        from taalm.recadam import RecAdam

        stiffness = PAPER_RECADAM_LR_PULL / cfg.lr if cfg.recadam_coefficient < 0 else cfg.recadam_coefficient
        if cfg.lr * stiffness >= 2:
            log.warning("RecAdam: lr × coefficient = %g ≥ 2: the pull towards the initial weights overshoots and "
                        "diverges; lower --recadam-coefficient (-1: 0.5 / lr)", cfg.lr * stiffness)
        return RecAdam(params, lr=cfg.lr, anneal_k=cfg.recadam_k, anneal_t0=cfg.recadam_t0, pretrain_cof=stiffness)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: torch.nn.Module, method: Method, out: Path, tokenizer=None) -> Path:
    """LoRA as a peft adapter directory that loads on any machine (``PeftModel.from_pretrained``): its config and
    card name θ's Hub id (an alias's source model, not its local cache); or the K-Adapter's safetensors. θ's
    tokenizer (default: loaded from θ's directory) is saved beside either."""
    from taalm.model_card import adapter_card

    target = out / ("kadapter" if method.kadapter else "adapter")
    base = model.base if method.kadapter else model.get_base_model()
    local = base.name_or_path
    with atomic_dir(target) as tmp:
        if method.kadapter:
            model.save_adapter(tmp)
        else:
            config = model.peft_config[model.active_adapter]
            named = config.base_model_name_or_path
            config.base_model_name_or_path = models.hub_id(local) or local
            try:  # LoRA never touches the embeddings: peft need not look the base model up on the Hub
                model.save_pretrained(str(tmp), save_embedding_layers=False)
            finally:
                config.base_model_name_or_path = named
            atomic_write_text(tmp / "README.md", adapter_card(local, method.name))
        (tokenizer or models.load_tokenizer(local)).save_pretrained(str(tmp))
    return target


def _records(epoch: int, results: dict[str, dict[str, Any]], train_loss: float | None, seconds: float) -> list[dict]:
    """metrics.jsonl lines, one per probe set: the scalars first, the per-probe lists last (long lines stay readable)."""
    return [{"epoch": epoch, "probe": name, **{k: v for k, v in values.items() if k != "per_probe"},
             "train_loss": train_loss, "seconds": round(seconds, 2), "per_probe": values["per_probe"]}
            for name, values in results.items()]


def read_inputs(cfg: LearnConfig, method: Method):
    """Documents, review documents and probe sets, each file checked (file:line errors) before anything is written."""
    documents = load_documents(cfg.docs)
    if method.weights == "oracle":
        missing = next((d for d in documents if d.answer is None), None)
        if missing is not None:
            raise TaalmError(f"{missing.source}: method oracle needs an 'answer' field in every document")
    probes = {name: load_probes(path) for name, path in probe_sets(cfg.probes).items()}
    review = load_documents(cfg.review_docs) if method.mixreview else []
    if method.weights == "taalm":
        from taalm.weighting import resolve_phi

        resolve_phi(cfg.phi)
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
    documents, review, probes = read_inputs(cfg, method)
    init_adapter = initial_adapter_dir(cfg.init_from, method) if cfg.init_from else None
    tokenizer = models.load_tokenizer(cfg.model)
    answers = [d.answer for d in documents] if method.weights == "oracle" else None
    docs = _encode_all(tokenizer, documents, cfg.max_length, "documents", answers)
    review_enc = _encode_all(tokenizer, review, cfg.max_length, "review documents")
    probe_enc = encode_probes(tokenizer, probes, cfg.max_length)
    out = runtime.check_output_dir(cfg.out, cfg.resume, CHECKPOINT)
    procs = Processes(cfg.device)
    procs.barrier()  # every process has checked --out before the main one writes into it
    device, pad_id = procs.device, pad_token_id(tokenizer)

    runtime.seed_everything(cfg.seed)
    model = build_model(cfg, method, device)
    if init_adapter is not None:  # before the optimizer: RecAdam anchors at the parameters it is built with
        load_initial_adapter(model, method, init_adapter, cfg)
    optimizer = _make_optimizer(cfg, method, [p for p in model.parameters() if p.requires_grad])
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    rng = runtime.rng_state()  # building φ draws random numbers: keep θ's dropout stream that of plain finetuning
    weights = static_weights(cfg, method, docs, tokenizer, out, procs)
    runtime.set_rng_state(rng)
    reference = reference_nll(model, method, docs, pad_id, cfg.micro_batch, device, procs) \
        if method.weights == "rho1" else None
    state = runtime.load_checkpoint(out / CHECKPOINT) if cfg.resume else None
    if state is not None:
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        runtime.set_rng_state(rng_of_this_process(state["rng"], procs))
        log.warning("resuming %s at epoch %d, step %d", out, state["epoch"] + 1, state["step"])
    learner = Learner(cfg, method, procs.wrap(model), optimizer, docs, review_enc, weights, reference, pad_id, device,
                      cfg.dtype, names={"doc": [d.source for d in documents], "review": [d.source for d in review]},
                      procs=procs)
    answers = {name: [p.answer for p in items] for name, items in probes.items()} if cfg.exact_match else None
    metrics = train(cfg, learner, model, probe_enc, out, state, answers, tokenizer)
    if procs.is_main:
        save_adapter(model, method, out)
        write_jsonl(out / "metrics.jsonl", metrics)
        if probes:
            from taalm.viz import plot_learning_curves

            plot_learning_curves(metrics, out / "learning_curve.png", title=f"{method.name} on {Path(cfg.docs).name}")
        atomic_write_text(out / "DONE", json.dumps({"epochs": cfg.epochs}) + "\n")
    procs.barrier()
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
        if procs.is_main:
            runtime.save_checkpoint(out / CHECKPOINT, {
                "trainable": _trainable_state(model), "optimizer": optimizer.state_dict(), "rng": rng,
                "metrics": metrics, "epoch": epoch, "step": step, "losses": epoch_losses})

    chunks_per_epoch = math.ceil(len(learner.docs) / cfg.batch_size)
    tracker = make_tracker(cfg.log if procs.is_main else "none", out, to_dict(cfg))
    progress = tqdm(total=cfg.epochs * chunks_per_epoch, initial=epoch0 * chunks_per_epoch + step0,
                    desc=f"learn [{learner.method.name}]", dynamic_ncols=True, disable=not procs.is_main)
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
            tracker.log({"train_loss": train_loss, **scalars(results)}, epoch + 1)
            epoch_losses = []
            checkpoint(epoch + 1, 0)
            if procs.is_main:
                write_jsonl(out / "metrics.jsonl", metrics)
    finally:  # the bar ends its line, so an error message starts on its own
        progress.close()
        tracker.close()
    return metrics
