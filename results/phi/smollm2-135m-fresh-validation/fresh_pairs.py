"""Fresh held-out pairs for SmolLM2's φ candidates: `taalm phi-data` pairs (φ's side of every split, seed 0, a larger
--per_kind) that share no document, LAMA-ckl row, fictional fact or task with φ's own 464 pairs (training and
held-out), 48 per kind with enough left, seeded; with ``all``, every fresh pair (kinds in file order).

    python fresh_pairs.py SUPERSET.jsonl PHI_PAIRS.jsonl OUT.jsonl [all]
"""

import collections
import json
import random
import sys

superset, used, out = sys.argv[1:4]
every = sys.argv[4:] == ["all"]
old = [json.loads(line) for line in open(used)]
docs = {r["document"] for r in old}
sources = {r["source"] for r in old if not r["source"].startswith("temporalwiki")}  # LAMA-ckl uuids, fictional facts
tasks = {r["task"] for r in old}
new = [json.loads(line) for line in open(superset)]
fresh = [r for r in new if r["document"] not in docs and r["source"] not in sources and r["task"] not in tasks]
by_kind = collections.defaultdict(list)
for r in fresh:
    by_kind[r["kind"]].append(r)
print("fresh per kind:", {k: len(v) for k, v in by_kind.items()})
rng = random.Random("held-out-2")
chosen = (fresh if every else
          [r for k in sorted(by_kind) if len(by_kind[k]) >= 48 for r in rng.sample(by_kind[k], 48)])
with open(out, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in chosen)
print("chosen:", dict(collections.Counter(r["kind"] for r in chosen)))
