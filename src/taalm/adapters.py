"""θ's trainable part in ``taalm learn``: a fresh LoRA (or a K-Adapter beside the frozen base), continued from an
earlier run's adapter with ``--init_from``, and saved as a directory that loads on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from taalm import models
from taalm.config import LearnConfig
from taalm.errors import TaalmError
from taalm.io import atomic_dir, atomic_write_text
from taalm.methods import Method


def adapter_kind(method: Method) -> str:
    """The adapter's directory name in a run: ``kadapter`` or ``adapter`` (LoRA)."""
    return "kadapter" if method.kadapter else "adapter"


def build_model(cfg: LearnConfig, method: Method, device: torch.device) -> torch.nn.Module:
    """θ with fresh LoRA, or the frozen base with a K-Adapter; only the adapter is trainable."""
    base = models.load_causal_lm(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation,
                                 qlora=cfg.use_qlora())
    if cfg.gradient_checkpointing:  # recompute each layer's activations in the backward pass (non-reentrant)
        enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name before
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method.kadapter:
        from taalm.kadapter import KAdapterForCausalLM

        model = KAdapterForCausalLM(base)
    else:
        model = models.add_lora(base, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, qlora=cfg.use_qlora())
    return model.to(device)


def initial_adapter_dir(init_from: str, method: Method) -> Path:
    """The adapter directory of the run ``--init_from`` names; checked before any output is written."""
    kind = adapter_kind(method)
    path = Path(init_from) / kind
    if not path.is_dir():
        other = "a LoRA" if method.kadapter else "a K-Adapter"
        found = f" (it holds {other} adapter)" if (Path(init_from) / ("adapter" if method.kadapter else "kadapter")
                                                  ).is_dir() else ""
        raise TaalmError(f"option --init_from: {init_from} has no {kind}/ from a finished `taalm learn` run{found}")
    return path


def load_initial_adapter(model: torch.nn.Module, method: Method, path: Path, cfg: LearnConfig) -> None:
    """Continue from an earlier run's adapter: same adapter kind and LoRA settings, loaded into the fresh model."""
    if method.kadapter:
        model.load_adapter(path)
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((path / "adapter_config.json").read_text())
    for key, value in (("r", cfg.lora_r), ("lora_alpha", cfg.lora_alpha)):
        if saved.get(key) != value:
            raise TaalmError(f"option --init_from: {path} has {key} {saved.get(key)}, this run {value}")
    result = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise TaalmError(f"option --init_from: {path} does not fit this model (e.g. {result.unexpected_keys[0]})")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that learn (the adapter's): what a checkpoint keeps of the model."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: torch.nn.Module, method: Method, out: Path, tokenizer=None) -> Path:
    """LoRA as a peft adapter directory that loads on any machine (``PeftModel.from_pretrained``): its config and
    card name θ's Hub id (an alias's source model, not its local cache); or the K-Adapter's safetensors. θ's
    tokenizer (default: loaded from θ's directory) is saved beside either."""
    from taalm.model_card import adapter_card

    target = out / adapter_kind(method)
    base = model.base if method.kadapter else model.get_base_model()
    local = base.name_or_path
    with atomic_dir(target) as tmp:
        if method.kadapter:
            model.save_adapter(tmp)
        else:
            config = model.peft_config[model.active_adapter]
            named = config.base_model_name_or_path
            config.base_model_name_or_path = models.hub_id(local) or local
            try:  # LoRA never touches the embeddings: peft need not look the base model up on the Hub
                model.save_pretrained(str(tmp), save_embedding_layers=False)
            finally:
                config.base_model_name_or_path = named
            atomic_write_text(tmp / "README.md", adapter_card(local, method.name))
        (tokenizer or models.load_tokenizer(local)).save_pretrained(str(tmp))
    return target
