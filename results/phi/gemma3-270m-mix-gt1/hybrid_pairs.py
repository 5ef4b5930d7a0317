"""φ's pairs for GT1: GA1's pairs (generator version 2) with every fictional *training* pair replaced, in order, by a
version-3 pair (the train side's own wording), so the held-out pairs — chosen by position within each kind — stay
GA1's and every validation pairs with GA1's recorded ones. The held-out fictional pairs keep version 2's wording,
which a version-3 φ never saw. Version-3 pairs that share an answer with a held-out document are skipped.

    python hybrid_pairs.py V2_PAIRS V3_PAIRS OUT   (seed 0, 16 held out per kind, as GA1)

GB1 (``../gemma3-270m-mix-gb1``) takes its pairs from the same script with version-4 pairs as V3_PAIRS.
"""
import json
import sys
from pathlib import Path

from taalm.data import load_pairs
from taalm.meta_train import split_held_out

v2_path, v3_path, out = sys.argv[1:4]
v2 = [json.loads(line) for line in Path(v2_path).read_text().splitlines()]
v3 = [row for row in map(json.loads, Path(v3_path).read_text().splitlines()) if row["kind"] == "fictional"]
_, held = split_held_out(load_pairs(v2_path, "descriptive"), 16, 0)
held_sources = {v2[int(p.source.rsplit(":", 1)[1]) - 1]["source"] for p in held}  # Pair.source is FILE:LINE
held_rows = [row for row in v2 if row["source"] in held_sources and row["kind"] == "fictional"]


def shares_name(row: dict) -> bool:  # a held-out answer in its document, or its answer in a held-out document
    return any(h["answer"] in row["document"] or row["answer"] in h["document"] for h in held_rows)


fresh = iter(r for r in v3 if not shares_name(r))
rows = [row if row["kind"] != "fictional" or row["source"] in held_sources else next(fresh) for row in v2]
Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
record = json.loads(Path(v3_path).with_suffix(".json").read_text())
record["held_out_from"] = {"pairs": v2_path, "fictional_held_out": sorted(s for s in held_sources if "fictional" in s)}
Path(out).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
print({k: sum(r["kind"] == k for r in rows) for k in ("lama", "fictional", "temporalwiki")},
      "fictional version 3:", sum(r["source"] not in held_sources and r["kind"] == "fictional" for r in rows))
