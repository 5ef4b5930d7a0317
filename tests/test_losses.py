"""Tests for taalm.losses: per-token NLL, the weighted reduction, label-token accuracy, perplexity.

python -m pytest -q tests/test_losses.py
"""

from __future__ import annotations

import math

import pytest
import torch

from taalm import losses, models
from taalm.data import encode, pad_batch

NLL = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


# ---------------------------------------------------------------------------------------------------- weighted_loss
def test_weighted_loss_hand_computed():
    weights = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    # row 0: (1·1 + 2·0.5 + 3·0) / (1 + 0.5 + 0) = 2 / 1.5 = 4/3
    # row 1: the 6 is padding, so (4·0.2 + 5·0.2) / (0.2 + 0.2) = 1.8 / 0.4 = 4.5
    # batch mean: (4/3 + 4.5) / 2 = 35/12
    assert losses.weighted_loss(NLL, weights, mask).item() == pytest.approx(35 / 12, rel=1e-6)


def test_weighted_loss_is_per_sequence_mean_then_batch_mean():
    ones = torch.ones_like(NLL)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 0: (1 + 2) / 2 = 1.5; row 1: (4 + 5 + 6) / 3 = 5; mean 3.25 (the global token mean would be 18/5 = 3.6)
    assert losses.weighted_loss(NLL, ones, mask).item() == pytest.approx(3.25, rel=1e-6)
    # with equal lengths the two reductions agree: mean of all six = 3.5
    assert losses.weighted_loss(NLL, ones, torch.ones_like(NLL)).item() == pytest.approx(3.5, rel=1e-6)


def test_weighted_loss_is_invariant_to_a_uniform_weight_scale():
    weights = torch.tensor([[0.9, 0.1, 0.4], [0.3, 0.7, 0.2]])
    mask = torch.ones_like(NLL)
    a = losses.weighted_loss(NLL, weights, mask)
    b = losses.weighted_loss(NLL, 0.01 * weights, mask)
    torch.testing.assert_close(a, b)


def test_weighted_loss_gradient_flows_to_weights():
    weights = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], requires_grad=True)
    losses.weighted_loss(NLL, weights, torch.ones_like(NLL)).backward()
    # d/dw_t of Σ nll·w / Σ w at uniform w = 0.5 is (nll_t - mean) / Σw, halved by the batch mean
    expected = torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]) / 1.5 / 2
    torch.testing.assert_close(weights.grad, expected)


# ------------------------------------------------------------------------------------------------------- token_nll
def test_token_nll_uniform_logits_is_log_vocab():
    logits = torch.zeros(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    nll = losses.token_nll(logits, ids)
    assert nll.shape == (2, 4)
    torch.testing.assert_close(nll, torch.full((2, 4), math.log(7)))


def test_token_nll_is_aligned_to_predicted_tokens():
    # position j predicts token j+1: logits that put all mass on the next token give ~0 NLL
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    logits = torch.full((1, 5, 6), -30.0)
    for j in range(4):
        logits[0, j, ids[0, j + 1]] = 30.0
    assert losses.token_nll(logits, ids).max().item() < 1e-12
    shifted = torch.roll(logits, 1, dims=1)  # misaligned by one position
    assert losses.token_nll(shifted, ids)[:, 1:].min().item() > 50


def test_token_nll_upcasts_bfloat16():
    logits = torch.randn(1, 4, 9).to(torch.bfloat16)
    ids = torch.tensor([[1, 2, 3, 4]])
    nll = losses.token_nll(logits, ids)
    assert nll.dtype == torch.float32
    ref = torch.nn.functional.cross_entropy(logits.float()[0, :-1], ids[0, 1:], reduction="none")
    torch.testing.assert_close(nll[0], ref)


# ---------------------------------------------------------------------------------------------- with a tiny model
def test_unit_weights_equal_the_ordinary_lm_loss(tiny_model):
    """weights == 1 on a batch without padding: the transformers loss (global token mean) for equal lengths."""
    model = models.load_causal_lm(tiny_model, attn_implementation="eager").eval()
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 12))
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    nll = losses.token_nll(out.logits, ids)
    ours = losses.weighted_loss(nll, torch.ones_like(nll), torch.ones_like(nll))
    torch.testing.assert_close(ours, out.loss, rtol=1e-6, atol=1e-6)
    assert out.loss.item() > 1.0  # a random model: a real loss, not a degenerate zero


def test_padding_is_excluded(tiny_model):
    tokenizer = models.load_tokenizer(tiny_model)
    model = models.load_causal_lm(tiny_model, attn_implementation="eager").eval()
    texts = ["Santiago is the capital of Chile .", "Libya maintains diplomatic relations with Brazil .",
             "The fox ."]
    encoded = [encode(tokenizer, t, 64) for t in texts]
    batch = pad_batch(encoded, tokenizer.pad_token_id)
    assert batch["loss_mask"].sum(-1).tolist() == [len(e.input_ids) - 1 for e in encoded]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        singles = [model(input_ids=torch.tensor([e.input_ids])).logits for e in encoded]
    nll = losses.token_nll(logits, batch["input_ids"])
    batched = losses.weighted_loss(nll, torch.ones_like(nll), batch["loss_mask"])
    expected = torch.stack([losses.token_nll(lg, torch.tensor([e.input_ids])).mean()
                            for lg, e in zip(singles, encoded)]).mean()
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    # whatever sits in the padded positions does not count
    garbage = nll.clone()
    garbage[batch["loss_mask"] == 0] = 1e6
    torch.testing.assert_close(losses.weighted_loss(garbage, torch.ones_like(nll), batch["loss_mask"]), batched)


# ------------------------------------------------------------------------------------------- label_accuracy, ppl
def test_label_accuracy_hand_made_logits():
    # vocab 3; sequence [0, 1, 2, 1]: the predicted tokens are 1, 2, 1 at positions 0, 1, 2
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])
    logits = torch.tensor([
        [[0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [9.0, 9.0, 9.0]],  # hits: yes, yes, no
        [[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [9.0, 9.0, 9.0]],  # hits: yes, no, yes
    ])
    label_mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    acc = losses.label_accuracy(logits, ids, label_mask)
    torch.testing.assert_close(acc, torch.tensor([0.5, 2 / 3]))
    # a sequence with no label tokens scores 0, not NaN
    assert losses.label_accuracy(logits, ids, torch.zeros_like(label_mask)).tolist() == [0.0, 0.0]


def test_masked_mean():
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(losses.masked_mean(NLL, mask), torch.tensor([2.0, 6.0]))


def test_perplexity():
    assert losses.perplexity(6.0, 3) == pytest.approx(math.exp(2.0))
    assert losses.perplexity(3 * math.log(5.0), 3) == pytest.approx(5.0)
    assert losses.perplexity(0.0, 0) == math.inf
    assert losses.perplexity(800.0 * 4, 4) == math.inf  # a diverged model's mean NLL past exp's range: inf, no crash
