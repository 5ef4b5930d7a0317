"""``taalm weights``: where does a trained φ tell θ to learn?

    taalm weights --phi runs/phi --text "Santiago is the capital of Chile ." --out weights.html
    taalm weights --phi smollm2-135m --position_check --out check.json
    taalm weights --phi smollm2-135m --answer_ranking --out ranking.json

The second form measures whether φ weighs fact tokens or the place a builder puts them (``taalm.position_check``),
the third how well φ ranks the answer tokens of documents of each kind (``taalm.bench.answer_ranking``).
"""

from __future__ import annotations

from pathlib import Path

from taalm import models, viz
from taalm.config import WeightsConfig
from taalm.data import DOCUMENT_FIELDS, encode
from taalm.errors import TaalmError
from taalm.io import read_jsonl
from taalm.weighting import TrainAttention, document_weights, resolve_phi


def _documents(cfg: WeightsConfig) -> list[tuple[str, str]]:
    if cfg.text:
        return [("text", cfg.text)]
    documents = []
    for line, record in read_jsonl(cfg.file):
        field = next((f for f in DOCUMENT_FIELDS if f in record), None)
        if field is None or not isinstance(record[field], str):
            raise TaalmError(f"{cfg.file}:{line}: missing field 'text' (or 'document' / 'evidence')")
        if not record[field].strip():
            raise TaalmError(f"{cfg.file}:{line}: field {field!r} is empty")
        documents.append((f"{Path(cfg.file).name}:{line}", record[field]))
        if len(documents) == cfg.limit:
            break
    if not documents:
        raise TaalmError(f"{cfg.file}: no records")
    return documents


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token as the text it stands for (spaces included), for display."""
    return [tokenizer.decode([i]) for i in ids]


def show_weights(cfg: WeightsConfig) -> list[tuple[str, list[str], list[float]]] | dict:
    """Print φ's weights per token and write the HTML heatmap and a PNG next to it; returns what was drawn. With
    ``--position_check`` or ``--answer_ranking`` runs that check instead and returns its result."""
    if cfg.position_check:
        from taalm.position_check import run_position_check

        return run_position_check(cfg)
    if cfg.answer_ranking:
        from taalm.bench.answer_ranking import run_answer_ranking

        return run_answer_ranking(cfg)
    phi_dir = resolve_phi(cfg.phi)
    documents = _documents(cfg)
    phi = TrainAttention.load(phi_dir)
    phi.to(models.pick_device(cfg.device))
    tokenizer = models.load_tokenizer(phi.backbone_name)
    encoded = [encode(tokenizer, text, cfg.max_length, where=name).input_ids for name, text in documents]
    weights = document_weights(phi, encoded)
    # weight j belongs to token j+1 (the first token is never predicted, so it has none)
    # The weighted loss Σ nll·w / Σ w is invariant to scaling w, so what matters is each weight relative to the others:
    # with --relative (default) every document is shown divided by its largest weight, as the official code does.
    shown = [[x / max(max(w), 1e-12) for x in w] if cfg.relative else w for w in weights]
    drawn = [(name, token_texts(tokenizer, ids)[1:], w) for (name, _), ids, w in zip(documents, encoded, shown)]
    for (name, tokens, w), raw in zip(drawn, weights):
        print(f"== {name}  (raw weights: mean {sum(raw) / len(raw):.4f}, max {max(raw):.4f}"
              f"{'; shown relative to the max' if cfg.relative else ''})")
        print(viz.format_weights_terminal(tokens, w, color=cfg.color))
    out = Path(cfg.out or "weights.html")
    viz.write_weights_html(out, drawn, title=f"Train-Attention weights ({cfg.phi})")
    viz.write_weights_png(out.with_suffix(".png"), drawn)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return drawn
