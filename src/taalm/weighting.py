"""Train-Attention φ: a causal LM backbone (with its own LoRA) whose LM head is replaced by a scalar head.

    w = sigmoid(head(φ_backbone(D)))[:, 1:]

Position j of ``w`` weighs the loss of predicting token j+1 (the hidden state *at* token j+1 scores that token), so
``w`` has the ``[batch, seq-1]`` shape of the per-token loss. The head starts at weight ~ N(0, 1e-3), bias 4, so every
token starts near sigmoid(4) ≈ 0.98, i.e. φ starts as plain fine-tuning.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from taalm import models
from taalm.errors import TaalmError
from taalm.io import atomic_write_json

CONFIG_FILE = "phi_config.json"
ADAPTER_FILE = "phi_adapter.safetensors"
HEAD_FILE = "phi_head.safetensors"
HEAD_INIT_STD = 1e-3
HEAD_INIT_BIAS = 4.0


class TrainAttention(nn.Module):
    def __init__(self, backbone: nn.Module, backbone_name: str, lora: dict[str, float], num_layers: int = 0,
                 weight_floor: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.weight_floor = weight_floor
        self.num_layers = num_layers
        self.lora = dict(lora)
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=next(backbone.parameters()).dtype)
        nn.init.normal_(self.head.weight, mean=0.0, std=HEAD_INIT_STD)
        nn.init.constant_(self.head.bias, HEAD_INIT_BIAS)

    @classmethod
    def create(cls, backbone_name: str, r: int = 64, alpha: int = 16, dropout: float = 0.1, dtype: str = "auto",
               attn_implementation: str = "auto", num_layers: int = 0, weight_floor: float = 0.0) -> TrainAttention:
        backbone = models.load_backbone(backbone_name, dtype=dtype, attn_implementation=attn_implementation,
                                        num_layers=num_layers)
        backbone = models.add_lora(backbone, r=r, alpha=alpha, dropout=dropout)
        return cls(backbone, backbone_name, {"r": r, "alpha": alpha, "dropout": dropout}, num_layers, weight_floor)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)[:, 1:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token weights in (0, 1), ``[batch, seq-1]``, aligned to predicted tokens. With a weight floor f (not in
        the paper; 0 by default) the weights are f + (1 - f)·sigmoid, which bounds their contrast by 1/f."""
        weights = torch.sigmoid(self.logits(input_ids, attention_mask))
        return weights if not self.weight_floor else self.weight_floor + (1 - self.weight_floor) * weights

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The parameters meta-training changes: φ's LoRA and its head."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def save(self, directory: str | Path, storage_dtype: torch.dtype | None = None) -> None:
        """A self-describing directory: the backbone's name, LoRA settings, LoRA weights and head (safetensors).
        ``storage_dtype`` (e.g. bfloat16) shrinks the files; loading casts back to the model's dtype."""
        from peft import get_peft_model_state_dict

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cast = lambda v: v.detach().cpu().to(storage_dtype or v.dtype).contiguous()
        adapter = {k: cast(v) for k, v in get_peft_model_state_dict(self.backbone).items()}
        save_file(adapter, str(directory / ADAPTER_FILE))
        save_file({k: cast(v) for k, v in self.head.state_dict().items()}, str(directory / HEAD_FILE))
        atomic_write_json(directory / CONFIG_FILE, {
            "format": "taalm-train-attention/1", "backbone": self.backbone_name, "num_layers": self.num_layers,
            "lora": self.lora, "weight_floor": self.weight_floor, "dtype": str(self.head.weight.dtype)})

    @classmethod
    def load(cls, directory: str | Path, dtype: str = "auto", attn_implementation: str = "auto") -> TrainAttention:
        from peft import set_peft_model_state_dict

        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise TaalmError(f"{directory}: not a Train-Attention directory (no {CONFIG_FILE})")
        config = json.loads(config_path.read_text())
        lora = config["lora"]
        phi = cls.create(config["backbone"], r=int(lora["r"]), alpha=int(lora["alpha"]), dropout=float(lora["dropout"]),
                         dtype=dtype, attn_implementation=attn_implementation,
                         num_layers=int(config.get("num_layers", 0)),
                         weight_floor=float(config.get("weight_floor", 0.0)))
        set_peft_model_state_dict(phi.backbone, {k: v.to(phi.head.weight.dtype) for k, v in
                                                 load_file(str(directory / ADAPTER_FILE)).items()})
        phi.head.load_state_dict({k: v.to(phi.head.weight.dtype) for k, v in load_file(str(directory / HEAD_FILE)).items()})
        return phi


@torch.no_grad()
def document_weights(phi: TrainAttention, token_ids: list[list[int]], batch_size: int = 8,
                     device: torch.device | None = None) -> list[list[float]]:
    """φ's weights for each tokenized document (length ``len(ids) - 1`` each), batched by length, φ in eval mode."""
    from taalm.data import Encoded, length_sorted_chunks, pad_batch

    device = device or next(phi.parameters()).device
    was_training = phi.training
    phi.eval()
    out: list[list[float]] = [[] for _ in token_ids]
    lengths = [len(ids) for ids in token_ids]
    for chunk in length_sorted_chunks(list(range(len(token_ids))), lengths, batch_size):
        batch = pad_batch([Encoded(token_ids[i]) for i in chunk], 0)
        weights = phi(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = weights[row, : lengths[i] - 1].tolist()
    phi.train(was_training)
    return out


def is_train_attention_dir(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


SHIPPED_DIR = Path(__file__).parent / "resources" / "phi"


def shipped_phis() -> list[str]:
    """Aliases of the trained φs that ship with taalm (``--phi ALIAS``), one per supported base model."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if is_train_attention_dir(p)) if SHIPPED_DIR.is_dir() else []


def resolve_phi(name: str | Path) -> Path:
    """The directory of a trained φ given as ``--phi``: a shipped alias or a directory written by meta-train.
    The user-facing check, done before any output is written."""
    if str(name) in shipped_phis():
        return SHIPPED_DIR / str(name)
    if is_train_attention_dir(name):
        return Path(name)
    shipped = f" or a shipped alias ({', '.join(shipped_phis())})" if shipped_phis() else ""
    raise TaalmError(f"option --phi: {name} is not a trained φ directory (no {CONFIG_FILE}){shipped}")


def weight_statistics(weights: list[torch.Tensor]) -> dict[str, float]:
    """How concentrated φ's weights are, averaged over documents: the mean raw weight, the share of each document's
    total weight on its 3 largest tokens, and the effective number of tokens exp(H(w / Σw)) (n when uniform, 1 when
    all weight is on one token), also as a fraction of the document's length."""
    stats = {"mean": 0.0, "top3_share": 0.0, "effective_tokens": 0.0, "effective_fraction": 0.0}
    for w in weights:
        w = w.double().clamp_min(0)
        p = w / w.sum().clamp_min(1e-300)
        entropy = -(p * p.clamp_min(1e-300).log()).sum()
        stats["mean"] += float(w.mean())
        stats["top3_share"] += float(p.topk(min(3, len(p))).values.sum())
        stats["effective_tokens"] += float(entropy.exp())
        stats["effective_fraction"] += float(entropy.exp()) / len(p)
    return {k: v / max(1, len(weights)) for k, v in stats.items()}
