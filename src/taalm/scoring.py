"""Probe scoring: teacher-forced label-token accuracy and NLL, perplexity, and whole-answer exact match.

A probe is a task whose answer tokens are labelled (``data.encode(..., answer=...)``). Its accuracy is the share of
answer tokens the model ranks first given the true tokens before them, its NLL the mean over its answer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from taalm import losses, runtime
from taalm.data import Encoded, Probe, encode_all, length_sorted_chunks, pad_batch
from taalm.distributed import Processes
from taalm.exact_match import exact_match


def encode_probes(tokenizer, probes: dict[str, list[Probe]], max_length: int) -> dict[str, list[Encoded]]:
    """Each probe set tokenized with its answer tokens labelled."""
    return {name: encode_all(tokenizer, items, max_length, f"{name} probes", [p.answer for p in items])
            for name, items in probes.items()}


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
                 dtype: str = "auto", progress: tqdm | None = None) -> ProbeScores:
    """Score every probe's answer tokens, teacher-forced, in length-sorted batches (each batch ticks ``progress``)."""
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
        if progress is not None:
            progress.update(1)
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
        mine = procs.shard(items)
        passes = 1 if answers is None else 2  # teacher-forced scoring, then greedy decoding for exact match
        with tqdm(total=passes * -(-len(mine) // batch_size), desc=f"evaluate [{name}]", dynamic_ncols=True,
                  leave=False, disable=not procs.is_main_process) as progress:
            scores = score_probes(model, mine, pad_id, batch_size, device, dtype, progress)
            mine_matches = None if answers is None else exact_match(model, mine, procs.shard(answers[name]),
                                                                    tokenizer, pad_id, batch_size, device, dtype,
                                                                    progress)
        accuracy, nll = procs.gather_in_order(scores.accuracy), procs.gather_in_order(scores.nll)
        totals = procs.sum(torch.tensor([scores.total_nll, scores.n_tokens], dtype=torch.float64, device=device))
        matches = None if mine_matches is None else procs.gather_in_order(mine_matches)
        results[name] = {"accuracy": sum(accuracy) / len(items), "nll": sum(nll) / len(items),
                         "perplexity": losses.perplexity(float(totals[0]), int(totals[1])),
                         "exact_match": sum(matches) / len(items) if matches is not None else None,
                         "per_probe": {"accuracy": accuracy, "nll": nll, "exact_match": matches}}
    return results


def scalars(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"SET/metric": value}`` of an evaluation's numbers, for the experiment tracker: no lists, no None."""
    return {f"{name}/{key}": value for name, values in results.items() for key, value in values.items()
            if isinstance(value, (int, float))}
