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

from taalm import meta_train, models, phi_validate
from taalm.bench.fictional_data import BROAD_RELATIONS, RELATIONS, TRAIN_DOCUMENTS
from taalm.config import ValidatePhiConfig

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


tokenizer = models.load_tokenizer("gemma3-270m")
masks: dict[tuple[tuple[int, ...], ...], list[list[float]]] = {}
build = meta_train.Validator.__init__


def both_argument_masks(self, cfg, theta, start, held, tokenizer_, device, out):
    build(self, cfg, theta, start, held, tokenizer_, device, out)
    for kind in [k for k in self.held if k != "fictional"]:
        del self.held[kind]  # fictional documents only: the only kind whose subject the generator tells
    pairs = [p for p in held if p.kind == "fictional"]
    docs = self.held["fictional"].docs
    rows = []
    for pair, doc in zip(pairs, docs, strict=True):
        start_s, end_s = subject_span(pair.document, pair.answer)
        offsets = tokenizer(pair.document, return_offsets_mapping=True)["offset_mapping"][:len(doc.input_ids)]
        subject = [e > s and s < end_s and e > start_s for s, e in offsets]
        rows.append([float(a or b) for a, b in zip(doc.label[1:], subject[1:])])
    masks[tuple(tuple(d.input_ids) for d in docs)] = rows


def masked(phi, token_ids, **kwargs):
    return masks[tuple(tuple(ids) for ids in token_ids)]


meta_train.Validator.__init__ = both_argument_masks
meta_train.document_weights = masked
pairs, out, *group = sys.argv[1:]
cfg = ValidatePhiConfig(pairs=pairs, like="gemma3-270m-mix-ga1", phi=["gemma3-270m"], out=out,
                        **({"group": int(group[1])} if group else {}))
result, _ = phi_validate.validate_phis(cfg)
validation = result["candidates"][0]["validation"]
print(f"fictional: both arguments' gain over uniform weights {validation['gain_accuracy']:+.3f}")  # one kind: unprefixed
