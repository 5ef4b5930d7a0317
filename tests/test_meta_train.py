"""Tests for taalm.meta_train: φ learns to find the fact on a synthetic task; exact resume; output-directory rules.

python -m pytest -q tests/test_meta_train.py
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FACT_PAIRS, build_tiny_model
from taalm import answer_mask, meta, models, runtime
from taalm.config import MetaTrainConfig
from taalm.data import encode
from taalm.errors import TaalmError
from taalm.meta_train import build_models, meta_train
from taalm.weighting import ADAPTER_FILE, CONFIG_FILE, HEAD_FILE, TrainAttention, document_weights

# ------------------------------------------------------------------------------------------- synthetic fact task
# Each document is random filler words with one fact "KEY is VALUE" inside; its task is the fact itself with VALUE as
# the answer. Learning the document helps the task only through the VALUE token, so a φ that learned something
# weighs VALUE tokens above the rest; an untrained φ weighs every token ~0.982.
FILLER = ["apple", "bread", "chair", "dance", "eagle", "field", "grape", "house", "input", "jelly", "knife", "lemon",
          "metal", "night", "ocean", "paper", "queen", "river", "stone", "table", "uncle", "voice", "water", "xenon",
          "yacht", "zebra"]
KEYS = [f"key{i}" for i in range(30)]
VALUES = [f"val{i}" for i in range(6)]


@pytest.fixture(scope="module")
def word_model(tmp_path_factory) -> str:
    """A tiny random Llama with a word-level tokenizer: one token per word, so the fact's tokens are known exactly."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("word-llama")
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *FILLER, "is", *KEYS, *VALUES])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(directory)
    build_tiny_model(directory, len(vocab))
    return str(directory)


def fact_document(rng: random.Random, filler: int = 16) -> dict[str, str]:
    key, value = rng.choice(KEYS), rng.choice(VALUES)
    words = [rng.choice(FILLER) for _ in range(filler)]
    at = rng.randrange(1, filler - 2)
    words[at:at] = [key, "is", value]
    return {"document": " ".join(words), "task": f"{key} is {value}", "answer": value}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def roc_auc(scores: list[float], positive: list[bool]) -> float:
    """Mann-Whitney U / (n_pos · n_neg): the chance a positive outscores a negative (ties count half)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9, 0.2], [True, False, True, False]) == 0.5
    assert roc_auc([0.5, 0.5, 0.5], [True, False, False]) == 0.5


def fact_auc(phi: TrainAttention, tokenizer, records: list[dict]) -> float:
    """AUC of φ's weights (aligned to predicted tokens) against the mask of the fact's VALUE tokens."""
    ids, masks = [], []
    for r in records:
        enc = encode(tokenizer, r["document"], 64, answer=r["answer"])
        ids.append(enc.input_ids)
        masks.append(enc.label[1:])
    weights = document_weights(phi, ids)
    return roc_auc([w for row in weights for w in row], [m for row in masks for m in row])


def fact_task(word_model: str, tmp_path: Path, **options) -> tuple[MetaTrainConfig, list[dict]]:
    """A meta-train config on 64 seeded fact pairs, and 30 more fact documents held out to rank φ on."""
    rng = random.Random(0)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [fact_document(rng) for _ in range(64)])
    held_out = [fact_document(rng) for _ in range(30)]
    values = {"updates": 40, "meta_batch": 4, "inner_lr": 1e-2, "outer_lr": 3e-3, "lora_r": 4, "lora_alpha": 8,
              "lora_dropout": 0.0, "max_length": 64, "seed": 0, "checkpoint_every": 100, "device": "cpu",
              "held_out": 0}
    return MetaTrainConfig(theta=word_model, pairs=str(pairs), out=str(tmp_path / "phi"), **{**values, **options}), \
        held_out


def test_phi_learns_to_weight_the_fact(word_model, tmp_path):
    cfg, held_out = fact_task(word_model, tmp_path)
    tokenizer = models.load_tokenizer(word_model)
    _, untrained = build_models(cfg, torch.device("cpu"))  # exactly the φ the run starts from
    before = fact_auc(untrained, tokenizer, held_out)

    out = meta_train(cfg)
    trained = TrainAttention.load(out)
    after = fact_auc(trained, tokenizer, held_out)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["update"] for h in history] == list(range(1, 41))
    assert 0.3 < before < 0.7, before
    assert after >= 0.8, (before, after)


def test_answer_mask_warm_start_ranks_the_fact_before_any_meta_update(word_model, tmp_path):
    cfg, held_out = fact_task(word_model, tmp_path, updates=1, outer_lr=1e-9, answer_mask_steps=240,
                              answer_mask_lr=3e-3)
    out = meta_train(cfg)
    after = fact_auc(TrainAttention.load(out), models.load_tokenizer(word_model), held_out)
    fit = json.loads((out / "answer_mask.json").read_text())
    assert fit["documents"] == 64 and fit["skipped_no_answer"] == 0 and fit["steps"] == 240
    assert fit["bce_last"] < 0.5 * fit["bce_first"], fit
    assert after >= 0.85, after  # untrained: 0.3–0.7 (above); one meta-update at lr 1e-9 leaves the warm φ as it was


# ------------------------------------------------------------------------------------------------------- resume
RESUME_PAIRS = FACT_PAIRS


def resume_config(tiny_model: str, pairs: Path, out: Path, **overrides) -> MetaTrainConfig:
    values = {"theta": tiny_model, "pairs": str(pairs), "out": str(out), "updates": 6, "meta_batch": 2,
              "checkpoint_every": 2, "inner_lr": 1e-2, "outer_lr": 1e-2, "lora_r": 4, "lora_alpha": 8,
              "lora_dropout": 0.1, "max_length": 64, "seed": 3, "device": "cpu", "held_out": 1, "val_every": 2,
              "val_epochs": 2, "val_lr": 1e-2, "val_batch_size": 1}
    return MetaTrainConfig(**{**values, **overrides})


def outputs(out: Path) -> tuple[dict, list[dict]]:
    tensors = {f"adapter/{k}": v for k, v in load_file(str(out / ADAPTER_FILE)).items()}
    tensors.update({f"head/{k}": v for k, v in load_file(str(out / HEAD_FILE)).items()})
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    for record in history:
        record.pop("seconds", None)
    return tensors, history


def kill_at(monkeypatch, update: int, seen: list[int]) -> None:
    original = meta.meta_batch_indices

    def indices(u, *args, **kwargs):
        seen.append(u)
        if u == update:
            raise RuntimeError("simulated kill")
        return original(u, *args, **kwargs)

    monkeypatch.setattr(meta, "meta_batch_indices", indices)


def test_resume_is_exact(tiny_model, tmp_path, monkeypatch):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    reference, reference_history = outputs(meta_train(resume_config(tiny_model, pairs, tmp_path / "full")))
    assert [h["update"] for h in reference_history] == [0, 1, 2, 3, 4, 5, 6]
    assert [h["update"] for h in reference_history if "gain_accuracy" in h] == [0, 2, 4, 6]  # validated
    lora_b = [v for k, v in reference.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # φ moved away from its init

    out = tmp_path / "killed"
    seen: list[int] = []
    kill_at(monkeypatch, 4, seen)
    with pytest.raises(RuntimeError, match="simulated kill"):
        meta_train(resume_config(tiny_model, pairs, out))
    assert seen == [0, 1, 2, 3, 4]
    assert runtime.load_checkpoint(out / "checkpoint")["update"] == 4
    assert not (out / "DONE").exists() and not (out / HEAD_FILE).exists()

    monkeypatch.undo()
    with pytest.raises(TaalmError, match="--resume"):  # a half-finished run is not overwritten by accident
        meta_train(resume_config(tiny_model, pairs, out))
    seen.clear()
    kill_at(monkeypatch, -1, seen)  # record, never raise
    resumed, resumed_history = outputs(meta_train(resume_config(tiny_model, pairs, out, resume=True)))
    assert seen == [4, 5]  # only the missing updates ran
    assert resumed_history == reference_history
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert (out / "DONE").exists()


def test_a_resumed_run_keeps_its_warm_start_and_does_not_fit_again(tiny_model, tmp_path, monkeypatch):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    options = {"updates": 4, "answer_mask_steps": 3, "answer_mask_lr": 1e-2}
    reference, _ = outputs(meta_train(resume_config(tiny_model, pairs, tmp_path / "full", **options)))
    out = tmp_path / "killed"
    kill_at(monkeypatch, 2, [])
    with pytest.raises(RuntimeError):
        meta_train(resume_config(tiny_model, pairs, out, **options))
    assert (out / "answer_mask.json").is_file()
    monkeypatch.undo()
    fits: list[int] = []
    original = answer_mask.fit_answer_masks
    monkeypatch.setattr(answer_mask, "fit_answer_masks", lambda *a, **k: fits.append(1) or original(*a, **k))
    resumed, _ = outputs(meta_train(resume_config(tiny_model, pairs, out, resume=True, **options)))
    assert fits == []
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


def test_epochs_0_validates_the_warm_start_alone_and_ships_it(tiny_model, tmp_path, monkeypatch):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    steps: list[int] = []
    original = meta.meta_gradient
    monkeypatch.setattr(meta, "meta_gradient", lambda *a, **k: steps.append(1) or original(*a, **k))
    out = meta_train(resume_config(tiny_model, pairs, tmp_path / "warm", updates=0, epochs=0, answer_mask_steps=3,
                                   answer_mask_lr=1e-2))
    assert steps == []  # no meta-update
    tensors, history = outputs(out)
    assert [h["update"] for h in history] == [0] and "gain_accuracy" in history[0]
    assert json.loads((out / "selection.json").read_text())["update"] == 0
    warm = load_file(str(out / "checkpoints" / "update-00000" / HEAD_FILE))
    assert all(torch.equal(tensors[f"head/{k}"], v) for k, v in warm.items())
    bias = [v for k, v in tensors.items() if k.startswith("head/") and k.endswith("bias")]
    assert len(bias) == 1 and float(bias[0]) != pytest.approx(4.0)  # the fit moved φ's head off its init


def test_an_echo_phi_meta_trains_through_the_double_backward_and_ships_as_echo(tiny_model, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    out = meta_train(resume_config(tiny_model, pairs, tmp_path / "echo", updates=2, val_every=2, phi_echo=True))
    tensors, history = outputs(out)
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # the meta-gradient reached φ's LoRA
    assert all(math.isfinite(h["outer_loss"]) for h in history if "outer_loss" in h)
    assert json.loads((out / CONFIG_FILE).read_text())["echo"] is True
    assert TrainAttention.load(out, attn_implementation="eager").echo
    # revalidated without --phi_echo: the checkpoints are echo φs, and the record says so
    again = meta_train(resume_config(tiny_model, pairs, tmp_path / "again", updates=2, val_every=2,
                                     revalidate=str(out), weight_floor=0.1))
    assert "phi_echo: true" in (again / "config.yaml").read_text()
    assert json.loads((again / CONFIG_FILE).read_text())["echo"] is True


def test_epochs_0_without_a_warm_start_is_refused(tiny_model, tmp_path):
    with pytest.raises(TaalmError, match="--epochs: 0 with --updates 0 leaves φ untrained"):
        resume_config(tiny_model, tmp_path / "pairs.jsonl", tmp_path / "out", updates=0, epochs=0)


def test_resume_without_rng_restore_differs(tiny_model, tmp_path, monkeypatch):
    """Dropout makes the RNG state matter: skipping its restore must change the result (so the test above is real)."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    reference, _ = outputs(meta_train(resume_config(tiny_model, pairs, tmp_path / "full", updates=4, select="last")))
    out = tmp_path / "killed"
    kill_at(monkeypatch, 2, [])
    with pytest.raises(RuntimeError):
        meta_train(resume_config(tiny_model, pairs, out, updates=4, select="last"))
    monkeypatch.undo()
    monkeypatch.setattr(runtime, "set_rng_state", lambda state: None)
    resumed, _ = outputs(meta_train(resume_config(tiny_model, pairs, out, updates=4, select="last", resume=True)))
    assert any(not torch.equal(resumed[k], reference[k]) for k in reference)


# ----------------------------------------------------------------------------------------------- output directory
@pytest.mark.parametrize(("line", "message"), [
    ('{"document": "Paris is in France .", "task": "Paris is in France"}', "missing field 'answer'"),
    ('{"document": "Paris is in France .", "task": "Paris is in France", "answer": "Spain"}', "not found in task"),
    ('{"document": "Paris is in France .", "task": ', "malformed JSON"),
])
def test_bad_pairs_create_no_output(tiny_model, tmp_path, line, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(RESUME_PAIRS[0]) + "\n" + line + "\n")
    out = tmp_path / "out"
    with pytest.raises(TaalmError, match=message) as e:
        meta_train(resume_config(tiny_model, pairs, out))
    assert f"{pairs}:2:" in str(e.value)
    assert not out.exists()


def test_a_held_out_pair_without_an_answer_token_to_predict_is_skipped_not_fatal(tiny_model, tmp_path):
    # no document states its answer (or, with SmolLM2's tokenizer, which adds no BOS, only as its first token):
    # training can still learn the document, validation has no answer token to rank
    rows = [{**p, "document": p["document"].replace(p["answer"], "it")} for p in RESUME_PAIRS]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = resume_config(tiny_model, pairs, tmp_path / "out", updates=1, held_out=2)
    from taalm.meta_train import prepare

    encoded, held, report = prepare(cfg, models.load_tokenizer(tiny_model))
    assert held == [] and len(encoded) == len(rows) - 2 and report["held_out"] == 0
    assert len(report["skipped"]) == 2 and all("not found" in s["reason"] for s in report["skipped"])


FILLER_TEXT = "The quick brown fox jumps over the lazy dog near the river bank . " * 6


def test_long_documents_are_windowed_around_the_answer_and_counted(tiny_model, tmp_path):
    rows = [{"document": FILLER_TEXT + "Santiago is the capital of Chile .", "task": "Santiago is the capital of Chile .",
             "answer": "Chile"},
            {"document": FILLER_TEXT + "Nothing to see .", "task": "Marie Curie was born in Warsaw .", "answer": "Warsaw"},
            *RESUME_PAIRS[1:]]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = resume_config(tiny_model, pairs, tmp_path / "out", updates=1, held_out=0, max_length=48)
    tokenizer = models.load_tokenizer(tiny_model)
    from taalm.meta_train import prepare

    encoded, held, report = prepare(cfg, tokenizer)
    assert report["windowed"] == 1 and report["train"] == 5 and held == []
    assert [s["pair"] for s in report["skipped"]] == [f"{pairs}:2"]  # over-long and without its answer: skipped
    first = encoded[0].document.input_ids
    assert len(first) <= 48 and tokenizer.decode(first).rstrip().endswith("Santiago is the capital of Chile .")
    out = meta_train(cfg)
    assert json.loads((out / "data.json").read_text())["windowed"] == 1


def test_task_answer_cut_off_creates_no_output(tiny_model, tmp_path):
    rows = [{"document": "Chile is far .", "task": FILLER_TEXT + "Santiago is the capital of Chile .", "answer": "Chile"},
            *RESUME_PAIRS]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(TaalmError, match="cut off by --max_length"):
        meta_train(resume_config(tiny_model, pairs, out, max_length=48, held_out=0))
    assert not out.exists()


def test_non_empty_output_is_refused(tiny_model, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TaalmError, match="not empty"):
        meta_train(resume_config(tiny_model, pairs, out, updates=1))
    with pytest.raises(TaalmError, match="no checkpoint"):
        meta_train(resume_config(tiny_model, pairs, out, updates=1, resume=True))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_held_out_pairs_are_not_trained_on(tiny_model, tmp_path, monkeypatch):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    seen = []
    original = meta.make_problem
    monkeypatch.setattr(meta, "make_problem",
                        lambda items, *a: seen.extend(tuple(p.task.input_ids) for p in items) or original(items, *a))
    out = meta_train(resume_config(tiny_model, pairs, tmp_path / "out", updates=3, held_out=2))
    held = [json.loads(line) for line in (out / "held_out.jsonl").read_text().splitlines()]
    held_tasks = {h["task"] for h in held}
    assert len(held) == 2 and all({k: h[k] for k in ("document", "task", "answer")} in RESUME_PAIRS for h in held)
    tokenizer = models.load_tokenizer(tiny_model)
    training_tasks = {tuple(encode(tokenizer, p["task"], 64).input_ids) for p in RESUME_PAIRS if p["task"] not in held_tasks}
    assert seen and set(seen) == training_tasks  # φ trained on every training pair and never on a held-out one
    assert json.loads((out / "data.json").read_text())["held_out"] == 2
    with pytest.raises(TaalmError, match="--held_out"):
        meta_train(resume_config(tiny_model, pairs, tmp_path / "out2", held_out=5))


def test_stacked_pairs_train_the_same_phi(tiny_model, tmp_path):
    """--pair_batch only batches the computation: φ after two updates equals the one-pair-at-a-time run (float64)."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    common = {"updates": 2, "meta_batch": 4, "held_out": 0, "lora_dropout": 0.0, "dtype": "float64", "restrict": True}
    one, stacked = (outputs(meta_train(resume_config(tiny_model, pairs, tmp_path / name, pair_batch=size, **common)))
                    for name, size in (("one", 1), ("stacked", 4)))
    assert one[0].keys() == stacked[0].keys()
    for name in one[0]:
        # AdamW divides by sqrt(v): a near-zero gradient entry whose last bits change (the thread count changes the
        # summation order) moves its parameter by up to ~1e-6 after two updates at lr 1e-2 (seen: 1.2e-6 with one
        # thread), 1e-3 of one step; a wrong stacked problem changes the meta-gradient itself, not its last bits
        torch.testing.assert_close(stacked[0][name], one[0][name], rtol=1e-6, atol=1e-5)
    for a, b in zip(one[1], stacked[1]):
        assert a["outer_loss"] == pytest.approx(b["outer_loss"], rel=1e-9)


def test_non_finite_meta_gradient_stops_with_the_update_and_pairs(tiny_model, tmp_path, monkeypatch, capsys):
    from taalm import cli, losses

    pairs = write_jsonl(tmp_path / "pairs.jsonl", RESUME_PAIRS)
    calls = {"n": 0}
    real = losses.masked_mean

    def poisoned(values, mask):  # the outer loss of the 3rd update's first problem becomes NaN
        calls["n"] += values.requires_grad
        out = real(values, mask)
        return out * float("nan") if calls["n"] == 5 else out

    monkeypatch.setattr(losses, "masked_mean", poisoned)
    out = tmp_path / "out"
    argv = ["meta-train", "--theta", tiny_model, "--pairs", str(pairs), "--out", str(out), "--updates", "4",
            "--meta_batch", "2", "--checkpoint_every", "1", "--held_out", "0", "--lora_r", "4", "--lora_alpha", "8",
            "--max_length", "64", "--device", "cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("taalm: ")]
    assert len(errors) == 1 and "non-finite meta-gradient at φ update 3" in errors[0] and f"{pairs}:" in errors[0]
    state = runtime.load_checkpoint(out / "checkpoint")
    assert state["update"] == 2 and all(torch.isfinite(v).all() for v in state["phi"].values())
    assert not (out / "DONE").exists()


# ------------------------------------------------------------------------------------------ kinds of documents
def test_kinds_are_held_out_and_validated_each_and_selected_by_the_worst(tiny_model, tmp_path, monkeypatch):
    kinds = [{**p, "kind": "a" if i % 2 else "b"} for i, p in enumerate(RESUME_PAIRS)]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", kinds)
    mixture = {"counts": {"a": 4, "b": 4}, "rules": {"a": "rule of a", "b": "rule of b"}}  # as taalm phi-data writes
    (tmp_path / "pairs.json").write_text(json.dumps(mixture))
    out = meta_train(resume_config(tiny_model, pairs, tmp_path / "full", updates=4, held_out=1))
    assert json.loads((out / "mixture.json").read_text()) == mixture
    assert "  - a: 4 pairs; rule of a\n" in (out / "README.md").read_text()  # the card names the kinds
    held = [json.loads(line) for line in (out / "held_out.jsonl").read_text().splitlines()]
    kind_of = {p["task"]: p["kind"] for p in kinds}
    assert sorted(kind_of[h["task"]] for h in held) == ["a", "b"]  # one of each kind
    data = json.loads((out / "data.json").read_text())
    assert data["kinds"] == {"a": sum(p["kind"] == "a" for p in kinds), "b": sum(p["kind"] == "b" for p in kinds)}
    _, history = outputs(out)
    validated = [h for h in history if "gain_accuracy" in h]
    assert [h["update"] for h in validated] == [0, 2, 4]
    for h in validated:
        by_kind = {k: (h[f"{k}/gain_accuracy"], h[f"{k}/gain_nll"]) for k in ("a", "b")}
        assert 0.0 <= h["a/answer_auc"] <= 1.0 and h["val_answer_auc"] == (h["a/answer_auc"] + h["b/answer_auc"]) / 2
        assert h["worst_kind"] == min(by_kind, key=by_kind.get)
        assert (h["gain_accuracy"], h["gain_nll"]) == min(by_kind.values())  # the validation's gain: the worst kind's
    selection = json.loads((out / "selection.json").read_text())
    best = max(validated, key=lambda h: (h["gain_accuracy"], h["gain_nll"], -h["update"]))
    assert selection["update"] == best["update"] and selection["validation"]["worst_kind"] == best["worst_kind"]
    card = (out / "README.md").read_text()
    assert "| worst kind | a: gain / answer AUC | b: gain / answer AUC |" in card

    # resume: each kind's uniform run is restored from the checkpoint, not rerun, and the history is the same
    killed = tmp_path / "killed"
    kill_at(monkeypatch, 3, [])
    with pytest.raises(RuntimeError, match="simulated kill"):
        meta_train(resume_config(tiny_model, pairs, killed, updates=4, held_out=1))
    monkeypatch.undo()
    uniform_runs = record_validation_runs(monkeypatch, lambda a: a[3] is None)
    _, resumed = outputs(meta_train(resume_config(tiny_model, pairs, killed, updates=4, held_out=1, resume=True)))
    assert resumed == history
    assert uniform_runs == [False, False]  # the validation at update 4, one φ run per kind, no uniform rerun


@pytest.fixture(scope="module")
def kinded_run(tiny_model, tmp_path_factory):
    """A finished run on pairs of two kinds (a, b): its pairs, directory and history."""
    directory = tmp_path_factory.mktemp("kinded")
    kinds = [{**p, "kind": "a" if i % 2 else "b"} for i, p in enumerate(RESUME_PAIRS)]
    pairs = write_jsonl(directory / "pairs.jsonl", kinds)
    run = meta_train(resume_config(tiny_model, pairs, directory / "run", updates=4, held_out=1))
    return pairs, run, outputs(run)[1]


def record_validation_runs(monkeypatch, what) -> list:
    """What each learn_and_score call of a validation was given, as ``what(args)``."""
    import taalm.validation as v

    runs, original = [], v.learn_and_score
    monkeypatch.setattr(v, "learn_and_score", lambda *a, **k: runs.append(what(a)) or original(*a, **k))
    return runs


def test_revalidate_with_another_lr_for_one_kind_reruns_only_that_kind(tiny_model, kinded_run, tmp_path, monkeypatch):
    pairs, run, history = kinded_run
    runs = record_validation_runs(monkeypatch, lambda a: (a[3] is None, a[4].lr))
    again = meta_train(resume_config(tiny_model, pairs, tmp_path / "again", updates=4, held_out=1,
                                     revalidate=str(run), val_lr_by_kind={"b": 5e-2}))
    assert runs == [(True, 5e-2)] + [(False, 5e-2)] * 3  # kind b once uniform, then per checkpoint; a is not rerun
    _, revalidated = outputs(again)
    assert [h["update"] for h in revalidated] == [h["update"] for h in history]  # the run's updates, kept
    for old, new in zip(history, revalidated):
        assert {k: v for k, v in new.items() if not k.startswith(("b/", "val_", "gain_", "uniform_", "worst_"))} == \
            {k: v for k, v in old.items() if not k.startswith(("b/", "val_", "gain_", "uniform_", "worst_"))}
        if "gain_accuracy" in old:  # kind a's records carried over; kind b's measured at the new lr
            assert new["b/uniform_nll"] != old["b/uniform_nll"]
            by_kind = {k: (new[f"{k}/gain_accuracy"], new[f"{k}/gain_nll"]) for k in ("a", "b")}
            assert (new["gain_accuracy"], new["gain_nll"]) == min(by_kind.values())
    selection = json.loads((again / "selection.json").read_text())
    validated = [h for h in revalidated if "gain_accuracy" in h]
    assert selection["update"] == max(validated, key=lambda h: (h["gain_accuracy"], h["gain_nll"], -h["update"]))["update"]
    chosen = load_file(str(again / "checkpoints" / f"update-{selection['update']:05d}" / HEAD_FILE))
    assert all(torch.equal(chosen[k], v) for k, v in load_file(str(again / HEAD_FILE)).items())  # that φ is the output
    assert (again / "DONE").is_file() and (again / "README.md").is_file()


@pytest.mark.parametrize(("setting", "value"), [("weight_floor", 0.5), ("weight_temperature", 0.25),
                                                    ("weight_floor_share", 0.6)])
def test_revalidate_with_another_weight_setting_reruns_every_kind_but_no_uniform_run(tiny_model, kinded_run, tmp_path,
                                                                                  monkeypatch, setting, value):
    pairs, run, history = kinded_run
    runs = record_validation_runs(monkeypatch, lambda a: a[3])
    again = meta_train(resume_config(tiny_model, pairs, tmp_path / "again", updates=4, held_out=1,
                                     revalidate=str(run), **{setting: value}))
    validated = [h for h in history if "gain_accuracy" in h]
    assert len(runs) == 2 * len(validated) and all(w is not None for w in runs)  # uniform runs: the run's records
    if setting == "weight_floor":
        assert all(min(float(x.min()) for x in w) >= 0.5 for w in runs)  # every kind validated with the floor
    _, revalidated = outputs(again)
    for old, new in zip(history, revalidated):
        if "gain_accuracy" in old:
            assert all(new[f"{k}/uniform_nll"] == old[f"{k}/uniform_nll"] for k in ("a", "b"))
    assert json.loads((again / "config.json").read_text())[setting] == value  # stored with the φ chosen
    card = (again / "README.md").read_text()
    ours, theirs = card.split("It validated again the checkpoints of the run made by:")
    assert f"--revalidate {run}" in ours and f"--{setting} {value}" in ours
    assert "--revalidate" not in theirs and f"--{setting}" not in theirs and f"--out {run}" in theirs


def test_revalidate_in_groups_reruns_the_uniform_runs(tiny_model, kinded_run, tmp_path, monkeypatch):
    pairs, run, _ = kinded_run
    runs = record_validation_runs(monkeypatch, lambda a: a[3] is None)
    meta_train(resume_config(tiny_model, pairs, tmp_path / "grouped", updates=4, held_out=1, revalidate=str(run),
                             val_group=1))
    assert runs.count(True) == 2  # grouped validation is another measurement: no recorded uniform run is reused


@pytest.mark.parametrize("change", [{"seed": 1}, {"lora_r": 8}, {"held_out": 2}])
def test_revalidate_refuses_another_theta_start_or_held_out_split(tiny_model, kinded_run, tmp_path, change):
    pairs, run, _ = kinded_run
    name, value = next(iter(change.items()))
    cfg = resume_config(tiny_model, pairs, tmp_path / "again", **{"updates": 4, "held_out": 1, **change},
                        revalidate=str(run))
    with pytest.raises(TaalmError, match=f"--{name} {value} is not the run's"):
        meta_train(cfg)
    assert not (tmp_path / "again").exists()  # refused before anything is written


def test_uniform_from_takes_the_runs_uniform_scores_and_learns_no_uniform_run(tiny_model, kinded_run, tmp_path,
                                                                               monkeypatch):
    pairs, run, history = kinded_run
    runs = record_validation_runs(monkeypatch, lambda a: a[3] is None)
    # another φ (one layer) on the same held-out pairs: only its own runs, its gains against the run's uniform runs
    out = meta_train(resume_config(tiny_model, pairs, tmp_path / "one-layer", updates=2, held_out=1, phi_layers=1,
                                   uniform_from=str(run)))
    assert runs == [False] * 4  # kinds a and b at updates 0 and 2
    _, ours = outputs(out)
    for record in (h for h in ours if "gain_accuracy" in h):
        for kind in ("a", "b"):
            assert record[f"{kind}/uniform_nll"] == history[0][f"{kind}/uniform_nll"]
            assert record[f"{kind}/gain_nll"] == pytest.approx(history[0][f"{kind}/uniform_nll"]
                                                               - record[f"{kind}/val_nll"])
            # the run's per-pair uniform scores come along, so compare-phi can pair the runs' held-out pairs
            assert record[f"{kind}/uniform_pair_accuracy"] == history[0][f"{kind}/uniform_pair_accuracy"]


@pytest.mark.parametrize("change", [{"seed": 1}, {"val_lr": 5e-2}, {"val_epochs": 3}, {"val_group": 1}])
def test_uniform_from_refuses_a_run_whose_uniform_runs_learned_otherwise(tiny_model, kinded_run, tmp_path, change):
    pairs, run, _ = kinded_run
    cfg = resume_config(tiny_model, pairs, tmp_path / "other", **{"updates": 2, "held_out": 1, **change},
                        uniform_from=str(run))
    with pytest.raises(TaalmError, match="option --uniform_from: "):
        meta_train(cfg)
    assert not (tmp_path / "other").exists()  # refused before anything is written


def test_val_lr_by_kind_must_name_a_kind_of_the_pairs(tiny_model, tmp_path):
    kinds = [{**p, "kind": "a" if i % 2 else "b"} for i, p in enumerate(RESUME_PAIRS)]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", kinds)
    with pytest.raises(TaalmError, match=r"--val_lr_by_kind: .* has no pairs of kind c \(kinds: a, b\)"):
        meta_train(resume_config(tiny_model, pairs, tmp_path / "out", val_lr_by_kind={"c": 1e-3}))
    assert not (tmp_path / "out").exists()


def test_answer_auc_ranks_answer_tokens():
    from taalm.weighting import answer_auc

    labels = [[False, False, True, True, False]]  # tokens 2 and 3 are the answer; weights pair with tokens 1..4
    assert answer_auc([torch.tensor([0.1, 0.9, 0.8, 0.2])], labels) == 1.0
    assert answer_auc([torch.tensor([0.9, 0.1, 0.2, 0.8])], labels) == 0.0
    assert answer_auc([torch.tensor([0.5, 0.5, 0.5, 0.5])], labels) == 0.5  # ties count half
    assert answer_auc([torch.tensor([0.5, 0.5, 0.5, 0.5])], [[False] * 5]) is None  # no answer token: no ranking
