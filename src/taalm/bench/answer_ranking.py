"""Does φ rank a new document's answer tokens above its other tokens, on every kind of document?

φ's answer-token ROC-AUC on a document is the chance that an answer token outweighs another token (ties half); 0.5
is a random ranking, 1 a perfect one. It is measured on a few fixed documents of each kind, all from the sides the
benchmarks evaluate and never from φ's data: LAMA-ckl variant rows of the split's evaluation part, generated
test-side fictional facts, and TemporalWiki 0901-1001 v3 documents stating one changed fact. The shipped φs are
tested against a bound with it, and it is how a φ that learned one benchmark's habits shows on the others. Two kinds
that no φ trains on are reported beside them (``UNSEEN_KINDS``): the same test-side facts written as personal letters
and as archive cards (``fictional_data.STYLES``).

    taalm weights --phi smollm2-135m --answer_ranking --per_kind 32
"""

from __future__ import annotations

import random

import torch

from taalm.bench import fictional_data, lama_split
from taalm.bench import twiki_data as twiki
from taalm.bench.lama_data import data_file, read_rows
from taalm.data import encode
from taalm.errors import TaalmError
from taalm.weighting import answer_auc, document_weights

KINDS = ("lama", "fictional", "temporalwiki")  # the kinds φ trains on
UNSEEN_KINDS = ("fictional-letter", "fictional-record")  # kinds of document no φ trains on
PERIOD = "0901-1001"


def unseen_documents(per_kind: int = 8, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """``per_kind`` seeded (document, answer) pairs of each unseen kind: test-side facts in another style."""
    return {kind: [(f.document, f.answer) for f in
                   fictional_data.generate("test", per_kind, seed, style=kind.removeprefix("fictional-"))]
            for kind in UNSEEN_KINDS}


def evaluation_documents(per_kind: int = 8, seed: int = 0, unseen: bool = False) -> dict[str, list[tuple[str, str]]]:
    """``per_kind`` seeded (document, answer) pairs of each kind (and, with ``unseen``, of each unseen kind),
    answers verbatim in their documents."""
    evaluation, _ = lama_split.split_variant(read_rows(data_file("variant")))
    lama = [(r["evidence"], r["object"]) for r in evaluation if r["object"] in r["evidence"]]
    fictional = [(f.document, f.answer) for f in fictional_data.generate("test", per_kind, seed)]
    docs = twiki.period_documents(PERIOD, 4 * per_kind, seed)
    temporalwiki = [(d.text, d.facts[0].object) for d in docs if len(d.facts) == 1 and d.facts[0].object in d.text]
    rng = random.Random(seed)
    return {"lama": rng.sample(lama, per_kind), "fictional": fictional,
            "temporalwiki": temporalwiki[:per_kind], **(unseen_documents(per_kind, seed) if unseen else {})}


def encoded_documents(tokenizer, documents: dict[str, list[tuple[str, str]]], max_length: int = 512) -> dict:
    """Per kind, the documents encoded with their answer tokens labelled; a document cut to ``max_length`` tokens
    is kept only if its answer stays visible."""
    result = {}
    for kind, pairs in documents.items():
        encoded = []
        for text, answer in pairs:
            try:
                encoded.append(encode(tokenizer, text, max_length, answer=answer, where=kind))
            except TaalmError:
                continue  # the answer is cut off: nothing to rank
        if not encoded:
            raise TaalmError(f"{kind}: no document keeps its answer within {max_length} tokens")
        result[kind] = encoded
    return result


def _ranking(phi, encoded: dict) -> dict[str, float]:
    result = {}
    for kind, docs in encoded.items():
        weights = document_weights(phi, [e.input_ids for e in docs], progress=False)
        result[kind] = answer_auc([torch.tensor(w) for w in weights], [e.label for e in docs])
    return result


def _chance(encoded: dict, quantile: float, draws: int, seed: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for kind, docs in encoded.items():
        labels = [e.label for e in docs]
        aucs = sorted(answer_auc([torch.rand(len(e.input_ids) - 1, generator=generator) for e in docs], labels)
                      for _ in range(draws))
        result[kind] = aucs[min(draws - 1, int(quantile * draws))]
    return result


def answer_ranking(phi, tokenizer, documents: dict[str, list[tuple[str, str]]],
                   max_length: int = 512) -> dict[str, float]:
    """φ's mean answer-token ROC-AUC per kind (documents cut to ``max_length`` tokens keep only a visible answer)."""
    return _ranking(phi, encoded_documents(tokenizer, documents, max_length))


def chance_bound(tokenizer, documents: dict[str, list[tuple[str, str]]], quantile: float = 0.999,
                 draws: int = 1000, seed: int = 0, max_length: int = 512) -> dict[str, float]:
    """Per kind, the ``quantile`` of a random ranking's mean answer-token ROC-AUC on these very documents. A fixed
    bound would not do: with one or two answer tokens per document a random ranking's AUC spreads widely (on 8
    LAMA-ckl documents its 99th percentile is 0.74, on 32 0.62)."""
    return _chance(encoded_documents(tokenizer, documents, max_length), quantile, draws, seed)


def ranking_against_chance(phi, tokenizer, per_kind: int = 32, seed: int = 0, max_length: int = 512,
                           unseen: bool = False) -> dict[str, dict[str, float]]:
    """Per kind of ``evaluation_documents(per_kind, seed, unseen)``: φ's answer-token ROC-AUC and a random ranking's
    99.9th percentile on the same documents (encoded once for both; the random rankings drawn with the same seed)."""
    encoded = encoded_documents(tokenizer, evaluation_documents(per_kind, seed, unseen), max_length)
    auc, chance = _ranking(phi, encoded), _chance(encoded, 0.999, 1000, seed)
    return {kind: {"answer_auc": auc[kind], "chance_99.9": chance[kind]} for kind in encoded}


def run_answer_ranking(cfg) -> dict:
    """``taalm weights --answer_ranking``: φ's answer-token ROC-AUC on ``cfg.per_kind`` evaluation-side documents of
    each kind, the unseen kinds included (seed ``cfg.seed``), beside a random ranking's 99.9th percentile; printed,
    and written to ``--out``."""
    from pathlib import Path

    from taalm import models
    from taalm.io import atomic_write_json
    from taalm.weighting import TrainAttention, resolve_phi

    phi = TrainAttention.load(resolve_phi(cfg.phi)).to(models.pick_device(cfg.device))
    tokenizer = models.load_tokenizer(phi.backbone_name)
    result = {"phi": cfg.phi, "per_kind": cfg.per_kind, "seed": cfg.seed,
              "kinds": ranking_against_chance(phi, tokenizer, cfg.per_kind, cfg.seed, cfg.max_length, unseen=True)}
    print("| kind | answer-token ROC-AUC | random ranking's 99.9th percentile |\n|---|---|---|")
    for kind, row in result["kinds"].items():
        print(f"| {kind} | {row['answer_auc']:.3f} | {row['chance_99.9']:.3f} |")
    if cfg.out:
        atomic_write_json(Path(cfg.out), result)
        print(f"wrote {cfg.out}")
    return result
