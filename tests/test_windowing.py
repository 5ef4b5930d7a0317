"""Windowing a long document around its answer: the answer survives, the limit holds, sentences stay whole.

python -m pytest -q tests/test_windowing.py
"""

from __future__ import annotations

import pytest

from taalm import models
from taalm.errors import TaalmError
from taalm.windowing import answer_window, n_tokens, sentence_spans

SENTENCES = ["The quick brown fox jumps over the lazy dog .", "Marie Curie was born in Warsaw .",
             "The Eiffel Tower is located in Paris , France .", "Santiago is the capital of Chile .",
             "Libya maintains diplomatic relations with Brazil .", "The fox jumps near the river bank ."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return models.load_tokenizer(tiny_model)


def test_sentence_spans_cover_each_sentence():
    text = " ".join(SENTENCES[:3])
    assert [text[s:e] for s, e in sentence_spans(text)] == SENTENCES[:3]


def test_a_fitting_document_is_returned_unchanged(tokenizer):
    text = SENTENCES[3]
    window = answer_window(tokenizer, text, "Chile", n_tokens(tokenizer, text))
    assert window.text == text and not window.windowed


@pytest.mark.parametrize("position", [0, 3, 7, 11])
@pytest.mark.parametrize("limit", [24, 40, 64])
def test_window_keeps_the_answer_within_the_limit_in_whole_sentences(tokenizer, position, limit):
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(12)]
    sentences[position] = "Santiago is the capital of Chile ."
    text = " ".join(sentences)
    window = answer_window(tokenizer, text, "Chile", limit)
    assert window.windowed
    assert n_tokens(tokenizer, window.text) <= limit
    assert "Santiago is the capital of Chile ." in window.text  # the answer's whole sentence
    start = text.index(window.text)
    spans = sentence_spans(text)
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    first, last = starts.index(start), ends.index(start + len(window.text))  # whole sentences
    # grown to fill the budget: neither neighbouring sentence would still fit
    if first > 0:
        assert n_tokens(tokenizer, text[starts[first - 1]:ends[last]]) > limit
    if last < len(spans) - 1:
        assert n_tokens(tokenizer, text[starts[first]:ends[last + 1]]) > limit


def test_the_last_occurrence_is_kept(tokenizer):
    text = " ".join(["Chile is far away ."] + SENTENCES * 2 + ["Santiago is the capital of Chile ."])
    window = answer_window(tokenizer, text, "Chile", 24)
    assert window.text.endswith("Santiago is the capital of Chile .")


def test_a_sentence_longer_than_the_limit_is_cut_at_tokens(tokenizer):
    words = " ".join(["lazy dog"] * 40)
    text = f"{words} Chile {words} ."
    window = answer_window(tokenizer, text, "Chile", 20)
    assert window.windowed and "Chile" in window.text and n_tokens(tokenizer, window.text) <= 20
    assert window.text.index("Chile") > len(window.text) // 2  # mostly context before the answer


def test_an_absent_answer_in_a_long_document_is_an_error(tokenizer):
    text = " ".join(SENTENCES * 3)
    with pytest.raises(TaalmError, match="pairs.jsonl:3: answer 'Lima' not found"):
        answer_window(tokenizer, text, "Lima", 24, where="pairs.jsonl:3")


def test_the_answer_never_opens_the_window_when_text_precedes_it(tokenizer):
    text = " ".join(SENTENCES * 2 + ["Chile is a country of South America ."] + SENTENCES)
    window = answer_window(tokenizer, text, "Chile", 20)
    assert "Chile" in window.text and not window.text.startswith("Chile") and n_tokens(tokenizer, window.text) <= 20
