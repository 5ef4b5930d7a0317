"""Cut an over-long document to a window that keeps its answer.

Plain truncation keeps a document's first ``max_length`` tokens and silently drops a fact stated later; a pair whose
answer was cut off teaches φ nothing (in the old quick preset 51 of 64 meta-training documents lost it). Instead the
window is grown from the sentence that holds the answer's last occurrence (the occurrence label masks use), adding
whole sentences before and after while the text still fits. Only when that sentence alone is too long is the window
cut at token boundaries, keeping as much of the text before the answer as fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taalm.errors import TaalmError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TAIL_TOKENS = 8  # at most this many tokens (and 1/8 of the window) follow the answer in a token-level window


@dataclass(frozen=True)
class Window:
    text: str
    windowed: bool  # True when the text was cut


def n_tokens(tokenizer, text: str) -> int:
    """Token count as ``taalm.data.encode`` sees it (special tokens included)."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (split after . ! ? followed by whitespace)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if e > s]


def _grow_sentences(tokenizer, text: str, spans: list[tuple[int, int]], first: int, last: int,
                    max_length: int) -> tuple[int, int] | None:
    """The widest run of sentences around ``first..last`` that fits, adding one before, then one after, in turn."""
    fits = lambda lo, hi: n_tokens(tokenizer, text[spans[lo][0]:spans[hi][1]]) <= max_length
    if not fits(first, last):
        return None
    lo, hi = first, last
    while True:
        grew = False
        if lo > 0 and fits(lo - 1, hi):
            lo, grew = lo - 1, True
        if hi < len(spans) - 1 and fits(lo, hi + 1):
            hi, grew = hi + 1, True
        if not grew:
            return spans[lo][0], spans[hi][1]


def _token_window(tokenizer, text: str, start: int, end: int, max_length: int) -> tuple[int, int]:
    """A character range of at most ``max_length`` tokens that contains ``text[start:end]``, ending a few tokens after
    it and reaching back as far as the budget allows."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    covering = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]
    first, last = covering[0], covering[-1]
    tail = min(_TAIL_TOKENS, max_length // 8)  # the answer is predicted from what precedes it: keep mostly that
    for budget in range(max_length, last - first, -1):  # re-tokenizing a cut can merge differently: shrink to fit
        begin = max(0, min(len(offsets), last + 1 + tail) - budget)
        stop = min(len(offsets), begin + budget)
        char_start, char_end = offsets[begin][0], offsets[stop - 1][1]
        if n_tokens(tokenizer, text[char_start:char_end]) <= max_length:
            return char_start, char_end
    raise TaalmError(f"answer {text[start:end]!r} alone is longer than --max_length {max_length} tokens")


def answer_window(tokenizer, text: str, answer: str, max_length: int, where: str = "") -> Window:
    """``text`` itself when it fits in ``max_length`` tokens, else the widest sentence window around the answer's last
    occurrence that fits (a token-level window when its sentence alone is too long, or when the answer would open
    the window, leaving no text to predict it from). The answer always survives."""
    if n_tokens(tokenizer, text) <= max_length:
        return Window(text, False)
    start = text.rfind(answer)
    if start < 0:
        raise TaalmError(f"{where}: answer {answer!r} not found in the document, which is longer than --max_length "
                         f"{max_length}: cannot window it")
    end = start + len(answer)
    spans = sentence_spans(text)
    first = next(i for i, (s, e) in enumerate(spans) if e > start)
    last = next(i for i in range(len(spans) - 1, -1, -1) if spans[i][0] < end)
    chosen = _grow_sentences(tokenizer, text, spans, first, last, max_length)
    if chosen is not None and chosen[0] >= start > 0:  # the answer would open the window: nothing to predict it from
        chosen = None
    try:
        char_start, char_end = chosen or _token_window(tokenizer, text, start, end, max_length)
    except TaalmError as e:
        raise TaalmError(f"{where}: {e}") from None
    return Window(text[char_start:char_end], True)
