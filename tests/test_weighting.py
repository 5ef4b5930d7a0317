"""Tests for taalm.weighting: Train-Attention φ's init, output, save/load and batched document weights.

python -m pytest -q tests/test_weighting.py
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from taalm import models
from taalm.data import encode
from taalm.errors import TaalmError
from taalm.weighting import ADAPTER_FILE, CONFIG_FILE, HEAD_FILE, TrainAttention, document_weights

TEXTS = ["Santiago is the capital of Chile .", "Libya maintains diplomatic relations with Brazil .", "The fox .",
         "Marie Curie was born in Warsaw and worked in Paris ."]


def make_phi(tiny_model: str, seed: int = 0) -> TrainAttention:
    torch.manual_seed(seed)
    return TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0, attn_implementation="eager")


def perturb(phi: TrainAttention, seed: int = 1) -> None:
    """Move φ away from its init (LoRA B = 0, tiny head) so round trips and comparisons cannot pass trivially."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in phi.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * (0.3 if "lora_" in name else 0.5))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return models.load_tokenizer(tiny_model)


def batch_of(tokenizer, texts):
    from taalm.data import pad_batch

    return pad_batch([encode(tokenizer, t, 64) for t in texts], tokenizer.pad_token_id)


def test_head_init(tiny_model, tokenizer):
    phi = make_phi(tiny_model)
    assert torch.all(phi.head.bias == 4.0)
    std = phi.head.weight.std().item()
    assert 0.4e-3 < std < 2.5e-3  # N(0, 1e-3) over hidden=32 samples
    batch = batch_of(tokenizer, TEXTS)
    with torch.no_grad():
        w = phi(batch["input_ids"], batch["attention_mask"])
    sigmoid4 = 1 / (1 + math.exp(-4))
    assert sigmoid4 == pytest.approx(0.982, abs=1e-3)
    torch.testing.assert_close(w, torch.full_like(w, sigmoid4), atol=1e-3, rtol=0)


def test_only_lora_and_head_are_trainable(tiny_model):
    phi = make_phi(tiny_model)
    names = [n for n, p in phi.named_parameters() if p.requires_grad]
    assert "head.weight" in names and "head.bias" in names
    assert all("lora_" in n or n.startswith("head.") for n in names)
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert set(phi.trainable_state()) == set(names)


def test_phi_lora_covers_the_backbone_blocks_only_and_leaves_the_head_plain(tiny_model):
    """peft's "all-linear" on φ's backbone: the seven projections of each of the first ``num_layers`` blocks; the
    scalar head stays a plain linear layer outside LoRA."""
    torch.manual_seed(0)
    phi = TrainAttention.create(tiny_model, r=4, num_layers=1)
    adapted = {n for n, _ in phi.named_modules() if n.endswith(".lora_A")}
    assert len(adapted) == 7 and all(".layers.0." in n for n in adapted)
    assert type(phi.head) is torch.nn.Linear and not any(n.startswith("head.") for n in adapted)
    assert len(phi.backbone.base_model.model.layers) == 1


def test_output_shape_and_range(tiny_model, tokenizer):
    phi = make_phi(tiny_model)
    perturb(phi)
    batch = batch_of(tokenizer, TEXTS)
    with torch.no_grad():
        w = phi(batch["input_ids"], batch["attention_mask"])
    b, t = batch["input_ids"].shape
    assert w.shape == (b, t - 1) == batch["loss_mask"].shape
    assert torch.all((w > 0) & (w < 1))
    assert w.std().item() > 0.05  # perturbed: the weights differ between tokens


def test_save_load_round_trip(tiny_model, tokenizer, tmp_path):
    phi = make_phi(tiny_model)
    perturb(phi)
    phi.save(tmp_path / "phi")
    assert {p.name for p in (tmp_path / "phi").iterdir()} >= {CONFIG_FILE, ADAPTER_FILE, HEAD_FILE}
    config = json.loads((tmp_path / "phi" / CONFIG_FILE).read_text())
    assert config["backbone"] == tiny_model
    assert config["lora"] == {"r": 4, "alpha": 8, "dropout": 0.0}
    assert set(load_file(str(tmp_path / "phi" / HEAD_FILE))) == {"weight", "bias"}

    torch.manual_seed(123)  # a different seed: the loaded values must come from the files, not the RNG
    loaded = TrainAttention.load(tmp_path / "phi", attn_implementation="eager")
    before, after = phi.trainable_state(), loaded.trainable_state()
    assert set(before) == set(after)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert loaded.backbone_name == tiny_model
    batch = batch_of(tokenizer, TEXTS)
    phi.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(phi(batch["input_ids"], batch["attention_mask"]),
                           loaded(batch["input_ids"], batch["attention_mask"]))
    fresh = make_phi(tiny_model, seed=123)  # sanity: an unloaded φ differs
    assert not torch.equal(fresh.head.weight, loaded.head.weight)


def test_temperature_and_floor_reshape_the_weights_without_reordering_them_and_travel_with_phi(tiny_model, tokenizer,
                                                                                              tmp_path):
    phi = make_phi(tiny_model)
    perturb(phi)
    batch = batch_of(tokenizer, TEXTS)
    phi.eval()
    with torch.no_grad():
        logits = phi.logits(batch["input_ids"], batch["attention_mask"])
        plain = phi(batch["input_ids"], batch["attention_mask"])
        phi.weight_temperature, phi.weight_floor = 0.5, 0.2
        shaped = phi(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(plain, torch.sigmoid(logits))
    torch.testing.assert_close(shaped, 0.2 + 0.8 * torch.sigmoid(logits / 0.5))
    assert torch.equal(plain.flatten().argsort(), shaped.flatten().argsort())  # the same order of tokens
    phi.save(tmp_path / "phi")
    loaded = TrainAttention.load(tmp_path / "phi", attn_implementation="eager")
    assert (loaded.weight_temperature, loaded.weight_floor) == (0.5, 0.2)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]), shaped)
    assert "sigmoid of logit / 0.5, weight floor 0.2" in (tmp_path / "phi" / "README.md").read_text()


def test_a_floor_share_gives_every_document_the_same_floor_share_whatever_its_padding(tiny_model, tokenizer,
                                                                                       tmp_path):
    phi = make_phi(tiny_model)
    perturb(phi)
    phi.eval()
    batch = batch_of(tokenizer, TEXTS)
    mask = batch["attention_mask"][:, 1:].bool()
    with torch.no_grad():
        sigmoid = phi(batch["input_ids"], batch["attention_mask"])
        phi.weight_floor_share = 0.6
        shared = phi(batch["input_ids"], batch["attention_mask"])
    floors = []
    for row in range(len(TEXTS)):
        s, w = sigmoid[row][mask[row]], shared[row][mask[row]]
        floor = (w - s) / (1 - s)  # w = f + (1 - f)·s, one f per document (float32 rounding grows as s nears 1)
        torch.testing.assert_close(floor, floor[0].expand_as(floor), rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(floor[0] * len(w) / w.sum(), torch.tensor(0.6))  # the floor's share of the weight
        assert torch.equal(s.argsort(), w.argsort())  # the same order of tokens
        floors.append(floor[0].item())
    assert max(floors) - min(floors) > 1e-3  # documents of different sigmoid mass get different floors
    alone = document_weights(phi, [encode(tokenizer, TEXTS[2], 64).input_ids], progress=False)[0]
    torch.testing.assert_close(torch.tensor(alone), shared[2][mask[2]])  # padding in a batch changes nothing
    phi.save(tmp_path / "phi")
    assert json.loads((tmp_path / "phi" / CONFIG_FILE).read_text())["weight_floor_share"] == 0.6
    assert "a floor per document carrying 0.6 of its weight" in (tmp_path / "phi" / "README.md").read_text()
    loaded = TrainAttention.load(tmp_path / "phi", attn_implementation="eager")
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]), shared)


def test_the_per_document_floor_is_differentiable_and_document_weights_builds_no_graph(tiny_model, tokenizer,
                                                                                       monkeypatch):
    from taalm.weighting import floor_for_share

    weights = torch.tensor([[0.9, 0.1, 0.5]], requires_grad=True)
    floor = floor_for_share(weights, torch.ones_like(weights), 0.6)
    floor.sum().backward()  # meta-training differentiates through the floor as through the sigmoid
    assert weights.grad is not None and bool((weights.grad != 0).all())
    phi = make_phi(tiny_model)
    phi.weight_floor_share = 0.6
    grad_enabled = []
    forward = phi.forward
    monkeypatch.setattr(phi, "forward", lambda *a, **k: grad_enabled.append(torch.is_grad_enabled()) or forward(*a, **k))
    document_weights(phi, [encode(tokenizer, TEXTS[0], 64).input_ids], progress=False)
    assert grad_enabled == [False]  # frozen φ at learning time: no autograd graph


def test_echo_inputs_read_each_row_twice_and_point_at_the_second_reading():
    from taalm.weighting import echo_inputs

    ids, mask = torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    twice, twice_mask, second = echo_inputs(ids, mask)
    assert twice.tolist() == [[1, 5, 6, 7, 5, 6, 7], [1, 8, 9, 8, 9, 0, 0]]  # no second BOS; padding after both
    assert twice_mask.tolist() == [[1] * 7, [1, 1, 1, 1, 1, 0, 0]]
    assert second.tolist() == [[0, 4, 5, 6], [0, 3, 4, 5]]
    assert torch.equal(twice.gather(1, second)[mask.bool()], ids[mask.bool()])  # each real token's second reading
    assert not twice_mask.gather(1, second)[1, 3]  # a padding position points at padding
    unpadded, _, _ = echo_inputs(ids[:1], None)
    assert torch.equal(unpadded, twice[:1])


def test_an_echo_phi_weights_a_token_by_the_words_after_it_whatever_the_padding_and_keeps_it_on_disk(
        tiny_model, tokenizer, tmp_path):
    phi = make_phi(tiny_model)
    perturb(phi)
    phi.eval()
    ids = encode(tokenizer, TEXTS[0], 64).input_ids
    changed = [*ids[:-1], (ids[-1] + 1) % 50]  # another last token
    for echo in (False, True):
        phi.echo = echo
        before, after = document_weights(phi, [ids, changed], progress=False)
        moved = max(abs(a - b) for a, b in zip(before[:-1], after[:-1]))  # the tokens before the changed one
        assert (moved > 1e-4) == echo, moved  # a causal φ cannot see what follows a token, an echo φ can
    batch = batch_of(tokenizer, TEXTS)
    with torch.no_grad():
        weights = phi(batch["input_ids"], batch["attention_mask"])
    alone = document_weights(phi, [encode(tokenizer, TEXTS[2], 64).input_ids], progress=False)[0]
    torch.testing.assert_close(torch.tensor(alone), weights[2][batch["attention_mask"][2, 1:].bool()])
    phi.save(tmp_path / "phi")
    assert json.loads((tmp_path / "phi" / CONFIG_FILE).read_text())["echo"] is True
    assert "reads each document twice" in (tmp_path / "phi" / "README.md").read_text()
    loaded = TrainAttention.load(tmp_path / "phi", attn_implementation="eager")
    loaded.eval()
    assert loaded.echo
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["input_ids"], batch["attention_mask"]), weights)
    make_phi(tiny_model).save(tmp_path / "causal")
    assert "echo" not in json.loads((tmp_path / "causal" / CONFIG_FILE).read_text())


def test_load_refuses_a_directory_without_config(tmp_path):
    with pytest.raises(TaalmError, match=CONFIG_FILE):
        TrainAttention.load(tmp_path)


def test_document_weights_lengths_and_batching(tiny_model, tokenizer):
    phi = make_phi(tiny_model)
    perturb(phi)
    phi.train()
    ids = [encode(tokenizer, t, 64).input_ids for t in TEXTS]
    weights = document_weights(phi, ids, batch_size=3)
    assert phi.training  # restored
    assert [len(w) for w in weights] == [len(i) - 1 for i in ids]
    phi.eval()
    with torch.no_grad():
        for doc_ids, w in zip(ids, weights):
            alone = phi(torch.tensor([doc_ids]))[0].tolist()
            assert w == pytest.approx(alone, abs=1e-6)
    spread = max(max(w) for w in weights) - min(min(w) for w in weights)
    assert spread > 0.1
