"""φ's validation inside meta-training: the gain over uniform weights, θ left untouched, best-checkpoint selection.

python -m pytest -q tests/test_validation.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FACT_PAIRS
from taalm import meta, models, runtime
from taalm.config import LoopOptions, MetaTrainConfig
from taalm.data import encode, pad_token_id
from taalm.meta_train import build_models, meta_train
from taalm.validation import HeldOut, Score, best_validation, gain_record, learn_and_score, learn_and_score_groups
from taalm.weighting import TrainAttention, document_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAIRS = FACT_PAIRS[:4]


def _config(tiny_model: str, tmp_path: Path, **overrides) -> MetaTrainConfig:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 3))
    values = {"theta": tiny_model, "pairs": str(pairs), "out": str(tmp_path / "phi"), "updates": 6, "meta_batch": 2,
              "inner_lr": 1e-2, "outer_lr": 3e-2, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
              "max_length": 64, "seed": 1, "device": "cpu", "held_out": 4, "val_every": 2, "val_epochs": 3,
              "val_lr": 3e-2, "val_batch_size": 2}
    return MetaTrainConfig(**{**values, **overrides})


@pytest.fixture
def setting(tiny_model, tmp_path):
    cfg = _config(tiny_model, tmp_path)
    tokenizer = models.load_tokenizer(tiny_model)
    theta, phi = build_models(cfg, torch.device("cpu"))
    held = HeldOut([encode(tokenizer, p["document"], 64) for p in PAIRS],
                   [encode(tokenizer, p["task"], 64, answer=p["answer"]) for p in PAIRS])
    options = LoopOptions(epochs=3, lr=3e-2, batch_size=2, micro_batch=2, seed=1)
    return theta, phi, held, options, pad_token_id(tokenizer)


def test_gain_is_zero_for_uniform_weights(setting):
    theta, phi, held, options, pad_id = setting
    start = meta.trainable_params(theta)
    with torch.no_grad():
        phi.head.weight.zero_()  # every token gets sigmoid(bias): uniform weights
    weights = [torch.tensor(w) for w in document_weights(phi, [d.input_ids for d in held.docs])]
    assert all(torch.all(w == w[0]) for w in weights), [w.std() for w in weights]
    uniform = learn_and_score(theta, start, held, None, options, pad_id, torch.device("cpu"))
    constant = learn_and_score(theta, start, held, weights, options, pad_id, torch.device("cpu"))
    record = gain_record(constant, uniform)
    assert record["gain_accuracy"] == pytest.approx(0.0, abs=1e-6)
    # each pair's score recorded for both runs, in the pairs' order, averaging to the run's score
    assert len(record["val_pair_nll"]) == len(record["uniform_pair_accuracy"]) == len(PAIRS)
    assert sum(record["uniform_pair_nll"]) / len(PAIRS) == pytest.approx(uniform.nll)
    assert record["val_pair_accuracy"] == pytest.approx(record["uniform_pair_accuracy"], abs=1e-6)
    assert record["gain_nll"] == pytest.approx(0.0, abs=1e-4)
    assert uniform.nll < 6.0  # θ did learn something in the validation run (untrained: ln 300 ≈ 5.7 per token)


def test_validation_changes_neither_theta_nor_random_streams_and_weights_matter(setting, capsys):
    theta, _, held, options, pad_id = setting
    start = meta.trainable_params(theta)
    rng = runtime.rng_state()
    uniform = learn_and_score(theta, start, held, None, options, pad_id, torch.device("cpu"), desc="kind x: uniform")
    steps = options.epochs * -(-len(held.docs) // options.batch_size)
    err = capsys.readouterr().err  # a progress bar over every step of θ's learning
    assert "kind x: uniform" in err and f"0/{steps} " in err
    assert all(torch.equal(p, start[n]) for n, p in theta.named_parameters() if n in start)
    assert torch.equal(torch.get_rng_state(), rng["torch"])
    again = learn_and_score(theta, start, held, None, options, pad_id, torch.device("cpu"))
    assert again == uniform  # from the same start, bitwise the same run
    answer_only = [torch.tensor(e.label[1:], dtype=torch.float32) + 1e-3 for e in
                   [encode_doc_labels(held, i) for i in range(len(held.docs))]]
    focused = learn_and_score(theta, start, held, answer_only, options, pad_id, torch.device("cpu"))
    assert focused.nll != uniform.nll  # the weights reach the learning run


def test_groups_are_learned_each_from_the_start_and_their_pairs_pooled(setting):
    theta, _, held, options, pad_id = setting
    start = meta.trainable_params(theta)
    cpu = torch.device("cpu")
    halves = [learn_and_score(theta, start, HeldOut(held.docs[a:b], held.tasks[a:b]), None, options, pad_id, cpu)
              for a, b in ((0, 2), (2, 4))]
    grouped = learn_and_score_groups(theta, start, held, None, options, pad_id, cpu, group=2)
    assert grouped.pair_accuracy == halves[0].pair_accuracy + halves[1].pair_accuracy
    assert grouped.pair_nll == halves[0].pair_nll + halves[1].pair_nll
    assert grouped.nll == pytest.approx(sum(grouped.pair_nll) / 4)
    # about the size asked: 4 pairs in groups of about 3 are two groups of 2, not 3 and 1
    assert learn_and_score_groups(theta, start, held, None, options, pad_id, cpu, group=3) == grouped
    together = learn_and_score_groups(theta, start, held, None, options, pad_id, cpu, group=0)
    assert together == learn_and_score(theta, start, held, None, options, pad_id, cpu)
    assert together.pair_nll != grouped.pair_nll  # learning 4 documents together is not learning 2 and 2


def encode_doc_labels(held: HeldOut, i: int):
    """The i-th held-out document with its answer labelled (for oracle-like weights)."""
    from taalm.data import Encoded

    doc, task = held.docs[i], held.tasks[i]
    answer_ids = [t for t, is_label in zip(task.input_ids, task.label) if is_label]
    label = [False] * len(doc.input_ids)
    for k in range(len(doc.input_ids) - len(answer_ids) + 1):
        if doc.input_ids[k:k + len(answer_ids)] == answer_ids:
            label[k:k + len(answer_ids)] = [True] * len(answer_ids)
    return Encoded(doc.input_ids, label)


def test_a_score_restored_from_json_equals_the_one_written():
    score = Score(0.5, 1.25, (1.0, 0.0), (0.5, 2.0))
    restored = Score(**json.loads(json.dumps(vars(score))))  # the pairs come back as lists
    assert restored == score and isinstance(restored.pair_nll, tuple)
    assert hash(restored) == hash(score)


def test_best_validation_picks_the_highest_gain_earliest_on_ties():
    history = [{"update": 0, "gain_accuracy": 0.0, "gain_nll": 0.0}, {"update": 1, "outer_loss": 1.0},
               {"update": 2, "gain_accuracy": 0.25, "gain_nll": -0.1}, {"update": 4, "gain_accuracy": 0.25,
                                                                         "gain_nll": 0.3},
               {"update": 6, "gain_accuracy": 0.25, "gain_nll": 0.3}, {"update": 8, "gain_accuracy": 0.1,
                                                                        "gain_nll": 0.9}]
    assert best_validation(history, "accuracy")["update"] == 4
    assert best_validation(history, "nll")["update"] == 8
    assert best_validation([{"update": 1, "outer_loss": 1.0}], "accuracy") is None


def test_meta_train_writes_the_best_checkpoint_and_its_record(tiny_model, tmp_path):
    out = meta_train(_config(tiny_model, tmp_path))
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    validated = [h for h in history if "gain_accuracy" in h]
    assert [h["update"] for h in validated] == [0, 2, 4, 6]
    for h in validated:
        assert {"val_w_mean", "val_w_top3_share", "val_w_effective_tokens", "uniform_accuracy"} <= h.keys()
        assert h["gain_accuracy"] == pytest.approx(h["val_accuracy"] - h["uniform_accuracy"])
    assert len({h["uniform_nll"] for h in validated}) == 1  # one uniform run serves every validation
    selection = json.loads((out / "selection.json").read_text())
    best = max(validated, key=lambda h: (h["gain_accuracy"], h["gain_nll"], -h["update"]))
    assert selection["update"] == best["update"]
    checkpoint = out / "checkpoints" / f"update-{best['update']:05d}"
    for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors", "config.json"):
        assert (out / name).read_bytes() == (checkpoint / name).read_bytes()
    assert len(list((out / "checkpoints").iterdir())) == 4
    assert (out / "meta_curve.png").read_bytes()[:4] == b"\x89PNG"
    TrainAttention.load(out)  # the selected φ loads

    last = meta_train(_config(tiny_model, tmp_path, out=str(tmp_path / "last"), select="last"))
    assert json.loads((last / "selection.json").read_text())["update"] == 6
    assert (last / "head.safetensors").read_bytes() == \
        (last / "checkpoints" / "update-00006" / "head.safetensors").read_bytes()
