"""Whole-answer exact match: does θ *produce* the answer, not only rank each answer token first given the true ones?

The paper's accuracy is teacher-forced: each answer token is scored with the true tokens before it. Exact match
decodes greedily from the probe's prefix (its tokens before the first answer token) and counts the probe correct
when the generated text, case-folded and stripped of surrounding whitespace, starts with the answer. The model
writes up to (answer tokens + 2) tokens; a batch stops as soon as every probe's verdict is settled (most wrong
answers leave the answer's path at their first token). Probes are decoded in length-sorted batches, left-padded, with
position ids that skip the padding; with the model's KV cache where its forward returns one (plain Hugging Face and
peft models), and a full forward per new token where it does not (``taalm.kadapter.KAdapterForCausalLM``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from taalm import runtime
from taalm.data import Encoded, length_sorted_chunks

EXTRA_TOKENS = 2  # tokens decoded beyond the answer's own, so a slightly different tokenization can still match


def normalise(text: str) -> str:
    return text.strip().casefold()


def is_match(generated: str, target: str) -> bool:
    """Whether ``generated`` starts with ``target``, both case-folded and stripped of surrounding whitespace."""
    return normalise(generated).startswith(normalise(target))


@dataclass(frozen=True)
class Query:
    """What to decode for one probe: the prefix ids, the text it must start with, and how many tokens to write."""

    prefix: list[int]
    target: str
    budget: int


def _text(tokenizer, ids: list[int]) -> str:
    """Decoded without clean-up of spaces, so the text of a token prefix is a prefix of the whole text."""
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def make_query(item: Encoded, answer: str, tokenizer) -> Query:
    """The prefix ends before the first labelled token, and before any whitespace-only tokens just ahead of it (the
    model chooses its own spacing: a tokenizer whose vocabulary lacks " c" would otherwise hand it a bare " " it
    never saw before a word). The target is the answer plus whatever the decoded tokens carry before it (spaces,
    stripped by ``is_match``, or a glued bracket); where the answer starts the text, the prefix keeps the first
    token and the target is the rest of the answer's tokens, as text."""
    if item.label is None:
        raise ValueError("exact match needs probes encoded with their answer labelled")
    labelled = [i for i, on in enumerate(item.label) if on]
    first, last = max(labelled[0], 1), labelled[-1]
    while first > 1 and not _text(tokenizer, item.input_ids[first - 1:first]).strip():
        first -= 1
    span = _text(tokenizer, item.input_ids[first:last + 1])
    at = span.find(answer)
    target = span[:at] + answer if at >= 0 else span
    return Query(item.input_ids[:first], target, last + 1 - first + EXTRA_TOKENS)


def verdict(tokens: list[int], query: Query, tokenizer) -> bool | None:
    """Whether the generation ``tokens`` (so far) matches: True or False once more tokens cannot change it (the
    budget is spent, the end-of-sequence token was written, the text already starts with the target, or it has
    left the target's path), None while they can."""
    tokens = tokens[:query.budget]
    eos = tokenizer.eos_token_id
    ended = eos is not None and eos in tokens
    text = _text(tokenizer, tokens[:tokens.index(eos)] if ended else tokens)
    if is_match(text, query.target):
        return True
    if ended or len(tokens) == query.budget:
        return False
    head = text.rstrip("\ufffd")  # a trailing U+FFFD is a character whose bytes are not all written yet
    return None if normalise(query.target).startswith(normalise(head)) else False


@torch.no_grad()
def greedy_tokens(model: torch.nn.Module, prefixes: list[list[int]], steps: int, pad_id: int, device: torch.device,
                  dtype: str = "auto", finished: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Up to ``steps`` greedily decoded token ids after each prefix, decoded together (left padding, position ids
    that skip it); stops early once ``finished(row, tokens)`` holds for every row. Uses the KV cache the model
    returns; a model that returns none is re-run on the whole sequence."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        ids[row, width - len(prefix):] = torch.tensor(prefix)
        mask[row, width - len(prefix):] = 1
    ids, mask = ids.to(device), mask.to(device)
    inputs, cache, new = ids, {}, [[] for _ in prefixes]
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)[:, -inputs.size(1):]
        with runtime.autocast(device, dtype):
            out = model(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True, **cache)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for row, t in enumerate(token[:, 0].tolist()):
            new[row].append(t)
        if finished is not None and all(finished(row, tokens) for row, tokens in enumerate(new)):
            break
        ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
        cache = returned_cache(out)
        inputs = token if cache else ids
    return new


def returned_cache(out: Any) -> dict[str, Any]:
    """The KV cache a forward returned, under the keyword that takes it back: ``cache`` (newer transformers) or
    ``past_key_values``; empty where the model returns none (the K-Adapter)."""
    name = "cache" if "cache" in getattr(out, "__dataclass_fields__", ()) else "past_key_values"
    value = getattr(out, name, None)
    return {name: value} if value is not None else {}


@torch.no_grad()
def exact_match(model: torch.nn.Module, items: list[Encoded], answers: list[str], tokenizer, pad_id: int,
                batch_size: int, device: torch.device, dtype: str = "auto", progress: Any = None) -> list[float]:
    """1.0 or 0.0 per probe (input order): greedy decoding from the prefix starts with the answer (``is_match``),
    up to the end-of-sequence token. A batch stops decoding once every probe's verdict is settled, which most wrong
    answers are at their first token; an item's result does not depend on its batch. Each batch ticks ``progress``
    (a tqdm bar) where one is given."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} probes but {len(answers)} answers")
    model.eval()
    queries = [make_query(e, a, tokenizer) for e, a in zip(items, answers, strict=True)]
    scores = [0.0] * len(items)
    for chunk in length_sorted_chunks(list(range(len(items))), [len(q.prefix) for q in queries], batch_size):
        settled = lambda row, tokens, chunk=chunk: verdict(tokens, queries[chunk[row]], tokenizer) is not None
        generated = greedy_tokens(model, [queries[i].prefix for i in chunk], max(queries[i].budget for i in chunk),
                                  pad_id, device, dtype, settled)
        for i, tokens in zip(chunk, generated, strict=True):
            scores[i] = float(bool(verdict(tokens, queries[i], tokenizer)))
        if progress is not None:
            progress.update(1)
    return scores
