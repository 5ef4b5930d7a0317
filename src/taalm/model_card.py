"""Model cards (``README.md`` with Hub metadata) for what taalm hands out: a trained φ and a learned θ adapter.

A φ's card is built from its meta-training records (``config.yaml``, ``data.json``, ``selection.json``,
``history.jsonl``): θ, the data, the settings, the validation table and the command that reproduces it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

PAPER = "Seo et al., *Train-Attention: Meta-Learning Where to Focus in Continual Knowledge Learning*, NeurIPS 2024"
PAPER_URL = "https://arxiv.org/abs/2407.16920"
TAGS = ["taalm", "train-attention", "continual-learning"]


def front_matter(metadata: dict[str, Any]) -> str:
    import yaml

    kept = {k: v for k, v in metadata.items() if v not in (None, "", [])}
    return "---\n" + yaml.safe_dump(kept, sort_keys=False, allow_unicode=True) + "---\n"


def read_records(directory: str | Path) -> dict[str, Any]:
    """A meta-training run's records that exist in ``directory``: config, data report, selection, history, the
    mixture ``taalm phi-data`` wrote when the pairs came from several kinds of documents, and for a re-validation
    (``--revalidate``) the config of the run whose checkpoints it validated."""
    import yaml

    directory = Path(directory)
    records: dict[str, Any] = {}
    for key, name in (("config", "config.yaml"), ("data", "data.json"), ("selection", "selection.json"),
                      ("mixture", "mixture.json"), ("run_config", "run_config.yaml")):
        path = directory / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            records[key] = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    if (directory / "history.jsonl").is_file():
        lines = (directory / "history.jsonl").read_text(encoding="utf-8").splitlines()
        records["history"] = [json.loads(line) for line in lines if line.strip()]
    return records


def _unset(value: Any) -> bool:
    """An option left empty (a 0 or False is a setting): neither the command nor the settings table lists it."""
    return value in ("", None, [], {})


def command_from_config(command: str, config: dict[str, Any], defaults: type | None = None, width: int = 100) -> str:
    """``taalm COMMAND`` with the options of ``config`` that differ from the dataclass ``defaults`` (all without),
    wrapped at ``width`` with shell continuations."""
    base = {f.name: f.default for f in dataclasses.fields(defaults)} if defaults else {}
    options = []
    for key, value in sorted(config.items(), key=lambda item: item[0] not in ("theta", "model")):  # θ first
        default = key in base and base[key] == value and key not in ("theta", "model")  # θ is always named
        if key == "resume" or default or _unset(value):
            continue
        shown = " ".join(map(str, value)) if isinstance(value, list) else \
            str(value).lower() if isinstance(value, bool) else str(value)
        options.append(f"--{key} {shown}")
    lines = [f"taalm {command}"]
    for option in options:
        if len(lines[-1]) + len(option) + 1 > width:
            lines.append(" ")
        lines[-1] += " " + option
    return " \\\n".join(lines)


def _validation_table(history: list[dict[str, Any]], chosen: int | None) -> list[str]:
    rows = [h for h in history if "gain_accuracy" in h]
    if not rows:
        return []
    kinds = sorted({k.split("/")[0] for h in rows for k in h if k.endswith("/gain_accuracy")})
    per_kind = [f"{kind}: gain / answer AUC" for kind in kinds]
    worst = ["worst kind"] if kinds else []
    lines = ["| " + " | ".join(["update", "held-out accuracy φ / uniform", "accuracy gain", "answer NLL φ / uniform",
                                "NLL gain", *worst, *per_kind]) + " |",
             "|" + "---|" * (5 + len(worst) + len(per_kind))]
    for h in rows:
        cells = [str(h["update"]), f"{h['val_accuracy']:.3f} / {h['uniform_accuracy']:.3f}",
                 f"{h['gain_accuracy']:+.3f}", f"{h['val_nll']:.3f} / {h['uniform_nll']:.3f}", f"{h['gain_nll']:+.3f}"]
        if kinds:
            cells += [str(h.get("worst_kind", "")), *(_kind_cell(h, kind) for kind in kinds)]
        if h["update"] == chosen:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _kind_cell(record: dict[str, Any], kind: str) -> str:
    auc = record.get(f"{kind}/answer_auc")
    return f"{record[f'{kind}/gain_accuracy']:+.3f} / " + (f"{auc:.2f}" if auc is not None else "–")


def _phi_section(phi: dict[str, Any]) -> list[str]:
    base, backbone, lora = phi.get("base_model"), phi["backbone"], phi["lora"]
    layers = f"the first {phi['num_layers']}" if phi.get("num_layers") else "all"
    echo = "; reads each document twice, weighting a token at its second reading (echo)" if phi.get("echo") else ""
    temperature = phi.get("weight_temperature", 1.0)
    floor = (f" of logit / {temperature}" if temperature != 1.0 else "") + (
        f", weight floor {phi['weight_floor']}" if phi.get("weight_floor") else "") + (
        f", a floor per document carrying {phi['weight_floor_share']} of its weight"
        if phi.get("weight_floor_share") else "")
    lines = ["## φ", "", f"- backbone: `{backbone}`" + (f" (Hub: `{base}`)" if base and base != backbone else ""),
             f"- layers: {layers}; LoRA r {lora['r']} / α {lora['alpha']} / dropout {lora['dropout']}; a linear head "
             + f"→ sigmoid{floor}{echo}",
             f"- stored as {phi.get('storage_dtype', 'float32')}; loaded in the dtype asked for (float32 by default)"]
    return lines + ([f"- {phi['backbone_note']}"] if phi.get("backbone_note") else [])


def _data_section(config: dict[str, Any], data: dict[str, Any], mixture: dict[str, Any]) -> list[str]:
    pairs = f"- pairs: `{config.get('pairs')}`"
    if "train" in data:
        pairs += (f": {data['pairs']} ({data['train']} for training, {data['held_out']} held out for validation; "
                  f"{data.get('windowed', 0)} documents cut to {data.get('max_length')} tokens around the answer, "
                  f"{len(data.get('skipped', []))} skipped)")
    theta = (f"- θ: `{config.get('theta')}`, LoRA r {config.get('lora_r')} / α {config.get('lora_alpha')} / "
             f"dropout {config.get('lora_dropout')}")
    kinds = [f"  - {kind}: {mixture['counts'][kind]} pairs; {rule}" for kind, rule in mixture.get("rules", {}).items()]
    if kinds:
        pairs += "\n- kinds of documents (`taalm phi-data`):\n" + "\n".join(kinds)
    settings = [f"| {k} | {v} |" for k, v in config.items() if k not in ("out", "resume") and not _unset(v)]
    return ["## θ and data", "", theta, pairs, "", "## Settings", "", "| option | value |", "|---|---|", *settings]


def _validation_section(selection: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    chosen = selection.get("update")
    table = _validation_table(history, chosen)
    if not table and selection.get("validation"):
        table = _validation_table([{"update": chosen, **selection["validation"]}], chosen)
    intro = ("θ learned the held-out documents once with φ's weights and once with uniform weights, from the same "
             f"start; the φ here is update {chosen} ({selection.get('select')}, by {selection.get('metric')}).")
    return ["## Validation", "", intro] + ([""] + table if table else [])


def phi_card(phi: dict[str, Any], records: dict[str, Any] | None = None, name: str = "", source: str = "") -> str:
    """The card of a φ directory. ``phi`` is its ``config.json``; ``records`` its meta-training records
    (``read_records``); ``name`` what ``--phi`` takes for it; ``source`` where the records are kept."""
    from taalm import models
    from taalm.config import MetaTrainConfig

    records = records or {}
    config, selection = records.get("config") or {}, records.get("selection") or {}
    name, theta = name or "DIR", config.get("theta", phi["backbone"])
    about = (f"A Train-Attention model (TAALM; {PAPER}, [arXiv:2407.16920]({PAPER_URL})): it gives every token of a "
             "document a weight in (0, 1), and θ learns the document with its per-token loss weighted by them.")
    use = ["```bash", f"taalm learn --model {theta} --method taalm --phi {name} --docs docs.jsonl --out runs/taalm",
           f'taalm weights --phi {name} --text "..."', "```", "", "```python",
           "from taalm.weighting import TrainAttention", "",
           f'phi = TrainAttention.from_pretrained("{name}")  # a directory, a shipped alias or a Hub id', "```"]
    metadata = {"library_name": "taalm", "base_model": phi.get("base_model"),
                "license": models.license_of(phi["backbone"]), "tags": TAGS}  # a φ inherits its backbone's license
    sections = [[front_matter(metadata) + f"\n# Train-Attention φ for "
                 f"{phi.get('base_model') or phi['backbone']}", "", about, "", *use], _phi_section(phi)]
    if config:
        sections.append(_data_section(config, records.get("data") or {}, records.get("mixture") or {}))
    if selection:
        sections.append(_validation_section(selection, records.get("history") or []))
    if config:
        command = ["## Command", "", "```bash", command_from_config("meta-train", config, MetaTrainConfig), "```"]
        if records.get("run_config"):  # a re-validation: its checkpoints came from this run
            command += ["", "It validated again the checkpoints of the run made by:", "", "```bash",
                        command_from_config("meta-train", records["run_config"], MetaTrainConfig), "```"]
        sections.append(command)
    if source:
        sections.append([f"Records: {source}."])
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def adapter_card(model: str, method: str, merged: bool = False) -> str:
    """The card of a LoRA learned on θ = ``model`` (as taalm named or loaded it) by ``method``, or of its merged
    export: the Hub model it loads onto, what an alias's weights were, how to load it."""
    from taalm import models

    base = models.hub_id(model) or model
    if merged:
        use = ["from transformers import AutoModelForCausalLM", "", 'model = AutoModelForCausalLM.from_pretrained("DIR")']
    else:
        use = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
               f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "DIR")']
    metadata = {"library_name": "transformers" if merged else "peft", "base_model": base,
                "license": models.license_of(model), "tags": TAGS + [method]}
    lines = [front_matter(metadata), f"# {base} + {'merged ' if merged else ''}LoRA from `taalm learn --method {method}`",
             "", f"Learned with taalm (Train-Attention, {PAPER}, [arXiv:2407.16920]({PAPER_URL})), method `{method}`."]
    note = models.provenance(model)
    if note:
        lines += ["", f"θ: {note}; the merged weights are those of the dequantized GGUF." if merged else f"θ: {note}."]
    return "\n".join(lines + ["", "```python", *use, "```"]) + "\n"
