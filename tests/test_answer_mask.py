"""Tests for taalm.answer_mask: the warm start's loss, its batches, and its refusals.

python -m pytest -q tests/test_answer_mask.py
"""

from __future__ import annotations

import pytest
import torch

from conftest import FACT_PAIRS
from taalm import answer_mask, models
from taalm.config import MetaTrainConfig
from taalm.data import Encoded, encode, pad_batch
from taalm.errors import TaalmError
from taalm.weighting import TrainAttention


@pytest.fixture(scope="module")
def phi_and_docs(tiny_model):
    tokenizer = models.load_tokenizer(tiny_model)
    docs = [encode(tokenizer, p["document"], 64, answer=p["answer"]) for p in FACT_PAIRS]
    torch.manual_seed(0)
    return TrainAttention.create(tiny_model, 4, 8, 0.0, attn_implementation="eager"), docs


def test_loss_is_the_token_mean_bce_of_the_logits_over_real_tokens_only(phi_and_docs):
    phi, docs = phi_and_docs
    batch = pad_batch(docs, 0)
    assert batch["loss_mask"].min() == 0  # documents of different lengths: some padding to ignore
    with torch.no_grad():
        loss = answer_mask.answer_mask_loss(phi, batch)
        by_hand = []
        for doc in docs:  # each document alone, unpadded
            ids = torch.tensor([doc.input_ids])
            logits = phi.logits(ids, torch.ones_like(ids))[0].float()
            target = torch.tensor(doc.label[1:], dtype=torch.float32)
            by_hand.append(torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    assert torch.allclose(loss, torch.cat(by_hand).mean(), atol=1e-5)


def test_pos_weight_scales_the_answer_tokens_terms_only(phi_and_docs):
    phi, docs = phi_and_docs
    batch = pad_batch(docs, 0)
    with torch.no_grad():
        logits = phi.logits(batch["input_ids"], batch["attention_mask"]).float()
        y, mask = batch["label_mask"], batch["loss_mask"]
        f = torch.nn.functional
        by_hand = (4.0 * y * f.softplus(-logits) + (1 - y) * f.softplus(logits)) * mask
        assert torch.allclose(answer_mask.answer_mask_loss(phi, batch, pos_weight=4.0), by_hand.sum() / mask.sum(),
                              atol=1e-5)


def test_a_larger_pos_weight_fits_higher_weights_on_answer_tokens(tiny_model, phi_and_docs):
    _, docs = phi_and_docs
    batch = pad_batch(docs, 0)
    answer_weight = {}
    for pos_weight in (1.0, 10.0):
        torch.manual_seed(0)
        phi = TrainAttention.create(tiny_model, 4, 8, 0.0, attn_implementation="eager")
        fit = answer_mask.fit_answer_masks(phi, docs, steps=60, lr=3e-3, batch_size=2, seed=0, pad_id=0,
                                           device=torch.device("cpu"), progress=False, pos_weight=pos_weight)
        assert fit["pos_weight"] == pos_weight
        with torch.no_grad():
            w = torch.sigmoid(phi.logits(batch["input_ids"], batch["attention_mask"]).float())
        answer_weight[pos_weight] = float((w * batch["label_mask"]).sum() / batch["label_mask"].sum())
    assert answer_weight[10.0] > answer_weight[1.0] + 0.05


def test_batches_pass_over_every_item_once_per_pass_and_are_seeded():
    drawn = list(answer_mask.batches(5, 2, 5, seed=0))
    assert [len(b) for b in drawn] == [2] * 5
    flat = [i for b in drawn for i in b]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert drawn == list(answer_mask.batches(5, 2, 5, seed=0))
    assert drawn != list(answer_mask.batches(5, 2, 5, seed=1))


def test_fit_lowers_the_loss_and_counts_documents_without_answer(phi_and_docs):
    phi, docs = phi_and_docs
    unlabelled = Encoded(docs[0].input_ids)  # no answer marked: not a target, counted as skipped
    fit = answer_mask.fit_answer_masks(phi, [*docs, unlabelled], steps=30, lr=3e-3, batch_size=2, seed=0, pad_id=0,
                                       device=torch.device("cpu"), progress=False)
    assert fit["documents"] == len(docs) and fit["skipped_no_answer"] == 1
    assert fit["bce_last"] < fit["bce_first"]
    assert phi.training  # left in the mode it was in


def test_no_labelled_document_is_an_error(phi_and_docs):
    phi, docs = phi_and_docs
    with pytest.raises(TaalmError, match="--answer_mask_steps"):
        answer_mask.fit_answer_masks(phi, [Encoded(d.input_ids) for d in docs], 3, 1e-3, 2, 0, 0,
                                     torch.device("cpu"), progress=False)


@pytest.mark.parametrize("option", [{"answer_mask_steps": -1}, {"answer_mask_lr": 0.0},
                                    {"answer_mask_pos_weight": 0.0}])
def test_bad_warm_start_options_are_refused(option, tmp_path):
    with pytest.raises(TaalmError, match=f"--{next(iter(option))}"):
        MetaTrainConfig(pairs="p.jsonl", out=str(tmp_path), **option)
