"""Records (pairs, documents, probes), answer-span label masks and padded batches.

Label masks come from the answer's character span (its last occurrence) and the tokenizer's offsets, so they work
for any fast tokenizer: a token is a label token when its characters overlap the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taalm.errors import TaalmError
from taalm.io import read_jsonl

log = logging.getLogger("taalm")

# Field names accepted for each role; LAMA-ckl rows (evidence / task_descriptive / object) map onto them.
DOCUMENT_FIELDS = ("document", "text", "evidence")
TASK_FIELDS = ("task", "task_descriptive")
TASK_FIELDS_BY_FORMAT = {"descriptive": TASK_FIELDS, "schematic": ("task_schematic",)}
ANSWER_FIELDS = ("answer", "object")


@dataclass(frozen=True)
class Pair:
    """A meta-training example: θ learns ``document``; ``task`` (containing ``answer``) tests it."""

    document: str
    task: str
    answer: str
    source: str = ""
    kind: str = ""  # the kind of document (e.g. lama, fictional, temporalwiki): φ is validated per kind


@dataclass(frozen=True)
class Document:
    """A document to learn; ``answer``/``task`` are optional (oracle weights, probes)."""

    text: str
    answer: str | None = None
    task: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Probe:
    """A cloze probe: label-token accuracy of ``answer`` inside ``task``."""

    task: str
    answer: str
    source: str = ""


def _pick(record: dict[str, Any], names: tuple[str, ...], where: str, required: bool = True) -> str | None:
    for name in names:
        if name in record:
            value = record[name]
            if not isinstance(value, str):
                raise TaalmError(f"{where}: field {name!r} must be a string")
            if not value.strip():
                raise TaalmError(f"{where}: field {name!r} is empty")
            return value
    if required:
        raise TaalmError(f"{where}: missing field {names[0]!r}")
    return None


def _check_answer(text: str, answer: str, field: str, where: str) -> None:
    if answer not in text:
        raise TaalmError(f"{where}: answer {answer!r} not found in {field}")


def _nonempty(records: list, path: str | Path) -> list:
    if not records:
        raise TaalmError(f"{path}: no records")
    return records


def load_pairs(path: str | Path, task_format: str = "descriptive") -> list[Pair]:
    """Meta-training pairs; ``task_format`` picks LAMA-ckl's cloze task (descriptive) or its "Guess the object"
    form (schematic)."""
    pairs = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        document = _pick(record, DOCUMENT_FIELDS, where)
        task = _pick(record, TASK_FIELDS_BY_FORMAT[task_format], where)
        answer = _pick(record, ANSWER_FIELDS, where)
        _check_answer(task, answer, "task", where)
        kind = record.get("kind", "")
        if not isinstance(kind, str):
            raise TaalmError(f"{where}: field 'kind' must be a string")
        pairs.append(Pair(document, task, answer, where, kind))
    return _nonempty(pairs, path)


def load_documents(path: str | Path) -> list[Document]:
    documents = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        text = _pick(record, DOCUMENT_FIELDS, where)
        answer = _pick(record, ANSWER_FIELDS, where, required=False)
        task = _pick(record, TASK_FIELDS, where, required=False)
        if answer is not None:
            _check_answer(text, answer, "document", where)
        documents.append(Document(text, answer, task, where))
    return _nonempty(documents, path)


def load_probes(path: str | Path) -> list[Probe]:
    probes = []
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        task = _pick(record, TASK_FIELDS, where)
        answer = _pick(record, ANSWER_FIELDS, where)
        _check_answer(task, answer, "task", where)
        probes.append(Probe(task, answer, where))
    return _nonempty(probes, path)


@dataclass
class Encoded:
    """One tokenized text; ``label`` marks the answer's tokens (same length as ``input_ids``)."""

    input_ids: list[int]
    label: list[bool] | None = None
    truncated: bool = False


def encode(tokenizer, text: str, max_length: int, answer: str | None = None, where: str = "") -> Encoded:
    """Tokenize ``text`` (truncated to ``max_length`` tokens) and mark the last occurrence of ``answer``."""
    if not getattr(tokenizer, "is_fast", False):
        raise TaalmError("the tokenizer must be a fast (Rust) tokenizer: answer masks need its offsets")
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=answer is not None)
    ids = list(enc["input_ids"])
    truncated = len(ids) > max_length
    if len(ids) < 2:
        raise TaalmError(f"{where}: text has fewer than 2 tokens")
    label = None
    if answer is not None:
        start = text.rfind(answer)
        if start < 0:
            raise TaalmError(f"{where}: answer {answer!r} not found in text")
        end = start + len(answer)
        label = [e > s and s < end and e > start for s, e in enc["offset_mapping"]]
        label = label[:max_length]
        if not any(label[1:]):
            why = "is cut off by --max_length" if truncated else "has no predictable token (it starts the text)"
            raise TaalmError(f"{where}: answer {answer!r} {why}")
    return Encoded(ids[:max_length], label, truncated)



def encode_all(tokenizer, records: list[Document] | list[Probe], max_length: int, what: str,
               answers: list[str] | None = None) -> list[Encoded]:
    """``encode`` each document (its text) or probe (its task), with ``answers[i]`` labelled where given; one
    warning counts those truncated to ``max_length``."""
    encoded = [encode(tokenizer, r.text if hasattr(r, "text") else r.task, max_length,
                      answer=answers[i] if answers else None, where=r.source) for i, r in enumerate(records)]
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        log.warning("%d of %d %s truncated to --max_length %d tokens", truncated, len(encoded), what, max_length)
    return encoded

def pad_batch(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; ``loss_mask``/``label_mask`` are aligned to predicted tokens (``[batch, seq-1]``)."""
    length = max(len(e.input_ids) for e in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), length), dtype=torch.long)
    labels = torch.zeros((len(items), length), dtype=torch.bool)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention[i, :n] = 1
        if e.label is not None:
            labels[i, :n] = torch.tensor(e.label)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "loss_mask": attention[:, 1:].to(torch.float32),
        "label_mask": labels[:, 1:].to(torch.float32),
    }


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def length_sorted_chunks(indices: list[int], lengths: list[int], size: int) -> list[list[int]]:
    """Split ``indices`` into chunks of ``size`` after sorting by length: less padding, same set of items."""
    ordered = sorted(indices, key=lambda i: (lengths[i], i))
    return [ordered[k:k + size] for k in range(0, len(ordered), size)]
