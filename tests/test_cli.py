"""Tests for the ``taalm`` command: one-line user errors with exit code 2, a YAML-configured happy path, shipped YAMLs.

python -m pytest -q tests/test_cli.py
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taalm import cli, models
from taalm.config import MetaTrainConfig, WeightsConfig, build_config, load_config_file
from taalm.errors import TaalmError

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"document": "Santiago is the capital of Chile . The fox jumps .", "task": "Santiago is the capital of Chile .",
        "answer": "Chile"}
TINY_OPTIONS = ["--lora_r", "4", "--lora_alpha", "8", "--meta_batch", "1", "--updates", "1", "--max_length", "64",
                "--device", "cpu"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def check_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("taalm: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


BAD_PAIRS = [  # file content (None: no file), fragments the message must contain (besides the file name)
    (None, ["file not found"]),
    ([json.dumps(GOOD), '{"document": "x", "task":'], [":2:", "malformed JSON"]),
    ([json.dumps(GOOD), "", json.dumps({"document": "Paris .", "answer": "Paris"})], [":3:", "missing field 'task'"]),
    ([json.dumps({**GOOD, "answer": "Peru"})], [":1:", "'Peru' not found in task"]),
    ([json.dumps(GOOD), json.dumps({**GOOD, "document": ""})], [":2:", "'document' is empty"]),
]


@pytest.mark.parametrize(("content", "fragments"), BAD_PAIRS,
                         ids=["missing-file", "malformed", "missing-field", "answer-absent", "empty-document"])
def test_bad_pairs_file(tiny_model, tmp_path, capsys, content, fragments):
    pairs = tmp_path / "pairs.jsonl"
    if content is not None:
        write_lines(pairs, content)
    out = tmp_path / "out"
    code = cli.main(["meta-train", "--theta", tiny_model, "--pairs", str(pairs), "--out", str(out), *TINY_OPTIONS])
    check_one_line_error(code, capsys.readouterr().err, "pairs.jsonl", *fragments)
    assert not out.exists()


def test_unknown_model(tmp_path, capsys):
    pairs = write_lines(tmp_path / "pairs.jsonl", [json.dumps(GOOD)])
    out = tmp_path / "out"
    code = cli.main(["meta-train", "--theta", "no-such-model", "--pairs", str(pairs), "--out", str(out)])
    check_one_line_error(code, capsys.readouterr().err, "unknown model 'no-such-model'")
    assert not out.exists()


def test_unknown_option_in_yaml(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"pairs: p.jsonl\nout: {tmp_path / 'o'}\nlearning_rate: 0.1\n")
    code = cli.main(["meta-train", "--config", str(config)])
    check_one_line_error(code, capsys.readouterr().err, "run.yaml", "unknown option 'learning_rate'")
    assert not (tmp_path / "o").exists()


def test_malformed_yaml_names_the_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("pairs: p.jsonl\nout: [unclosed\nseed: 1\n")
    code = cli.main(["meta-train", "--config", str(config)])
    check_one_line_error(code, capsys.readouterr().err, "run.yaml:", "malformed YAML")


def test_invalid_option_value_names_the_option(tmp_path, capsys):
    code = cli.main(["meta-train", "--pairs", "p.jsonl", "--out", str(tmp_path / "o"), "--objective", "best"])
    check_one_line_error(code, capsys.readouterr().err, "option --objective", "'best'")


def test_subprocess_error_is_one_line_without_traceback(tiny_model, tmp_path):
    pairs = write_lines(tmp_path / "pairs.jsonl", [json.dumps(GOOD), json.dumps({"document": "x y z"})])
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "taalm", "meta-train", "--theta", tiny_model, "--pairs", str(pairs),
                             "--out", str(out)], capture_output=True, text=True, timeout=120, check=False)
    line = check_one_line_error(result.returncode, result.stderr, f"{pairs}:2:", "missing field 'task'")
    assert re.fullmatch(r"taalm: .+pairs\.jsonl:2: missing field 'task'", line)
    assert result.stdout == ""
    assert not out.exists()


def test_subprocess_unknown_model(tmp_path):
    pairs = write_lines(tmp_path / "pairs.jsonl", [json.dumps(GOOD)])
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "taalm", "meta-train", "--theta", "./nowhere", "--pairs", str(pairs),
                             "--out", str(out)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, check=False)
    check_one_line_error(result.returncode, result.stderr, "unknown model './nowhere'")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- happy path
def test_meta_train_then_weights(tiny_model, tmp_path, capsys):
    pairs = write_lines(tmp_path / "pairs.jsonl", [json.dumps(GOOD)])
    out = tmp_path / "phi"
    config = tmp_path / "run.yaml"
    config.write_text(f"theta: {tiny_model}\npairs: {pairs}\nout: {out}\nupdates: 5\nmeta-batch: 1\nlora_r: 4\n"
                      "lora_alpha: 8\nmax_length: 64\ndevice: cpu\ninner_lr: 0.01\n")
    assert cli.main(["meta-train", "--config", str(config), "--updates", "1", "--seed", "7"]) == 0  # flags win
    assert f"φ written to {out}" in capsys.readouterr().out
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["update"] for h in history] == [1]
    assert (out / "DONE").exists()

    saved = build_config(MetaTrainConfig, load_config_file(out / "config.yaml"))
    expected = MetaTrainConfig(theta=tiny_model, pairs=str(pairs), out=str(out), updates=1, meta_batch=1, lora_r=4,
                               lora_alpha=8, max_length=64, device="cpu", inner_lr=0.01, seed=7)
    assert saved == expected

    html = tmp_path / "w" / "X.html"
    code = cli.main(["weights", "--phi", str(out), "--text", "Santiago is the capital of Chile .", "--out", str(html),
                     "--color", "false", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert html.is_file() and html.with_suffix(".png").is_file()
    assert html.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n_tokens = len(models.load_tokenizer(tiny_model)("Santiago is the capital of Chile .")["input_ids"])
    assert html.read_text(encoding="utf-8").count("data-w=") == n_tokens - 1  # one weight per predicted token
    assert "raw weights: mean" in printed and "\x1b[" not in printed
    shown = [float(line.rsplit("\t", 1)[1]) for line in printed.splitlines() if "\t" in line]
    assert max(shown) == 1.0  # shown relative to the document's largest weight (the loss ignores the scale)


def test_weights_rejects_a_non_phi_directory(tiny_model, tmp_path, capsys):
    code = cli.main(["weights", "--phi", tiny_model, "--text", "Paris .", "--out", str(tmp_path / "w.html")])
    check_one_line_error(code, capsys.readouterr().err, "option --phi", "not a trained φ directory")
    assert not (tmp_path / "w.html").exists()


# ---------------------------------------------------------------------------------------------------- shipped YAMLs
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def config_class(path: Path) -> type:
    """configs/<benchmark>/<command>_<setting>.yaml: learn_*, meta-train_* or bench_* of that benchmark."""
    from taalm.bench.config import LamaCklConfig, TemporalWikiConfig
    from taalm.config import LearnConfig

    command = path.name.split("_", 1)[0]
    if command == "bench":
        return {"lama-ckl": LamaCklConfig, "temporalwiki": TemporalWikiConfig}[path.parent.name]
    return {"learn": LearnConfig, "meta-train": MetaTrainConfig}[command]


def _build_with_placeholders(cls: type, values: dict, source: str):
    """Build ``cls`` from a shipped YAML; options the file leaves to the command line (e.g. --out) get placeholders."""
    values = dict(values)
    for _ in range(len(dataclasses.fields(cls)) + 1):
        try:
            return build_config(cls, values, source)
        except TaalmError as e:
            match = re.match(r"option --([a-z0-9_]+): ", str(e))
            name = match.group(1) if match else None
            if name is None or name in values:
                raise
            values[name] = "placeholder"
    raise AssertionError(f"{source}: could not be completed with placeholders")


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_yaml_parses(path):
    from taalm.config import apply_preset

    cls = config_class(path)
    config = _build_with_placeholders(cls, apply_preset(cls, load_config_file(path)), str(path))
    assert isinstance(config, cls)


# The official scripts (github ybseo-academy/TAALM) and the values our paper configs must carry. batch_size counts
# documents per optimizer step: per-GPU batch x gradient accumulation x 8 GPUs.
OFFICIAL = {
    "lama-ckl/learn_finetune.yaml": (("scripts/eval/lamackl/finetune.sh: --gpu_train_batch_size=8 "
                                     "--train_grad_accum_step=1 --train_lr=1e-4 --max_epochs=30 --token_max_length=512 "
                                     "--model_type=qlora"), {"batch_size": 64, "lr": 1e-4, "epochs": 30,
                                                            "max_length": 512, "qlora": "true", "method": "finetune"}),
    "lama-ckl/learn_taalm.yaml": (("scripts/eval/lamackl/targeted.sh: as finetune.sh, --test_type=targeted"),
                                  {"batch_size": 64, "lr": 1e-4, "epochs": 30, "max_length": 512, "method": "taalm"}),
    "lama-ckl/learn_recadam.yaml": (("scripts/eval/lamackl/recadam.sh: --recadam=true (RecAdam k=0.5, t0=250, "
                                    "pretrain_cof=5000)"), {"batch_size": 64, "lr": 1e-4, "epochs": 30, "recadam_k": 0.5,
                                                           "recadam_t0": 250, "recadam_coefficient": 5000.0}),
    "lama-ckl/learn_mixreview.yaml": (("scripts/eval/lamackl/review.sh: --gpu_train_batch_size=2 "
                                      "--gpu_review_batch_size=2 --train_grad_accum_step=2 --review_ratio=1"),
                                      {"batch_size": 32, "review_ratio": 1.0, "review_decay": 1.0, "epochs": 30}),
    "lama-ckl/meta-train_paper.yaml": (("scripts/train_TA/lama_ckl.sh: --val_size=16 --eval_batch_size=4 "
                                       "--eval_grad_accum_step=2 --val_interval=10 --batch_size=16 --dummy_loop=1 "
                                       "--val_dummy_loop=3 --task_type=schematic --token_max_length=512; "
                                       "TAALM_trainer.py/ta_eval.py: AdamW lr 2e-4, 30 outer epochs"),
                                       {"held_out": 16, "val_batch_size": 8, "val_every": 10, "meta_batch": 16,
                                        "dummy_steps": 1, "val_epochs": 4, "task_format": "schematic",
                                        "max_length": 512, "inner_lr": 2e-4, "outer_lr": 2e-4, "val_lr": 2e-4,
                                        "epochs": 30, "phi_model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                                        "theta": "meta-llama/Llama-2-7b-hf"}),
    "temporalwiki/learn_finetune.yaml": (("scripts/eval/twiki/qlora_finetune.sh: --gpu_train_batch_size=4 "
                                         "--train_grad_accum_step=2 --train_lr=1e-4 --max_epochs=1 "
                                         "--theta_model_name=TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
                                         {"batch_size": 64, "lr": 1e-4, "epochs": 1, "max_length": 512,
                                          "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0"}),
    "temporalwiki/learn_kadapter.yaml": (("scripts/eval/twiki/kadapter_finetune.sh: --model_type=kadapter"),
                                         {"method": "kadapter", "qlora": "false", "epochs": 1, "lr": 1e-4}),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_paper_configs_carry_the_official_values(name):
    path = ROOT / "configs" / name
    config = _build_with_placeholders(config_class(path), load_config_file(path), str(path))
    _, expected = OFFICIAL[name]
    assert {key: getattr(config, key) for key in expected} == expected


def test_bench_paper_presets_carry_the_official_values():
    from taalm.bench.config import LamaCklConfig, TemporalWikiConfig

    lama = LamaCklConfig(out="o", preset="paper", **LamaCklConfig.PRESETS["paper"])
    assert (lama.epochs, lama.lr, lama.batch_size, lama.max_length, lama.review_ratio, lama.review_decay) == \
        (30, 1e-4, 64, 512, 1.0, 1.0)
    assert (lama.meta.meta_batch, lama.meta.held_out, lama.meta.val_every, lama.meta.val_epochs, lama.task_format) == \
        (16, 16, 10, 4, "schematic")
    assert lama.qlora == "auto" and lama.review_in_batch  # QLoRA where available; 32 new + 32 review per step
    assert lama.split == "official"  # all 500 variant rows To-Learn, all 500 invariant_descriptive rows NF
    # φ's validation as ta_eval.py ran it: 16 held-out pairs learned for 4 epochs at lr 2e-4, 8 per step
    from taalm.bench.runner import meta_train_config
    from taalm.config import apply_preset

    meta = meta_train_config(lama, "pairs.jsonl", Path("phi"))
    assert (meta.held_out, meta.val_epochs, meta.val_lr, meta.val_batch_size) == (16, 4, 2e-4, 8)
    assert (meta.meta_batch, meta.val_every, meta.inner_lr, meta.outer_lr) == (16, 10, 2e-4, 2e-4)
    cpu = LamaCklConfig(**apply_preset(LamaCklConfig, {"out": "o", "preset": "cpu"}))  # 0: the benchmark's own
    assert (cpu.split, cpu.meta.val_lr, cpu.meta.val_batch_size) == ("tailored", 0.0, 0)
    cpu_meta = meta_train_config(cpu, "pairs.jsonl", Path("phi"))
    assert (cpu_meta.val_lr, cpu_meta.val_batch_size) == (cpu.lr, cpu.batch_size) != (2e-4, 8)
    twiki = TemporalWikiConfig(out="o", preset="paper", **TemporalWikiConfig.PRESETS["paper"])
    assert (twiki.epochs, twiki.lr, twiki.batch_size, twiki.max_length) == (1, 1e-4, 64, 512)
    assert "oracle" not in twiki.method_list() and len(twiki.method_list()) == 10
    twiki_meta = meta_train_config(twiki, "pairs.jsonl", Path("phi"))
    assert (twiki_meta.held_out, twiki_meta.val_epochs, twiki_meta.val_lr, twiki_meta.val_batch_size) == (16, 4, 2e-4, 8)


def test_placeholder_builder_still_rejects_bad_values():
    with pytest.raises(TaalmError, match="unknown option"):
        _build_with_placeholders(MetaTrainConfig, {"bogus": 1}, "x.yaml")
    with pytest.raises(TaalmError, match="--objective"):
        _build_with_placeholders(MetaTrainConfig, {"objective": "nope"}, "x.yaml")
    assert _build_with_placeholders(WeightsConfig, {"limit": 3}, "x.yaml").limit == 3


def test_cpu_presets_parse_and_are_real_experiments():
    from taalm.bench.config import LamaCklConfig, TemporalWikiConfig
    from taalm.config import apply_preset

    lama = LamaCklConfig(**apply_preset(LamaCklConfig, {"out": "o", "preset": "cpu"}))
    assert lama.to_learn >= 64 and lama.not_to_forget >= 64 and lama.window and lama.max_length <= 128
    assert lama.method_list() == ["finetune", "oracle", "taalm", "rho1", "recadam", "mixreview", "kadapter",
                                  "taalm+kadapter", "taalm+mixreview"]
    assert lama.phi == "auto"  # the φ shipped for the model, else meta-trained on the pool
    twiki = TemporalWikiConfig(**apply_preset(TemporalWikiConfig, {"out": "o", "preset": "cpu"}))
    assert twiki.method_list() == ["finetune", "taalm", "rho1", "recadam", "mixreview", "kadapter", "taalm+kadapter"]
    assert twiki.changed_subjects > 0 and twiki.unchanged > 0 and twiki.period_list() == ["0901-1001", "1001-1101",
                                                                                          "1101-1201"]
    quick = LamaCklConfig(**apply_preset(LamaCklConfig, {"out": "o", "preset": "quick"}))
    assert quick.method_list() == ["finetune", "oracle", "taalm"] and quick.phi == "auto"


# ---------------------------------------------------------------------------------------------------- the parser
COMMANDS = sorted(cli._commands())


def run_exiting(argv: list[str], capsys) -> str:
    """``taalm ARGV`` for an option that prints and exits (--help, --version, --print_config): its stdout."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def printed_config(argv: list[str], capsys) -> dict:
    import yaml

    return yaml.safe_load(run_exiting([*argv, "--print_config"], capsys))


def test_version(capsys):
    from taalm import __version__

    assert run_exiting(["--version"], capsys).strip() == f"taalm {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    from taalm.config import _choices

    cls = cli._commands()[command][0]
    text = run_exiting([*command.split(), "--help"], capsys)
    for name in ("config", "print_config", *(f.name for f in dataclasses.fields(cls))):
        assert f"--{name}" in text, name
    for name in getattr(cls, "REQUIRED", ()):
        if command != "demo":  # the demo has a default --out
            assert re.search(rf"--{name} (\w+|\[ITEM,\.\.\.\])\s+.*?\(required", text, re.DOTALL), name
    for name, (values, _) in _choices(cls).items():  # choices shown
        assert "{" + ",".join(map(str, values)) + "}" in text or all(str(v) in text for v in values), name


def test_print_config_is_readable_back(tmp_path, capsys):
    from taalm.config import LearnConfig

    printed = printed_config(["learn", "--docs", "d.jsonl", "--out", "o", "--lr", "3e-3", "--probes", "a=x.jsonl"], capsys)
    assert build_config(LearnConfig, printed) == LearnConfig(docs="d.jsonl", out="o", lr=3e-3, probes=["a=x.jsonl"])
    assert printed_config(["learn"], capsys)["docs"] == ""  # printable before the required options are given
    path = tmp_path / "printed.yaml"
    path.write_text(run_exiting(["learn", "--docs", "d.jsonl", "--out", "o", "--epochs", "3", "--print_config"], capsys))
    assert printed_config(["learn", "--config", str(path), "--epochs", "4"], capsys)["epochs"] == 4  # flags win
    assert printed_config(["learn", "--config", str(path)], capsys)["epochs"] == 3


def test_old_and_new_spellings_parse_alike(capsys):
    new = printed_config(["bench", "lama-ckl", "--out", "o", "--lora_r", "4", "--seeds", "[0, 2]", "--methods",
                          "[finetune, taalm+kadapter]", "--lr_candidates", "[1.0e-3, 3.0e-3]", "--window", "true",
                          "--meta.inner_lr", "1e-3"], capsys)
    for old in (["--lora-r", "4", "--seeds", "0,2", "--methods", "finetune,taalm+kadapter", "--lr-candidates",
                 "1e-3,3e-3", "--window", "--meta.inner-lr", "1e-3"],
                ["--lora-r=4", "--seeds", "0", "2", "--methods=finetune,taalm+kadapter", "--lr-candidates", "1e-3",
                 "3e-3", "--window", "--meta.inner_lr=1e-3"]):
        assert printed_config(["bench", "lama-ckl", "--out", "o", *old], capsys) == new
    assert (new["seeds"], new["methods"], new["lr_candidates"]) == ([0, 2], ["finetune", "taalm+kadapter"], [1e-3, 3e-3])
    assert new["meta"]["inner_lr"] == 1e-3 and new["window"] is True


BAD_OPTIONS = [  # argv after the command, fragments of the one line
    (["learn", "--docs", "d", "--out", "o", "--bogus", "1"], ["taalm: error:", "--bogus"]),
    (["learn", "--docs", "d", "--out", "o", "--dtype", "half"],
     ["option --dtype", "'half' is not one of auto, float32, bfloat16, float64"]),
    (["learn", "--docs", "d", "--out", "o", "--qlora", "maybe"], ["option --qlora", "'maybe' is not one of"]),
    (["learn", "--docs", "d", "--out", "o", "--lora_r", "x"], ["option --lora_r", "expected int", "'x'"]),
    (["learn", "--docs", "d", "--out", "o", "--lora_dropout", "1.5"], ["option --lora_dropout", "[0, 1)"]),
    (["learn", "--out", "o"], ["option --docs", "is required"]),
    (["bench", "lama-ckl", "--out", "o", "--meta.objective", "z"], ["option --meta.objective", "'z' is not one of"]),
    (["bench", "lama-ckl", "--out", "o", "--meta.updates", "-3"], ["option --meta.updates", "must be >= 0"]),
    (["meta-train", "--pairs", "p", "--out", "o", "--weight_temperature", "0"],
     ["option --weight_temperature", "must be positive"]),
    (["meta-train", "--pairs", "p", "--out", "o", "--weight_floor", "0.05", "--weight_floor_share", "0.6"],
     ["option --weight_floor_share", "leave --weight_floor at 0"]),
    (["bench", "lama-ckl", "--out", "o", "--seeds", "1,1"], ["option --seeds", "distinct"]),
    (["bench", "lama-ckl", "--out", "o", "--preset", "nope"], ["option --preset", "'nope' is not one of cpu"]),
    (["bench", "temporalwiki", "--out", "o", "--methods", "finetune,taalm", "--baseline", "rho1"],
     ["option --baseline", "'rho1' is not one of the methods (finetune, taalm)"]),
    (["bench", "fictional", "--out", "o", "--meta.bogus", "1"], ["taalm: error:", "--meta.bogus"]),
]


@pytest.mark.parametrize(("argv", "fragments"), BAD_OPTIONS, ids=[" ".join(a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_errors(argv, fragments, tmp_path, capsys):
    assert cli.main(argv) == 2
    check_one_line_error(2, capsys.readouterr().err, *fragments)


PRESETS = sorted((ROOT / "src" / "taalm" / "resources" / "presets").rglob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[f"{p.parent.name}/{p.stem}" for p in PRESETS])
def test_shipped_presets_parse(path, capsys):
    """Every preset file builds its benchmark's config, on the command line as in Python; explicit flags win."""
    from taalm.bench import config as bench
    from taalm.config import apply_preset

    benchmark, name = path.parent.name, path.stem
    cls = {"lama-ckl": bench.LamaCklConfig, "temporalwiki": bench.TemporalWikiConfig,
           "fictional": bench.FictionalConfig}[benchmark]
    assert cls.PRESETS[name] == load_config_file(path)
    python = cls(**apply_preset(cls, {"out": "o", "preset": name}))
    printed = printed_config(["bench", benchmark, "--out", "o", "--preset", name], capsys)
    assert build_config(cls, printed) == python
    flags = printed_config(["bench", benchmark, "--epochs", "2", "--out", "o", "--preset", name, "--meta.updates",
                            "3"], capsys)
    assert (flags["epochs"], flags["meta"]["updates"]) == (2, 3)
    assert {k: v for k, v in flags["meta"].items() if k != "updates"} == \
        {k: v for k, v in printed["meta"].items() if k != "updates"}  # the preset's other meta options stay


def test_preset_from_a_config_file_stays_under_its_values(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("preset: cpu\nepochs: 2\nmeta:\n  phi-layers: 2\n")
    printed = printed_config(["bench", "lama-ckl", "--out", "o", "--config", str(config)], capsys)
    assert (printed["epochs"], printed["lr"], printed["meta"]["phi_layers"], printed["meta"]["updates"]) == \
        (2, 3e-3, 2, 48)  # the file's values, the preset's lr and meta updates
    assert printed_config(["demo"], capsys)["preset"] == "quick"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_yaml_parses_on_the_command_line(path, capsys):
    command = path.name.split("_", 1)[0]
    argv = ["bench", path.parent.name] if command == "bench" else [command]
    required = [x for name in getattr(config_class(path), "REQUIRED", ()) for x in (f"--{name}", "placeholder")]
    printed = printed_config([*argv, "--config", str(path), *required], capsys)
    for key, value in load_config_file(path).items():
        if key == "meta":
            assert {k: printed["meta"][k] for k in value} == value
        else:
            assert (str(printed[key]).lower() if key == "qlora" else printed[key]) == \
                (str(value).lower() if key == "qlora" else value), key  # qlora: true or "true"


def test_the_hub_download_bars_stay_on_while_the_load_bars_go(monkeypatch):
    import huggingface_hub.utils as hub
    import transformers

    monkeypatch.setattr(cli, "_commands", lambda argv=None: {"noop": (NoopConfig, lambda cfg: None, "nothing")})
    hub.disable_progress_bars()
    try:
        assert cli.main(["noop"]) == 0
        assert not hub.are_progress_bars_disabled()  # a model download shows its bar
        assert not transformers.utils.logging.is_progress_bar_enabled()  # no bar per model load
    finally:
        transformers.utils.logging.enable_progress_bar()


@dataclasses.dataclass
class NoopConfig:
    pass
