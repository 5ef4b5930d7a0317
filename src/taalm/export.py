"""Hand out what taalm trained: a learned θ adapter merged into a plain model, and a φ in the Hub format.

    taalm export --run runs/taalm --out merged          # AutoModelForCausalLM.from_pretrained("merged") loads it
    taalm export-phi --phi runs/phi --out src/taalm/resources/phi/NAME --records results/phi/NAME

``export`` merges the LoRA (``merge_and_unload``) into θ as loaded by taalm (for an alias, the dequantized GGUF the
adapter was trained on) and saves the full model, θ's tokenizer and a model card. ``export-phi`` writes the shipped
format (``TrainAttention.save_pretrained``): tensors stored in bf16 by default, a card built from the meta-training
records, and how much the storage changed φ's weights on the run's held-out documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from taalm import models
from taalm.config import ExportConfig, ExportPhiConfig, load_config_file
from taalm.errors import TaalmError
from taalm.io import atomic_dir, atomic_write_text


def _empty_out(out: str) -> Path:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise TaalmError(f"option --out: {out} exists and is not an empty directory")
    return path


def export_merged(cfg: ExportConfig) -> Path:
    """The run's LoRA merged into θ's weights, saved with θ's tokenizer as a plain transformers model directory."""
    from peft import PeftModel

    from taalm.model_card import adapter_card

    run, out = Path(cfg.run), _empty_out(cfg.out)
    adapter = run / "adapter"
    if not adapter.is_dir():
        kind = "holds a K-Adapter (extra layers, not a weight update to merge)" if (run / "kadapter").is_dir() else \
            "has no adapter/ from a finished `taalm learn` run"
        raise TaalmError(f"option --run: {run} {kind}")
    settings = load_config_file(run / "config.yaml")
    name = str(settings.get("model", ""))
    base = models.load_causal_lm(name, dtype=cfg.dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
    if (adapter / "tokenizer_config.json").is_file():  # saved beside the adapter
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    else:  # a run from before tokenizers were saved with the adapter
        tokenizer = models.load_tokenizer(name)
    merged.config.use_cache = True  # taalm turns the KV cache off for training; a served model wants it
    with atomic_dir(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / "README.md", adapter_card(name, str(settings.get("method", "")), merged=True))
    return out


def export_phi(cfg: ExportPhiConfig) -> dict[str, Any]:
    """``cfg.phi`` re-saved in the Hub format with its model card; returns where, its size and, when the φ's
    directory holds its held-out documents, the largest change of a weight that the storage dtype made."""
    from taalm.model_card import phi_card, read_records
    from taalm.weighting import SHIPPED_DIR, TrainAttention, resolve_phi

    source_dir = resolve_phi(cfg.phi)
    out = Path(cfg.out)
    phi = TrainAttention.from_pretrained(source_dir)
    dtype = getattr(torch, cfg.storage_dtype)
    records_dir = Path(cfg.records) if cfg.records else source_dir
    name = out.name if out.resolve().parent == SHIPPED_DIR.resolve() else str(out)
    card = phi_card(phi.hub_config(dtype), read_records(records_dir), name=name, source=cfg.records)
    with atomic_dir(out) as tmp:
        phi.save_pretrained(tmp, storage_dtype=dtype, card=card)
    report: dict[str, Any] = {"dir": str(out), "bytes": sum(p.stat().st_size for p in out.iterdir()),
                              "storage_dtype": cfg.storage_dtype}
    held_out = source_dir / "held_out.jsonl"
    if held_out.is_file():
        report.update(_weight_change(phi, TrainAttention.from_pretrained(out), held_out))
    return report


def _weight_change(original, exported, held_out: Path) -> dict[str, Any]:
    from taalm.data import encode
    from taalm.io import read_jsonl
    from taalm.weighting import document_weights

    tokenizer = models.load_tokenizer(original.backbone_name)
    docs = [encode(tokenizer, r["document"], 512).input_ids for _, r in read_jsonl(held_out)]
    a, b = document_weights(original, docs), document_weights(exported, docs)
    pairs = [(x, y, max(u)) for u, v in zip(a, b) for x, y in zip(u, v)]
    return {"documents": len(docs), "max_abs_weight_change": max(abs(x - y) for x, y, _ in pairs),
            "max_change_relative_to_document_max": max(abs(x - y) / max(m, 1e-12) for x, y, m in pairs)}
