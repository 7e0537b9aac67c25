"""solve(method="trust-region") against torch.linalg.svd: the correctness tests of the default, its
quadratic convergence, its info, and the gradients through it."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

import riemsvd
from riemsvd._trust import RadiusRule
from tests.matrices import check_svd, counting_operator, make_matrix

solve = functools.partial(riemsvd.solve, method="trust-region")
# The correctness properties shared with the default method (any spectrum, σ to 1e-10 per class,
# batches, seeds) are parametrized over both in tests/test_solve.py.


def test_sparse_and_matrix_free_inputs(gen):
    s = sp.random(300, 200, density=0.05, format="csr", random_state=np.random.default_rng(0))
    dense = torch.from_numpy(s.toarray())
    for a in (s, sla.aslinearoperator(s), dense.to_sparse()):
        result = solve(a, 3, generator=gen)
        check_svd(dense, result, 3, result.info.tol)


def test_zero_matrix_and_k_equal_to_min_dimension(gen):
    zero = torch.zeros(2, 20, 10, dtype=torch.float64)
    check_svd(zero, solve(zero, 4, generator=gen), 4, 1e-12)
    a = make_matrix("gaussian", 30, 12, gen)
    check_svd(a, solve(a, 12, generator=gen), 12, 1e-12)


def test_gradients_match_the_full_svd(gen):
    a = make_matrix("decay", 40, 25, gen).requires_grad_()
    probe = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    u, s, _ = solve(a, 3, generator=gen)
    loss = s.sum() + ((u @ u.mT) * probe).sum()  # invariant under each column's sign
    ours = torch.autograd.grad(loss, a)[0]
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    loss = s[:3].sum() + ((u[:, :3] @ u[:, :3].mT) * probe).sum()
    torch.testing.assert_close(ours, torch.autograd.grad(loss, a)[0], rtol=1e-8, atol=1e-10)


def test_init_with_fewer_columns_shared_over_batch_and_u_alone(gen):
    a = torch.stack([make_matrix("decay", 40, 30, gen) for _ in range(3)])
    u0, _, vh = torch.linalg.svd(a[0])
    result = solve(a, 3, init=(u0[:, :1], vh[:1].mT), generator=gen)
    check_svd(a, result, 3, result.info.tol)
    check_svd(a[1], solve(a[1], 3, init=u0[:, :3], generator=gen), 3, 1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "decay"])
@pytest.mark.parametrize("k", [1, 4])
def test_residual_converges_quadratically_from_a_random_start(kind, k, gen):
    """Near the solution each outer iteration squares the residual: r₊ ≤ C r² (relative to σ₁).

    The constant is about ‖K⁻¹‖ times the cost's third derivative, ‖K⁻¹‖ ≈ σ₁/(σ_k − σ_{k+1}): over
    20 random starts on each of these classes (gaps 0.25–50%) C·gap/σ₁ was at most 8.4, so the bound
    is 20·σ₁/gap. A method that is only linear (the inner CG stopped at a fixed κ = 0.1) has
    r₊/r² ≈ 0.1/r, above 1e4 by r = 1e-5."""
    a = make_matrix(kind, 400, 200, gen)
    s = torch.linalg.svdvals(a)
    gap = float((s[k - 1] - s[k]) / s[0])
    result = solve(a, k, tol=1e-13, generator=gen)
    check_svd(a, result, k, 1e-13)
    r = [res for _, res in result.info.history]
    assert result.info.iterations <= 20 and len(r) == result.info.iterations + 1
    tail = [(x, y) for x, y in zip(r, r[1:]) if 1e-14 < y and x < 0.05]  # near, above the floor
    assert len(tail) >= 2, r
    assert max(y / x**2 for x, y in tail) <= 20 / gap, (r, gap)


@pytest.mark.parametrize("seed", range(4))
def test_a_matrix_of_subnormal_entries_converges_as_at_any_scale(seed):
    """A Gaussian 300×200 float64 matrix times 1e-310: the operator's scale, 2^1023, multiplied a CG
    direction of norm above 2 to inf, and its product to NaN: seed 2 stalled with σ 2.4% off and
    1326 RuntimeWarnings, the others warned 8–21 times (a new user's trial). The power of two is now
    applied half before the product and half after."""
    b = torch.randn(300, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarnings, a ConvergenceWarning
        result = solve(b * 1e-310, 3, generator=torch.Generator().manual_seed(seed))
    assert result.info.stop_reason == "converged"
    reference = torch.linalg.svdvals(b)[:3] * 1e-310  # scaled: σ's relative error stays ~1e-15
    torch.testing.assert_close(result.S, reference, rtol=1e-12, atol=0.0)


def test_a_scale_of_zero_makes_zero_products():
    """The backward's unit is 0 for a σ₁ of inf; a scale applied in halves had made its products 0/0 =
    NaN where the whole scale made them 0 (a review)."""
    from riemsvd._operator import DenseOperator

    op = DenseOperator(torch.randn(5, 4, dtype=torch.float64), False)
    op.scale = torch.zeros(1, 1, dtype=torch.float64)
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(op.matmat(x), torch.zeros(5, 2, dtype=torch.float64))
    assert torch.equal(op.rmatmat(y), torch.zeros(4, 2, dtype=torch.float64))


def test_info_counts_products_and_outer_iterations(gen):
    a = make_matrix("decay", 100, 60, gen)
    counting, calls = counting_operator(a)
    result = solve(counting, 2, generator=gen)
    info = result.info
    assert info.matvecs == calls["n"] > 0 and info.method == "trust-region"
    assert info.stop_reason == "converged" and info.restarts == 0
    products = [mv for mv, _ in info.history]
    assert len(products) == info.iterations + 1 and products == sorted(products)
    assert info.history[-1][1] <= info.tol and float(info.residual) <= info.tol


def test_maxiter_reached_warns_and_reports_unconverged(gen):
    a = make_matrix("gaussian", 400, 300, gen)
    with pytest.warns(riemsvd.ConvergenceWarning, match="maxiter"):
        result = solve(a, 1, maxiter=2, generator=gen)
    assert not bool(result.info.converged.all()) and result.info.iterations == 2
    assert result.info.stop_reason == "maxiter" and float(result.info.residual) > result.info.tol


def test_default_method_is_unchanged(gen):
    a = make_matrix("decay", 400, 200, gen)
    assert riemsvd.solve(a, 1, generator=gen).info.method == "iterative"


def test_radius_rule_follows_absil_baker_gallivan():
    rule = RadiusRule()
    radius = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    rho = torch.tensor([0.05, 0.2, 0.5, 0.9, 0.9])
    boundary = torch.tensor([True, True, True, True, False])
    accepted, nxt = rule.update(radius, rho, boundary, max_radius=1.5)
    assert accepted.tolist() == [False, True, True, True, True]
    assert nxt.tolist() == [0.25, 0.25, 1.0, 1.5, 1.0]
    assert not bool(rule.update(radius[:1], torch.tensor([float("nan")]), boundary[:1], 2.0)[0])
    with pytest.raises(ValueError, match="`kappa`"):
        RadiusRule(kappa=1.5)


def test_sharded_matrices_are_refused_by_name():
    from riemsvd._validate import check_method

    with pytest.raises(ValueError, match="`method='trust-region'` is not available for a sharded A"):
        check_method("trust-region", None, sharded=True)
    with pytest.raises(ValueError, match="'trust-region'"):
        riemsvd.solve(torch.eye(3), 1, method="trust_region")


@pytest.mark.parametrize("k", [1, 3])
def test_model_predicts_the_decrease_of_a_newton_step(k, gen):
    """ρ = actual / predicted decrease → 1 for the inner Newton step near the solution: the model's
    second-order term is that of the cost (a model that kept only ⟨g, s⟩ would give ρ = 1/2)."""
    from riemsvd._operator import as_operator
    from riemsvd._trust import _evaluate, _model_step

    a = make_matrix("decay", 80, 50, gen)
    op = as_operator(a)
    uu, _, vh = torch.linalg.svd(a, full_matrices=False)
    u = torch.linalg.qr(uu[:, :k] + 1e-3 * torch.randn(80, k, generator=gen, dtype=a.dtype))[0]
    v = torch.linalg.qr(vh[:k].mT + 1e-3 * torch.randn(50, k, generator=gen, dtype=a.dtype))[0]
    point = _evaluate(op, u, v)
    big = torch.tensor([10.0], dtype=a.dtype)
    _, (x, y), predicted = _model_step(op, point, torch.ones(k, dtype=torch.bool), big, 1e-12, 200)
    trial = _evaluate(op, torch.linalg.qr(point.u + x)[0], torch.linalg.qr(point.v + y)[0])
    mu = torch.arange(k, 0, -1, dtype=a.dtype)
    actual = (mu * (trial.s - point.s)).sum()
    assert float(predicted) > 0 and abs(float(actual / predicted) - 1) <= 1e-2, (actual, predicted)


def test_a_warm_start_at_a_lower_singular_pair_finds_the_leading_one():
    """From the exact (u₂, v₂) of a float32 300×200 A with σ₁ − σ₂ = 1e-3 the trust region returned σ₂,
    converged, with no warning, on 3 of 20 seeds (a new user's trial): it has no probe for a larger
    value, and the start was a critical point but for its 10·tol random part. Such a start (its first
    residual within 20·tol) goes to the iteration, whose probe finds σ₁."""
    wrong = []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        q1 = torch.linalg.qr(torch.randn(300, 200, dtype=torch.float64, generator=g)).Q
        q2 = torch.linalg.qr(torch.randn(200, 200, dtype=torch.float64, generator=g)).Q
        s = torch.linspace(0.5, 0.01, 200, dtype=torch.float64)
        s[0], s[1], s[2] = 1.001, 1.0, 0.9
        a = ((q1 * s) @ q2.T).float()
        init = (q1[:, 1:2].float(), q2[:, 1:2].float())
        gen = torch.Generator().manual_seed(seed)
        r = riemsvd.solve(a, 1, init=init, method="trust-region", generator=gen)
        if not abs(float(r.S[0]) - 1.001) < 5e-4:
            wrong.append((seed, float(r.S[0])))
        # info.method names the path that ran, whose iterations info counts (it said "trust-region"
        # beside the iteration's count; a new user's trial)
        assert r.info.method == "iterative"
    assert not wrong
    cold = riemsvd.solve(a, 1, method="trust-region", generator=gen)
    assert cold.info.method == "trust-region"
