"""The oracle's weights (1 on a held-out document's answer tokens, 0 elsewhere: the benchmarks' upper reference) on
Gemma's fresh held-out pairs, measured exactly as `taalm validate-phi` measures a φ (same θ start, options, groups and
recorded uniform runs): what weighting exactly the answer tokens gains over uniform weights on each kind there.

    python oracle.py PAIRS OUT [--group 48]     # OUT holds that measurement's uniform.json; the record: OUT/gemma3-270m

A φ directory is loaded only to satisfy validate-phi (GB1 as shipped); its weights are replaced by the answer mask.
"""

import sys

from taalm import meta_train, phi_validate
from taalm.config import ValidatePhiConfig

# keyed by a kind's whole list of documents, not by document: two pairs may share a document with different answers
masks: dict[tuple[tuple[int, ...], ...], list[list[float]]] = {}
build = meta_train.Validator.__init__


def remember_masks(self, *args, **kwargs):
    build(self, *args, **kwargs)
    for held in self.held.values():  # weights are aligned to predicted tokens: the label from the second token on
        masks[tuple(tuple(d.input_ids) for d in held.docs)] = [[float(x) for x in d.label[1:]] for d in held.docs]


def answer_masks(phi, token_ids, **kwargs):
    return masks[tuple(tuple(ids) for ids in token_ids)]


meta_train.Validator.__init__ = remember_masks
meta_train.document_weights = answer_masks
pairs, out, *group = sys.argv[1:]
cfg = ValidatePhiConfig(pairs=pairs, like="gemma3-270m-mix-ga1", phi=["gemma3-270m"], out=out,
                        **({"group": int(group[1])} if group else {}))
result, _ = phi_validate.validate_phis(cfg)
validation = result["candidates"][0]["validation"]
for kind in ("lama", "fictional", "temporalwiki"):
    if f"{kind}/gain_accuracy" not in validation:
        continue
    print(f"{kind}: oracle gain over uniform weights {validation[f'{kind}/gain_accuracy']:+.3f} "
          f"(answer AUC {validation[f'{kind}/answer_auc']:.3f})")
