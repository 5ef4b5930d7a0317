"""The fictional benchmark's `cpu` preset on Gemma 3 270M with weights 1 on both arguments of each document's fact
(the answer's tokens and the subject's mention in the sentence that states the fact), 0 elsewhere: what a φ that
found every argument of every fact, but could not tell which one a later probe asks, would reach against finetune.
A bound, not a method: it reads the generator's templates, which no φ sees.

    python both_arguments_bench.py taalm bench fictional ... --methods taalm ...   # the command of README.md

The run is `taalm bench` itself; only the taalm rows' weight source is replaced (the --phi it names is never loaded).
"""

import sys
from pathlib import Path

import torch

from taalm import cli
from taalm.weight_sources import PhiWeights

sys.path.insert(0, str(Path(__file__).parents[2] / "phi" / "gemma3-270m-fresh-validation" / "both-arguments"))
from both_arguments import subject_span  # the fresh pairs' measurement: same templates, same span


def remember_documents(self, documents):
    self.documents = documents


def both_argument_weights(self, run):
    rows = []
    for document, encoded in zip(self.documents, run.docs, strict=True):
        start, end = subject_span(document.text, document.answer)
        offsets = run.tokenizer(document.text, return_offsets_mapping=True)["offset_mapping"]
        subject = [e > s and s < end and e > start for s, e in offsets[: len(encoded.input_ids)]]
        rows.append(torch.tensor([float(a or b) for a, b in zip(encoded.label[1:], subject[1:])]))
    self.per_doc = rows


PhiWeights.labels_answers = True  # encode the answer's tokens, as the oracle does
PhiWeights.check = remember_documents
PhiWeights.prepare = both_argument_weights

if __name__ == "__main__":
    sys.argv = sys.argv[1:]
    sys.exit(cli.main())
