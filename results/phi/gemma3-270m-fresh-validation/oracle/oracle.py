"""The oracle's weights (1 on a held-out document's answer tokens, 0 elsewhere: the benchmarks' upper reference) on
Gemma's fresh held-out pairs, measured exactly as `taalm validate-phi` measures a φ (same θ start, options, groups and
recorded uniform runs): what weighting exactly the answer tokens gains over uniform weights on each kind there.

    python oracle.py PAIRS OUT [--group 48]     # OUT holds that measurement's uniform.json; the record: OUT/gemma3-270m

A φ directory is loaded only to satisfy validate-phi (GB1 as shipped); its weights are replaced by the answer mask.
"""

import sys

from taalm import meta_train, phi_validate
from taalm.config import ValidatePhiConfig


def measure_with_masks(masks_for, argv: list[str]) -> dict:
    """validate-phi's measurement (PAIRS OUT [--group N] in ``argv``) with each kind's weights replaced by masks:
    ``masks_for(validator, held_pairs)`` yields (a kind's documents, their rows of weights) once the validator is
    built (it may drop kinds from ``validator.held``). Returns the validation record."""
    # keyed by a kind's whole list of documents, not by document: two pairs may share a document with other answers
    masks: dict[tuple[tuple[int, ...], ...], list[list[float]]] = {}
    build = meta_train.Validator.__init__

    def remember_masks(self, cfg, theta, start, held, tokenizer, device, out):
        build(self, cfg, theta, start, held, tokenizer, device, out)
        for docs, rows in masks_for(self, held):
            masks[tuple(tuple(d.input_ids) for d in docs)] = rows

    meta_train.Validator.__init__ = remember_masks
    meta_train.document_weights = lambda phi, token_ids, **kwargs: masks[tuple(tuple(ids) for ids in token_ids)]
    pairs, out, *group = argv
    cfg = ValidatePhiConfig(pairs=pairs, like="gemma3-270m-mix-ga1", phi=["gemma3-270m"], out=out,
                            **({"group": int(group[1])} if group else {}))
    result, _ = phi_validate.validate_phis(cfg)
    return result["candidates"][0]["validation"]


def answer_masks(validator, held):
    """The oracle: each document's answer tokens (weights are aligned to predicted tokens: the label from the second
    token on)."""
    for kind in validator.held.values():
        yield kind.docs, [[float(x) for x in d.label[1:]] for d in kind.docs]


if __name__ == "__main__":
    validation = measure_with_masks(answer_masks, sys.argv[1:])
    for kind in ("lama", "fictional", "temporalwiki"):
        if f"{kind}/gain_accuracy" not in validation:
            continue
        print(f"{kind}: oracle gain over uniform weights {validation[f'{kind}/gain_accuracy']:+.3f} "
              f"(answer AUC {validation[f'{kind}/answer_auc']:.3f})")
