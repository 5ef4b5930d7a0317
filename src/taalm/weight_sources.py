"""Where the per-token weights of ``taalm learn`` come from: one interface, one class per source.

    loss = Σ_t nll_t · w_t / Σ_t w_t          (per sequence, ``losses.weighted_loss``)

    WeightSource    w = 1                                  (finetune; and every review document, in every method)
    FixedWeights    w given per document                    (φ's validation runs, benchmarks of the loop's speed)
    OracleMask      w = 1 on the answer's tokens, else 0    (the documents' ``answer`` field)
    PhiWeights      w = φ(D), computed once, cached         (TAALM; ``token_weights.pt`` in the run directory)
    ExcessLoss      w = 1 on the top ⌈ratio·n⌉ tokens of nll_θ - nll_ref, else 0   (RHO-1)

A method (``taalm.methods.Method.weight_source``) picks its source; the loop calls ``prepare`` once before the first
step and ``weights`` on every micro-batch, and never asks which source it has.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from taalm import losses, models
from taalm.data import Document, Encoded, length_sorted_chunks, pad_batch
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.io import atomic_write_bytes

log = logging.getLogger("taalm")
WEIGHTS_CACHE = "token_weights.pt"
Items = list[tuple[str, int]]  # ("doc" | "review", index) of each row of a micro-batch


@dataclass
class Preparation:
    """What a source may need before learning starts: θ as it is now (RHO-1's reference), the encoded documents,
    θ's tokenizer, the run directory (φ's cache) and this process's place in the run."""

    model: torch.nn.Module
    docs: list[Encoded]
    tokenizer: Any
    pad_id: int
    micro_batch: int
    device: torch.device
    out: Path
    procs: Processes


def padded(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Rows of different lengths as one ``[len(rows), width]`` tensor, zero-padded on the right."""
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class WeightSource:
    """Uniform weights: every predicted token counts once (finetune). The base of every source."""

    labels_answers = False  # whether documents are encoded with their answer tokens labelled (the oracle's mask)

    def check(self, documents: list[Document]) -> None:
        """Reject unusable input with a one-line ``TaalmError``, before any output is written."""

    def prepare(self, run: Preparation) -> None:
        """Compute once, before the first step, what ``weights`` needs."""

    def weights(self, items: Items, nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[batch, seq-1]`` weights of one micro-batch: ``items`` names each row's document, ``nll`` is θ's
        per-token loss and ``mask`` marks real (not padding) tokens."""
        return mask.new_ones(mask.shape)


class FixedWeights(WeightSource):
    """Weights known before learning, one tensor per document (``seq-1`` long); review documents weigh every token."""

    def __init__(self, per_doc: list[torch.Tensor] | None = None):
        self.per_doc = per_doc

    def weights(self, items: Items, nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = nll.size(1)
        rows = [self.per_doc[i] if kind == "doc" else torch.ones(width) for kind, i in items]
        return padded(rows, width).to(nll.device)


class OracleMask(FixedWeights):
    """The paper's oracle: weight 1 on the tokens of each document's ``answer``, 0 elsewhere."""

    labels_answers = True

    def check(self, documents: list[Document]) -> None:
        missing = next((d for d in documents if d.answer is None), None)
        if missing is not None:
            raise TaalmError(f"{missing.source}: method oracle needs an 'answer' field in every document")

    def prepare(self, run: Preparation) -> None:
        self.per_doc = [torch.tensor(e.label[1:], dtype=torch.float32) for e in run.docs]


class PhiWeights(FixedWeights):
    """TAALM: a trained φ's weights, computed once per document (each process weighs its share) and cached in the
    run directory, so a resumed run does not load φ again."""

    def __init__(self, phi: str):
        super().__init__()
        self.phi = phi

    def check(self, documents: list[Document]) -> None:
        from taalm.weighting import resolve_phi

        resolve_phi(self.phi)

    def prepare(self, run: Preparation) -> None:
        cache = run.out / WEIGHTS_CACHE
        if cache.is_file():
            self.per_doc = torch.load(cache, weights_only=True)  # a list of tensors: no pickled objects needed
            return
        from taalm.weighting import TrainAttention, document_weights, resolve_phi

        procs = run.procs
        phi = TrainAttention.load(resolve_phi(self.phi)).to(procs.device)
        if not models.same_tokenizer(run.tokenizer, models.load_tokenizer(phi.backbone_name)):
            raise TaalmError(f"option --phi: φ's backbone {phi.backbone_name!r} does not share θ's tokenizer")
        started = time.time()
        mine = procs.shard(run.docs)
        weights = document_weights(phi, [e.input_ids for e in mine], progress=procs.is_main_process)
        self.per_doc = procs.gather_in_order([torch.tensor(w, dtype=torch.float32) for w in weights])
        n_tokens = sum(len(e.input_ids) for e in mine)
        log.info("φ weights: %d documents, %.2f s per 1k tokens", len(mine), (time.time() - started) / max(1, n_tokens) * 1000)
        del phi
        if procs.is_main_process:
            buffer = io.BytesIO()
            torch.save(self.per_doc, buffer)
            atomic_write_bytes(cache, buffer.getvalue())  # a killed run never leaves half a cache


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


class ExcessLoss(WeightSource):
    """RHO-1: the tokens θ finds harder than the reference model (θ before learning) does, re-selected each step
    from θ's current loss; review documents weigh every token. ``frozen_base``: θ is a K-Adapter, whose frozen base
    is the reference (else the LoRA is switched off)."""

    def __init__(self, ratio: float, frozen_base: bool = False):
        self.ratio, self.frozen_base = ratio, frozen_base
        self.reference: list[torch.Tensor] = []

    def prepare(self, run: Preparation) -> None:
        self.reference = reference_nll(run.model, run.docs, run.pad_id, run.micro_batch, run.device, run.procs,
                                       self.frozen_base)

    def weights(self, items: Items, nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = nll.size(1)
        reference = padded([self.reference[i] if kind == "doc" else torch.zeros(width) for kind, i in items],
                           width).to(nll.device)
        selected = rho1_weights(nll.detach() - reference, mask, self.ratio)
        is_doc = torch.tensor([kind == "doc" for kind, _ in items], device=nll.device).unsqueeze(-1)
        return torch.where(is_doc, selected, mask.new_ones(mask.shape))


@torch.no_grad()
def reference_nll(model: torch.nn.Module, docs: list[Encoded], pad_id: int, micro_batch: int, device: torch.device,
                  procs: Processes | None = None, frozen_base: bool = False) -> list[torch.Tensor]:
    """RHO-1's reference losses: the model before learning (LoRA disabled / K-Adapter's frozen base), once per doc
    (each process scores its share)."""
    procs = procs or Processes.single()
    model.eval()
    mine = procs.shard(list(range(len(docs))))
    out: list[torch.Tensor] = [torch.empty(0)] * len(docs)
    chunks = length_sorted_chunks(mine, [len(e.input_ids) for e in docs], micro_batch)
    for chunk in tqdm(chunks, desc="RHO-1 reference", dynamic_ncols=True, leave=False, disable=not procs.is_main_process):
        batch = pad_batch([docs[i] for i in chunk], pad_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if frozen_base:
            logits = model.base(input_ids=ids, attention_mask=mask).logits
        else:
            with model.disable_adapter():
                logits = model(input_ids=ids, attention_mask=mask).logits
        nll = losses.token_nll(logits, ids).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = nll[row, : len(docs[i].input_ids) - 1]
    return procs.gather_in_order([out[i] for i in mine])
