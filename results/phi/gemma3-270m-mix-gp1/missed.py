"""The fresh held-out fictional pairs in which φ weights some answer token least: per pair the lowest answer-token
weight, each answer token's weight, the document's sentence that states the fact, and the probe; then, per quarter of
the 144 pairs, how many state the fact answer first (the generator's sentence has its answer before its subject, or
its subject and answer both before the words saying how they relate, "{s} and {o} were wed"). φ at floor 0.

    python missed.py [PHI_DIR] [N]     # default: GB1 as shipped, the 36 lowest (a quarter of the 144 pairs)
"""

import json
import re
import sys
from pathlib import Path

from taalm import models
from taalm.bench.fictional_data import BROAD_RELATIONS, RELATIONS, TRAIN_DOCUMENTS
from taalm.data import encode
from taalm.weighting import TrainAttention, document_weights

PHI = Path(__file__).parents[1]
FRESH = PHI / "gemma3-270m-fresh-validation"
pairs = [json.loads(line) for name in ("fresh.jsonl", "all-pairs/rest.jsonl")
         for line in (FRESH / name).read_text().splitlines()]
pairs = [p for p in pairs if p["kind"] == "fictional"]
phi = TrainAttention.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else PHI.parents[1] / "src/taalm/resources/phi/gemma3-270m")
phi.weight_floor = 0.0
tokenizer = models.load_tokenizer(phi.backbone_name)
encoded = [encode(tokenizer, p["document"], 128, answer=p["answer"]) for p in pairs]
TEMPLATES = {t for r in (*RELATIONS.values(), *BROAD_RELATIONS.values()) for t in r.documents}
TEMPLATES |= {t for sentences in TRAIN_DOCUMENTS.values() for t in sentences}


def answer_first(sentence: str) -> bool:
    """Whether the generator's sentence that produced ``sentence`` names the answer before the fact's cue."""
    for template in TEMPLATES:
        pattern = re.escape(template).replace(r"\{s\}", "(.+)").replace(r"\{o\}", "(.+)")
        if re.fullmatch(pattern, sentence.strip()):
            return template.index("{o}") < template.index("{s}") or template.startswith("{s} and {o}")
    raise ValueError(f"no generator sentence matches {sentence!r}")


rows = []
for pair, document, weights in zip(pairs, encoded, document_weights(phi, [e.input_ids for e in encoded], progress=False)):
    ids = document.input_ids[1:]
    answer = [(tokenizer.decode([ids[i]]), w) for i, (w, a) in enumerate(zip(weights, document.label[1:])) if a]
    sentence = [s for s in re.split(r"(?<=\.) ", pair["document"]) if pair["answer"] in s][-1]
    rows.append((min(w for _, w in answer), answer, sentence, pair["task"]))
rows.sort(key=lambda r: r[0])
for lowest, answer, sentence, task in rows[:int(sys.argv[2]) if len(sys.argv) > 2 else 36]:
    tokens = " ".join(f"{t!r}:{w:.3f}" for t, w in answer)
    print(f"{lowest:.3f} | {tokens} | {sentence} | {task}")
quarter = len(rows) // 4
for i in range(4):
    part = rows[i * quarter:(i + 1) * quarter if i < 3 else len(rows)]
    print(f"quarter {i + 1} (lowest answer weight {part[0][0]:.2f}–{part[-1][0]:.2f}): "
          f"{sum(answer_first(r[2]) for r in part)} of {len(part)} state the fact answer first")
