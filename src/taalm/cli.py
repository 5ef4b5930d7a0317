"""The ``taalm`` command: one typed config per subcommand (see ``taalm.config``), the same functions as the API.

User errors print one line (``taalm: pairs.jsonl:17: missing field 'task'``) and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from taalm import __version__
from taalm.config import add_arguments, config_from_args
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

    def demo(cfg):
        from taalm.demo import run_demo

        run_demo(cfg, command=invocation())

    def export(cfg):
        from taalm.export import export_merged

        print(f"merged model, tokenizer and model card written to {export_merged(cfg)}")

    def export_phi(cfg):
        from taalm.export import export_phi as run

        print(json.dumps(run(cfg), indent=2))

    from taalm.bench import config as bench

    return {
        "tailor": (bench.TailorConfig, tailor, "select the LAMA-ckl sets that fit a model"),
        "bench lama-ckl": (bench.LamaCklConfig, bench_lama_ckl,
                           "LAMA-ckl with every method: the paper's table, curves and a summary"),
        "bench temporalwiki": (bench.TemporalWikiConfig, bench_temporalwiki,
                               "TemporalWiki: three periods in sequence with every method; changed/unchanged NLL"),
        "bench fictional": (bench.FictionalConfig, bench_fictional,
                            "facts about generated fictional entities: To-Learn accuracy per epoch, known facts as NF"),
        "demo": (bench.FictionalConfig, demo, "TAALM on fictional facts with the shipped φ and the quick preset (CPU)"),
        "learn": (config.LearnConfig, learn, "make θ learn a document set with one CKL method"),
        "meta-train": (config.MetaTrainConfig, meta_train, "meta-train a Train-Attention model φ for a base model θ"),
        "weights": (config.WeightsConfig, weights, "show φ's token weights (terminal, HTML heatmap, PNG)"),
        "export": (config.ExportConfig, export, "merge a learned adapter into θ: a plain transformers model directory"),
        "export-phi": (config.ExportPhiConfig, export_phi, "re-save a trained φ in the Hub format with its model card"),
    }


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    commands = _commands(argv)
    parser = argparse.ArgumentParser(prog="taalm", description="Train-Attention (TAALM) and continual knowledge learning")
    parser.add_argument("--version", action="version", version=f"taalm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, Any] = {}
    for name, (cls, _, help_text) in commands.items():
        if " " in name:  # "bench lama-ckl": a subcommand of a command group
            group, leaf = name.split(" ", 1)
            if group not in groups:
                leaves = [n.split(" ", 1)[1] for n in commands if n.startswith(group + " ")]
                groups[group] = sub.add_parser(group, help=f"run a benchmark ({', '.join(leaves)})") \
                    .add_subparsers(dest="benchmark", required=True)
            command_parser = groups[group].add_parser(leaf, help=help_text, description=help_text)
        else:
            command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command_parser, cls)
    args = parser.parse_args(argv)
    if args.command == "demo":  # the demo is the quick preset unless told otherwise
        for key, default in (("preset", "quick"), ("out", "demo-out")):
            if not hasattr(args, key):
                setattr(args, key, default)
    logging.basicConfig(level=logging.WARNING, format="taalm: warning: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter, not the user's concern
    cls, run, _ = commands[f"{args.command} {args.benchmark}" if args.command in groups else args.command]
    try:
        cfg = config_from_args(cls, args)
        _quiet_libraries()
        run(cfg)
    except TaalmError as e:
        print(f"taalm: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taalm: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    return 0
