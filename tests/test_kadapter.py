"""K-Adapter: frozen base, trainable adapters, causality, padding, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from taalm.errors import TaalmError
from taalm.kadapter import KAdapterForCausalLM, default_layers

VOCAB = 128


def tiny_base(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def tiny_kadapter(seed: int = 0, loud: bool = False) -> KAdapterForCausalLM:
    """adapter_size 16 with 2 heads; ``loud`` makes the projections large so that adapter bugs cannot hide."""
    model = KAdapterForCausalLM(tiny_base(seed), adapter_size=16, adapter_heads=2)
    if loud:
        torch.manual_seed(seed + 1)
        for adapter in model.adapters:
            torch.nn.init.normal_(adapter.down.weight, std=0.5)
            torch.nn.init.normal_(adapter.up.weight, std=0.5)
    return model


def tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def test_default_layers_scale_the_official_placement():
    assert default_layers(32) == (1, 15, 32)  # Llama-2-7B: hidden_states[1], [15], [-1]
    assert default_layers(22) == (1, 10, 22)
    assert default_layers(4) == (1, 2, 4)
    assert default_layers(1) == (1,)
    model = tiny_kadapter()
    assert model.adapter_layers == (1, 2, 4) and len(model.adapters) == 3
    assert KAdapterForCausalLM(tiny_base(), adapter_layers=(0, -1)).adapter_layers == (0, 4)


@pytest.mark.parametrize("layers", [(2, 1), (1, 5), (), (1, 1)])
def test_bad_layers_name_the_option(layers):
    with pytest.raises(TaalmError, match="^adapter_layers:"):
        KAdapterForCausalLM(tiny_base(), adapter_layers=layers)


def test_bad_heads_name_the_option():
    with pytest.raises(TaalmError, match="^adapter_heads:"):
        KAdapterForCausalLM(tiny_base(), adapter_size=16, adapter_heads=3)


def test_starts_near_but_not_at_the_base():
    model = tiny_kadapter()
    ids = tokens(2, 9)
    with torch.no_grad():
        ours, base = model(ids).logits, model.base(ids).logits
    assert ours.shape == (2, 9, VOCAB)
    diff = (ours - base).abs().max().item()
    assert 0.0 < diff < 1e-2


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))


def test_training_moves_only_the_adapter():
    model = tiny_kadapter()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.adapter_parameters()} and trainable
    assert not any(p.requires_grad for p in model.base.parameters())
    before = {name: t.clone() for name, t in model.base.state_dict().items()}

    ids = tokens(4, 12)
    with torch.no_grad():
        logits0 = model(ids).logits
    opt = torch.optim.AdamW(model.adapter_parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = lm_loss(model(ids).logits, ids)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    after = model.base.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(p.grad is None for p in model.base.parameters())
    with torch.no_grad():
        logits1 = model(ids).logits
    assert (logits1 - logits0).abs().max().item() > 1e-2
    assert losses[-1] < losses[0]


def test_is_causal():
    model = tiny_kadapter(loud=True)
    ids = tokens(2, 10)
    changed = ids.clone()
    changed[:, 6:] = tokens(2, 4, seed=1)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
        delta = a - model.base(ids).logits
    assert delta.abs().max().item() > 0.1  # the adapter really contributes
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-5)
    assert (a[:, 6:] - b[:, 6:]).abs().max().item() > 1e-2


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_matches_unpadded_rows(side):
    model = tiny_kadapter(loud=True)
    full, short = tokens(1, 8, seed=2), tokens(1, 5, seed=3)
    pad = torch.zeros(1, 3, dtype=torch.long)
    short_padded = torch.cat([short, pad] if side == "right" else [pad, short], dim=1)
    ids = torch.cat([full, short_padded])
    mask = torch.ones_like(ids)
    if side == "right":
        mask[1, 5:] = 0
    else:
        mask[1, :3] = 0
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits
        alone_full, alone_short = model(full).logits, model(short).logits
    assert torch.isfinite(batch).all()
    real = slice(0, 5) if side == "right" else slice(3, 8)
    torch.testing.assert_close(batch[0], alone_full[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(batch[1, real], alone_short[0], rtol=0, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = tiny_kadapter(loud=True)
    model.save_adapter(tmp_path / "ka")
    config = json.loads((tmp_path / "ka" / "kadapter_config.json").read_text())
    assert config["adapter_layers"] == [1, 2, 4] and config["adapter_size"] == 16
    assert (tmp_path / "ka" / "adapter.safetensors").is_file()

    ids = tokens(2, 7)
    reloaded = KAdapterForCausalLM.from_base_and_dir(tiny_base(), tmp_path / "ka")
    into_existing = tiny_kadapter()  # same configuration, default (quiet) weights
    into_existing.load_adapter(tmp_path / "ka")
    with torch.no_grad():
        expected = model(ids).logits
        assert torch.equal(reloaded(ids).logits, expected)
        assert torch.equal(into_existing(ids).logits, expected)
    assert not any(p.requires_grad for p in reloaded.base.parameters())

    other = KAdapterForCausalLM(tiny_base(), adapter_size=8)
    with pytest.raises(TaalmError, match="adapter_size"):
        other.load_adapter(tmp_path / "ka")
    with pytest.raises(TaalmError, match="kadapter_config.json: not found"):
        KAdapterForCausalLM.from_base_and_dir(tiny_base(), tmp_path / "missing")
