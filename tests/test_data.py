"""Tests for taalm.data: answer-span label masks, padded batches and line-numbered loaders.

python -m pytest -q tests/test_data.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from taalm import models
from taalm.data import encode, load_documents, load_pairs, load_probes, pad_batch
from taalm.errors import TaalmError

LAMA_CKL = Path(__file__).resolve().parents[1] / "src" / "taalm" / "resources" / "lama_ckl" / "variant.jsonl.gz"
WORDS = ["Santiago", "is", "the", "capital", "of", "Chile", ".", "Paris", "in", "France", "Libya", "maintains",
         "diplomatic", "relations", "with", "Brazil", "Marie", "Curie", "was", "born", "Warsaw", "and", "worked"]


@pytest.fixture(scope="module")
def bpe(tiny_model):
    """The tiny byte-level BPE (no prefix space, no BOS): a leading space is part of the next word's token."""
    return models.load_tokenizer(tiny_model)


@pytest.fixture(scope="module")
def wordlevel():
    """A word-level tokenizer that prepends <s>, so offsets exclude spaces and position 0 is a special token."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    return fast


def label_text(tokenizer, enc) -> str:
    return tokenizer.decode([i for i, m in zip(enc.input_ids, enc.label) if m]).strip()


def label_positions(enc) -> list[int]:
    return [i for i, m in enumerate(enc.label) if m]


# ------------------------------------------------------------------------------------------------- answer masks
CASES = [  # text, answer, where in the text
    ("Santiago is the capital of Chile .", "Santiago", "start"),
    ("Santiago is the capital of Chile .", "capital", "middle"),
    ("Libya maintains diplomatic relations with Brazil", "Brazil", "end"),
    ("Marie Curie was born in Warsaw and worked in Paris .", "Warsaw", "multi-token"),
    ("Santiago is the capital of Chile .", "capital of Chile", "multi-word"),
]


@pytest.mark.parametrize("tokenizer_name", ["bpe", "wordlevel"])
@pytest.mark.parametrize(("text", "answer", "case"), CASES, ids=[c[2] for c in CASES])
def test_label_tokens_are_exactly_the_answer(request, tokenizer_name, text, answer, case):
    tokenizer = request.getfixturevalue(tokenizer_name)
    enc = encode(tokenizer, text, 64, answer=answer)
    assert len(enc.label) == len(enc.input_ids)
    assert label_text(tokenizer, enc) == answer
    positions = label_positions(enc)
    assert positions == list(range(positions[0], positions[-1] + 1))  # one contiguous span
    if case == "end":
        assert positions[-1] == len(enc.input_ids) - 1
    # pad_batch aligns the mask to predicted tokens: label_mask[j] is about token j+1
    batch = pad_batch([enc], tokenizer.pad_token_id)
    assert batch["label_mask"].shape == (1, len(enc.input_ids) - 1)
    assert batch["label_mask"][0].tolist() == [float(m) for m in enc.label[1:]]


def test_multi_token_answer_has_several_label_tokens(bpe):
    enc = encode(bpe, "Marie Curie was born in Warsaw and worked in Paris .", 64, answer="Warsaw")
    assert len(label_positions(enc)) >= 3


def test_answer_at_start_with_bos_is_predictable(wordlevel):
    enc = encode(wordlevel, "Santiago is the capital of Chile .", 64, answer="Santiago")
    assert enc.input_ids[0] == wordlevel.bos_token_id
    assert label_positions(enc) == [1]


def test_answer_that_is_only_the_first_token_is_refused(bpe):
    assert len(bpe("The")["input_ids"]) == 1  # "The" is one token of the tiny BPE
    with pytest.raises(TaalmError, match="no predictable token") as e:
        encode(bpe, "The quick brown fox", 64, answer="The", where="x.jsonl:3")
    assert str(e.value).startswith("x.jsonl:3: ")


def test_last_occurrence_is_labelled(bpe, wordlevel):
    text = "Paris is in Paris , France ."
    for tokenizer in (bpe, wordlevel):
        enc = encode(tokenizer, text, 64, answer="Paris")
        assert label_text(tokenizer, enc) == "Paris"
        first = tokenizer.decode(enc.input_ids[: label_positions(enc)[0]])
        assert first.count("Paris") == 1  # the labelled span is the second "Paris"


def test_answer_not_in_text(bpe):
    with pytest.raises(TaalmError, match="not found"):
        encode(bpe, "Santiago is the capital of Chile .", 64, answer="Peru")


# --------------------------------------------------------------------------------------------------- truncation
def test_truncation_flag_and_length(bpe):
    text = "Santiago is the capital of Chile ."
    full = encode(bpe, text, 64)
    assert not full.truncated and len(full.input_ids) > 5
    cut = encode(bpe, text, 5)
    assert cut.truncated and cut.input_ids == full.input_ids[:5]
    exact = encode(bpe, text, len(full.input_ids))
    assert not exact.truncated


def test_answer_cut_off_by_max_length(bpe):
    with pytest.raises(TaalmError, match="cut off by --max_length"):
        encode(bpe, "Santiago is the capital of Chile .", 8, answer="Chile")
    enc = encode(bpe, "Santiago is the capital of Chile .", 8, answer="Santiago")
    assert enc.truncated and len(enc.label) == 8


def test_single_token_text_is_refused(bpe):
    with pytest.raises(TaalmError, match="fewer than 2 tokens"):
        encode(bpe, "The", 64)


# ---------------------------------------------------------------------------------------------------- pad_batch
def test_pad_batch_right_pads_and_masks(bpe):
    a = encode(bpe, "Santiago is the capital of Chile .", 64, answer="Chile")
    b = encode(bpe, "Paris is in France .", 64, answer="France")
    batch = pad_batch([a, b], pad_id=0)
    n_a, n_b = len(a.input_ids), len(b.input_ids)
    assert n_a > n_b
    assert batch["input_ids"].shape == (2, n_a)
    assert batch["input_ids"][1, n_b:].eq(0).all()
    assert batch["attention_mask"].sum(-1).tolist() == [n_a, n_b]
    assert batch["loss_mask"].sum(-1).tolist() == [n_a - 1, n_b - 1]
    assert batch["loss_mask"][1, n_b - 1:].eq(0).all()
    assert (batch["label_mask"] <= batch["loss_mask"]).all()
    assert batch["label_mask"].dtype == torch.float32


def test_pad_batch_without_labels_has_empty_label_mask(bpe):
    batch = pad_batch([encode(bpe, "Paris is in France .", 64)], pad_id=0)
    assert batch["label_mask"].sum() == 0


# ------------------------------------------------------------------------------------------------------ loaders
def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"document": "Santiago is the capital of Chile .", "task": "The capital of Chile is Santiago",
                   "answer": "Santiago"})


def test_load_pairs_good(tmp_path):
    pairs = load_pairs(write(tmp_path / "p.jsonl", [GOOD, "", GOOD]))
    assert [p.answer for p in pairs] == ["Santiago", "Santiago"]
    assert pairs[1].source.endswith("p.jsonl:3")  # blank lines still count


@pytest.mark.parametrize("loader", [load_pairs, load_documents, load_probes])
def test_missing_file(tmp_path, loader):
    with pytest.raises(TaalmError, match="file not found") as e:
        loader(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(e.value)


@pytest.mark.parametrize("loader", [load_pairs, load_documents, load_probes])
def test_malformed_json_names_file_and_line(tmp_path, loader):
    path = write(tmp_path / "bad.jsonl", [GOOD, '{"document": "x", ', GOOD])
    with pytest.raises(TaalmError, match="malformed JSON") as e:
        loader(path)
    assert f"{path}:2:" in str(e.value)


def test_non_object_line(tmp_path):
    path = write(tmp_path / "list.jsonl", [GOOD, "[1, 2]"])
    with pytest.raises(TaalmError, match=r"list\.jsonl:2: expected a JSON object"):
        load_pairs(path)


BAD_RECORDS = [  # record, loader, message fragment
    ({"task": "Paris is in France", "answer": "France"}, load_pairs, "missing field 'document'"),
    ({"document": "Paris is in France .", "answer": "France"}, load_pairs, "missing field 'task'"),
    ({"document": "Paris is in France .", "task": "Paris is in France"}, load_pairs, "missing field 'answer'"),
    ({"document": "   ", "task": "Paris is in France", "answer": "France"}, load_pairs, "'document' is empty"),
    ({"document": "Paris .", "task": "Paris is in France", "answer": "Spain"}, load_pairs, "'Spain' not found in task"),
    ({"document": 3, "task": "Paris is in France", "answer": "France"}, load_pairs, "must be a string"),
    ({"text": ""}, load_documents, "'text' is empty"),
    ({"title": "x"}, load_documents, "missing field 'document'"),
    ({"text": "Paris is in France .", "answer": "Spain"}, load_documents, "not found in document"),
    ({"answer": "France"}, load_probes, "missing field 'task'"),
    ({"task": "Paris is in France", "answer": "Spain"}, load_probes, "not found in task"),
]


@pytest.mark.parametrize(("record", "loader", "message"), BAD_RECORDS, ids=[b[2] for b in BAD_RECORDS])
def test_bad_record_names_file_and_line(tmp_path, record, loader, message):
    good = {load_pairs: GOOD, load_documents: json.dumps({"text": "Paris is in France ."}),
            load_probes: json.dumps({"task": "Paris is in France", "answer": "France"})}[loader]
    path = write(tmp_path / "records.jsonl", [good, "", json.dumps(record)])
    with pytest.raises(TaalmError) as e:
        loader(path)
    assert str(e.value).startswith(f"{path}:3: ")
    assert message in str(e.value)


def test_empty_file(tmp_path):
    with pytest.raises(TaalmError, match="no records"):
        load_pairs(write(tmp_path / "empty.jsonl", ["", "  "]))


def test_documents_answer_and_task_are_optional(tmp_path):
    docs = load_documents(write(tmp_path / "d.jsonl", [
        json.dumps({"text": "Paris is in France ."}),
        json.dumps({"document": "Paris is in France .", "answer": "France", "task": "Paris is in France"})]))
    assert docs[0].answer is None and docs[0].task is None
    assert docs[1].answer == "France" and docs[1].task == "Paris is in France"


def test_lama_ckl_rows_are_accepted(tmp_path):
    with gzip.open(LAMA_CKL, "rt", encoding="utf-8") as f:  # the copy shipped as package data
        rows = [json.loads(f.readline()) for _ in range(2)]
    path = write(tmp_path / "lama.jsonl", [json.dumps(r) for r in rows])
    pairs = load_pairs(path)
    assert [(p.document, p.task, p.answer) for p in pairs] == [
        (r["evidence"], r["task_descriptive"], r["object"]) for r in rows]
    docs = load_documents(path)
    assert [(d.text, d.answer) for d in docs] == [(r["evidence"], r["object"]) for r in rows]
    probes = load_probes(path)
    assert [(p.task, p.answer) for p in probes] == [(r["task_descriptive"], r["object"]) for r in rows]
