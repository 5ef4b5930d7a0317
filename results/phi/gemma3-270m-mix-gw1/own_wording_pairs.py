"""φ's pairs with every TemporalWiki *training* pair's document replaced by the same fact's document in φ's own
wording (`taalm phi-data --temporalwiki_wording own`, same options: none of the phrasings the benchmark's documents
use). Row order, tasks and answers are unchanged, and every row matching one of the run's recorded held-out pairs
(its held_out.jsonl: task, answer, and the document or the window of it that was validated) is kept as it was, so
the new run validates on the same held-out pairs, in the wording the earlier φ was validated on.

    python own_wording_pairs.py PAIRS OWN_PAIRS HELD_OUT_JSONL OUT
GW1: PAIRS = GT1's pairs (results/phi/gemma3-270m-mix-gt1); SW1: PAIRS = A1's (results/phi/smollm2-135m-mix-a1).
"""
import json
import sys
from pathlib import Path

pairs_path, own_path, held_path, out = sys.argv[1:5]
rows = [json.loads(line) for line in Path(pairs_path).read_text().splitlines()]
own = {(r["task"], r["answer"]): r["document"]
       for r in map(json.loads, Path(own_path).read_text().splitlines()) if r["kind"] == "temporalwiki"}
held = [json.loads(line) for line in Path(held_path).read_text().splitlines()]


def held_out(row: dict) -> bool:
    return any(h["task"] == row["task"] and h["answer"] == row["answer"]
               and (h["document"] in row["document"] or row["document"] in h["document"]) for h in held)


kept = [row["kind"] != "temporalwiki" or held_out(row) for row in rows]
new = [row if keep else {**row, "document": own[row["task"], row["answer"]]} for row, keep in zip(rows, kept)]
Path(out).write_text("".join(json.dumps(r) + "\n" for r in new))
record = json.loads(Path(pairs_path).with_suffix(".json").read_text())
record["kinds"]["temporalwiki"]["wording"] = "own (training pairs); shared (the held-out pairs)"
record["kinds"]["temporalwiki"]["own_wording_from"] = json.loads(Path(own_path).with_suffix(".json").read_text())[
    "kinds"]["temporalwiki"]
Path(out).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
print({"rows": len(new), "temporalwiki documents reworded": sum(a != b for a, b in zip(new, rows)),
       "temporalwiki rows kept (held out)": sum(keep and r["kind"] == "temporalwiki" for r, keep in zip(rows, kept))})
