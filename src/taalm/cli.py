"""The ``taalm`` command: one typed config per subcommand (``taalm.config``), parsed by jsonargparse, the same
functions as the API.

A command's dataclass is its option set: ``taalm learn --lora_r 4`` (``--lora-r 4`` works too), a benchmark's
``--meta.inner_lr 1e-3``, lists as ``--seeds [0,1,2]``, ``--seeds 0,1,2`` or ``--seeds 0 1 2``, a bare ``--resume``
for ``--resume true``; ``--config FILE.yaml`` fills options from a file (flags win), ``--preset NAME`` fills every
option not given (``taalm/resources/presets/``), ``--print_config`` prints the resolved options as YAML that
``--config`` reads back. User errors print one line (``taalm: pairs.jsonl:17: missing field 'task'``) and exit
with code 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any

from taalm import __version__
from taalm.config import build_config, load_config_file
from taalm.errors import TaalmError


def _commands(argv: list[str] | None = None) -> dict[str, tuple[type, Callable[[Any], Any], str]]:
    from taalm import config

    def meta_train(cfg):
        from taalm.meta_train import meta_train as run

        print(f"φ written to {run(cfg)}")

    def weights(cfg):
        from taalm.inspect_weights import show_weights

        show_weights(cfg)

    def learn(cfg):
        from taalm.ckl import learn as run

        result = run(cfg)
        for record in result.metrics[-max(1, len(cfg.probes)):]:
            print(json.dumps({k: v for k, v in record.items() if k != "per_probe"}))  # the lists stay in metrics.jsonl
        print(f"adapter, metrics and plot written to {result.out}")

    def invocation() -> str:
        return "taalm " + " ".join(argv if argv is not None else sys.argv[1:])

    def tailor(cfg):
        from taalm.bench.lama_ckl import tailor as run

        run(cfg)

    def phi_data(cfg):
        from taalm.bench.phi_data import build

        build(cfg.lama_pool, cfg.out, cfg.per_kind, cfg.seed, cfg.filler, cfg.generator_version, cfg.split_lama,
              cfg.temporalwiki_wording)

    def bench_lama_ckl(cfg):
        from taalm.bench.lama_ckl import run_bench

        run_bench(cfg, command=invocation())
        print(f"summary.json, table.md and curves.png written to {cfg.out}")

    def bench_temporalwiki(cfg):
        from taalm.bench.temporalwiki import run_bench

        run_bench(cfg, command=invocation())
        print(f"summary.json, table.md, curves.png and tradeoff.png written to {cfg.out}")

    def bench_fictional(cfg):
        from taalm.bench.fictional import run_bench

        run_bench(cfg, command=invocation())
        print(f"summary.json, table.md and curves.png written to {cfg.out}")

    def bench_compare(cfg):
        from taalm.bench.compare import compare_runs, table, write_report

        report = compare_runs(cfg.new, cfg.old, cfg.new_method, cfg.old_method, cfg.seeds)
        if cfg.out:
            write_report(report, cfg.out)
        print(table(report) + (f"\n\nwritten to {cfg.out}" if cfg.out else ""))

    def demo(cfg):
        from taalm.demo import run_demo

        run_demo(cfg, command=invocation())

    def export(cfg):
        from taalm.export import export_merged

        print(f"merged model, tokenizer and model card written to {export_merged(cfg)}")

    def export_phi(cfg):
        from taalm.export import export_phi as run

        print(json.dumps(run(cfg), indent=2))

    def compare_phi(cfg):
        from taalm.phi_compare import compare_phi as run

        report, table = run(cfg)
        print(table)
        print(f"chosen: {report['chosen']}" + (f" ({cfg.out})" if cfg.out else ""))

    def validate_phi(cfg):
        from taalm.phi_validate import validate_phis

        report, table = validate_phis(cfg)
        print(table or json.dumps(report["candidates"][0]["validation"], indent=2))
        print(f"chosen: {report['chosen']}" + (f" ({os.path.join(cfg.out, 'compare.json')})" if table else ""))

    from taalm.bench import config as bench

    return {
        "tailor": (bench.TailorConfig, tailor, "select the LAMA-ckl sets that fit a model"),
        "phi-data": (bench.PhiDataConfig, phi_data, "φ's meta-training pairs from three kinds of documents"),
        "bench lama-ckl": (bench.LamaCklConfig, bench_lama_ckl,
                           "LAMA-ckl with every method: the paper's table, curves and a summary"),
        "bench temporalwiki": (bench.TemporalWikiConfig, bench_temporalwiki,
                               "TemporalWiki: three periods in sequence with every method; changed/unchanged NLL"),
        "bench fictional": (bench.FictionalConfig, bench_fictional,
                            "facts about generated fictional entities: To-Learn accuracy per epoch, known facts as NF"),
        "bench compare": (bench.CompareRunsConfig, bench_compare,
                          "paired difference of two finished runs' methods on the same sets, with 95 % intervals"),
        "demo": (bench.FictionalConfig, demo, "TAALM on fictional facts with the shipped φ and the quick preset (CPU)"),
        "learn": (config.LearnConfig, learn, "make θ learn a document set with one CKL method"),
        "meta-train": (config.MetaTrainConfig, meta_train, "meta-train a Train-Attention model φ for a base model θ"),
        "weights": (config.WeightsConfig, weights, "show φ's token weights (terminal, HTML heatmap, PNG)"),
        "export": (config.ExportConfig, export, "merge a learned adapter into θ: a plain transformers model directory"),
        "export-phi": (config.ExportPhiConfig, export_phi, "re-save a trained φ in the Hub format with its model card"),
        "compare-phi": (config.ComparePhiConfig, compare_phi,
                        "choose among trained φs by their worst kind's validation gain on the same held-out pairs"),
        "validate-phi": (config.ValidatePhiConfig, validate_phi,
                         "validate trained φs on held-out pairs of your own against uniform weights, per kind"),
    }


DEFAULTS = {"demo": {"preset": "quick", "out": "demo-out"}}  # the demo is the quick preset unless told otherwise


def _fields(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every option of ``cls`` by its flag name (``meta.inner_lr``), with its type."""
    found = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            found.update(_fields(hint, f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = hint
    return found


def _as_list(values: list[str], hint: Any) -> str:
    """``["0,1", "2"]`` → ``[0, 1, 2]``: the comma and space forms of a list option, as the JSON jsonargparse reads."""
    (item,) = typing.get_args(hint) or (str,)
    items = [x.strip() for value in values for x in value.split(",") if x.strip()]
    converted = []
    for x in items:
        try:
            converted.append(item(x))
        except ValueError:
            converted.append(x)  # jsonargparse names the option and the bad value
    return json.dumps(converted)


def normalize(argv: list[str], options: dict[str, Any]) -> list[str]:
    """The forms taalm has always accepted, in jsonargparse's: ``--lora-r`` as ``--lora_r``, a bare boolean flag as
    ``true``, a comma- or space-separated list as a JSON list."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        hint = options.get(name)
        is_list = typing.get_origin(hint) is list
        if eq:
            out.append(f"--{name}={_as_list([value], hint) if is_list and not value.startswith('[') else value}")
            continue
        values = []
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if hint is bool and not values:
            values = ["true"]
        elif is_list and values and not values[0].startswith("["):
            values = [_as_list(values, hint)]
        out += [f"--{name}", *values]
    return out


def _command_parser(cls: type, help_text: str, defaults: dict[str, Any]):
    from jsonargparse import ActionConfigFile, ArgumentParser

    presets = getattr(cls, "PRESETS", {})
    if presets:
        help_text += f"; --preset {' / '.join(presets)} (taalm/resources/presets/)"
    parser = ArgumentParser(description=help_text, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML file of option values (as --print_config writes); options after it win")
    parser.add_class_arguments(cls)
    required = set(getattr(cls, "REQUIRED", ())) - set(defaults)
    for action in parser._actions:  # argparse's list: the only way to mark an option added from a dataclass
        if action.dest in required:
            action.required = True
    parser.set_defaults(defaults)
    return parser


def build_parser(commands: dict[str, tuple[type, Any, str]], presets: dict[str, dict[str, Any]] | None = None):
    """The ``taalm`` parser: a subcommand per command (``bench`` holds the benchmarks), each with its dataclass's
    options; ``presets`` gives extra defaults per command (a preset's values)."""
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="taalm", description="Train-Attention (TAALM) and continual knowledge learning",
                            exit_on_error=False)
    parser.add_argument("--version", action="version", version=f"taalm {__version__}")
    sub = parser.add_subcommands()
    groups: dict[str, Any] = {}
    for name, (cls, _, help_text) in commands.items():
        defaults = {**(presets or {}).get(name, {}), **DEFAULTS.get(name, {})}
        command_parser = _command_parser(cls, help_text, defaults)
        if " " in name:  # "bench lama-ckl": a subcommand of a command group
            group, leaf = name.split(" ", 1)
            if group not in groups:
                leaves = [n.split(" ", 1)[1] for n in commands if n.startswith(group + " ")]
                groups[group] = ArgumentParser(description=f"run a benchmark ({', '.join(leaves)})",
                                               exit_on_error=False)
                sub.add_subcommand(group, groups[group], help=f"run a benchmark ({', '.join(leaves)})")
                groups[group] = groups[group].add_subcommands()
            groups[group].add_subcommand(leaf, command_parser, help=help_text)
        else:
            sub.add_subcommand(name, command_parser, help=help_text)
    return parser


def _command_name(argv: list[str], commands: dict[str, Any]) -> str | None:
    words = [a for a in argv if not a.startswith("-")][:2]
    if words and words[0] in commands:
        return words[0]
    return " ".join(words) if " ".join(words) in commands else None


def _given(argv: list[str], name: str) -> str | None:
    """The value of ``--name`` in ``argv`` (the last one given), if any."""
    found = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def _read_configs(argv: list[str], cls: type, command: str) -> tuple[list[str], dict[str, Any]]:
    """``argv`` with each ``--config FILE`` read here, so that its errors name the file and line and its keys may be
    spelled with dashes (handed on as the JSON that ``--config`` also takes); and the values of the preset named on the
    command line, else in a --config file, else the command's default."""
    name, out, i = None, [], 0
    options = {f.name for f in dataclasses.fields(cls)}
    while i < len(argv):
        arg, i = argv[i], i + 1
        path = argv[i] if arg == "--config" and i < len(argv) else arg[9:] if arg.startswith("--config=") else None
        if path is None:
            out.append(arg)
            continue
        i += arg == "--config"
        values = load_config_file(path)
        unknown = sorted(set(values) - options)
        if unknown:
            raise TaalmError(f"{path}: unknown option {unknown[0]!r}")
        values = {k: {str(n).replace("-", "_"): x for n, x in v.items()} if isinstance(v, dict) else v
                  for k, v in values.items()}
        name = values.get("preset") or name
        out.append("--config=" + json.dumps(values))
    name = _given(argv, "preset") or name or DEFAULTS.get(command, {}).get("preset")
    presets = getattr(cls, "PRESETS", {})
    if name and name not in presets:
        raise TaalmError(f"option --preset: {name!r} is not one of {', '.join(presets)}")
    return out, presets.get(name, {}) if name else {}


def _one_line(message: str, options: dict[str, Any]) -> str:
    """jsonargparse's error as one line that names the option as taalm's own errors do."""
    message = " ".join(message.split())
    match = re.match(r'Parser key "([^"]+)": (.*)', message)
    if not match:
        return message
    key, rest = match.groups()
    got = re.search(r"(?:Got value|Given value): (.*?)(?: - |$)", rest)
    hint = options.get(key)
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    allowed = [v for m in members if typing.get_origin(m) is typing.Literal for v in typing.get_args(m)]
    if allowed and got:
        return f"option --{key}: {got.group(1)!r} is not one of {', '.join(map(str, allowed))}"
    expected = re.match(r"Expected an? (?:<class '(\w+)'>|(\S+?))\.? Got value: (.*)", rest)
    if expected:
        return f"option --{key}: expected {expected.group(1) or expected.group(2)}, got {expected.group(3)!r}"
    return f"option --{key}: {rest}"


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar on every θ and φ load
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()  # ...which also turned off the Hub's: a model download shows its progress


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import ArgumentError

    commands = _commands(argv)
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="taalm: warning: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter, not the user's concern
    name = _command_name(args, commands)
    options = _fields(commands[name][0]) if name else {}
    try:
        args, preset = _read_configs(args, commands[name][0], name) if name else (args, {})
        parser = build_parser(commands, {name: preset} if name else None)
        try:
            parsed = parser.parse_args(normalize(args, options))
        except ArgumentError as e:
            print(f"taalm: error: {_one_line(str(e), options)}", file=sys.stderr)
            return 2
        for word in name.split(" "):
            parsed = parsed[word]
        values = {k: v for k, v in parsed.as_dict().items() if k != "config" and not k.startswith("__")}
        cls, run, _ = commands[name]
        cfg = build_config(cls, values, source="command line")
        _quiet_libraries()
        run(cfg)
    except TaalmError as e:
        print(f"taalm: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taalm: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    return 0
