"""Data parallelism on CPU (gloo): two processes under `accelerate launch` give the same run as one process.

python -m pytest -q tests/test_distributed.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FACT_ANSWERS, FACT_DOCS
from taalm.ckl import learn
from taalm.config import LearnConfig, MetaTrainConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")]

DOCS, ANSWERS = FACT_DOCS[:5], FACT_ANSWERS[:5]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def phi_for_tiny(tiny_model, tmp_path_factory) -> str:
    """An untrained φ for the tiny model whose weights vary over tokens."""
    from taalm.weighting import TrainAttention

    directory = tmp_path_factory.mktemp("phi")
    torch.manual_seed(0)
    phi = TrainAttention.create(tiny_model, r=4)
    with torch.no_grad():
        torch.nn.init.normal_(phi.head.weight, std=0.5)
    phi.save(directory)
    return str(directory)


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``accelerate launch --num_processes 2 --cpu`` of ``args``, one torch thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(HERE)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--cpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", *args]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("method", ["taalm+mixreview", "rho1"])
def test_learn_on_two_processes_matches_one(method, tiny_model, tmp_path, phi_for_tiny):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": t, "answer": a} for t, a in zip(DOCS, ANSWERS)])
    probes = write_jsonl(tmp_path / "probes.jsonl", [{"task": t.split(" and")[0].split(" near")[0], "answer": a}
                                                     for t, a in zip(DOCS, ANSWERS) if a in t.split(" and")[0]])
    options = {"model": tiny_model, "docs": docs, "method": method, "phi": phi_for_tiny, "review_docs": docs,
               "probes": [f"to_learn={probes}"], "epochs": 2, "lr": 1e-2, "lora_r": 4, "lora_dropout": 0.0,
               "batch_size": 5, "micro_batch": 2, "eval_batch": 2, "seed": 0, "device": "cpu", "review_ratio": 0.4}
    one = learn(LearnConfig(**options, out=str(tmp_path / "one")))
    argv = ["-m", "taalm", "learn"] + [x for k, v in options.items() for x in
                                       ([f"--{k.replace('_', '-')}", *v] if isinstance(v, list) else
                                        [f"--{k.replace('_', '-')}", str(v)])] + ["--out", str(tmp_path / "two")]
    done = launch(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(two) == len(one.metrics)
    for a, b in zip(one.metrics, two):
        assert (a["epoch"], a["probe"]) == (b["epoch"], b["probe"])
        for key in ("accuracy", "nll", "perplexity"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
        if a["train_loss"] is not None:
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    x = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    y = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    assert x.keys() == y.keys() and all(torch.allclose(x[k], y[k], atol=1e-5) for k in x)
    print(f"\n{method}: adapter max |one - two| = {max(float((x[k] - y[k]).abs().max()) for k in x):.2e}")
    assert any(float(v.abs().max()) > 0 for k, v in x.items() if "lora_B" in k)  # the run did learn
    # only the main process wrote: one metrics line per epoch and probe set, one DONE
    assert (tmp_path / "two" / "DONE").is_file() and not list((tmp_path / "two").glob(".*.tmp"))


def test_one_meta_update_on_two_processes_gives_the_same_phi_gradient(tiny_model, tmp_path):
    from phi_gradient import gradient  # tests/phi_gradient.py: also the script each launched process runs

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"document": t, "task": t, "answer": a} for t, a in
                                                   zip(DOCS, ANSWERS)])
    cfg = MetaTrainConfig(theta=tiny_model, pairs=pairs, out=str(tmp_path / "phi"), meta_batch=4, lora_r=4,
                          lora_alpha=8, lora_dropout=0.0, inner_lr=1e-2, held_out=0, device="cpu", seed=0)
    from taalm.distributed import Processes

    single = gradient(cfg, Processes.single())
    done = launch([str(HERE / "phi_gradient.py"), json.dumps(vars(cfg)), str(tmp_path / "two.pt")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt")
    assert single.keys() == two.keys() and len(single) > 2
    assert all(torch.allclose(single[k], two[k], rtol=1e-4, atol=1e-9) for k in single)
    print("\nφ gradient max relative |one - two| =",
          f"{max(float((single[k] - two[k]).norm() / single[k].norm().clamp_min(1e-30)) for k in single):.2e}")
    assert float(single["head.weight"].abs().max()) > 0
