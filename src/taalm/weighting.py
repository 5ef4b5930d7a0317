"""Train-Attention φ: a causal LM backbone (with its own LoRA) whose LM head is replaced by a scalar head.

    w = sigmoid(head(φ_backbone(D)))[:, 1:]

Position j of ``w`` weighs the loss of predicting token j+1 (the hidden state *at* token j+1 scores that token), so
``w`` has the ``[batch, seq-1]`` shape of the per-token loss. Not in the paper, an ``echo`` φ reads the document twice
and scores each token at its second reading (``echo_inputs``), so that its weight can depend on the words after it.
The head starts at weight ~ N(0, 1e-3), bias 4, so every token starts near sigmoid(4) ≈ 0.98, i.e. φ starts as plain
fine-tuning.

A φ directory (or Hub repository) holds ``config.json`` (backbone, its Hub id, settings, storage dtype), peft's
``adapter_config.json`` + ``adapter_model.safetensors`` for the backbone's LoRA, ``head.safetensors`` and a model card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from taalm import models
from taalm.errors import TaalmError
from taalm.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from taalm.model_card import PAPER_URL, TAGS, phi_card

# The Hub format (format 2): config.json, peft's adapter files for the backbone's LoRA, the head, a model card.
FORMAT = "taalm-train-attention/2"
CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
HEAD_FILE = "head.safetensors"
CARD_FILE = "README.md"
# Format 1, still loaded: three custom files.
LEGACY_CONFIG_FILE, LEGACY_ADAPTER_FILE, LEGACY_HEAD_FILE = ("phi_config.json", "phi_adapter.safetensors",
                                                             "phi_head.safetensors")
HEAD_INIT_STD = 1e-3
HEAD_INIT_BIAS = 4.0


class TrainAttention(nn.Module, PyTorchModelHubMixin, library_name="taalm", tags=list(TAGS), paper_url=PAPER_URL):
    """φ. ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` (``huggingface_hub``'s mixin) write and read a
    directory or Hub repository of φ's config, its LoRA as peft adapter files, its head and a model card."""

    def __init__(self, backbone: nn.Module, backbone_name: str, lora: dict[str, float], num_layers: int = 0,
                 weight_floor: float = 0.0, weight_temperature: float = 1.0, weight_floor_share: float = 0.0,
                 echo: bool = False):
        super().__init__()
        self.echo = echo
        self.backbone = backbone
        self.backbone_name = backbone_name
        self.weight_floor = weight_floor
        self.weight_temperature = weight_temperature
        self.weight_floor_share = weight_floor_share
        self.num_layers = num_layers
        self.lora = dict(lora)
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1, dtype=next(backbone.parameters()).dtype)
        nn.init.normal_(self.head.weight, mean=0.0, std=HEAD_INIT_STD)
        nn.init.constant_(self.head.bias, HEAD_INIT_BIAS)
        self.storage_dtype: torch.dtype | None = None  # of the saved tensors (None: the model's); kept from a load
        self.card: str | None = None  # the README.md saved with φ (None: one built from its config); kept from a load

    @classmethod
    def create(cls, backbone_name: str, r: int = 64, alpha: int = 16, dropout: float = 0.1, dtype: str = "auto",
               attn_implementation: str = "auto", num_layers: int = 0, weight_floor: float = 0.0,
               weight_temperature: float = 1.0, weight_floor_share: float = 0.0, echo: bool = False) -> TrainAttention:
        backbone = models.load_backbone(backbone_name, dtype=dtype, attn_implementation=attn_implementation,
                                        num_layers=num_layers)
        backbone = models.add_lora(backbone, r=r, alpha=alpha, dropout=dropout)
        return cls(backbone, backbone_name, {"r": r, "alpha": alpha, "dropout": dropout}, num_layers, weight_floor,
                   weight_temperature, weight_floor_share, echo)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.echo:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            twice, twice_mask, second = echo_inputs(input_ids, attention_mask)
            hidden = self.backbone(input_ids=twice, attention_mask=twice_mask).last_hidden_state
            hidden = hidden.gather(1, second[..., None].expand(-1, -1, hidden.size(-1)))
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)[:, 1:]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token weights in (0, 1), ``[batch, seq-1]``, aligned to predicted tokens. Two settings not in the paper,
        neither changing the order of the weights: a temperature T (1 by default) gives sigmoid(logit / T), sharper
        below 1 (the weighted loss is normalised, so only ratios of weights matter, and well below 1 the weights are
        ≈ exp(logit / T): their ratios are raised to the power 1/T); a weight floor f (0 by default) gives
        f + (1 - f)·that, which bounds their contrast by 1/f; a floor share a (0 by default) sets f per document so
        that the floor carries the share a of the document's total weight (``floor_for_share``)."""
        weights = torch.sigmoid(self.logits(input_ids, attention_mask) / self.weight_temperature)
        if self.weight_floor_share:
            mask = torch.ones_like(weights) if attention_mask is None else attention_mask[:, 1:].to(weights.dtype)
            floor = floor_for_share(weights, mask, self.weight_floor_share)
            return floor + (1 - floor) * weights
        return weights if not self.weight_floor else self.weight_floor + (1 - self.weight_floor) * weights

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The parameters meta-training changes: φ's LoRA and its head."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def hub_config(self, storage_dtype: torch.dtype) -> dict[str, Any]:
        """``config.json``: the backbone as taalm loads it (an alias, a directory or a Hub id), its Hub id where one
        exists, what an alias's weights are, φ's settings and the dtype its tensors are stored in."""
        return {"format": FORMAT, "backbone": self.backbone_name, "base_model": models.hub_id(self.backbone_name),
                "backbone_note": models.provenance(self.backbone_name), "num_layers": self.num_layers,
                "lora": self.lora, "weight_floor": self.weight_floor, "weight_temperature": self.weight_temperature,
                **({"weight_floor_share": self.weight_floor_share} if self.weight_floor_share else {}),
                **({"echo": True} if self.echo else {}),
                "storage_dtype": str(storage_dtype).removeprefix("torch.")}

    def save_pretrained(self, save_directory: str | Path, *, storage_dtype: torch.dtype | None = None,
                        card: str | None = None, **kwargs: Any) -> str | None:
        """Write φ to ``save_directory`` (and with ``push_to_hub=True, repo_id=...`` to the Hub). ``storage_dtype``
        (e.g. bfloat16) shrinks the files, loading casts back; ``card`` is the README.md (default: built from the
        config). Both stay with φ for later saves."""
        self.storage_dtype = storage_dtype or self.storage_dtype
        self.card = card or self.card
        return super().save_pretrained(save_directory, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        from peft import get_peft_model_state_dict

        directory = Path(save_directory)
        dtype = self.storage_dtype or self.head.weight.dtype
        cast = lambda v: v.detach().cpu().to(dtype).contiguous()
        adapter = {k: cast(v) for k, v in get_peft_model_state_dict(self.backbone).items()}
        atomic_write_bytes(directory / ADAPTER_FILE, safetensors_bytes(adapter, metadata={"format": "pt"}))
        head = {k: cast(v) for k, v in self.head.state_dict().items()}
        atomic_write_bytes(directory / HEAD_FILE, safetensors_bytes(head, metadata={"format": "pt"}))
        atomic_write_json(directory / ADAPTER_CONFIG_FILE, self._adapter_config())
        config = self.hub_config(dtype)
        atomic_write_json(directory / CONFIG_FILE, config)
        atomic_write_text(directory / CARD_FILE, self.card or phi_card(config))

    def _adapter_config(self) -> dict[str, Any]:
        """peft's ``adapter_config.json`` of the backbone's LoRA, naming the backbone's Hub id where one exists."""
        config = self.backbone.peft_config[self.backbone.active_adapter]
        values = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
        values["base_model_name_or_path"] = models.hub_id(self.backbone_name) or self.backbone_name
        values["inference_mode"] = True
        return json.loads(json.dumps(values, default=str))

    def save(self, directory: str | Path, storage_dtype: torch.dtype | None = None) -> None:
        """``save_pretrained`` under its older name."""
        self.save_pretrained(directory, storage_dtype=storage_dtype)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, dtype: str = "auto",
                        attn_implementation: str = "auto", **hub_kwargs: Any) -> TrainAttention:
        """φ from a directory (this format or the older three-file one), a shipped alias or a Hub id (downloaded;
        ``hub_kwargs`` such as ``revision`` or ``token`` go to ``huggingface_hub.snapshot_download``)."""
        directory = resolve_phi(pretrained_model_name_or_path, **hub_kwargs)
        legacy = not is_train_attention_dir(directory, legacy=False)
        config = json.loads((directory / (LEGACY_CONFIG_FILE if legacy else CONFIG_FILE)).read_text())
        lora = config["lora"]
        phi = cls.create(config["backbone"], r=int(lora["r"]), alpha=int(lora["alpha"]), dropout=float(lora["dropout"]),
                         dtype=dtype, attn_implementation=attn_implementation,
                         num_layers=int(config.get("num_layers", 0)),
                         weight_floor=float(config.get("weight_floor", 0.0)),
                         weight_temperature=float(config.get("weight_temperature", 1.0)),
                         weight_floor_share=float(config.get("weight_floor_share", 0.0)),
                         echo=bool(config.get("echo", False)))
        phi._load_tensors(directory / (LEGACY_ADAPTER_FILE if legacy else ADAPTER_FILE),
                          directory / (LEGACY_HEAD_FILE if legacy else HEAD_FILE))
        card = directory / CARD_FILE
        phi.card = card.read_text(encoding="utf-8") if card.is_file() and not legacy else None
        return phi

    def _load_tensors(self, adapter_file: Path, head_file: Path) -> None:
        from peft import set_peft_model_state_dict

        adapter, head = load_file(str(adapter_file)), load_file(str(head_file))
        self.storage_dtype = head["weight"].dtype
        dtype = self.head.weight.dtype
        result = set_peft_model_state_dict(self.backbone, {k: v.to(dtype) for k, v in adapter.items()})
        if result.unexpected_keys:
            raise TaalmError(f"{adapter_file}: does not fit φ's backbone (e.g. {result.unexpected_keys[0]})")
        self.head.load_state_dict({k: v.to(dtype) for k, v in head.items()})

    @classmethod
    def load(cls, directory: str | Path, dtype: str = "auto", attn_implementation: str = "auto") -> TrainAttention:
        """``from_pretrained`` under its older name."""
        return cls.from_pretrained(directory, dtype=dtype, attn_implementation=attn_implementation)


def echo_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A right-padded batch read twice, for an echo φ: each row's n real tokens, then its tokens 1..n-1 again (the
    second reading starts after the first's last token, without a second BOS), then padding; and, per position j of
    the row, the index at which its second reading sits (j = 0, the BOS, never scored, keeps index 0; a padding
    position gets a padding index). A causal backbone's state there has seen the whole document once."""
    batch, length = input_ids.shape
    n = (torch.full((batch,), length, device=input_ids.device) if attention_mask is None
         else attention_mask.sum(-1)).long()[:, None]
    position = torch.arange(2 * length - 1, device=input_ids.device)[None]
    source = torch.where(position < n, position, position - n + 1).clamp(0, length - 1)
    twice_mask = position < 2 * n - 1
    twice = torch.where(twice_mask, input_ids.gather(1, source), torch.zeros_like(source))
    j = torch.arange(length, device=input_ids.device)[None]
    second = torch.where(j == 0, 0, n + j - 1).expand(batch, length)
    return twice, twice_mask.to(attention_mask.dtype if attention_mask is not None else torch.long), second


def floor_for_share(weights: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """Per row ``[batch, 1]``, the floor f for which f + (1 - f)·weights gives the floor the share ``share`` of the
    row's total weight (over ``mask``'s tokens): f·n / (f·n + (1 - f)·m) = share, n tokens of sigmoid mass m. A fixed
    floor leaves φ's contrast to its sigmoid mass, which differs by kind of document; this keeps it the same."""
    n = mask.sum(-1, keepdim=True)
    mass = (weights * mask).sum(-1, keepdim=True)
    return share * mass / (share * mass + (1 - share) * n)


@torch.no_grad()
def document_weights(phi: TrainAttention, token_ids: list[list[int]], batch_size: int = 8,
                     device: torch.device | None = None, progress: bool = True) -> list[list[float]]:
    """φ's weights for each tokenized document (length ``len(ids) - 1`` each), batched by length, φ in eval mode;
    a progress bar over the batches unless ``progress`` is off (e.g. on all but the main process)."""
    from tqdm.auto import tqdm

    from taalm.data import Encoded, length_sorted_chunks, pad_batch

    device = device or next(phi.parameters()).device
    was_training = phi.training
    phi.eval()
    out: list[list[float]] = [[] for _ in token_ids]
    lengths = [len(ids) for ids in token_ids]
    chunks = length_sorted_chunks(list(range(len(token_ids))), lengths, batch_size)
    for chunk in tqdm(chunks, desc="φ weights", dynamic_ncols=True, leave=False, disable=not progress):
        batch = pad_batch([Encoded(token_ids[i]) for i in chunk], 0)
        weights = phi(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        for row, i in enumerate(chunk):
            out[i] = weights[row, : lengths[i] - 1].tolist()
    phi.train(was_training)
    return out


def is_train_attention_dir(directory: str | Path, legacy: bool = True) -> bool:
    """A φ directory: this format's ``config.json`` (a model's config.json is not one), or (``legacy``) format 1."""
    directory = Path(directory)
    if legacy and (directory / LEGACY_CONFIG_FILE).is_file():
        return True
    try:
        return str(json.loads((directory / CONFIG_FILE).read_text()).get("format", "")).startswith(
            "taalm-train-attention/")
    except (OSError, ValueError, AttributeError):
        return False


SHIPPED_DIR = Path(__file__).parent / "resources" / "phi"


def shipped_phis() -> list[str]:
    """Aliases of the trained φs that ship with taalm (``--phi ALIAS``), one per supported base model."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if is_train_attention_dir(p)) if SHIPPED_DIR.is_dir() else []


def resolve_phi(name: str | Path, **hub_kwargs: Any) -> Path:
    """The directory of a trained φ given as ``--phi``: a shipped alias, a directory written by meta-train, or a Hub
    id (downloaded once into the Hugging Face cache). The user-facing check, done before any output is written."""
    if str(name) in shipped_phis():
        return SHIPPED_DIR / str(name)
    if is_train_attention_dir(name):
        return Path(name)
    if models.is_hub_id(str(name)):
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(repo_id=str(name), **hub_kwargs))
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TaalmError(f"option --phi: {name} is not a trained φ directory, a shipped alias, or a Hub repository "
                             f"that could be downloaded ({first})") from None
        if not is_train_attention_dir(directory):
            raise TaalmError(f"option --phi: the Hub repository {name} is not a trained φ (no taalm {CONFIG_FILE})")
        return directory
    shipped = f", a shipped alias ({', '.join(shipped_phis())})" if shipped_phis() else ""
    raise TaalmError(f"option --phi: {name} is not a trained φ directory (no taalm {CONFIG_FILE}){shipped} or a "
                     "Hub id")


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


def answer_auc(weights: list[torch.Tensor], labels: list[list[bool]]) -> float | None:
    """How well φ's weights rank each document's answer tokens above its other tokens: the ROC-AUC (the chance an
    answer token outweighs another token, ties half), averaged over documents that have both. ``weights[i]`` is
    aligned to predicted tokens, ``labels[i]`` to the document's tokens (so ``labels[i][1:]`` pairs with it)."""
    aucs = []
    for w, label in zip(weights, labels, strict=True):
        is_answer = torch.tensor(label[1:len(w) + 1], dtype=torch.bool)
        answer, other = w[is_answer].double(), w[~is_answer].double()
        if len(answer) and len(other):
            wins = (answer[:, None] > other[None, :]).double() + 0.5 * (answer[:, None] == other[None, :]).double()
            aucs.append(float(wins.mean()))
    return sum(aucs) / len(aucs) if aucs else None
