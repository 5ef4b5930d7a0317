"""K-Adapter (Wang et al. 2021) for causal LMs, as the TAALM paper's continual-learning baseline.

The base model is frozen. A chain of small "knowledge adapters" runs beside it: adapter k reads the base hidden
state at layer l_k plus the previous adapter's output, and the LM head reads the base's last hidden state plus the
last adapter's output:

    x_k = h_{l_k} + a_{k-1}                     (a_0 = 0; h_0 = embeddings, h_L = the final, normed hidden state)
    a_k = Up_k(Block_k^n(...Block_k^1(Down_k(x_k))))
    logits = lm_head(h_L + a_K)

Each Block is a pre-norm causal self-attention + MLP transformer layer on the adapter width. Following K-Adapter,
the projections are initialised small but not zero (std 2e-4), so the adapter starts close to, but not exactly at,
the base model.

Default placement: the official Llama-2-7B code reads hidden_states[1, 15, -1] of 32 layers; ``default_layers``
scales that to the base depth. Default width: K-Adapter's 768-of-1024 ratio (3/4 of the base hidden size).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from taalm.errors import TaalmError

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "kadapter_config.json"
PROJECTION_INIT_STD = 2e-4  # K-Adapter's adapter_initializer_range
BLOCK_INIT_STD = 0.02
_OFFICIAL_LAYERS, _OFFICIAL_DEPTH = (1, 15, 32), 32  # Llama-2-7B: hidden_states[1], [15], [-1]


def default_layers(num_hidden_layers: int) -> tuple[int, ...]:
    """The official placement (1, 15, 32) of 32 layers, scaled to ``num_hidden_layers``; indices into hidden_states."""
    scaled = (max(1, round(i * num_hidden_layers / _OFFICIAL_DEPTH)) for i in _OFFICIAL_LAYERS)
    return tuple(sorted(set(scaled)))


class CausalBlock(nn.Module):
    """Pre-norm transformer layer: causal multi-head self-attention then a GELU MLP, both residual."""

    def __init__(self, size: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(size), nn.LayerNorm(size)
        self.qkv, self.proj = nn.Linear(size, 3 * size), nn.Linear(size, size)
        self.mlp = nn.Sequential(nn.Linear(size, 4 * size), nn.GELU(), nn.Linear(4 * size, size))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, size]; mask: bool [B, 1, T, T] (True = may attend) or None for plain causal attention."""
        b, t, size = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, size // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, size))
        return x + self.mlp(self.norm2(x))


class AdapterLayer(nn.Module):
    """One knowledge adapter: down-projection, ``n`` causal transformer layers, up-projection."""

    def __init__(self, hidden: int, size: int, n: int, heads: int) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(hidden, size), nn.Linear(size, hidden)
        self.blocks = nn.ModuleList(CausalBlock(size, heads) for _ in range(n))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                std = PROJECTION_INIT_STD if module in (self.down, self.up) else BLOCK_INIT_STD
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.down(x)
        for block in self.blocks:
            x = block(x, mask)
        return self.up(x)


def attention_mask_4d(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, T] padding mask (1 = token) -> bool [B, 1, T, T]: causal, keys restricted to tokens.

    Every query may also attend to itself, so a padding query never has an empty row (which would give NaN).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    t = attention_mask.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
    keys = attention_mask.bool()[:, None, None, :]
    return (causal & keys) | torch.eye(t, dtype=torch.bool, device=attention_mask.device)


class KAdapterForCausalLM(nn.Module):
    """A frozen Hugging Face causal LM plus trainable K-Adapter layers; ``forward`` returns ``.logits``."""

    def __init__(
        self,
        base: nn.Module,
        adapter_layers: tuple[int, ...] | None = None,
        adapter_size: int | None = None,
        adapter_transformer_layers: int = 2,
        adapter_heads: int | None = None,
    ) -> None:
        super().__init__()
        config = base.config
        depth, hidden = config.num_hidden_layers, config.hidden_size
        if base.get_output_embeddings() is None:
            raise TaalmError(f"base: {type(base).__name__} has no output embeddings (LM head)")
        self.adapter_layers = self._check_layers(adapter_layers, depth)
        self.adapter_size = adapter_size if adapter_size is not None else hidden * 3 // 4
        self.adapter_transformer_layers = adapter_transformer_layers
        self.adapter_heads = adapter_heads if adapter_heads is not None else max(1, self.adapter_size // 64)
        if self.adapter_size < 1:
            raise TaalmError(f"adapter_size: must be >= 1, got {self.adapter_size}")
        if adapter_transformer_layers < 0:
            raise TaalmError(f"adapter_transformer_layers: must be >= 0, got {adapter_transformer_layers}")
        if self.adapter_heads < 1 or self.adapter_size % self.adapter_heads:
            raise TaalmError(f"adapter_heads: {self.adapter_heads} must divide adapter_size {self.adapter_size}")

        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        p = next(base.parameters())
        self.adapters = nn.ModuleList(
            AdapterLayer(hidden, self.adapter_size, adapter_transformer_layers, self.adapter_heads)
            for _ in self.adapter_layers
        ).to(device=p.device)  # kept in float32 whatever the base dtype

    @staticmethod
    def _check_layers(layers: tuple[int, ...] | None, depth: int) -> tuple[int, ...]:
        """Indices into hidden_states (0 = embeddings, depth = last); negative ones count from the end."""
        if layers is None:
            return default_layers(depth)
        resolved = tuple(i + depth + 1 if i < 0 else i for i in layers)
        if not resolved or any(not 0 <= i <= depth for i in resolved) or list(resolved) != sorted(set(resolved)):
            raise TaalmError(
                f"adapter_layers: {tuple(layers)} must be increasing hidden-state indices in [0, {depth}] "
                f"(0 = embeddings, {depth} = last layer)"
            )
        return resolved

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters: the adapters' only (the base is frozen)."""
        return self.adapters.parameters()

    def adapter_config(self) -> dict[str, object]:
        """The settings saved next to the weights (``kadapter_config.json``)."""
        return {
            "adapter_layers": list(self.adapter_layers),
            "adapter_size": self.adapter_size,
            "adapter_transformer_layers": self.adapter_transformer_layers,
            "adapter_heads": self.adapter_heads,
        }

    def _hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs
    ) -> tuple[torch.Tensor, ...]:
        """All base hidden states, through the decoder alone when possible (skips the base LM head).

        No gradient flows into a frozen base, so its activations are not kept for backward.
        """
        get_decoder = getattr(self.base, "get_decoder", None)
        decoder = get_decoder() if callable(get_decoder) else None
        runner = decoder if isinstance(decoder, nn.Module) and decoder is not self.base else self.base
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.base.parameters())
        with torch.set_grad_enabled(needs_grad):
            out = runner(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        return out.hidden_states

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> CausalLMOutputWithPast:
        """Logits [B, T, vocab]; ``kwargs`` go to the base model (e.g. ``position_ids``). The loss is the caller's."""
        kwargs.setdefault("use_cache", False)
        hidden = self._hidden_states(input_ids, attention_mask, **kwargs)
        mask = attention_mask_4d(attention_mask)
        dtype = next(self.adapters.parameters()).dtype
        a = None
        for layer, adapter in zip(self.adapter_layers, self.adapters, strict=True):
            x = hidden[layer].to(dtype)
            a = adapter(x if a is None else x + a, mask)
        final = hidden[-1].to(dtype) + a
        return CausalLMOutputWithPast(logits=self.base.get_output_embeddings()(final.to(hidden[-1].dtype)))

    def save_adapter(self, path: str | Path) -> None:
        """Write ``adapter.safetensors`` and ``kadapter_config.json`` into the directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.adapters.state_dict().items()}
        save_file(tensors, str(path / WEIGHTS_NAME))
        (path / CONFIG_NAME).write_text(json.dumps(self.adapter_config(), indent=2) + "\n")

    def load_adapter(self, path: str | Path) -> None:
        """Load adapter weights saved by ``save_adapter``; the saved configuration must match this model's."""
        path = Path(path)
        saved = read_adapter_config(path)
        for key, value in self.adapter_config().items():
            if saved.get(key) != value:
                raise TaalmError(f"{path / CONFIG_NAME}: {key} is {saved.get(key)!r}, this model has {value!r}")
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise TaalmError(f"{weights}: not found")
        state = load_file(str(weights))
        missing, unexpected = self.adapters.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TaalmError(f"{weights}: missing tensors {missing}, unexpected tensors {unexpected}")

    @classmethod
    def from_base_and_dir(cls, base: nn.Module, path: str | Path) -> KAdapterForCausalLM:
        """Wrap ``base`` with the adapters saved in directory ``path`` (configuration and weights)."""
        config = read_adapter_config(Path(path))
        model = cls(
            base,
            adapter_layers=tuple(config["adapter_layers"]),
            adapter_size=config["adapter_size"],
            adapter_transformer_layers=config["adapter_transformer_layers"],
            adapter_heads=config.get("adapter_heads"),
        )
        model.load_adapter(path)
        return model


def read_adapter_config(path: Path) -> dict:
    """The JSON configuration in an adapter directory, with a one-line error when it is missing or broken."""
    file = path / CONFIG_NAME
    if not file.is_file():
        raise TaalmError(f"{file}: not found")
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise TaalmError(f"{file}:{err.lineno}: invalid JSON ({err.msg})") from None
    for key in ("adapter_layers", "adapter_size", "adapter_transformer_layers"):
        if key not in config:
            raise TaalmError(f'{file}: missing field "{key}"')
    return config
