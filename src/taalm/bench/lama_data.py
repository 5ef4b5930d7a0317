"""LAMA-ckl's data: the shipped files, their rows checked field by field, taalm's record of a row, and the subsets a
run learns (seeded, documents windowed around their answer). No model and no config here: tailoring
(``lama_ckl``) and TemporalWiki's context paragraphs (``twiki_data``) both read the rows through this module.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from taalm.errors import TaalmError
from taalm.io import read_jsonl
from taalm.windowing import answer_window

FILES = ("variant", "invariant_descriptive", "invariant_schematic")
NF_FILE = "invariant_descriptive"
REQUIRED = ("uuid", "subject", "object", "evidence", "task_descriptive")
SETS = ("to_learn", "not_to_forget", "meta_pool")
SEED_SETS = ("to_learn", "not_to_forget")  # a seed's own subsample; the meta pool is shared (φ, lr selection)


def data_file(name: str, data_dir: str = "") -> Path:
    """The LAMA-ckl file ``name`` (one of ``FILES``): in ``data_dir``, else the copy shipped with taalm."""
    if data_dir:
        return Path(data_dir) / f"{name}.jsonl"
    return Path(__file__).parents[1] / "resources" / "lama_ckl" / f"{name}.jsonl.gz"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """LAMA-ckl rows, each checked for its fields; ``_where`` records file:line for reports."""
    rows = []
    for line, record in read_jsonl(path):
        for name in REQUIRED:
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise TaalmError(f"{path}:{line}: missing field {name!r}")
        rows.append({**record, "_where": f"{path.name}:{line}"})
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pair_record(row: dict[str, Any]) -> dict[str, Any]:
    """The row as taalm's generic record: document (evidence), task (cloze), answer (object); with its relation and
    the file:line it came from, so a set's relations and sources can be counted."""
    record = {"document": row["evidence"], "task": row["task_descriptive"], "answer": row["object"],
              "text": row["evidence"], "uuid": row["uuid"], "subject": row["subject"]}
    for name, value in (("task_schematic", row.get("task_schematic")), ("relation", row.get("relation_code")),
                        ("row", row.get("_where"))):
        if isinstance(value, str):
            record[name] = value
    return record


def subsample(path: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    """The records of a tailored set; with a limit below their number, a seeded sample in uuid order."""
    records = [r for _, r in read_jsonl(path)]
    if limit and limit < len(records):
        records = sorted(random.Random(seed).sample(records, limit), key=lambda r: r["uuid"])
    return records


def windowed(records: list[dict[str, Any]], tokenizer, max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Each record's document cut to a window of ``max_length`` tokens around its answer (when it is longer);
    returns the records and how many were cut."""
    out, count = [], 0
    for r in records:
        window = answer_window(tokenizer, r["document"], r["answer"], max_length, where=r.get("uuid", ""))
        count += window.windowed
        out.append({**r, "document": window.text, "text": window.text})
    return out, count
