"""The TemporalWiki runner on the tiny model: the metric by hand, two periods end to end, continuation, exact resume,
bad input.

python -m pytest -q tests/test_temporalwiki.py
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from taalm import ckl, cli, models, runtime, scoring
from taalm.bench import temporalwiki
from taalm.bench.config import TemporalWikiConfig
from taalm.data import encode, pad_token_id
from taalm.errors import TaalmError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PERIODS = "0901-1001,1001-1101"


def twiki_config(tiny_model: str, out: Path, **overrides) -> TemporalWikiConfig:
    values = {"model": tiny_model, "out": str(out), "periods": PERIODS, "methods": "finetune,kadapter",
              "changed_subjects": 2, "unchanged": 3, "epochs": 1, "batch_size": 2, "micro_batch": 2,
              "max_length": 160, "eval_batch": 8, "lr": 1e-2, "lora_r": 4, "review_paragraphs": 4, "device": "cpu",
              "seed": 0}
    return TemporalWikiConfig(**{**values, **overrides})


# --- the metric ------------------------------------------------------------------------------------------------------


def test_object_nll_matches_a_hand_computation(tiny_model):
    """Per probe: the mean NLL of the object's tokens at its LAST occurrence; averaged over probes, not exponentiated."""
    tokenizer = models.load_tokenizer(tiny_model)
    model = models.load_causal_lm(tiny_model)
    probes = [("Guess the object. \n  subject is Chile , relation is capital , object is Santiago de Chile",
               "Santiago de Chile"),
              ("Paris is in France , and France is big", "France")]  # two occurrences: the last one counts
    encoded = [encode(tokenizer, task, 128, answer=answer) for task, answer in probes]
    scores = scoring.score_probes(model, encoded, pad_token_id(tokenizer), 8, torch.device("cpu"))
    by_hand = []
    for (task, answer), item in zip(probes, encoded):
        enc = tokenizer(task, return_offsets_mapping=True)
        start = task.rfind(answer)
        positions = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > start and s < start + len(answer)]
        assert len(positions) > 1  # a multi-token object
        assert min(positions) > task.find(answer) or task.count(answer) == 1
        with torch.no_grad():
            log_probs = model(input_ids=torch.tensor([enc["input_ids"]])).logits[0].log_softmax(-1)
        nll = [-float(log_probs[i - 1, enc["input_ids"][i]]) for i in positions]
        by_hand.append(sum(nll) / len(nll))
    assert scores.nll == pytest.approx(by_hand, rel=1e-5)
    results = scoring.evaluate(model, {"changed": encoded}, pad_token_id(tokenizer), 8, torch.device("cpu"), "auto")
    assert results["changed"]["nll"] == pytest.approx(sum(by_hand) / 2, rel=1e-5)  # the mean over probes
    total = sum(scores.nll[i] * sum(item.label[1:]) for i, item in enumerate(encoded))
    assert results["changed"]["perplexity"] == pytest.approx(math.exp(total / scores.n_tokens), rel=1e-5)


# --- a two-period run ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twiki_run(tiny_model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("twiki") / "run"
    return out, temporalwiki.run_bench(twiki_config(tiny_model, out, eval_all_periods=True))


def test_two_periods_end_to_end(twiki_run):
    out, summary = twiki_run
    assert summary["benchmark"] == "temporalwiki" and summary["periods"] == PERIODS.split(",")
    assert summary["data"]["documents"] == "built-from-probes" and summary["data"]["builder_version"]
    for period in summary["periods"]:
        counts = summary["data"]["periods"][period]
        assert counts["unchanged_probes"] == 3 and counts["subjects"] == 2 and counts["documents"] == 2
        assert set(summary["base"][period]) == {"changed", "unchanged"}
    assert list(summary["methods"]) == ["finetune", "kadapter"]
    for name, result in summary["methods"].items():
        for period in summary["periods"]:
            for when in ("before", "after"):
                scores = result[period][when]
                assert {"changed", "unchanged"} <= set(scores)
                assert all(math.isfinite(scores[k]["nll"]) and 0 <= scores[k]["accuracy"] <= 1 for k in scores)
            assert result[period]["after"]["changed"]["nll"] < result[period]["before"]["changed"]["nll"], name
        assert result["average"]["changed"] == pytest.approx(
            sum(result[p]["after"]["changed"]["nll"] for p in summary["periods"]) / 2)
    table = (out / "table.md").read_text()
    assert "built-from-probes" in table.splitlines()[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["base", "finetune", "kadapter"]
    assert all(len(r.split("|")) == 2 * 2 + 2 + 5 for r in rows)  # periods, averages, two Δ vs finetune
    for name in ("curves.png", "tradeoff.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text()) == summary


def test_period_two_continues_period_one_with_a_fresh_optimizer(twiki_run):
    out, summary = twiki_run
    first, second = PERIODS.split(",")
    for name in ("finetune", "kadapter"):
        runs = out / "seed-0" / "methods" / name
        config = yaml.safe_load((runs / second / "config.yaml").read_text())
        assert config["init_from"] == str(runs / first)
        assert yaml.safe_load((runs / first / "config.yaml").read_text())["init_from"] == ""
        # period 2 starts where period 1 ended: its scores of period 1's probes before learning are period 1's after
        result = summary["methods"][name]
        assert result[second]["before"][f"changed@{first}"] == result[first]["after"]["changed"]
        steps = {int(s["step"]) for s in
                 runtime.load_checkpoint(runs / second / "checkpoint")["optimizer"]["state"].values()}
        assert steps == {1}  # 2 documents, batch 2, 1 epoch: only this period's step


def test_the_base_model_stays_unchanged_under_kadapter(twiki_run, tiny_model):
    from taalm.kadapter import KAdapterForCausalLM

    out, _ = twiki_run
    base = models.load_causal_lm(tiny_model)
    carried = KAdapterForCausalLM.from_base_and_dir(models.load_causal_lm(tiny_model),
                                                    out / "seed-0" / "methods" / "kadapter" / PERIODS.split(",")[1] / "kadapter")
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), carried.base.state_dict().values()))


class Killed(Exception):
    pass


def _comparable(summary: dict) -> dict:
    """The summary without timings and the command line."""
    drop = {"seconds", "wall_seconds", "command"}
    if isinstance(summary, dict):
        return {k: _comparable(v) for k, v in summary.items() if k not in drop}
    return summary


@pytest.mark.parametrize("kill", ["between periods", "mid-period"])
def test_resume_is_exact(kill, tiny_model, tmp_path, monkeypatch):
    cfg = twiki_config(tiny_model, tmp_path / "run", methods="finetune", changed_subjects=4, lora_dropout=0.1)
    reference = temporalwiki.run_bench(twiki_config(tiny_model, tmp_path / "ref", methods="finetune",
                                                    changed_subjects=4, lora_dropout=0.1))
    second = str(tmp_path / "run" / "seed-0" / "methods" / "finetune" / PERIODS.split(",")[1])
    real_learn, real_step = ckl.learn, ckl.Learner.step
    with monkeypatch.context() as patch:
        if kill == "between periods":
            patch.setattr(ckl, "learn", lambda c: (_ for _ in ()).throw(Killed()) if c.out == second else real_learn(c))
        else:
            def step(self, doc_ids, epoch, index):
                if self.names["doc"][0].endswith("1001-1101/docs.jsonl:1") and index == 1:
                    raise Killed()
                return real_step(self, doc_ids, epoch, index)

            patch.setattr(ckl.Learner, "step", step)
        with pytest.raises(Killed):
            temporalwiki.run_bench(cfg)
    assert not (Path(second) / "DONE").exists()
    if kill == "mid-period":
        assert runtime.load_checkpoint(Path(second) / "checkpoint")["step"] == 1
    resumed = temporalwiki.run_bench(cfg)
    assert _comparable(resumed) == _comparable(reference)


# --- the data a run prepares ------------------------------------------------------------------------------------------


def test_built_documents_record_where_their_facts_are(tiny_model, tmp_path):
    from taalm.bench import twiki_data

    cfg = twiki_config(tiny_model, tmp_path / "run", periods="0901-1001", changed_subjects=12, seed=2)
    provenance = temporalwiki.prepare_data(cfg, tmp_path / "sets")
    rows = [json.loads(line) for line in (tmp_path / "sets" / "0901-1001" / "docs.jsonl").read_text().splitlines()]
    built = twiki_data.period_documents("0901-1001", 12, 2, review_paragraphs=cfg.review_paragraphs)
    assert [r["text"] for r in rows] == [d.text for d in built]  # the diagnostics rebuild exactly these documents
    for row, doc in zip(rows, built, strict=True):
        assert row["text"][slice(*row["fact_span"])] == doc.statement and row["fact_slot"] == doc.fact_slot
    record = provenance["periods"]["0901-1001"]
    assert record["builder_version"] == provenance["builder_version"] == "3"
    assert sum(record["fact_places"].values()) == len(rows) == 12
    assert "LAMA-ckl" in provenance["review"] and "official: the Wikipedia 0801 snapshot" in provenance["review"]


def _diffsets(directory: Path, texts: dict[str, list[str]]) -> Path:
    directory.mkdir()
    for period, lines in texts.items():
        (directory / f"{period}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    return directory


def test_with_diffsets_phi_pairs_come_from_the_0801_0901_diff_documents(tiny_model, tmp_path):
    from taalm.bench import twiki_data

    facts = twiki_data.load_facts(twiki_data.probe_file(twiki_data.PHI_PERIOD, "changed"))
    chosen = list({f.subject: f for f in facts[:40] if f.object[0].isupper()}.values())[:3]
    diffs = [f"The page on {f.subject} was edited this month and now names {f.object} in its infobox section."
             for f in chosen]
    filler = "An unrelated paragraph about rivers, bridges and the weather in a small mountain town nearby."
    directory = _diffsets(tmp_path / "diffsets", {twiki_data.PHI_PERIOD: [filler, *diffs],
                                                  "0901-1001": [filler, filler.upper()]})
    cfg = twiki_config(tiny_model, tmp_path / "run", periods="0901-1001", methods="finetune,taalm", phi="train",
                       diffsets=str(directory))
    provenance = temporalwiki.prepare_data(cfg, tmp_path / "sets")
    pairs = [json.loads(line) for line in (tmp_path / "sets" / "phi_pairs.jsonl").read_text().splitlines()]
    assert {(p["document"], p["answer"]) for p in pairs} >= {(d, f.object) for d, f in zip(diffs, chosen)}
    assert all(p["document"] in diffs for p in pairs)  # diff documents only, never a built one
    assert all(p["answer"] in p["document"] and p["task"].endswith(p["answer"]) for p in pairs)
    record = provenance["phi_pairs"]
    assert record["documents"] == "diffsets" and record["source"].endswith(f"{twiki_data.PHI_PERIOD}.jsonl")
    assert record["pairs"] == len(pairs) and record["unmatched"] == len(facts) - len(pairs)
    (directory / f"{twiki_data.PHI_PERIOD}.jsonl").unlink()
    with pytest.raises(TaalmError, match=f"{twiki_data.PHI_PERIOD}.jsonl: diffset file not found"):
        temporalwiki.prepare_data(cfg, tmp_path / "sets2")
    assert not (tmp_path / "sets2").exists()


def test_cpu_preset_takes_the_general_phi_shipped_for_the_model(tmp_path):
    from taalm.bench import runner
    from taalm.config import apply_preset
    from taalm.weighting import shipped_phis

    cfg = TemporalWikiConfig(**apply_preset(TemporalWikiConfig, {"out": str(tmp_path), "preset": "cpu"}))
    assert cfg.phi == "auto" and runner.phi_source(cfg) == "smollm2-135m"  # not the builder-v1 φ, which learned a place
    assert "smollm2-135m-temporalwiki-v1" in shipped_phis() and "smollm2-135m-temporalwiki" not in shipped_phis()


def test_paper_preset_meta_trains_phi_against_the_model_it_serves(tiny_model, tmp_path):
    from taalm.bench import runner
    from taalm.config import apply_preset

    cfg = TemporalWikiConfig(**apply_preset(TemporalWikiConfig, {"out": str(tmp_path), "preset": "paper",
                                                                  "model": tiny_model}))
    assert runner.phi_source(cfg) == "train"  # the paper meta-trains φ, never shipped
    meta = runner.meta_train_config(cfg, str(tmp_path / "phi_pairs.jsonl"), tmp_path / "phi")
    assert meta.theta == cfg.model == tiny_model  # θ in φ's inner loop is the θ the benchmark learns with
    assert (meta.meta_batch, meta.held_out, meta.val_every, meta.val_epochs) == (16, 16, 10, 4)


# --- bad input -------------------------------------------------------------------------------------------------------


def _probe_dir(tmp_path: Path, drop: str = "", bad_line: str = "") -> Path:
    from taalm.bench import twiki_data

    directory = tmp_path / "probes"
    directory.mkdir()
    for period in twiki_data.PERIODS:
        for kind in ("changed", "unchanged"):
            name = f"{period}_{kind}.jsonl"
            if name == drop:
                continue
            lines = [json.dumps({"subject": f.subject, "relation": f.relation, "object": f.object})
                     for f in twiki_data.load_facts(twiki_data.probe_file(period, kind))[:6]]
            if bad_line and name == bad_line:
                lines[2] = '{"subject": "x", "relation": '
            (directory / name).write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.parametrize("case", ["missing period file", "malformed probe line", "malformed diffset row",
                                  "unknown period"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["bench", "temporalwiki", "--model", tiny_model, "--out", str(out), "--methods", "finetune",
            "--periods", PERIODS, "--changed_subjects", "2", "--unchanged", "3", "--device", "cpu"]
    if case == "missing period file":
        argv += ["--data_dir", str(_probe_dir(tmp_path, drop="1001-1101_unchanged.jsonl"))]
        expected = "1001-1101_unchanged.jsonl: file not found"
    elif case == "malformed probe line":
        argv += ["--data_dir", str(_probe_dir(tmp_path, bad_line="0901-1001_changed.jsonl"))]
        expected = "0901-1001_changed.jsonl:3: malformed JSON"
    elif case == "malformed diffset row":
        diffsets = tmp_path / "diffsets"
        diffsets.mkdir()
        for period in PERIODS.split(","):
            (diffsets / f"{period}.jsonl").write_text(json.dumps({"text": "A long enough Wikipedia sentence " * 3})
                                                      + "\n" + json.dumps({"body": "no text"}) + "\n")
        argv += ["--diffsets", str(diffsets)]
        expected = "0901-1001.jsonl:2: missing string field 'text'"
    else:
        argv[argv.index("--periods") + 1] = "0801-0901,0901-1001"
        expected = "option --periods: '0801-0901' is not a learned period"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("taalm: ")]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    assert not out.exists()


def test_learning_rate_and_epochs_are_chosen_on_the_phi_period(tiny_model, tmp_path):
    out = tmp_path / "run"
    summary = temporalwiki.run_bench(twiki_config(tiny_model, out, methods="finetune,kadapter",
                                                  lr_candidates="1e-3,3e-2", kadapter_lr_candidates="1e-4,1e-3",
                                                  epochs=2, meta_subjects=6, meta={"held_out": 2}, periods="0901-1001"))
    selection = summary["lr_selection"]
    # LoRA methods take finetune's choice, K-Adapter methods the kadapter method's own choice on the same pairs
    for family, method, lrs in ((selection, "finetune", {"0.001", "0.03"}),
                                (selection["kadapter"], "kadapter", {"0.0001", "0.001"})):
        assert family["metric"] == "nll" and set(family["candidates"]) == lrs
        best = min(family["candidates"], key=lambda k: (family["candidates"][k]["best"], float(k)))
        assert family["chosen"] == float(best) and family["rule"].startswith(method)
        learned = yaml.safe_load((out / "seed-0" / "methods" / method / "0901-1001" / "config.yaml").read_text())
        assert (learned["lr"], learned["epochs"]) == (family["chosen"], family["epoch"])
    assert selection["chosen"] == summary["settings"]["lr"]
    assert summary["settings"]["epochs"] == selection["epoch"]
    # chosen on held-out 0801-0901 pairs only: no evaluated probe among the selection's tasks
    tasks = {json.loads(line)["task"] for line in (out / "lr_selection" / "tasks.jsonl").read_text().splitlines()}
    evaluated = {json.loads(line)["task"] for kind in ("changed", "unchanged")
                 for line in (out / "seed-0" / "sets" / "0901-1001" / f"{kind}.jsonl").read_text().splitlines()}
    assert len(tasks) >= 1 and not tasks & evaluated
    with pytest.raises(TaalmError, match="--periods"):
        twiki_config(tiny_model, out, periods="0901-1001,0901-1001")


# --- seeds and intervals ---------------------------------------------------------------------------------------------


def test_one_seed_has_intervals_over_probes_and_says_so(twiki_run):
    out, summary = twiki_run
    record = summary["intervals"]
    assert record["seeds"] == [0] and not record["across_seeds"] and "1 seed" in record["note"]
    periods = summary["periods"]
    for name in ("finetune", "kadapter"):
        m = summary["methods"][name]
        for kind in ("changed", "unchanged"):
            lo, hi = m["ci95"][kind]
            assert lo <= m["average"][kind] <= hi and lo < hi  # probes differ: a real interval
            assert len(m["ci95"][f"periods_{kind}"][0]) == len(periods)
    diff = summary["methods"]["kadapter"]["vs_finetune"]["changed"]
    expected = summary["methods"]["kadapter"]["average"]["changed"] - summary["methods"]["finetune"]["average"]["changed"]
    assert diff["mean"] == pytest.approx(expected) and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    assert "vs_finetune" not in summary["methods"]["finetune"]
    # the base row: the same probes, so its paired difference says how much finetune learned (base is worse)
    assert summary["base_row"]["vs_finetune"]["changed"]["ci95"][0] > 0
    lines = (out / "table.md").read_text().splitlines()
    assert "1 seed" in lines[0]
    cells = [c.strip() for c in lines[5].split("|")[1:-1]]  # finetune's row
    assert cells[0] == "finetune" and all(re.fullmatch(r"\d+\.\d{3} ± \d+\.\d{3}", c) for c in cells[5:7])
    assert cells[7:] == ["—", "—"] and re.fullmatch(r"[+-]\d+\.\d{3} \[[+-]\d+\.\d{3}, [+-]\d+\.\d{3}\]",
                                                     [c.strip() for c in lines[6].split("|")[1:-1]][7])


def test_a_second_invocation_adds_a_seed_and_skips_the_finished_one(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    one = temporalwiki.run_bench(twiki_config(tiny_model, out, methods="finetune", seeds="0"))
    learned: list[str] = []
    real = ckl.learn
    monkeypatch.setattr(ckl, "learn", lambda c: learned.append(c.out) or real(c))
    two = temporalwiki.run_bench(twiki_config(tiny_model, out, methods="finetune", seeds="0,1"))
    assert learned == [str(out / "seed-1" / "methods" / "finetune" / p) for p in PERIODS.split(",")]
    # each seed its own subjects and probes; seed 0's row is the one-seed run's
    probes = [{json.loads(line)["task"] for line in (out / f"seed-{s}" / "sets" / "0901-1001" / "changed.jsonl")
               .read_text().splitlines()} for s in (0, 1)]
    assert probes[0] != probes[1]
    assert not (out / "sets").exists()  # shared data only where φ's pairs are needed (here: none)
    finetune = two["methods"]["finetune"]
    assert _comparable(finetune["seeds"]["0"]) == _comparable(one["methods"]["finetune"]["seeds"]["0"])
    per_seed = [finetune["seeds"][s]["average"]["changed"] for s in ("0", "1")]
    assert finetune["average"]["changed"] == pytest.approx(sum(per_seed) / 2)
    assert two["intervals"]["seeds"] == [0, 1] and two["intervals"]["across_seeds"]
    assert set(two["seed_data"]) == {"0", "1"} and set(two["base_row"]["seeds"]) == {"0", "1"}
    assert "2 seeds" in (out / "table.md").read_text().splitlines()[0]
    assert json.loads((out / "summary.json").read_text()) == two


def test_the_phi_it_uses_gets_a_position_check_in_summary_and_table(tiny_model, tmp_path):
    """The benchmark measures φ's fact-weight lift with the facts in place and moved, once, and reports it."""
    from taalm.weighting import TrainAttention

    torch.manual_seed(0)
    phi = TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0, attn_implementation="eager")
    with torch.no_grad():
        phi.head.weight.normal_(0, 0.5)  # a φ whose weights vary over tokens
    phi.save_pretrained(tmp_path / "phi")
    out = tmp_path / "run"
    summary = temporalwiki.run_bench(twiki_config(tiny_model, out, periods="0901-1001", methods="finetune,taalm",
                                                  phi=str(tmp_path / "phi")))
    check = summary["phi_position_check"]
    assert check["period"] == "0901-1001" and check["documents"] == 2
    lifts = [check["layouts"][k]["lift"] for k in ("in_place", "first", "last")]
    assert all(math.isfinite(v) and v > 0 for v in lifts) and len(set(lifts)) > 1  # moving the facts changes it
    assert check["kept"] == pytest.approx(min(lifts[1:]) / lifts[0])
    assert json.loads((out / "position_check.json").read_text())["kept"] == check["kept"]
    assert f"kept {check['kept']:.2f}" in (out / "table.md").read_text()


def test_a_position_check_of_another_phi_in_out_is_measured_again(tiny_model, tmp_path):
    """An OUT copied from a run with another φ (to reuse its finetune rows) must not report that φ's check, nor a
    φ changed in place."""
    from taalm.bench.temporalwiki import phi_position_check
    from taalm.weighting import TrainAttention

    torch.manual_seed(0)
    TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0, attn_implementation="eager").save_pretrained(
        tmp_path / "phi")
    out = tmp_path / "run"
    out.mkdir()
    (out / "position_check.json").write_text(json.dumps({"phi": "another/phi", "kept": -1.0}))
    cfg = twiki_config(tiny_model, out, periods="0901-1001", methods="taalm", phi=str(tmp_path / "phi"))
    check = phi_position_check(cfg, {"dir": tmp_path / "phi"}, out)
    assert check["phi"] == str(tmp_path / "phi") and check["kept"] > 0
    assert json.loads((out / "position_check.json").read_text()) == check
    assert phi_position_check(cfg, {"dir": tmp_path / "phi"}, out) == check  # then kept
    config = json.loads((tmp_path / "phi" / "config.json").read_text())  # the same path, another φ (an alias updated)
    (tmp_path / "phi" / "config.json").write_text(json.dumps({**config, "weight_floor": 0.5}))
    again = phi_position_check(cfg, {"dir": tmp_path / "phi"}, out)
    assert again["phi_digest"] != check["phi_digest"]
    assert json.loads((out / "position_check.json").read_text()) == again
