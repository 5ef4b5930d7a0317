import math

import pytest
import torch

from taalm import meta, models
from taalm.data import Pair
from taalm.weighting import TrainAttention


def _setup(tiny_model, dtype="float64", objective_pairs=2):
    torch.manual_seed(0)
    tokenizer = models.load_tokenizer(tiny_model)
    theta = models.add_lora(models.load_causal_lm(tiny_model, dtype=dtype, attn_implementation="eager"), r=4, alpha=8,
                            dropout=0.0)
    # LoRA B starts at 0; make θ's adapter a non-no-op so every path is exercised.
    with torch.no_grad():
        for n, p in theta.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    phi = TrainAttention.create(tiny_model, r=4, alpha=8, dropout=0.0, dtype=dtype, attn_implementation="eager")
    # Spread the weights (w ≈ 0.5 ± 0.1) so that the head bias changes their *relative* sizes: the normalised loss
    # is invariant to a uniform scaling, which would make d/d(bias) vanish at the paper's init (bias 4).
    with torch.no_grad():
        phi.head.weight.normal_(0, 0.5)
        phi.head.bias.zero_()
    pairs = [Pair("Santiago is the capital of Chile . The fox jumps .", "Santiago is the capital of Chile .", "Chile"),
             Pair("Marie Curie was born in Warsaw .", "Marie Curie was born in Warsaw .", "Warsaw")][:objective_pairs]
    encoded = [meta.encode_pair(tokenizer, p, 64) for p in pairs]
    problem = meta.make_problem(encoded, tokenizer.pad_token_id, unrelated=encoded[::-1])
    return theta, phi, problem


def _outer(theta, phi, problem, objective, dummy_steps, lr):
    phi.zero_grad()
    start = meta.trainable_params(theta)
    return meta.meta_gradient(theta, phi, start, problem, dummy_steps=dummy_steps, inner_lr=lr, objective=objective)


@pytest.mark.parametrize("objective", ["obj", "change3"])
def test_meta_gradient_matches_finite_difference(tiny_model, objective):
    """d(outer loss)/d(φ head bias) by autograd through the inner AdamW step == central finite difference (float64).

    The warm-up (dummy) steps are non-differentiable by design, so they are run once and held fixed; the finite
    difference then perturbs exactly what the analytic gradient differentiates."""
    theta, phi, problem = _setup(tiny_model)
    problem.unrelated = None
    lr = 1e-2  # large enough that the outer loss visibly depends on the weights
    doc = problem.document
    start = meta.trainable_params(theta)
    with torch.no_grad():
        fixed = phi(doc["input_ids"], doc["attention_mask"])
    params, state = meta.warm_up(meta.InnerModel(theta), start, doc, fixed, 1, lr, 0.01)

    def outer(bias_shift: float, keep_graph: bool = False):
        with torch.no_grad():
            phi.head.bias += bias_shift
        try:
            weights = phi(doc["input_ids"], doc["attention_mask"])
            stepped = meta.differentiable_step(meta.InnerModel(theta), params, state, doc, weights, lr, 0.01)
            return meta.evaluate_outer(meta.InnerModel(theta), start, stepped, problem, objective).total
        finally:
            with torch.no_grad():
                phi.head.bias -= bias_shift

    (analytic,) = torch.autograd.grad(outer(0.0), [phi.head.bias])
    analytic = analytic.item()
    # Adam divides by sqrt(v): round-off in tiny gradient entries is amplified, so a smaller step is noisier.
    h = 1e-3
    numeric = (outer(h).item() - outer(-h).item()) / (2 * h)
    assert math.isfinite(analytic) and abs(numeric) > 1e-9
    assert abs(analytic - numeric) / abs(numeric) < 1e-2, (analytic, numeric)


def test_detached_inner_step_leaves_no_path_to_phi(tiny_model, monkeypatch):
    """Without the differentiable inner step the outer loss does not depend on φ at all."""
    theta, phi, problem = _setup(tiny_model)
    original = meta.adamw_step
    monkeypatch.setattr(meta, "adamw_step", lambda *a, **k: original(*a, **{**k, "differentiable": False}))
    doc = problem.document
    start = meta.trainable_params(theta)
    weights = phi(doc["input_ids"], doc["attention_mask"])
    params, state = meta.warm_up(meta.InnerModel(theta), start, doc, weights, 1, 1e-2, 0.01)
    stepped = meta.differentiable_step(meta.InnerModel(theta), params, state, doc, weights, 1e-2, 0.01)
    total = meta.evaluate_outer(meta.InnerModel(theta), start, stepped, problem, "obj").total
    assert total.grad_fn is None or not any(
        g is not None for g in torch.autograd.grad(total, [phi.head.bias], allow_unused=True))


def test_adamw_step_matches_torch(tiny_model):
    torch.manual_seed(1)
    p = torch.randn(5, 3, dtype=torch.float64)
    ref = p.clone().requires_grad_()
    opt = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.01)
    state = meta.AdamWState()
    params = {"p": p.clone().requires_grad_()}
    for _ in range(3):
        g = torch.randn(5, 3, dtype=torch.float64)
        g[0] = 0.0  # zero-gradient entries must behave like torch's
        ref.grad = g.clone()
        opt.step()
        params = meta.adamw_step(params, {"p": g}, state, 1e-2, 0.01)
    torch.testing.assert_close(params["p"].detach(), ref.detach(), rtol=1e-12, atol=1e-12)


def test_restrict_term_adds_to_objective(tiny_model):
    theta, phi, problem = _setup(tiny_model)
    with_restrict = _outer(theta, phi, problem, "obj", 1, 1e-2)
    assert with_restrict.restrict > 0
    assert with_restrict.objective == pytest.approx(
        with_restrict.restrict + _outer(theta, phi, meta.InnerProblem(problem.document, problem.task), "obj", 1,
                                        1e-2).objective, rel=1e-9)


@pytest.mark.parametrize(("objective", "restrict"), [("obj", False), ("change2", True)])
def test_stacked_inner_problems_equal_one_at_a_time(tiny_model, objective, restrict):
    """Batching the meta-batch's inner problems (LoRA parameters stacked per row) gives the per-pair loop's
    meta-gradient: every row is still its own inner problem, from θ's start."""
    theta, phi, _ = _setup(tiny_model)
    tokenizer = models.load_tokenizer(tiny_model)
    pairs = [Pair("Santiago is the capital of Chile . The fox jumps .", "Santiago is the capital of Chile .", "Chile"),
             Pair("Marie Curie was born in Warsaw .", "Marie Curie was born in Warsaw .", "Warsaw"),
             Pair("The Eiffel Tower is located in Paris , France , near the river bank .",
                  "The Eiffel Tower is located in Paris .", "Paris")]
    encoded = [meta.encode_pair(tokenizer, p, 64) for p in pairs]
    unrelated = encoded[1:] + encoded[:1] if restrict else None
    start = meta.trainable_params(theta)
    kwargs = {"dummy_steps": 1, "inner_lr": 1e-2, "objective": objective, "scale": 0.25}
    phi.zero_grad()
    loop = [meta.meta_gradient(theta, phi, start, meta.make_problem([e], tokenizer.pad_token_id,
                                                                    [unrelated[i]] if restrict else None), **kwargs)
            for i, e in enumerate(encoded)]
    expected = {n: p.grad.clone() for n, p in phi.named_parameters() if p.grad is not None}
    phi.zero_grad()
    stacked = meta.meta_gradient(theta, phi, start, meta.make_problem(encoded, tokenizer.pad_token_id, unrelated),
                                 stacked=True, **kwargs)
    got = {n: p.grad.clone() for n, p in phi.named_parameters() if p.grad is not None}
    assert expected.keys() == got.keys() and float(expected["head.weight"].abs().max()) > 0
    for name, value in expected.items():
        # float64, but the inner AdamW step divides by sqrt(v) = |g| on its first step: for θ's near-zero gradient
        # entries a last-bit change (the thread count changes the summation order) moves φ's gradient by up to ~3e-10
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-9)
    assert stacked.outer_loss == pytest.approx(sum(r.outer_loss for r in loop) / 3, rel=1e-9)
    # θ's own LoRA parameters were never touched, and peft's adapter is back on
    assert all(torch.equal(p, start[n]) for n, p in theta.named_parameters() if n in start)
    from peft.tuners.lora import LoraLayer

    assert not any(m.disable_adapters for m in theta.modules() if isinstance(m, LoraLayer))
