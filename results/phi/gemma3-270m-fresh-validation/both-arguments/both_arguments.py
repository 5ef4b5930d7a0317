"""Weights 1 on both arguments of a fictional document's fact (the answer's tokens and the subject's mention in the
sentence that states the fact), 0 elsewhere, on Gemma's fresh held-out fictional pairs, measured exactly as
`taalm validate-phi` measures a φ (same θ start, options, groups and recorded uniform runs; fictional pairs only).
How much of the oracle's gain is left to a φ that weights both arguments, as a φ must when it cannot tell which one a
later probe will ask ("Krythquu Mequeinste founded the Raknoth Foundation": the founder, or what was founded?).

    python both_arguments.py PAIRS OUT [--group 48]   # OUT holds that measurement's uniform.json; record: OUT/gemma3-270m

A φ directory is loaded only to satisfy validate-phi (GB1 as shipped); its weights are replaced by the mask.
"""

import re
import sys
from pathlib import Path

from taalm import models
from taalm.bench.fictional_data import BROAD_RELATIONS, RELATIONS, TRAIN_DOCUMENTS

sys.path.insert(0, str(Path(__file__).parents[1] / "oracle"))
from oracle import measure_with_masks  # the oracle's measurement, with other masks

TEMPLATES = {t for r in (*RELATIONS.values(), *BROAD_RELATIONS.values()) for t in r.documents}
TEMPLATES |= {t for sentences in TRAIN_DOCUMENTS.values() for t in sentences}


def pattern_of(template: str) -> re.Pattern:
    """The template as a regex: the first {s} / {o} a named group, a repeated one a back-reference."""
    pattern = re.escape(template)
    for name in ("s", "o"):
        placeholder = re.escape("{" + name + "}")
        pattern = pattern.replace(placeholder, f"(?P<{name}>.+)", 1).replace(placeholder, f"(?P={name})")
    return re.compile(pattern)


PATTERNS = [pattern_of(t) for t in TEMPLATES]


def subject_span(document: str, answer: str) -> tuple[int, int]:
    """Character span of the subject's mention in the document's sentence that states the fact about ``answer``."""
    for sentence in re.finditer(r"[^.]+\.", document):
        text = sentence.group().strip()
        start = sentence.start() + sentence.group().index(text)
        for pattern in PATTERNS:
            found = pattern.fullmatch(text)
            if found and found.group("o") == answer:
                return start + found.start("s"), start + found.end("s")
    raise ValueError(f"no generator sentence states {answer!r} in {document!r}")


def both_argument_masks(validator, held):
    """Fictional documents only (the only kind whose subject the generator tells): the answer's tokens and the
    subject's mention in the fact sentence."""
    for kind in [k for k in validator.held if k != "fictional"]:
        del validator.held[kind]
    docs = validator.held["fictional"].docs
    rows = []
    for pair, doc in zip([p for p in held if p.kind == "fictional"], docs, strict=True):
        start, end = subject_span(pair.document, pair.answer)
        offsets = tokenizer(pair.document, return_offsets_mapping=True)["offset_mapping"][:len(doc.input_ids)]
        subject = [e > s and s < end and e > start for s, e in offsets]
        rows.append([float(a or b) for a, b in zip(doc.label[1:], subject[1:])])
    yield docs, rows


if __name__ == "__main__":
    tokenizer = models.load_tokenizer("gemma3-270m")
    validation = measure_with_masks(both_argument_masks, sys.argv[1:])
    print(f"fictional: both arguments' gain over uniform weights {validation['gain_accuracy']:+.3f}")  # one kind
