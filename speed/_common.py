"""Shared bits of the benchmarks: a batch of real LAMA-ckl pairs, timing and peak memory."""

from __future__ import annotations

import gzip
import json
import resource
import statistics
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "src" / "taalm" / "resources" / "lama_ckl" / "invariant_descriptive.jsonl.gz"


def lama_pairs(n: int, tokenizer=None, max_length: int = 0):
    """The first ``n`` invariant LAMA-ckl facts as pairs; with a tokenizer, documents windowed around the answer."""
    from taalm.data import Pair
    from taalm.windowing import answer_window

    with gzip.open(DATA, "rt") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    pairs = [Pair(r["evidence"], r["task_descriptive"], r["object"]) for r in rows]
    if tokenizer is None:
        return pairs
    return [Pair(answer_window(tokenizer, p.document, p.answer, max_length).text, p.task, p.answer) for p in pairs]


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb() -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size of this process (CPU), in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name() -> str:
    import platform

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
