import json, sys
from taalm import models
from taalm.data import load_pairs
from taalm.meta_train import split_held_out
from taalm.windowing import answer_window
pairs = load_pairs("runs/split-full/meta_pool.jsonl")
train, held = split_held_out(pairs, 32, 0)
tok = models.load_tokenizer("smollm2-135m")
with open("runs/lr_sweep/docs.jsonl", "w") as d, open("runs/lr_sweep/tasks.jsonl", "w") as t:
    for p in held:
        w = answer_window(tok, p.document, p.answer, 128)
        d.write(json.dumps({"text": w.text, "answer": p.answer}) + "\n")
        t.write(json.dumps({"task": p.task, "answer": p.answer}) + "\n")
print(len(held))
