"""φ's answer AUC on test-side fictional facts: in the generator's filler vs in filler φ never saw (sentences of
LAMA-ckl evaluation-part evidence paragraphs), the fact sentence at the same place."""
import random, re, sys, json
import torch
from taalm import models
from taalm.bench import fictional_data, lama_split
from taalm.bench.lama_data import data_file, read_rows
from taalm.data import encode
from taalm.weighting import TrainAttention, resolve_phi, answer_auc, document_weights

facts = fictional_data.generate("test", 64, 0)
evaluation, _ = lama_split.split_variant(read_rows(data_file("variant")))
sentences = [s for r in evaluation for s in re.split(r"(?<=[.!?])\s+", r["evidence"]) if 40 <= len(s) <= 160]
rng = random.Random(0)
tok = models.load_tokenizer("smollm2-135m")
def docs(novel):
    out = []
    for f in facts:
        if not novel:
            out.append((f.document, f.answer)); continue
        filler = [s for s in rng.sample(sentences, 4) if f.answer not in s]
        at = {"first": 0, "last": len(filler)}.get(f.fact_place, 2)
        filler.insert(at, f.sentence)
        out.append((" ".join(filler), f.answer))
    return out
sets = {"generator filler": docs(False), "novel filler (LAMA-ckl evaluation sentences)": docs(True)}
result = {}
for alias in sys.argv[1:]:
    phi = TrainAttention.load(resolve_phi(alias))
    for name, pairs in sets.items():
        enc = [encode(tok, t, 512, answer=a, where="x") for t, a in pairs]
        w = document_weights(phi, [e.input_ids for e in enc], progress=False)
        result[f"{alias} | {name}"] = round(answer_auc([torch.tensor(x) for x in w], [e.label for e in enc]), 3)
print(json.dumps(result, indent=1))
