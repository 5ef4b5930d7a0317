"""φ in the Hugging Face format: save_pretrained / from_pretrained / push_to_hub, the model card, the backbone's Hub
id, the storage dtype recorded truly, Hub ids for --phi (a mocked download), old φ directories, the shipped φs.

python -m pytest -q tests/test_hub_format.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import FACT_PAIRS
from taalm import models, weighting
from taalm.errors import TaalmError
from taalm.weighting import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    CARD_FILE,
    CONFIG_FILE,
    HEAD_FILE,
    TrainAttention,
    is_train_attention_dir,
    resolve_phi,
    shipped_phis,
)

TEXTS = ["Santiago is the capital of Chile .", "Marie Curie was born in Warsaw and worked in Paris ."]
HUB_FILES = {CONFIG_FILE, ADAPTER_CONFIG_FILE, ADAPTER_FILE, HEAD_FILE, CARD_FILE}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like_phi(tiny_model: str, backbone_name: str | None = None) -> TrainAttention:
    """A tiny φ moved away from its init (LoRA B = 0, near-constant head), so round trips cannot pass trivially."""
    torch.manual_seed(0)
    phi = TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0, attn_implementation="eager")
    if backbone_name:  # the same network, named as another model (e.g. an alias) would be
        phi.backbone_name = backbone_name
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in phi.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * (0.3 if "lora_" in name else 0.5))
    return phi.eval()


def weights_of(phi: TrainAttention, tiny_model: str) -> torch.Tensor:
    from taalm.data import encode, pad_batch

    tokenizer = models.load_tokenizer(tiny_model)
    batch = pad_batch([encode(tokenizer, t, 64) for t in TEXTS], tokenizer.pad_token_id)
    with torch.no_grad():
        return phi.eval()(batch["input_ids"], batch["attention_mask"])


def test_save_pretrained_writes_peft_files_a_config_and_a_card_and_loads_back(tiny_model, tmp_path):
    phi = trained_like_phi(tiny_model)
    phi.save_pretrained(tmp_path / "phi")
    assert {p.name for p in (tmp_path / "phi").iterdir()} == HUB_FILES
    config = json.loads((tmp_path / "phi" / CONFIG_FILE).read_text())
    assert config["format"] == "taalm-train-attention/2" and config["backbone"] == tiny_model
    assert config["base_model"] is None and config["storage_dtype"] == "float32"  # a local directory has no Hub id

    from peft import LoraConfig

    lora = LoraConfig.from_pretrained(str(tmp_path / "phi"))  # peft reads the adapter config as its own
    assert (lora.r, lora.lora_alpha, lora.base_model_name_or_path) == (4, 8, tiny_model)
    assert set(load_file(str(tmp_path / "phi" / ADAPTER_FILE))) == {
        k.replace(".default", "") for k, p in phi.backbone.named_parameters() if p.requires_grad}

    torch.manual_seed(123)  # the loaded values must come from the files, not the RNG
    loaded = TrainAttention.from_pretrained(tmp_path / "phi", attn_implementation="eager")
    for name, value in phi.trainable_state().items():
        assert torch.equal(value, loaded.trainable_state()[name]), name
    assert torch.equal(weights_of(phi, tiny_model), weights_of(loaded, tiny_model))
    assert loaded.card == (tmp_path / "phi" / CARD_FILE).read_text()
    assert TrainAttention.load(tmp_path / "phi").backbone_name == tiny_model  # the older name still works


def test_bf16_storage_is_recorded_as_such_and_kept_on_a_resave(tiny_model, tmp_path):
    phi = trained_like_phi(tiny_model)
    phi.save_pretrained(tmp_path / "bf16", storage_dtype=torch.bfloat16)
    config = json.loads((tmp_path / "bf16" / CONFIG_FILE).read_text())
    assert config["storage_dtype"] == "bfloat16"
    for name in (ADAPTER_FILE, HEAD_FILE):
        assert {v.dtype for v in load_file(str(tmp_path / "bf16" / name)).values()} == {torch.bfloat16}

    loaded = TrainAttention.from_pretrained(tmp_path / "bf16")
    assert loaded.head.weight.dtype == torch.float32  # cast back to the model's dtype
    assert torch.equal(loaded.head.weight, phi.head.weight.to(torch.bfloat16).float())
    assert not torch.equal(loaded.head.weight, phi.head.weight)  # bf16 did round
    loaded.save_pretrained(tmp_path / "again")  # a loaded bf16 φ stays bf16, with its card
    assert json.loads((tmp_path / "again" / CONFIG_FILE).read_text())["storage_dtype"] == "bfloat16"
    assert (tmp_path / "again" / ADAPTER_FILE).read_bytes() == (tmp_path / "bf16" / ADAPTER_FILE).read_bytes()
    assert (tmp_path / "again" / CARD_FILE).read_text() == (tmp_path / "bf16" / CARD_FILE).read_text()


def test_an_alias_backbone_is_recorded_by_its_hub_id(tiny_model, tmp_path):
    phi = trained_like_phi(tiny_model, backbone_name="smollm2-135m")
    phi.save_pretrained(tmp_path / "phi")
    config = json.loads((tmp_path / "phi" / CONFIG_FILE).read_text())
    assert config["backbone"] == "smollm2-135m"  # what taalm loads (the dequantized GGUF) ...
    assert config["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # ... and what it was made from
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in config["backbone_note"]
    adapter = json.loads((tmp_path / "phi" / ADAPTER_CONFIG_FILE).read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    front = yaml.safe_load((tmp_path / "phi" / CARD_FILE).read_text().split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["library_name"] == "taalm"
    assert models.hub_id("gemma3-270m") == "google/gemma-3-270m"
    assert models.hub_id(tiny_model) is None and models.hub_id("someone/model") == "someone/model"


def write_legacy(phi: TrainAttention, directory: Path) -> None:
    """Format 1 exactly as taalm wrote it before the Hub format: three custom files."""
    from peft import get_peft_model_state_dict

    directory.mkdir(parents=True)
    save_file({k: v.detach().to(torch.bfloat16).contiguous() for k, v in get_peft_model_state_dict(phi.backbone).items()},
              str(directory / "phi_adapter.safetensors"))
    save_file({k: v.detach().to(torch.bfloat16) for k, v in phi.head.state_dict().items()},
              str(directory / "phi_head.safetensors"))
    (directory / "phi_config.json").write_text(json.dumps({
        "format": "taalm-train-attention/1", "backbone": phi.backbone_name, "num_layers": 0, "lora": phi.lora,
        "weight_floor": 0.0, "dtype": "torch.float32"}))


def test_an_old_phi_directory_still_loads_and_resaves_in_the_hub_format(tiny_model, tmp_path):
    phi = trained_like_phi(tiny_model)
    write_legacy(phi, tmp_path / "old")
    assert is_train_attention_dir(tmp_path / "old") and resolve_phi(tmp_path / "old") == tmp_path / "old"
    old = TrainAttention.from_pretrained(tmp_path / "old", attn_implementation="eager")
    assert old.storage_dtype == torch.bfloat16 and old.card is None
    rounded = trained_like_phi(tiny_model)  # the same φ with its trained tensors rounded to bf16, as stored
    with torch.no_grad():
        for p in rounded.parameters():
            if p.requires_grad:
                p.copy_(p.to(torch.bfloat16).float())
    expected = weights_of(rounded, tiny_model)
    assert torch.equal(weights_of(old, tiny_model), expected)
    assert float((expected - expected.mean()).abs().max()) > 0.05  # a φ whose weights vary, not a constant
    old.save_pretrained(tmp_path / "new")
    assert {p.name for p in (tmp_path / "new").iterdir()} == HUB_FILES
    assert json.loads((tmp_path / "new" / CONFIG_FILE).read_text())["storage_dtype"] == "bfloat16"
    assert torch.equal(weights_of(TrainAttention.from_pretrained(tmp_path / "new", attn_implementation="eager"), tiny_model),
                       weights_of(old, tiny_model))


def test_a_model_directory_is_not_taken_for_a_phi(tiny_model):
    assert (Path(tiny_model) / "config.json").is_file() and not is_train_attention_dir(tiny_model)
    with pytest.raises(TaalmError, match="option --phi: .* is not a trained φ directory"):
        resolve_phi(tiny_model)


def test_phi_from_a_hub_id_through_a_mocked_download(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub

    trained_like_phi(tiny_model).save_pretrained(tmp_path / "snapshot")
    calls = []

    def download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if repo_id == "someone/missing":
            raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub\nsecond line")
        return str(tmp_path / ("snapshot" if repo_id == "someone/phi" else "."))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    phi = TrainAttention.from_pretrained("someone/phi", attn_implementation="eager", revision="v1")
    assert calls[-1] == ("someone/phi", {"revision": "v1"})
    assert torch.equal(weights_of(phi, tiny_model), weights_of(trained_like_phi(tiny_model), tiny_model))
    assert resolve_phi("someone/phi") == tmp_path / "snapshot"  # what --phi someone/phi resolves to
    with pytest.raises(TaalmError, match=r"^option --phi: someone/missing is not .* Hub repository that could be "
                                         r"downloaded \(cannot reach the Hub\)$"):
        resolve_phi("someone/missing")
    with pytest.raises(TaalmError, match="the Hub repository someone/other is not a trained φ"):
        resolve_phi("someone/other")


def test_push_to_hub_uploads_what_save_pretrained_writes(tiny_model, monkeypatch):
    from huggingface_hub import hub_mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()}, repo=repo_id)
            return f"https://hub.example/{repo_id}/commit/1"

    monkeypatch.setattr(hub_mixin, "HfApi", FakeApi)
    phi = trained_like_phi(tiny_model)
    phi.storage_dtype = torch.bfloat16
    assert phi.push_to_hub("someone/phi") == "https://hub.example/someone/phi/commit/1"
    assert uploaded.pop("repo") == "someone/phi" and set(uploaded) == HUB_FILES
    assert json.loads(uploaded[CONFIG_FILE])["storage_dtype"] == "bfloat16"


def test_meta_train_writes_a_model_card_from_its_records(tiny_model, tmp_path):
    from taalm.config import MetaTrainConfig
    from taalm.meta_train import meta_train

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in FACT_PAIRS))
    out = meta_train(MetaTrainConfig(theta=tiny_model, pairs=str(pairs), out=str(tmp_path / "phi"), updates=2,
                                     meta_batch=2, lora_r=4, lora_alpha=8, max_length=64, held_out=1, val_every=1,
                                     val_epochs=1, val_batch_size=1, outer_lr=3e-3, device="cpu", seed=1))
    card = (out / CARD_FILE).read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "taalm" and "train-attention" in front["tags"]
    selection = json.loads((out / "selection.json").read_text())
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    chosen = next(h for h in history if h["update"] == selection["update"])
    assert f"| **{chosen['update']}** | **{chosen['val_accuracy']:.3f} / {chosen['uniform_accuracy']:.3f}** |" in card
    assert sum(line.startswith("| ") and line[2].isdigit() or line.startswith("| **") for line in
               card.splitlines()) == 3  # one row per validation: updates 0, 1, 2
    assert f"taalm meta-train --theta {tiny_model}" in card and f"--pairs {pairs}" in card and "--updates 2" in card
    assert f"{len(FACT_PAIRS)} (4 for training, 1 held out for validation" in card
    assert TrainAttention.from_pretrained(out).card == card  # kept with φ: a push carries it


def test_export_phi_writes_the_shipped_format_and_measures_what_bf16_changed(tiny_model, tmp_path, capsys):
    from taalm.cli import main
    from taalm.config import MetaTrainConfig
    from taalm.meta_train import meta_train

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in FACT_PAIRS))
    run = meta_train(MetaTrainConfig(theta=tiny_model, pairs=str(pairs), out=str(tmp_path / "run"), updates=1,
                                     meta_batch=2, lora_r=4, lora_alpha=8, max_length=64, held_out=2, val_every=1,
                                     val_epochs=1, val_batch_size=1, outer_lr=3e-2, device="cpu", seed=1))
    records = tmp_path / "records"  # what results/ keeps of a run: its records, not φ
    records.mkdir()
    for name in ("config.yaml", "data.json", "selection.json", "history.jsonl"):
        shutil.copy(run / name, records / name)
    capsys.readouterr()
    assert main(["export-phi", "--phi", str(run), "--out", str(tmp_path / "shipped"), "--records", str(records)]) == 0
    report = json.loads(capsys.readouterr().out)
    shipped = tmp_path / "shipped"
    assert {p.name for p in shipped.iterdir()} == HUB_FILES
    assert json.loads((shipped / CONFIG_FILE).read_text())["storage_dtype"] == report["storage_dtype"] == "bfloat16"
    card = (shipped / CARD_FILE).read_text()
    assert f"Records: {records}." in card and "## Validation" in card and "--updates 1" in card
    assert report["documents"] == 2  # the run's held-out documents
    assert 0 < report["max_abs_weight_change"] < 0.05  # bf16 rounds, but keeps φ's weights
    assert report["bytes"] == sum(p.stat().st_size for p in shipped.iterdir())


def test_the_gguf_extra_is_named_when_missing(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("TAALM_CACHE", str(tmp_path))  # the alias is not converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(TaalmError, match=r"^model 'smollm2-135m' is a GGUF alias: .*pip install 'taalm\[gguf\]'"):
        models.resolve("smollm2-135m")


@pytest.mark.parametrize("alias", shipped_phis())
def test_every_shipped_phi_is_in_the_hub_format_with_a_card_and_its_true_storage_dtype(alias):
    directory = weighting.SHIPPED_DIR / alias
    assert {p.name for p in directory.iterdir()} == HUB_FILES
    config = json.loads((directory / CONFIG_FILE).read_text())
    stored = {str(v.dtype).removeprefix("torch.") for name in (ADAPTER_FILE, HEAD_FILE)
              for v in load_file(str(directory / name)).values()}
    assert stored == {config["storage_dtype"]} == {"bfloat16"}
    assert config["base_model"] == models.hub_id(config["backbone"]) and config["base_model"].count("/") == 1
    card = (directory / CARD_FILE).read_text()
    assert yaml.safe_load(card.split("---")[1])["base_model"] == config["base_model"]
    for section in ("## θ and data", "## Settings", "## Validation", "## Command", "taalm meta-train --theta"):
        assert section in card, section
    assert f"--phi {alias} " in card and "| **" in card  # the usage names the alias; the chosen update is marked
    adapter = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
    assert adapter["base_model_name_or_path"] == config["base_model"] and adapter["r"] == config["lora"]["r"]


def test_shipped_phi_copies_resolve_by_alias(tmp_path, monkeypatch, tiny_model):
    shipped = tmp_path / "shipped"
    trained_like_phi(tiny_model).save_pretrained(shipped / "tiny-phi")
    shutil.copytree(shipped / "tiny-phi", shipped / "not-a-phi")
    (shipped / "not-a-phi" / CONFIG_FILE).write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setattr(weighting, "SHIPPED_DIR", shipped)
    assert shipped_phis() == ["tiny-phi"] and resolve_phi("tiny-phi") == shipped / "tiny-phi"


def test_a_card_names_the_kinds_of_documents_of_a_mixture():
    from taalm.model_card import phi_card
    from taalm.weighting import resolve_phi

    phi = json.loads((resolve_phi("smollm2-135m") / CONFIG_FILE).read_text())
    mixture = {"counts": {"lama": 3, "fictional": 5}, "rules": {"lama": "pool rows", "fictional": "generated facts"}}
    card = phi_card(phi, {"config": {"theta": "smollm2-135m", "pairs": "pairs.jsonl"}, "mixture": mixture}, name="x")
    assert "- kinds of documents (`taalm phi-data`):\n  - lama: 3 pairs; pool rows\n  - fictional: 5 pairs; " \
           "generated facts\n" in card
    assert "kinds of documents" not in phi_card(phi, {"config": {"theta": "smollm2-135m", "pairs": "p.jsonl"}})


def test_a_card_lists_only_the_settings_that_were_set():
    from taalm.model_card import phi_card
    from taalm.weighting import resolve_phi

    phi = json.loads((resolve_phi("smollm2-135m") / CONFIG_FILE).read_text())
    config = {"theta": "smollm2-135m", "pairs": "p.jsonl", "val_lr_by_kind": {}, "val_lr": 3e-3, "dummy_steps": 0}
    card = phi_card(phi, {"config": config}, name="x")
    assert "| val_lr | 0.003 |" in card and "| dummy_steps | 0 |" in card  # a 0 is a setting, not an absence
    assert "val_lr_by_kind" not in card
    assert "val_lr_by_kind" in phi_card(phi, {"config": {**config, "val_lr_by_kind": {"lama": 1e-3}}}, name="x")
