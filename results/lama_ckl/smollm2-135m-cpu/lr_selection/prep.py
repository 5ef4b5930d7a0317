"""The held-out split φ's meta-training uses (32 pairs, seed 0) of the tailored meta pool, documents windowed to 128
tokens: where θ's learning rate for the LAMA-ckl cpu preset is chosen."""
import json
import sys

from taalm import models
from taalm.data import load_pairs
from taalm.meta_train import split_held_out
from taalm.windowing import answer_window

pool, out = sys.argv[1], sys.argv[2]
_, held = split_held_out(load_pairs(pool), 32, 0)
tok = models.load_tokenizer("smollm2-135m")
with open(f"{out}/docs.jsonl", "w") as d, open(f"{out}/tasks.jsonl", "w") as t:
    for p in held:
        d.write(json.dumps({"text": answer_window(tok, p.document, p.answer, 128).text, "answer": p.answer}) + "\n")
        t.write(json.dumps({"task": p.task, "answer": p.answer}) + "\n")
print(len(held))
