"""Whole-answer exact match: the normalisation, the prefix/target of a probe, greedy decoding equal to Hugging Face's
and independent of batching (plain, LoRA and K-Adapter models), 1 for a memorised answer and 0 for another, and the
metrics.jsonl / tracker contract of ``taalm learn``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taalm import models
from taalm.ckl import learn
from taalm.config import LearnConfig
from taalm.data import encode, pad_batch, pad_token_id
from taalm.distributed import Processes
from taalm.exact_match import EXTRA_TOKENS, Query, exact_match, greedy_tokens, is_match, make_query, verdict
from taalm.scoring import evaluate, score_probes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")
PROBES = [("Santiago is the capital of Chile", "Chile"), ("Marie Curie was born in Warsaw", "Warsaw"),
          ("The fox", "fox"), ("The Eiffel Tower is located in Paris", "Paris"),
          ("Libya maintains diplomatic relations with Brazil", "Brazil"), ("Paris is in France", "France")]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return models.load_tokenizer(tiny_model)


def _encoded(tokenizer, probes=PROBES):
    return [encode(tokenizer, task, 64, answer=answer) for task, answer in probes]


def test_match_is_case_folded_and_space_stripped_prefix_of_the_generation():
    assert is_match("  chile , and more", " Chile")
    assert is_match("CHILE\n", "chile ")
    assert is_match("Chileans", "Chile")  # "starts with": the answer may run on
    assert not is_match("The Chile", "Chile")
    assert not is_match("Chil", "Chile")
    assert not is_match("", "Chile")


def test_query_prefix_ends_before_the_first_answer_token(tokenizer):
    item = encode(tokenizer, "Paris is in France , and France is big", 64, answer="France")
    query = make_query(item, "France", tokenizer)
    first = item.label.index(True)
    assert first > 6  # the last occurrence is the labelled one
    assert tokenizer.decode(item.input_ids[first - 1]) == " "  # this tokenizer has no " F": a bare space before
    assert query.prefix == item.input_ids[:first - 1]  # the space is left to the model
    assert tokenizer.decode(query.prefix) == "Paris is in France , and"
    assert query.target == " France"
    assert query.budget == sum(item.label) + 1 + EXTRA_TOKENS
    # an answer that starts the text: the first token is kept as the prefix, the rest of the answer is the target
    item = encode(tokenizer, "Chile is far", 64, answer="Chile")
    query = make_query(item, "Chile", tokenizer)
    assert query.prefix == item.input_ids[:1] and tokenizer.decode(query.prefix) + query.target == "Chile"


def test_verdict_settles_as_soon_as_more_tokens_cannot_change_it(tokenizer):
    query = Query([1], " Zürich", budget=12)
    ids = tokenizer(" zürich and more")["input_ids"]
    halves = [k for k in range(1, len(ids)) if "\ufffd" in tokenizer.decode(ids[:k])]
    assert halves  # "ü" is two byte tokens here: half of it is still on the target's path
    assert all(verdict(ids[:k], query, tokenizer) is None for k in halves)
    assert verdict(ids[:1], query, tokenizer) is None  # " z"
    assert verdict(ids, query, tokenizer) is True
    assert verdict(tokenizer(" Zo")["input_ids"], query, tokenizer) is False  # left the path: settled early
    assert verdict(ids[:2] + [tokenizer.eos_token_id] + ids[2:], query, tokenizer) is False  # ended before the answer
    assert verdict(ids[:2], Query([1], " Zürich", budget=2), tokenizer) is False  # budget spent


def test_greedy_decoding_equals_hugging_face_generate(tiny_model, tokenizer):
    model = models.load_causal_lm(tiny_model).eval()
    for item, (_, answer) in zip(_encoded(tokenizer), PROBES):
        prefix = make_query(item, answer, tokenizer).prefix
        ours = greedy_tokens(model, [prefix], 6, pad_token_id(tokenizer), CPU)[0]
        theirs = model.generate(torch.tensor([prefix]), max_new_tokens=6, do_sample=False,
                                pad_token_id=pad_token_id(tokenizer))[0, len(prefix):].tolist()
        eos = tokenizer.eos_token_id
        assert ours[:len(theirs)] == theirs and (len(theirs) == 6 or theirs[-1] == eos)


def _plain(tiny_model):
    return models.load_causal_lm(tiny_model)


def _lora(tiny_model):
    torch.manual_seed(1)
    model = models.add_lora(models.load_causal_lm(tiny_model), r=4, alpha=16, dropout=0.0)
    with torch.no_grad():  # a LoRA that is not a no-op
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return model


def _kadapter(tiny_model):
    from taalm.kadapter import KAdapterForCausalLM

    torch.manual_seed(1)
    model = KAdapterForCausalLM(models.load_causal_lm(tiny_model), adapter_size=16, adapter_heads=2)
    with torch.no_grad():  # adapters that change the logits
        for p in model.adapter_parameters():
            p.normal_(std=0.3)
    return model


@pytest.mark.parametrize(("build", "cached"), [(_plain, True), (_lora, True), (_kadapter, False)],
                         ids=["plain", "lora", "kadapter"])
def test_batched_decoding_equals_one_probe_at_a_time(build, cached, tiny_model, tokenizer):
    model = build(tiny_model).eval()
    pad = pad_token_id(tokenizer)
    items = _encoded(tokenizer)
    prefixes = [make_query(item, answer, tokenizer).prefix for item, (_, answer) in zip(items, PROBES)]
    assert len({len(p) for p in prefixes}) > 3  # left padding is exercised
    widths: list[int] = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: widths.append(kwargs["input_ids"].size(1)),
                                           with_kwargs=True)
    batched = greedy_tokens(model, prefixes, 5, pad, CPU)
    hook.remove()
    # with a KV cache each new token is one position; without one (K-Adapter) the whole sequence is re-run
    assert widths == ([max(map(len, prefixes))] + [1] * 4 if cached else [max(map(len, prefixes)) + k for k in range(5)])
    single = [greedy_tokens(model, [p], 5, pad, CPU)[0] for p in prefixes]
    assert batched == single
    answers = [a for _, a in PROBES]
    assert exact_match(model, items, answers, tokenizer, pad, 4, CPU) == exact_match(model, items, answers, tokenizer,
                                                                                      pad, 1, CPU)
    if build is not _plain:  # the adapter takes part in decoding
        assert single != [greedy_tokens(_plain(tiny_model).eval(), [p], 5, pad, CPU)[0] for p in prefixes]


def _memorise(model_dir: str, tokenizer) -> torch.nn.Module:
    """The tiny model trained until it writes "Santiago is the capital of Chile ." by heart."""
    torch.manual_seed(0)
    model = models.load_causal_lm(model_dir)
    ids = torch.tensor([tokenizer("Santiago is the capital of Chile .")["input_ids"]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert float(loss.detach()) < 0.05
    return model.eval()


@pytest.fixture(scope="module")
def memorised(tiny_model, tokenizer):
    return _memorise(tiny_model, tokenizer)


MEMORISED_PROBES = [("Santiago is the capital of Chile", "Chile"),  # the memorised continuation
                    ("Santiago is the capital of Brazil", "Brazil"),  # same prefix, another answer
                    ("Santiago is the capital of chile", "chile"),  # other tokens, same text up to case
                    ("Marie Curie was born in Warsaw", "Warsaw"),  # never learned
                    ("The fox", "fox")]


def test_a_memorised_answer_matches_and_another_answer_does_not(memorised, tokenizer):
    probes = MEMORISED_PROBES
    items = _encoded(tokenizer, probes)
    scores = exact_match(memorised, items, [a for _, a in probes], tokenizer, pad_token_id(tokenizer), 2, CPU)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0]
    # teacher-forced token accuracy credits the memorised tokens only: the lower-case answer's tokens are not them
    accuracy = score_probes(memorised, items, pad_token_id(tokenizer), 4, CPU).accuracy
    assert accuracy[0] == 1.0 and accuracy[2] < 1.0


@pytest.mark.parametrize("which", ["memorised", "untrained"])
def test_early_stop_gives_the_verdict_of_decoding_the_whole_budget(which, memorised, tokenizer, tiny_model):
    model = memorised if which == "memorised" else models.load_causal_lm(tiny_model).eval()
    items = _encoded(tokenizer, MEMORISED_PROBES + PROBES)
    answers = [a for _, a in MEMORISED_PROBES + PROBES]
    queries = [make_query(item, answer, tokenizer) for item, answer in zip(items, answers)]
    pad = pad_token_id(tokenizer)
    expected = []
    for query in queries:
        tokens = greedy_tokens(model, [query.prefix], query.budget, pad, CPU)[0]
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        expected.append(float(is_match(tokenizer.decode(tokens), query.target)))
    assert expected[:5] == [1.0, 0.0, 1.0, 0.0, 0.0] if which == "memorised" else expected.count(1.0) == 0
    forwards: list[int] = []
    hook = model.register_forward_pre_hook(lambda *_: forwards.append(1))
    assert exact_match(model, items, answers, tokenizer, pad, len(items), CPU) == expected
    hook.remove()
    assert 0 < len(forwards) < max(q.budget for q in queries)  # settled before the longest budget was spent


def _two_process_evaluation(model_dir: str, out: str) -> None:
    """Run by each of two processes (the test below): every process evaluates its share of the memorised model's
    probes; the main one writes the gathered result and a one-process evaluation of the same model."""
    from taalm.distributed import Processes

    torch.set_num_threads(1)
    tokenizer = models.load_tokenizer(model_dir)
    model, procs = _memorise(model_dir, tokenizer), Processes("cpu")
    probes = {"s": _encoded(tokenizer, MEMORISED_PROBES)}
    run = lambda p: evaluate(model, probes, pad_token_id(tokenizer), 1, CPU, "auto", p,
                             {"s": [a for _, a in MEMORISED_PROBES]}, tokenizer)["s"]
    two = run(procs)
    if procs.is_main_process:
        Path(out).write_text(json.dumps({"two": two, "one": run(Processes.single())}))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_gather_exact_match_in_probe_order(tiny_model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               __file__, tiny_model, str(tmp_path / "scores.json")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["two"]["per_probe"]["exact_match"] == [1.0, 0.0, 1.0, 0.0, 0.0]  # shares [0, 2, 4] and [1, 3]
    assert scores["two"] == scores["one"]


def test_evaluate_returns_per_probe_lists_in_input_order(memorised, tokenizer):
    items = _encoded(tokenizer, [("Santiago is the capital of Chile", "Chile"), *PROBES[1:4]])
    answers = ["Chile", *[a for _, a in PROBES[1:4]]]
    pad = pad_token_id(tokenizer)
    forward = evaluate(memorised, {"s": items}, pad, 3, CPU, "auto", answers={"s": answers}, tokenizer=tokenizer)["s"]
    backward = evaluate(memorised, {"s": items[::-1]}, pad, 3, CPU, "auto", answers={"s": answers[::-1]},
                        tokenizer=tokenizer)["s"]
    assert forward["per_probe"]["exact_match"][0] == 1.0 and forward["exact_match"] == pytest.approx(
        sum(forward["per_probe"]["exact_match"]) / 4)
    for key in ("accuracy", "nll", "exact_match"):
        assert len(forward["per_probe"][key]) == 4
        assert forward["per_probe"][key] == pytest.approx(backward["per_probe"][key][::-1], abs=1e-6)
    assert forward["accuracy"] == pytest.approx(sum(forward["per_probe"]["accuracy"]) / 4)
    batch = pad_batch(items[:1], pad)
    assert forward["per_probe"]["accuracy"][0] == float(
        (memorised(input_ids=batch["input_ids"]).logits[0, :-1].argmax(-1) == batch["input_ids"][0, 1:])
        [batch["label_mask"][0].bool()].float().mean())
    off = evaluate(memorised, {"s": items}, pad, 3, CPU, "auto")["s"]
    assert off["exact_match"] is None and off["per_probe"]["exact_match"] is None
    assert off["per_probe"]["accuracy"] == forward["per_probe"]["accuracy"]


class _Recorder:
    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, values: dict[str, float], step: int) -> None:
        self.logged.append(dict(values))


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _learn(tiny_model: str, tmp_path: Path, name: str, **extra) -> list[dict]:
    docs = _write_jsonl(tmp_path / "docs.jsonl", [{"text": t + " ."} for t, _ in PROBES[:4]])
    to_learn = _write_jsonl(tmp_path / "to_learn.jsonl", [{"task": t, "answer": a} for t, a in PROBES[:4]])
    other = _write_jsonl(tmp_path / "other.jsonl", [{"task": t, "answer": a} for t, a in PROBES[4:]])
    learn(LearnConfig(model=tiny_model, docs=docs, out=str(tmp_path / name), method="finetune", epochs=2, lr=1e-2,
                      lora_r=4, batch_size=2, micro_batch=2, eval_batch=3, seed=0,
                      probes=[f"to_learn={to_learn}", f"other={other}"], **extra))
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_learn_records_exact_match_and_per_probe_lists_and_tracks_scalars_only(tiny_model, tmp_path, monkeypatch):
    trackers: list[_Recorder] = [_Recorder()]
    monkeypatch.setattr(Processes, "log", lambda self, values, step=None: trackers[0].log(values, step))
    records = _learn(tiny_model, tmp_path, "on")
    assert [(r["epoch"], r["probe"]) for r in records] == [(e, p) for e in range(3) for p in ("to_learn", "other")]
    for r in records:
        n = 4 if r["probe"] == "to_learn" else 2
        assert set(r["per_probe"]) == {"accuracy", "nll", "exact_match"}
        assert all(len(v) == n for v in r["per_probe"].values())
        assert set(r["per_probe"]["exact_match"]) <= {0.0, 1.0}
        for key in ("accuracy", "nll", "exact_match"):
            assert r[key] == pytest.approx(sum(r["per_probe"][key]) / n)
    logged = trackers[0].logged
    assert len(logged) == 2 and all(isinstance(v, float) for step in logged for v in step.values())
    assert set(logged[0]) == {"train_loss"} | {f"{p}/{k}" for p in ("to_learn", "other")
                                               for k in ("accuracy", "nll", "perplexity", "exact_match")}
    assert logged[-1]["to_learn/exact_match"] == records[-2]["exact_match"]

    off = _learn(tiny_model, tmp_path, "off", exact_match=False)
    assert all(r["exact_match"] is None and r["per_probe"]["exact_match"] is None for r in off)
    for a, b in zip(records, off):  # decoding leaves the run itself unchanged
        assert (a["accuracy"], a["nll"], a["train_loss"], a["per_probe"]["nll"]) == (
            b["accuracy"], b["nll"], b["train_loss"], b["per_probe"]["nll"])


if __name__ == "__main__":  # one process of test_two_processes_gather_exact_match_in_probe_order
    _two_process_evaluation(*sys.argv[1:])
