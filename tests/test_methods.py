"""Methods as data: name parsing, RHO-1's token selection, and what each method does to a run that the others don't
(oracle weights learn facts faster, TAALM with w ≡ 1 is finetuning, K-Adapter never touches the base, RecAdam stays
near θ*, Mix-Review puts review documents into the loss)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taalm import adapters, ckl, models, runtime
from taalm.ckl import Learner, learn, review_count
from taalm.config import LearnConfig
from taalm.data import encode
from taalm.errors import TaalmError
from taalm.methods import ALL_METHODS, Method, parse_method
from taalm.weight_sources import WEIGHTS_CACHE, rho1_weights
from taalm.weighting import TrainAttention

FILLER = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "near", "river", "bank", "with", "relations",
          "and", "worked", "in", "legal", "term"]
FACTS = [("zorb", "Paris"), ("quix", "Scotland"), ("blan", "Chile"), ("trev", "Santiago")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _fact_files(tmp_path: Path) -> tuple[str, str]:
    """One made-up fact ("KEY is VALUE") per document inside random filler; probes ask for VALUE after the same
    context (teacher-forced), so only learning the answer tokens raises their accuracy."""
    rng = random.Random(0)
    docs, probes = [], []
    for key, value in FACTS:
        before = " ".join(rng.choice(FILLER) for _ in range(6))
        after = " ".join(rng.choice(FILLER) for _ in range(6))
        docs.append({"text": f"{before} {key} is {value} . {after}", "answer": value})
        probes.append({"task": f"{before} {key} is {value}", "answer": value})
    return _write_jsonl(tmp_path / "docs.jsonl", docs), _write_jsonl(tmp_path / "probes.jsonl", probes)


def _config(tiny_model: str, tmp_path: Path, method: str, name: str | None = None, **overrides) -> LearnConfig:
    docs, probes = _fact_files(tmp_path)
    values = {"model": tiny_model, "docs": docs, "out": str(tmp_path / (name or method.replace("+", "_"))),
              "method": method, "probes": [f"to_learn={probes}"], "epochs": 2, "lr": 1e-3, "lora_r": 4,
              "batch_size": 2, "micro_batch": 2, "eval_batch": 8, "seed": 0}
    return LearnConfig(**{**values, **overrides})


def _without_seconds(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


# --- parse_method -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("finetune", Method("finetune")),
    ("oracle", Method("oracle", weights="oracle")),
    ("rho1", Method("rho1", weights="rho1")),
    ("recadam", Method("recadam", recadam=True)),
    ("mixreview", Method("mixreview", mixreview=True)),
    ("kadapter", Method("kadapter", kadapter=True)),
    ("taalm+kadapter", Method("taalm+kadapter", weights="taalm", kadapter=True)),
    ("TAALM + MixReview", Method("taalm+mixreview", weights="taalm", mixreview=True)),
    ("taalm+recadam", Method("taalm+recadam", weights="taalm", recadam=True)),
    ("recadam+mixreview+kadapter", Method("recadam+mixreview+kadapter", recadam=True, mixreview=True, kadapter=True)),
    ("rho1+recadam", Method("rho1+recadam", weights="rho1", recadam=True)),
])
def test_parse_method_valid_combinations(name, expected):
    assert parse_method(name) == expected


def test_every_listed_method_parses():
    for name in ALL_METHODS:
        assert parse_method(name).name == name


@pytest.mark.parametrize(("name", "message"), [
    ("taalm+oracle", "two token-weight sources"),
    ("finetune+rho1", "two token-weight sources"),
    ("oracle+rho1+recadam", "two token-weight sources"),
    ("taalm+lora", "unknown method 'lora'"),
    ("sgd", "unknown method 'sgd'"),
    ("recadam+recadam", "repeats a part"),
    ("+", "empty method name"),
    ("", "empty method name"),
])
def test_parse_method_rejects(name, message):
    with pytest.raises(TaalmError, match=f"^option --method: .*{message}"):
        parse_method(name)


# --- RHO-1 --------------------------------------------------------------------------------------------------------


def test_rho1_keeps_top_ceil_k_n_per_sequence():
    excess = torch.tensor([[3.0, 1.0, 2.5, 2.0, 0.0], [0.0, -1.0, 4.0, -2.0, 1.0]])
    mask = torch.ones(2, 5)
    kept = rho1_weights(excess, mask, 0.6)  # ceil(0.6 * 5) = 3 per row
    assert kept.tolist() == [[1, 0, 1, 1, 0], [1, 0, 1, 0, 1]]
    assert rho1_weights(excess, mask, 0.5).sum(-1).tolist() == [3, 3]  # ceil(2.5) = 3
    assert rho1_weights(excess, mask, 1.0).tolist() == mask.tolist()
    assert rho1_weights(excess, mask, 0.01).tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]]  # ceil(0.05) = 1


def test_rho1_ignores_padding_and_counts_real_tokens_only():
    excess = torch.tensor([[5.0, 1.0, 2.0, 9.0, 9.0], [9.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    kept = rho1_weights(excess, mask, 0.5)  # n = 3 -> k = 2; n = 1 -> k = 1
    assert kept.tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert rho1_weights(excess, torch.zeros(2, 5), 0.5).sum() == 0  # an all-padding row keeps nothing


def test_rho1_ties_keep_the_earliest_tokens():
    excess = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 0.0, 2.0, 2.0]])
    kept = rho1_weights(excess, torch.ones(2, 6), 0.5)  # k = 3
    assert kept.tolist() == [[1, 1, 1, 0, 0, 0], [0, 1, 1, 0, 1, 0]]
    assert torch.equal(kept, rho1_weights(excess.clone(), torch.ones(2, 6), 0.5))


# --- oracle: the weights matter -----------------------------------------------------------------------------------


def test_oracle_learns_facts_faster_than_finetune(tiny_model, tmp_path):
    """Same seed, same steps; oracle puts the whole loss on the answer tokens, finetune spreads it over filler."""
    final = {}
    for method in ("finetune", "oracle"):
        cfg = _config(tiny_model, tmp_path, method, epochs=3, lr=1e-2, lora_dropout=0.0)
        final[method] = learn(cfg).metrics[-1]
    assert final["oracle"]["accuracy"] >= final["finetune"]["accuracy"] + 0.2, final
    assert final["oracle"]["perplexity"] < 0.9 * final["finetune"]["perplexity"], final


# --- taalm: w ≡ 1 is finetuning -----------------------------------------------------------------------------------


def _constant_phi(tiny_model: str, directory: Path, bias: float, weight_std: float = 0.0) -> str:
    phi = TrainAttention.create(tiny_model, r=4)
    with torch.no_grad():
        phi.head.weight.zero_()
        if weight_std:
            phi.head.weight.normal_(std=weight_std)
        phi.head.bias.fill_(bias)
    phi.save(directory)
    return str(directory)


def test_taalm_with_unit_weights_is_finetune_step_for_step(tiny_model, tmp_path):
    ones = _constant_phi(tiny_model, tmp_path / "phi_ones", bias=100.0)  # sigmoid(100) == 1.0 in float32
    runs = {}
    for method, phi in (("finetune", ""), ("taalm", ones)):
        cfg = _config(tiny_model, tmp_path, method, phi=phi, lora_dropout=0.1)  # dropout: RNG streams must agree
        runs[method] = learn(cfg)
    cached = torch.load(runs["taalm"].out / WEIGHTS_CACHE)
    assert all(bool((w == 1.0).all()) for w in cached)
    assert _without_seconds(runs["taalm"].metrics) == _without_seconds(runs["finetune"].metrics)
    a = load_file(str(runs["taalm"].out / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(runs["finetune"].out / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # ... and a φ whose weights vary over tokens changes the run (the comparison above can fail)
    varied = _constant_phi(tiny_model, tmp_path / "phi_varied", bias=0.0, weight_std=1.0)
    other = learn(_config(tiny_model, tmp_path, "taalm", name="varied", phi=varied, lora_dropout=0.1))
    weights = torch.cat(torch.load(other.out / WEIGHTS_CACHE))
    assert float(weights.std()) > 0.05
    assert other.metrics[1]["train_loss"] != runs["finetune"].metrics[1]["train_loss"]


# --- K-Adapter: the base is frozen bitwise ------------------------------------------------------------------------


def test_kadapter_leaves_every_base_weight_bitwise_unchanged(tiny_model, tmp_path, monkeypatch):
    seen = {}
    build, save = ckl.build_model, ckl.save_adapter

    def recording_build(cfg, method, device):
        model = build(cfg, method, device)
        seen["initial"] = {k: v.clone() for k, v in model.adapters.state_dict().items()}
        return model

    def recording_save(model, method, out):
        seen["model"] = model
        return save(model, method, out)

    monkeypatch.setattr(ckl, "build_model", recording_build)
    monkeypatch.setattr(ckl, "save_adapter", recording_save)
    learn(_config(tiny_model, tmp_path, "kadapter", lr=1e-2))

    model = seen["model"]
    fresh = models.load_causal_lm(tiny_model).state_dict()
    trained = model.base.state_dict()
    assert trained.keys() == fresh.keys()
    changed = [k for k in fresh if not torch.equal(fresh[k], trained[k])]
    assert changed == []
    adapters = model.adapters.state_dict()
    assert any(not torch.equal(adapters[k], v) for k, v in seen["initial"].items())  # the adapter did learn


# --- RecAdam: the pull toward θ* ----------------------------------------------------------------------------------


def _distance_to_start(cfg: LearnConfig, out: Path) -> float:
    """L2 distance of the saved LoRA weights to their initial values (rebuilt from the same seed)."""
    from peft import get_peft_model_state_dict

    runtime.seed_everything(cfg.seed)
    start = get_peft_model_state_dict(adapters.build_model(cfg, parse_method(cfg.method), torch.device("cpu")))
    end = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert end.keys() == start.keys()
    return math.sqrt(sum(float(((end[k] - start[k]) ** 2).sum()) for k in end))


def test_recadam_stays_closer_to_the_start_than_finetune(tiny_model, tmp_path):
    def distance(method: str, name: str, **options) -> float:
        cfg = _config(tiny_model, tmp_path, method, name=name, lr=1e-3, epochs=2, **options)
        return _distance_to_start(cfg, learn(cfg).out)

    finetune = distance("finetune", "finetune")
    # official schedule (k = 0.5, t0 = 250): λ(t) ≈ 0 for the first ~240 steps, so the pull is all there is
    official = distance("recadam", "official", recadam_k=0.5, recadam_t0=250, recadam_coefficient=5000.0)
    assert finetune > 1e-3
    assert official < 0.01 * finetune
    # λ(t) ≈ 0.6..0.9 (t0 = 0): same task-step scaling with and without the quadratic pull; the pull must show
    pulled = distance("recadam", "pulled", recadam_t0=0, recadam_coefficient=500.0)
    free = distance("recadam", "free", recadam_t0=0, recadam_coefficient=0.0)
    assert pulled < 0.95 * free < 0.95 * finetune


# --- Mix-Review: review documents in every batch ------------------------------------------------------------------


def test_review_count_decays_per_epoch():
    assert [review_count(4, e, 1.0, 0.5) for e in range(3)] == [4, 2, 1]
    assert [review_count(8, e, 0.5, 1.0) for e in range(3)] == [4, 4, 4]
    assert [review_count(10, e, 2.0, 0.9) for e in range(3)] == [20, 18, 16]  # 10·2·0.81 = 16.2
    assert review_count(4, 5, 0.0, 0.9) == 0


def _bare_learner(method: str, n_review: int, **options) -> Learner:
    cfg = LearnConfig(docs="d.jsonl", out="o", method=method, review_docs="r.jsonl", seed=3, **options)
    return Learner(cfg, parse_method(method), None, None, [], [object()] * n_review, None, 0, torch.device("cpu"))


def test_review_sample_sizes_and_determinism():
    learner = _bare_learner("mixreview", 10, review_ratio=1.0, review_decay=0.5)
    for epoch, expected in enumerate([4, 2, 1]):
        sample = learner.review_sample(4, epoch, step=0)
        assert len(sample) == expected
        assert len(set(sample)) == expected and all(0 <= i < 10 for i in sample)  # without replacement
        assert learner.review_sample(4, epoch, step=0) == sample  # deterministic (resume replays it)
    assert len({tuple(learner.review_sample(4, 0, step)) for step in range(6)}) > 1  # varies over steps

    small = _bare_learner("mixreview", 3, review_ratio=2.0, review_decay=1.0)
    sample = small.review_sample(4, 0, step=0)  # 8 reviews from 3 documents: with replacement
    assert len(sample) == 8 and set(sample) <= {0, 1, 2}
    assert _bare_learner("finetune", 10, review_ratio=1.0).review_sample(4, 0, 0) == []


def test_mixreview_step_loss_includes_review_documents(tiny_model, tmp_path, monkeypatch):
    cfg = _config(tiny_model, tmp_path, "mixreview", review_docs=_fact_files(tmp_path)[0], review_ratio=1.0,
                  review_decay=0.6, lora_dropout=0.0, micro_batch=3)
    method = parse_method(cfg.method)
    tokenizer = models.load_tokenizer(tiny_model)
    docs = [encode(tokenizer, " ".join(FILLER[i:i + 5 + i]), 64) for i in range(2)]
    review = [encode(tokenizer, f"{key} is {value} .", 64) for key, value in FACTS]
    runtime.seed_everything(0)
    model = adapters.build_model(cfg, method, torch.device("cpu"))
    optimizer = ckl._make_optimizer(cfg, method, [p for p in model.parameters() if p.requires_grad])
    learner = Learner(cfg, method, model, optimizer, docs, review, None, 0, torch.device("cpu"))

    seen: list[tuple[str, int]] = []
    token_weights = learner.source.weights

    def recording(items, nll, mask):
        seen.extend(items)
        return token_weights(items, nll, mask)

    monkeypatch.setattr(learner.source, "weights", recording)
    for epoch in range(3):
        seen.clear()
        reviews = learner.review_sample(2, epoch, step=1)
        with torch.no_grad():  # the step's loss is the plain mean of the per-sequence losses, reviews included
            model.eval()
            losses = [float(model(input_ids=torch.tensor([e.input_ids])).logits.log_softmax(-1)[0, :-1]
                            .gather(-1, torch.tensor(e.input_ids[1:]).unsqueeze(-1)).neg().mean())
                      for e in docs + [review[i] for i in reviews]]
        loss = learner.step([0, 1], epoch, step=1)
        assert sorted(seen) == sorted([("doc", 0), ("doc", 1)] + [("review", i) for i in reviews])
        assert len(reviews) == review_count(2, epoch, 1.0, 0.6) == [2, 1, 1][epoch]
        assert loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)
