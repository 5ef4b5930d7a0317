"""What a finished run (a learning run, a φ's meta-training) was computed from, so a benchmark reuses a finished part
(``DONE``) only when it would compute the same thing again.

A run's inputs are its settings with every input file replaced by a digest of its contents and φ by a digest of the
files it loads from; paths are not compared, so an OUT copied elsewhere keeps its finished parts, while a part learned
with another φ (another directory, or a shipped alias whose φ has since changed) is not taken for this one's. Settings
that change how a run executes but not what it learns (device, logging, micro-batching, checkpoints) are left out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from taalm import weighting
from taalm.config import LearnConfig, MetaTrainConfig, probe_sets, to_dict
from taalm.errors import TaalmError
from taalm.methods import parse_method

EXECUTION_ONLY = ("out", "resume", "device", "log", "eval_batch", "micro_batch", "checkpoint_every",
                  "gradient_checkpointing", "attn_implementation", "pair_batch")
# settings only one part of a method reads: a benchmark passes --phi and its NF set to every method's run
METHOD_ONLY = {"taalm": ("phi",), "rho1": ("rho1_ratio",), "recadam": ("recadam_k", "recadam_t0", "recadam_coefficient"),
               "mixreview": ("review_docs", "review_ratio", "review_decay")}
DONE = "DONE"


def file_digest(path: str | Path) -> str:
    if not Path(path).is_file():
        raise TaalmError(f"{path}: no such file (an input whose contents decide whether a finished run is reused)")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def phi_digest(phi: str) -> str:
    """The digest of the files φ is loaded from (its config and tensors; not its card, which can be rewritten)."""
    directory = weighting.resolve_phi(phi)
    loaded = (weighting.CONFIG_FILE, weighting.ADAPTER_FILE, weighting.HEAD_FILE, weighting.LEGACY_CONFIG_FILE,
              weighting.LEGACY_ADAPTER_FILE, weighting.LEGACY_HEAD_FILE)
    names = [n for n in loaded if (directory / n).is_file()]
    return hashlib.sha256("".join(f"{n}:{file_digest(directory / n)};" for n in names).encode()).hexdigest()[:16]


def recorded_inputs(run_dir: str | Path) -> dict[str, Any] | None:
    """The inputs a finished run recorded in its ``DONE`` (None for runs from before taalm recorded them)."""
    path = Path(run_dir) / DONE
    return json.loads(path.read_text()).get("inputs") if path.is_file() else None


def learn_inputs(cfg: LearnConfig) -> dict[str, Any]:
    """``cfg``'s settings that decide what its method learns: its files (documents, probes, review documents) as
    digests, φ as ``phi_digest``, a starting adapter (``--init_from``) as the inputs that run recorded, and no
    setting of a method part it does not have (finetune's inputs do not name φ)."""
    method = parse_method(cfg.method)
    parts = {method.weights, *(name for name in ("recadam", "mixreview") if getattr(method, name))}
    unused = {k for part, keys in METHOD_ONLY.items() if part not in parts for k in keys}
    values = {k: v for k, v in to_dict(cfg).items() if k not in EXECUTION_ONLY and k not in unused}
    values["docs"] = file_digest(cfg.docs)
    values["probes"] = {name: file_digest(path) for name, path in probe_sets(cfg.probes).items()}
    values["init_from"] = recorded_inputs(cfg.init_from) if cfg.init_from else ""
    if "review_docs" in values:
        values["review_docs"] = file_digest(cfg.review_docs)
    if "phi" in values:
        values["phi"] = phi_digest(cfg.phi)
    return values


def meta_train_inputs(cfg: MetaTrainConfig) -> dict[str, Any]:
    """``cfg``'s settings that decide which φ meta-training ends with: the pairs as a digest, an earlier run it
    re-validates or takes uniform scores from as the inputs that run recorded."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in EXECUTION_ONLY}
    values["pairs"] = file_digest(cfg.pairs)
    for name in ("revalidate", "uniform_from"):
        values[name] = recorded_inputs(values[name]) if values[name] else ""
    return values


def run_inputs(cfg: LearnConfig | MetaTrainConfig) -> dict[str, Any]:
    return learn_inputs(cfg) if isinstance(cfg, LearnConfig) else meta_train_inputs(cfg)


def refusal(run_dir: str | Path, changed: list[str]) -> TaalmError:
    return TaalmError(f"{run_dir}: finished with other {', '.join(changed)} than this run's; delete that directory "
                      "to compute it again, or choose another --out")


def check_phi_of_finished_runs(directories: list[Path], digest: str) -> None:
    """Refuse, before anything is learned, when a finished run anywhere under ``directories`` recorded another φ
    than ``digest`` (``check_reusable`` would refuse it only once the run reaches it, after the parts before it)."""
    stale = sorted(done.parent for directory in directories for done in directory.rglob(DONE)
                   if (recorded_inputs(done.parent) or {}).get("phi", digest) != digest)
    if stale:
        more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
        raise refusal(f"{stale[0]}{more}", ["phi"])


def check_reusable(cfg: LearnConfig | MetaTrainConfig) -> None:
    """Refuse a finished run in ``cfg.out`` that recorded other inputs than ``cfg``'s: reusing it would report what
    another setting computed. Runs that recorded none (older ones) are reused as before."""
    out, recorded = cfg.out, recorded_inputs(cfg.out)
    if recorded is None:
        return
    current = run_inputs(cfg)
    # a setting added to taalm since the run finished is not a change: the run had its default's behaviour
    changed = sorted(k for k in recorded.keys() & current.keys() if recorded[k] != current[k])
    if changed:
        raise refusal(out, changed)
