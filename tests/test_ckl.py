"""The one CKL loop: every method end to end (Python and CLI), its outputs, φ's weights computed once and cached,
exact resume after a kill, and one-line errors for bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import FACT_ANSWERS, FACT_DOCS
from taalm import models, runtime
from taalm.ckl import Learner, learn
from taalm.cli import main
from taalm.config import LearnConfig, build_config
from taalm.methods import ALL_METHODS, parse_method
from taalm.weight_sources import WEIGHTS_CACHE
from taalm.weighting import TrainAttention

DOCS, ANSWERS = FACT_DOCS, FACT_ANSWERS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def phi_dir(tiny_model, tmp_path_factory) -> str:
    """An (untrained) φ for the tiny model, with a head whose weights vary over tokens."""
    directory = tmp_path_factory.mktemp("phi")
    torch.manual_seed(0)
    phi = TrainAttention.create(tiny_model, r=4)
    with torch.no_grad():
        torch.nn.init.normal_(phi.head.weight, std=0.5)
        phi.head.bias.fill_(0.0)
    phi.save(directory)
    return str(directory)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    data = tmp_path / "data"
    data.mkdir()
    return {
        "docs": _write_jsonl(data / "docs.jsonl", [{"text": t, "answer": a} for t, a in zip(DOCS, ANSWERS)][:4]),
        "review": _write_jsonl(data / "review.jsonl", [{"text": t} for t in DOCS[4:]]),
        "to_learn": _write_jsonl(data / "to_learn.jsonl",
                                 [{"task": t.split(" .")[0], "answer": a} for t, a in zip(DOCS, ANSWERS)][:4]),
        "not_to_forget": _write_jsonl(data / "not_to_forget.jsonl",
                                      [{"task": "Paris is in France", "answer": "France"},
                                       {"task": "The fox is brown", "answer": "brown"}]),
    }


def _options(method: str, tiny_model: str, files: dict[str, str], out: Path, phi: str) -> dict:
    options = {"model": tiny_model, "docs": files["docs"], "out": str(out), "method": method,
               "probes": [f"to_learn={files['to_learn']}", f"not_to_forget={files['not_to_forget']}"],
               "epochs": 2, "lr": 1e-3, "lora_r": 4, "batch_size": 2, "micro_batch": 2, "eval_batch": 4, "seed": 0}
    if parse_method(method).weights == "taalm":
        options["phi"] = phi
    if parse_method(method).mixreview:
        options["review_docs"] = files["review"]
    if parse_method(method).recadam:
        options["recadam_t0"] = 0  # the official t0 = 250 keeps θ exactly at θ* for these few steps
    return options


def _argv(options: dict) -> list[str]:
    argv = ["learn"]
    for key, value in options.items():
        argv.append("--" + key.replace("_", "-"))
        argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return argv


def _without_seconds(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def _check_outputs(out: Path, method: str, tiny_model: str) -> None:
    """metrics.jsonl per epoch and probe set, the resolved config, the curve, and an adapter that changes θ."""
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["probe"]) for m in metrics] == [(e, p) for e in range(3) for p in ("to_learn", "not_to_forget")]
    assert all(0.0 <= m["accuracy"] <= 1.0 and m["perplexity"] > 1.0 for m in metrics)
    assert [m["train_loss"] is None for m in metrics] == [True, True] + [False] * 4

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == method and saved["lora_r"] == 4 and saved["epochs"] == 2
    assert build_config(LearnConfig, saved).method == method  # readable back as a config

    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "DONE").is_file()

    ids = torch.tensor([models.load_tokenizer(tiny_model)(DOCS[0])["input_ids"]])
    base = models.load_causal_lm(tiny_model)
    with torch.no_grad():
        before = base(input_ids=ids).logits
    if parse_method(method).kadapter:
        from taalm.kadapter import KAdapterForCausalLM

        assert not (out / "adapter").exists()
        model = KAdapterForCausalLM.from_base_and_dir(base, out / "kadapter")
    else:
        from peft import PeftModel

        assert not (out / "kadapter").exists()
        assert (out / "adapter" / "adapter_model.safetensors").is_file()
        model = PeftModel.from_pretrained(base, str(out / "adapter"))
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert float((after - before).abs().max()) > 1e-4


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_from_python(method, tiny_model, files, phi_dir, tmp_path):
    result = learn(LearnConfig(**_options(method, tiny_model, files, tmp_path / "out", phi_dir)))
    assert result.out == tmp_path / "out"
    assert len(result.metrics) == 6
    _check_outputs(result.out, method, tiny_model)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_runs_from_cli(method, tiny_model, files, phi_dir, tmp_path, capsys):
    assert main(_argv(_options(method, tiny_model, files, tmp_path / "out", phi_dir))) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["epoch"] for line in printed[:2]] == [2, 2]
    _check_outputs(tmp_path / "out", method, tiny_model)


# --- φ's weights: once per document, cached ------------------------------------------------------------------------


@pytest.fixture
def phi_rows(monkeypatch) -> list[int]:
    """Documents (batch rows) that pass through φ's forward."""
    rows: list[int] = []
    forward = TrainAttention.forward

    def counting(self, input_ids, attention_mask=None):
        rows.append(input_ids.size(0))
        return forward(self, input_ids, attention_mask)

    monkeypatch.setattr(TrainAttention, "forward", counting)
    return rows


def test_taalm_weighs_each_document_once_per_run(tiny_model, files, phi_dir, tmp_path, phi_rows):
    options = _options("taalm", tiny_model, files, tmp_path / "out", phi_dir)
    learn(LearnConfig(**options))
    assert sum(phi_rows) == 4  # 4 documents, 2 epochs of 2 steps: φ saw each document once
    cached = torch.load(tmp_path / "out" / WEIGHTS_CACHE)
    tokenizer = models.load_tokenizer(tiny_model)
    assert [len(w) for w in cached] == [len(tokenizer(t)["input_ids"]) - 1 for t in DOCS[:4]]
    assert float(torch.cat(cached).std()) > 0.01  # the weights used are φ's, not a constant


# --- exact resume ----------------------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def _adapter_tensors(out: Path, method: str) -> dict[str, torch.Tensor]:
    path = out / "kadapter" / "adapter.safetensors" if parse_method(method).kadapter else \
        out / "adapter" / "adapter_model.safetensors"
    return load_file(str(path))


@pytest.mark.parametrize("method", ["finetune", "taalm+mixreview", "rho1+recadam", "kadapter"])
def test_resume_after_kill_mid_epoch_is_bitwise_exact(method, tiny_model, files, phi_dir, tmp_path, monkeypatch,
                                                      phi_rows):
    six_docs = _write_jsonl(tmp_path / "six.jsonl", [{"text": t} for t in DOCS])
    options = {**_options(method, tiny_model, files, tmp_path / "full", phi_dir), "docs": six_docs,
               "lora_dropout": 0.1, "checkpoint_every": 1}  # 3 steps per epoch; dropout: the RNG state matters
    full = learn(LearnConfig(**options))

    killed = {**options, "out": str(tmp_path / "killed")}
    step, calls = Learner.step, []

    def dying(self, doc_ids, epoch, step_):
        calls.append((epoch, step_))
        if len(calls) == 5:  # epoch 1, step 1: after the checkpoint written at step 4
            raise Killed
        return step(self, doc_ids, epoch, step_)

    with monkeypatch.context() as patch:
        patch.setattr(Learner, "step", dying)
        with pytest.raises(Killed):
            learn(LearnConfig(**killed))
    assert calls[-1] == (1, 1)
    assert not (tmp_path / "killed" / "DONE").exists()

    phi_rows.clear()
    resumed = learn(LearnConfig(**{**killed, "resume": True}))
    if parse_method(method).weights == "taalm":
        assert (tmp_path / "killed" / WEIGHTS_CACHE).is_file()
        assert phi_rows == []  # the resumed run read token_weights.pt instead of running φ again
    assert _without_seconds(resumed.metrics) == _without_seconds(full.metrics)
    a, b = _adapter_tensors(resumed.out, method), _adapter_tensors(full.out, method)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_run_other_seed_other_run(tiny_model, files, phi_dir, tmp_path):
    """CPU runs are bitwise reproducible, and the seed matters (so the resume comparison is not equal by construction)."""
    options = {**_options("finetune", tiny_model, files, tmp_path / "a", phi_dir), "lora_dropout": 0.1}
    runs = [learn(LearnConfig(**{**options, "out": str(tmp_path / name), "seed": seed}))
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (_adapter_tensors(run.out, "finetune") for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _without_seconds(runs[0].metrics) == _without_seconds(runs[1].metrics)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --- bad input -------------------------------------------------------------------------------------------------------


def _bad_input_cases(data: Path) -> dict[str, tuple[dict, str]]:
    """name -> (option overrides, text the one-line error must contain)."""
    malformed = data / "malformed.jsonl"
    malformed.write_text(json.dumps({"text": DOCS[0]}) + "\n{not json\n")
    empty = _write_jsonl(data / "empty.jsonl", [{"text": DOCS[0]}, {"text": DOCS[1]}, {"text": "  "}])
    one_token = _write_jsonl(data / "one_token.jsonl", [{"text": DOCS[0]}, {"text": "a"}])
    no_answers = _write_jsonl(data / "no_answers.jsonl", [{"text": t} for t in DOCS[:3]])
    return {
        "malformed line": ({"docs": str(malformed)}, f"{malformed}:2: malformed JSON"),
        "empty document": ({"docs": empty}, f"{empty}:3: field 'text' is empty"),
        "one-token document": ({"docs": one_token}, f"{one_token}:2: text has fewer than 2 tokens"),
        "unknown method": ({"method": "sgd"}, "option --method: unknown method 'sgd'"),
        "taalm without --phi": ({"method": "taalm"}, "option --phi:"),
        "taalm with a non-φ --phi": ({"method": "taalm", "phi": str(data)}, "option --phi:"),
        "oracle without answers": ({"method": "oracle", "docs": no_answers}, f"{no_answers}:1:"),
        "mixreview without --review_docs": ({"method": "mixreview"}, "option --review_docs:"),
        "probes file missing": ({"probes": [f"to_learn={data / 'missing.jsonl'}"]},
                                f"{data / 'missing.jsonl'}: file not found"),
    }


BAD_INPUTS = ["malformed line", "empty document", "one-token document", "unknown method", "taalm without --phi",
              "taalm with a non-φ --phi", "oracle without answers", "mixreview without --review_docs",
              "probes file missing"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_output(case, tiny_model, files, phi_dir, tmp_path, capsys):
    overrides, expected = _bad_input_cases(tmp_path / "data")[case]
    options = {**_options("finetune", tiny_model, files, tmp_path / "out", phi_dir), **overrides}
    assert main(_argv(options)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("taalm: ") and expected in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_long_document_is_truncated_with_a_warning(tiny_model, files, phi_dir, tmp_path, caplog):
    long_docs = _write_jsonl(tmp_path / "long.jsonl", [{"text": " ".join(DOCS)}, {"text": DOCS[0]}])
    limit = len(models.load_tokenizer(tiny_model)(DOCS[0])["input_ids"])  # the second document just fits
    options = {**_options("finetune", tiny_model, files, tmp_path / "out", phi_dir), "docs": long_docs,
               "max_length": limit, "probes": [f"not_to_forget={files['not_to_forget']}"]}
    with caplog.at_level(logging.WARNING, logger="taalm"):
        assert main(_argv(options)) == 0
    assert f"1 of 2 documents truncated to --max_length {limit} tokens" in caplog.text
    assert (tmp_path / "out" / "DONE").is_file()
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 3


# --- continuing an earlier run (--init_from) --------------------------------------------------------------------------


def _records_at(metrics: list[dict], epoch: int) -> list[dict]:
    return [{k: v for k, v in r.items() if k in ("probe", "accuracy", "nll", "perplexity")}
            for r in metrics if r["epoch"] == epoch]


@pytest.mark.parametrize("method", ["finetune", "kadapter", "recadam"])
def test_init_from_continues_the_adapter_with_a_fresh_optimizer(method, tiny_model, files, phi_dir, tmp_path):
    options = {**_options(method, tiny_model, files, tmp_path / "first", phi_dir), "checkpoint_every": 1}
    first = learn(LearnConfig(**options))
    second = learn(LearnConfig(**{**options, "out": str(tmp_path / "second"), "epochs": 1,
                                  "init_from": str(tmp_path / "first")}))
    # the second run starts exactly where the first ended: its epoch-0 scores are the first run's last ones
    assert _records_at(second.metrics, 0) == _records_at(first.metrics, 2)
    fresh = learn(LearnConfig(**{**options, "out": str(tmp_path / "fresh"), "epochs": 1}))
    assert _records_at(second.metrics, 0) != _records_at(fresh.metrics, 0)
    # a fresh optimizer: its step count covers the second run's 2 steps only, not the first run's 4
    state = runtime.load_checkpoint(tmp_path / "second" / "checkpoint")["optimizer"]["state"]
    assert {int(s["step"]) for s in state.values()} == {2}
    saved = yaml.safe_load((tmp_path / "second" / "config.yaml").read_text())
    assert saved["init_from"] == str(tmp_path / "first")
    if parse_method(method).kadapter:  # the base stays frozen across runs: only the adapter was carried over
        from taalm.kadapter import KAdapterForCausalLM

        base = models.load_causal_lm(tiny_model)
        carried = KAdapterForCausalLM.from_base_and_dir(models.load_causal_lm(tiny_model), tmp_path / "second" / "kadapter")
        assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), carried.base.state_dict().values()))


def test_init_from_refuses_another_adapter_kind_before_writing(tiny_model, files, phi_dir, tmp_path, capsys):
    options = _options("finetune", tiny_model, files, tmp_path / "lora", phi_dir)
    learn(LearnConfig(**{**options, "epochs": 1}))
    argv = _argv({**_options("kadapter", tiny_model, files, tmp_path / "out", phi_dir), "init_from": str(tmp_path / "lora")})
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "option --init_from:" in err and "has no kadapter/" in err and "LoRA" in err
    assert not (tmp_path / "out").exists()


# --- a non-finite loss stops the run, naming the step and the documents ----------------------------------------------


def test_non_finite_loss_stops_learn_and_keeps_the_last_checkpoint(tiny_model, files, phi_dir, tmp_path, monkeypatch,
                                                                   capsys):
    from taalm import losses

    options = {**_options("finetune", tiny_model, files, tmp_path / "out", phi_dir), "checkpoint_every": 1}
    calls = {"n": 0}
    real = losses.token_nll

    def poisoned(logits, input_ids):
        calls["n"] += torch.is_grad_enabled()  # training steps only, not evaluation
        nll = real(logits, input_ids)
        return nll * float("nan") if calls["n"] == 3 and torch.is_grad_enabled() else nll  # epoch 2, step 1

    monkeypatch.setattr(losses, "token_nll", poisoned)
    assert main(_argv(options)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("taalm: ")]
    assert len(errors) == 1 and "non-finite loss or gradient at epoch 2, step 1" in errors[0] and "Traceback" not in err
    assert f"{files['docs']}:" in err  # the documents of the batch, by file:line
    state = runtime.load_checkpoint(tmp_path / "out" / "checkpoint")
    assert (state["epoch"], state["step"]) == (1, 0)  # the end of epoch 1: the last good state
    assert all(torch.isfinite(v).all() for v in state["trainable"].values())
    assert not (tmp_path / "out" / "DONE").exists()


# --- gradient checkpointing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["finetune", "taalm"])
def test_gradient_checkpointing_gives_the_same_run(method, tiny_model, files, phi_dir, tmp_path, monkeypatch):
    import transformers.modeling_utils as modeling

    options = {**_options(method, tiny_model, files, tmp_path / "plain", phi_dir), "lora_dropout": 0.1}
    plain = learn(LearnConfig(**options))
    calls = []
    real = modeling.checkpoint
    monkeypatch.setattr(modeling, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    recomputed = learn(LearnConfig(**{**options, "out": str(tmp_path / "ckpt"), "gradient_checkpointing": True}))
    assert calls  # the layers really were checkpointed
    for a, b in zip(plain.metrics, recomputed.metrics, strict=True):
        for key in ("accuracy", "nll", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    x, y = _adapter_tensors(plain.out, method), _adapter_tensors(recomputed.out, method)
    assert all(torch.allclose(x[k], y[k], atol=1e-6) for k in x)
