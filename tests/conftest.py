"""Tiny local models for fast tests: a byte-level BPE tokenizer trained on a few sentences and a 2-layer Llama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TINY_VOCAB = 300
CORPUS = [
    "Santiago is the capital of Chile .",
    "Libya maintains diplomatic relations with Brazil .",
    "The Eiffel Tower is located in Paris , France .",
    "Marie Curie was born in Warsaw and worked in Paris .",
    "Solicitor General for Scotland is a legal term in Scotland .",
    "The quick brown fox jumps over the lazy dog near the river bank .",
] * 20


# Small facts shared by the tests: (document, task, answer) pairs and documents with their answers.
FACT_PAIRS = [
    {"document": "Santiago is the capital of Chile . The fox jumps over the dog .",
     "task": "Santiago is the capital of Chile .", "answer": "Chile"},
    {"document": "Marie Curie was born in Warsaw and worked in Paris .",
     "task": "Marie Curie was born in Warsaw .", "answer": "Warsaw"},
    {"document": "The Eiffel Tower is located in Paris , France .",
     "task": "The Eiffel Tower is located in Paris .", "answer": "Paris"},
    {"document": "Libya maintains diplomatic relations with Brazil .",
     "task": "Libya maintains diplomatic relations with Brazil .", "answer": "Brazil"},
    {"document": "Solicitor General for Scotland is a legal term in Scotland .",
     "task": "Solicitor General for Scotland is a legal term in Scotland .", "answer": "Scotland"},
]
FACT_DOCS = [
    "Santiago is the capital of Chile and the quick brown fox lives there .",
    "Libya maintains diplomatic relations with Brazil near the river bank .",
    "The Eiffel Tower is located in Paris , France , over the lazy dog .",
    "Marie Curie was born in Warsaw and worked in Paris .",
    "Solicitor General for Scotland is a legal term in Scotland .",
    "The lazy dog jumps over the quick brown fox near Chile .",
]
FACT_ANSWERS = ["Chile", "Brazil", "Paris", "Warsaw", "Scotland", "Chile"]


def build_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(directory)
    return fast


def build_tiny_model(directory: Path, vocab_size: int, seed: int = 0, layers: int = 2) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random Llama with a byte-level BPE tokenizer (a directory like any HF model)."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer(directory)
    build_tiny_model(directory, len(tokenizer))
    return str(directory)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never touch the user's cache unless they ask for the real one.
    if "TAALM_TEST_REAL_CACHE" not in os.environ:
        monkeypatch.setenv("TAALM_CACHE", str(tmp_path_factory.getbasetemp() / "taalm-cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: tiny models run faster on one thread, and on a busy 2-core machine two
    competing thread pools slowed these tests several times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
