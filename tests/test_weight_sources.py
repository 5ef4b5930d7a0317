"""Token-weight sources behind one interface: each method picks its source, the loop names none; known weights for
hand-made batches (fixed, oracle, RHO-1), φ's cache read back safely, and progress bars on the long passes."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest
import torch

from taalm import ckl, models
from taalm.data import Document, encode, load_documents, pad_token_id
from taalm.distributed import Processes
from taalm.errors import TaalmError
from taalm.methods import ALL_METHODS, parse_method
from taalm.scoring import ProbeScores, evaluate, score_probes
from taalm.weight_sources import (
    WEIGHTS_CACHE,
    ExcessLoss,
    FixedWeights,
    OracleMask,
    PhiWeights,
    Preparation,
    WeightSource,
    reference_nll,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def test_each_method_picks_its_source():
    assert type(parse_method("finetune").weight_source()) is WeightSource
    assert type(parse_method("recadam+mixreview").weight_source()) is WeightSource
    assert type(parse_method("oracle").weight_source()) is OracleMask
    phi = parse_method("taalm+kadapter").weight_source(phi="runs/phi")
    assert type(phi) is PhiWeights and phi.phi == "runs/phi"
    rho1 = parse_method("rho1").weight_source(rho1_ratio=0.3)
    assert type(rho1) is ExcessLoss and (rho1.ratio, rho1.frozen_base) == (0.3, False)
    assert parse_method("rho1+kadapter").weight_source().frozen_base  # the K-Adapter's frozen base is the reference
    assert [parse_method(m).weight_source().labels_answers for m in ALL_METHODS].count(True) == 1  # the oracle


def test_the_loop_names_no_weight_source():
    """The loop calls ``WeightSource.weights``; which source it has is the method's business."""
    module, learner = inspect.getsource(ckl), inspect.getsource(ckl.Learner)
    for name in ('"rho1"', '"oracle"', '== "taalm"', ".weights =="):
        assert name not in module, name
    for name in ("rho1", "oracle", "phi", "reference"):
        assert name not in learner, name


# mask: row 0 has 4 real predicted tokens, row 1 has 2 (then padding)
MASK = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
NLL = torch.tensor([[2.0, 5.0, 1.0, 3.0], [4.0, 1.0, 9.0, 9.0]])


def test_uniform_weights_every_position():
    assert torch.equal(WeightSource().weights([("doc", 0), ("doc", 1)], NLL, MASK), torch.ones(2, 4))


def test_fixed_weights_pad_per_document_and_review_documents_weigh_one():
    source = FixedWeights([torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.5, 0.6])])
    assert torch.equal(source.weights([("doc", 1), ("doc", 0)], NLL, MASK),
                       torch.tensor([[0.5, 0.6, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]))
    assert torch.equal(source.weights([("review", 0), ("doc", 1)], NLL, MASK),
                       torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.5, 0.6, 0.0, 0.0]]))


def test_excess_loss_keeps_the_tokens_theta_finds_harder_than_the_reference():
    source = ExcessLoss(0.5)
    source.reference = [torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 3.0])]
    # row 0: excess 2, 5, 1, 3 -> the top ceil(0.5·4) = 2 are positions 1 and 3
    # row 1: excess 4, -2 (padding never kept) -> the top ceil(0.5·2) = 1 is position 0
    assert source.weights([("doc", 0), ("doc", 1)], NLL, MASK).tolist() == [[0, 1, 0, 1], [1, 0, 0, 0]]
    # a review document weighs every token (padding included; the loss masks it)
    assert source.weights([("review", 5), ("doc", 1)], NLL, MASK).tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]


def _tiny_docs(tiny_model: str, answers: bool = True) -> tuple[object, list]:
    tokenizer = models.load_tokenizer(tiny_model)
    texts = [("Santiago is the capital of Chile .", "Chile"), ("Marie Curie was born in Warsaw .", "Warsaw")]
    return tokenizer, [encode(tokenizer, t, 64, answer=a if answers else None) for t, a in texts]


def test_oracle_weighs_the_answer_tokens_and_checks_every_document_has_one(tiny_model, tmp_path):
    tokenizer, docs = _tiny_docs(tiny_model)
    source = OracleMask()
    source.prepare(Preparation(None, docs, tokenizer, 0, 2, CPU, tmp_path, Processes.single()))
    for weights, doc in zip(source.per_doc, docs):
        assert weights.tolist() == [float(x) for x in doc.label[1:]] and 0 < weights.sum() < len(weights)
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "a b c", "answer": "c"}) + "\n" + json.dumps({"text": "d e f"}) + "\n")
    with pytest.raises(TaalmError, match=f"^{path}:2: method oracle needs an 'answer'"):
        source.check(load_documents(path))
    source.check([Document("x y", answer="y")])


def test_phi_weights_read_an_existing_cache_without_phi(tmp_path):
    """A resumed run reads the cache (tensors only, loaded with weights_only) and never loads φ."""
    cached = [torch.tensor([0.25, 0.5]), torch.tensor([1.0])]
    buffer = io.BytesIO()
    torch.save(cached, buffer)
    (tmp_path / WEIGHTS_CACHE).write_bytes(buffer.getvalue())
    source = PhiWeights("no/such/phi")
    source.prepare(Preparation(None, [], None, 0, 2, CPU, tmp_path, Processes.single()))
    assert [w.tolist() for w in source.per_doc] == [[0.25, 0.5], [1.0]]
    with pytest.raises(TaalmError, match="^option --phi: no/such/phi"):
        source.check([])


def test_reference_nll_is_the_model_without_its_adapter(tiny_model, capsys):
    tokenizer, docs = _tiny_docs(tiny_model, answers=False)
    base = models.load_causal_lm(tiny_model)
    torch.manual_seed(0)
    lora = models.add_lora(models.load_causal_lm(tiny_model), 4, 16, 0.0)
    with torch.no_grad():  # a LoRA that changes θ, so the reference differs from θ's own loss
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    reference = reference_nll(lora, docs, pad_token_id(tokenizer), 1, CPU)
    with torch.no_grad():
        for doc, nll in zip(docs, reference):
            ids = torch.tensor([doc.input_ids])
            expected = base(input_ids=ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0].neg()
            assert nll.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
            adapted = lora(input_ids=ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0].neg()
            assert float((adapted - expected).abs().max()) > 1e-3
    assert "RHO-1 reference" in capsys.readouterr().err  # the pass shows its progress


def test_evaluation_shows_progress_per_probe_set_and_ticks_each_batch(tiny_model, capsys):
    tokenizer, probes = _tiny_docs(tiny_model)
    model = models.load_causal_lm(tiny_model)

    class Ticks:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    ticks = Ticks()
    scores = score_probes(model, probes, pad_token_id(tokenizer), 1, CPU, progress=ticks)
    assert isinstance(scores, ProbeScores) and ticks.n == 2  # one per batch of 1
    evaluate(model, {"facts": probes}, pad_token_id(tokenizer), 1, CPU, "auto")
    assert "evaluate [facts]" in capsys.readouterr().err


def test_learn_returns_the_records_it_wrote(tiny_model, tmp_path):
    from taalm.ckl import learn
    from taalm.config import LearnConfig

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("Santiago is the capital of Chile .",
                                                                    "Marie Curie was born in Warsaw .")))
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"task": "Santiago is the capital of Chile", "answer": "Chile"}) + "\n")
    result = learn(LearnConfig(model=tiny_model, docs=str(docs), out=str(tmp_path / "out"), probes=[f"p={probes}"],
                               epochs=2, lora_r=4, batch_size=2, micro_batch=2))
    written = [json.loads(line) for line in (Path(result.out) / "metrics.jsonl").read_text().splitlines()]
    assert result.metrics == written and [r["epoch"] for r in written] == [0, 1, 2]
