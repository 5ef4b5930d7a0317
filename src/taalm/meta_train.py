"""``taalm meta-train``: the φ training driver (data, models, checkpoints, resume) around ``taalm.meta``.

    taalm meta-train --theta smollm2-135m --pairs pairs.jsonl --out runs/phi
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from taalm import meta, models, runtime
from taalm.config import MetaTrainConfig, save_config, to_dict
from taalm.data import load_pairs, pad_token_id
from taalm.errors import TaalmError
from taalm.io import atomic_write_text, write_jsonl
from taalm.tracking import make_tracker
from taalm.weighting import TrainAttention

log = logging.getLogger("taalm")
CHECKPOINT = "checkpoint"


def build_models(cfg: MetaTrainConfig, device: torch.device) -> tuple[torch.nn.Module, TrainAttention]:
    """θ with fresh LoRA and φ, both with eager attention: the meta step needs a double backward."""
    runtime.seed_everything(cfg.seed)
    theta = models.load_causal_lm(cfg.theta, dtype=cfg.dtype, attn_implementation="eager")
    theta = models.add_lora(theta, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout).to(device)
    phi = TrainAttention.create(cfg.phi or cfg.theta, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, dtype=cfg.dtype,
                                attn_implementation="eager", num_layers=cfg.phi_layers).to(device)
    return theta, phi


def meta_train(cfg: MetaTrainConfig) -> Path:
    """Meta-train φ; returns the output directory, which is a loadable Train-Attention directory."""
    pairs = load_pairs(cfg.pairs)
    if cfg.held_out >= len(pairs):
        raise TaalmError(f"option --held-out: {cfg.held_out} leaves no training pairs out of {len(pairs)}")
    train_pairs = pairs[: len(pairs) - cfg.held_out]
    if cfg.restrict and len(train_pairs) < 2:
        raise TaalmError("option --restrict: needs at least 2 training pairs (unrelated tasks come from other pairs)")
    tokenizer = models.load_tokenizer(cfg.theta)
    if cfg.phi and cfg.phi != cfg.theta and not models.same_tokenizer(tokenizer, models.load_tokenizer(cfg.phi)):
        raise TaalmError(f"option --phi: {cfg.phi!r} does not share θ's tokenizer; its weights could not be aligned")
    encoded = [meta.encode_pair(tokenizer, p, cfg.max_length) for p in train_pairs]
    truncated = sum(e.document.truncated for e in encoded)
    if truncated:
        log.warning("%d of %d documents truncated to --max-length %d tokens", truncated, len(encoded), cfg.max_length)
    out = runtime.check_output_dir(cfg.out, cfg.resume, CHECKPOINT)
    device = models.pick_device(cfg.device)

    theta, phi = build_models(cfg, device)
    start_params = meta.trainable_params(theta)
    optimizer = torch.optim.AdamW([p for p in phi.parameters() if p.requires_grad], lr=cfg.outer_lr)
    total = meta.total_updates(cfg.updates, cfg.epochs, len(encoded), cfg.meta_batch)
    history: list[dict] = []
    first = 0
    state = runtime.load_checkpoint(out / CHECKPOINT) if cfg.resume else None
    if state is not None:
        missing = set(phi.trainable_state()) - set(state["phi"])
        if missing:
            raise TaalmError(f"option --resume: the checkpoint in {out} does not match this φ (e.g. {min(missing)})")
        phi.load_state_dict(state["phi"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        runtime.set_rng_state(state["rng"])
        history, first = state["history"], state["update"]
        log.warning("resuming %s at φ update %d of %d", out, first, total)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tracker = make_tracker(cfg.log, out, to_dict(cfg))
    pad_id = pad_token_id(tokenizer)

    phi.train()
    progress = tqdm(range(first, total), initial=first, total=total, desc="meta-train φ", dynamic_ncols=True)
    for update in progress:
        started = time.time()
        indices = meta.meta_batch_indices(update, cfg.meta_batch, len(encoded), cfg.seed)
        results = []
        for k in range(0, len(indices), cfg.inner_batch):
            chunk = indices[k:k + cfg.inner_batch]
            # restrict: each pair's unrelated task is the next pair's task in this meta-batch
            unrelated = [encoded[indices[(k + j + 1) % len(indices)]] for j in range(len(chunk))] if cfg.restrict else None
            problem = meta.make_problem([encoded[i] for i in chunk], pad_id, unrelated).to(device)
            results.append(meta.meta_gradient(theta, phi, start_params, problem, dummy_steps=cfg.dummy_steps,
                                              inner_lr=cfg.inner_lr, inner_weight_decay=cfg.inner_weight_decay,
                                              objective=cfg.objective, scale=cfg.inner_batch / cfg.meta_batch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"update": update + 1, "seconds": round(time.time() - started, 3)}
        for key in ("objective", "outer_loss", "restrict", "mean_weight"):
            record[key] = sum(getattr(r, key) for r in results) / len(results)
        history.append(record)
        tracker.log({k: v for k, v in record.items() if k != "update"}, update + 1)
        progress.set_postfix(outer=f"{record['outer_loss']:.3f}", w=f"{record['mean_weight']:.3f}")
        if (update + 1) % cfg.checkpoint_every == 0 or update + 1 == total:
            runtime.save_checkpoint(out / CHECKPOINT, {
                "phi": phi.trainable_state(), "optimizer": optimizer.state_dict(), "rng": runtime.rng_state(),
                "history": history, "update": update + 1})
            write_jsonl(out / "history.jsonl", history)
    progress.close()
    tracker.close()

    phi.save(out)
    write_jsonl(out / "history.jsonl", history)
    if cfg.held_out:
        write_jsonl(out / "held_out.jsonl", [{"document": p.document, "task": p.task, "answer": p.answer}
                                              for p in pairs[len(pairs) - cfg.held_out:]])
    atomic_write_text(out / "DONE", json.dumps({"updates": total}) + "\n")
    return out
