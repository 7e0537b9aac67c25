"""riemsvd.norm_bounds and solve's error bars against torch.linalg.svdvals (float64 reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse.linalg as spl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import riemsvd
from riemsvd._backend import solver_threads
from riemsvd._bounds import _kw_epsilon, _probabilistic
from riemsvd._operator import DenseOperator
from riemsvd._tolerance import product_floor
from tests.matrices import make_matrix, orthonormal

# the float64 reference's own error: a backward-stable SVD is within a few n·ε·σ₁ of the truth
_REF = 4 * torch.finfo(torch.float64).eps

KINDS = ("gaussian", "decay", "tinygap", "repeated", "rankdef", "zero")


def hard_matrix(kind: str, m: int, n: int, gen: torch.Generator, dtype, scale: float) -> torch.Tensor:
    """Spectra that strain an upper bound: top values 1e-12 apart, repeated, rank deficient, zero."""
    r = min(m, n)
    if kind in ("gaussian", "decay"):
        return make_matrix(kind, m, n, gen, dtype, scale)
    if kind == "zero":
        return torch.zeros(m, n, dtype=dtype)
    s = torch.rand(r, generator=gen, dtype=torch.float64).sort(descending=True).values * 0.5
    if kind == "tinygap":
        s[:2] = torch.tensor([1.0, 1.0 - 1e-12], dtype=torch.float64)[: min(r, 2)]
    elif kind == "repeated":
        s[: min(r, 3)] = 1.0
    elif kind == "rankdef":
        s[max(1, r // 2) :] = 0.0
        s[0] = 1.0
    u, v = orthonormal(m, r, gen), orthonormal(n, r, gen)
    return (scale * (u * s) @ v.mT).to(dtype)


def spectral_norm(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(a.double())[..., 0]


def assert_brackets(bounds, a: torch.Tensor) -> None:
    ref = spectral_norm(a)
    slack = _REF * max(a.shape[-2:]) * ref
    lower, upper = (x.double() for x in bounds)
    assert bool((upper >= ref - slack).all()), (upper, ref)
    assert bool((lower <= ref + slack).all()), (lower, ref)
    assert bool((lower >= 0).all())


shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@given(
    shape=shapes,
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    scale=st.sampled_from([1.0, 1e-30, 1e30]),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60)
def test_deterministic_upper_bound_holds_for_any_spectrum(shape, kind, dtype, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    a = hard_matrix(kind, *shape, gen, dtype, scale)
    bounds = riemsvd.norm_bounds(a, generator=gen)
    assert bool(bounds.certified) and float(bounds.failure_probability) == 0.0
    assert bounds.upper.dtype == dtype and bounds.upper.shape == ()
    assert_brackets(bounds, a)


@given(
    shape=st.tuples(st.integers(257, 300), st.integers(257, 300)),
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=30)  # 300×300 operators: 30 cost 0.7 s
def test_probabilistic_upper_bound_holds_for_any_spectrum(shape, kind, dtype, seed):
    # A matrix-free operator larger than 256: no ‖A‖_F, so the bound is the Krylov one. At confidence
    # 1 − 1e-9 a failure over these draws would be a bug, not chance.
    gen = torch.Generator().manual_seed(seed)
    a = hard_matrix(kind, *shape, gen, dtype, 1.0)
    op = riemsvd.linear_operator(lambda x: x @ a.mT, (shape[1],), adjoint=lambda y: y @ a, dtype=dtype)
    bounds = riemsvd.norm_bounds(op, confidence=1 - 1e-9, generator=gen)
    assert not bool(bounds.certified)
    assert math.isclose(float(bounds.failure_probability), 1e-9, rel_tol=1e-3)
    assert_brackets(bounds, a)


def test_batched_bounds_bracket_each_matrix(gen):
    a = torch.stack([hard_matrix(kind, 30, 20, gen, torch.float64, 1.0) for kind in KINDS])
    bounds = riemsvd.norm_bounds(a, generator=gen)
    assert bounds.lower.shape == bounds.upper.shape == bounds.certified.shape == (len(KINDS),)
    assert_brackets(bounds, a)
    with_conf = riemsvd.norm_bounds(a, confidence=0.999, generator=gen)
    assert_brackets(with_conf, a)


def test_a_krylov_space_of_the_whole_space_is_certified(gen):
    """With ``confidence``, a matrix whose smaller side (20, 30) is within the Krylov dimension (at
    least 32) has its whole space spanned: that bound is deterministic (ε = 0), flagged "whole space"
    and certified, a zero matrix's too (both had come flagged "krylov", failure probability δ)."""
    a = torch.stack(
        [hard_matrix("gaussian", 40, 30, gen, torch.float64, 1.0), torch.zeros(40, 30, dtype=torch.float64)]
    )
    for x in (a, a.mT):
        bounds = riemsvd.norm_bounds(x, confidence=0.95, generator=gen)
        assert_brackets(bounds, x)
        assert bool(bounds.certified.all()) and not bool(bounds.failure_probability.any()), bounds
        assert "krylov" not in list(bounds.method), bounds.method


@pytest.mark.parametrize("dtype,scale", [(torch.float64, 1e-310), (torch.float32, 1e-39)])
def test_a_matrix_of_subnormal_entries_is_bracketed(dtype, scale, gen):
    """Entries all subnormal: the rescaling to entries near 1 overflowed (2^1030), the Gram matrix was
    NaN and the certificate's ladder looped forever on a NaN δ."""
    a = (hard_matrix("gaussian", 30, 20, gen, torch.float64, 1.0) * scale).to(dtype)
    bounds = riemsvd.norm_bounds(a, generator=gen)
    assert_brackets(bounds, a)
    assert float(bounds.upper / bounds.lower - 1) < 1e-6


def test_numpy_arrays_are_taken_as_solve_takes_them(gen):
    """norm_bounds once refused a float64 numpy array with "dtype float64; riemsvd needs float32 or
    float64": its inputs now go through solve's own preparation."""
    a = hard_matrix("decay", 30, 20, gen, torch.float64, 1.0)
    bounds = riemsvd.norm_bounds(a.numpy(), generator=gen)
    assert_brackets(bounds, a)
    assert bool(bounds.certified) and float(bounds.upper / bounds.lower - 1) < 1e-9


@pytest.mark.parametrize("kind", ["decay", "lowrank", "cond12"])
def test_deterministic_bound_is_tight_on_gapped_spectra_in_float64(kind, gen):
    a = make_matrix(kind, 300, 150, gen)
    bounds = riemsvd.norm_bounds(a, generator=gen)
    assert bool(bounds.certified)
    # measured 6.1e-13 to 7.2e-13 at the solve's tol 1e-12: a 14× margin
    assert float(bounds.upper / bounds.lower) - 1 <= 1e-11
    assert_brackets(bounds, a)
    # beyond the solves: the bounds' own products, 2·k each, from the Gram matrix's top Ritz vectors
    # (19: k = 1 and 8, and one more) and, where a solve still ran, from its vectors; measured 19, 19, 33
    assert bounds.matvecs - bounds.solve_matvecs <= 40


@pytest.mark.parametrize("seed", [2, 3])
def test_a_clustered_top_gets_as_tight_a_certificate_as_a_flat_one(seed):
    """Ten values 1e-5 apart at the top of a 1000×600 matrix: the certificate's rounds of shift-invert
    refinement had taken each δ from the Ritz vector's residual, which stays far above λ̂'s error in
    a cluster, and left the bound 1.1e-4 and 7.9e-6 above ‖A‖₂ (seeds 2 and 3; 1.6e-8 on seed 1 and
    6.8e-10 on 0, 4 and 5; a new user's trial found 5.3e-5 at 1e-6 apart), where README promises
    8e-9. Measured 6.8e-10 on all six now, δ/2 at N = 600 as for a Gaussian."""
    rng = np.random.default_rng(seed)
    s = np.r_[1 - 1e-5 * np.arange(10), np.linspace(0.99, 0.01, 590)]
    u, v = (np.linalg.qr(rng.standard_normal((rows, 600)))[0] for rows in (1000, 600))
    a = torch.from_numpy((u * s) @ v.T)
    bounds = riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(seed))
    assert bool(bounds.certified) and bounds.method == "gram-cholesky"
    assert_brackets(bounds, a)
    assert float(bounds.upper / torch.linalg.matrix_norm(a, 2)) - 1 <= 2e-9


def test_gaussian_gets_a_tight_certified_bound_and_its_operator_the_probabilistic_one(gen):
    # A flat spectrum: the subspace bound is about ‖A‖_F; the Gram–Cholesky certificate is not
    a = make_matrix("gaussian", 400, 300, gen)
    det = riemsvd.norm_bounds(a, tol=1e-6, generator=gen)
    assert bool(det.certified) and det.method == "gram-cholesky"
    assert float(det.upper / det.lower) - 1 <= 1e-8  # 2e-10 measured (δ/2 at N = 300)
    with_conf = riemsvd.norm_bounds(a, tol=1e-6, confidence=0.99, generator=gen)
    # already tighter than the Krylov bound could be: no Krylov space, still certified
    assert bool(with_conf.certified) and with_conf.method == "gram-cholesky"
    assert float(with_conf.upper / with_conf.lower) - 1 <= 1e-8
    # the same matrix matrix-free: no ‖A‖_F, no Gram matrix; the Krylov bound with its probability
    op = riemsvd.linear_operator(lambda x: x @ a.mT, (300,), adjoint=lambda y: y @ a, dtype=a.dtype)
    prob = riemsvd.norm_bounds(op, tol=1e-6, confidence=0.99, generator=gen)
    assert not bool(prob.certified) and prob.method == "krylov"
    assert float(prob.upper / prob.lower) - 1 <= 1e-2
    for b in (det, with_conf, prob):
        assert_brackets(b, a)


def test_probabilistic_failure_rate_is_within_its_stated_probability():
    # λ₁ = 1 over a bulk spread up to 0.8 and only 8 Krylov dimensions, so that the bound's ε (0.2
    # at δ = 0.1, N = 400) is just above the bulk and the random start's component on v₁ decides.
    n, dim, delta, seeds = 400, 8, 0.1, 300
    gen = torch.Generator().manual_seed(7)
    s = torch.cat([torch.ones(1), 0.8 * torch.rand(n - 1, generator=gen)]).double().sqrt()
    a = torch.diag(s)
    assert 0 < _kw_epsilon(dim, delta, n) < 1
    failures = 0
    with solver_threads(a.device):  # as inside norm_bounds: small torch operations on one thread
        for seed in range(seeds):
            op = DenseOperator(a)
            _, upper, _ = _probabilistic(op, (None, None), dim, delta, torch.Generator().manual_seed(seed))
            failures += int(float(upper) < 1.0)
    # the stated probability plus 3.5 binomial standard deviations
    assert failures <= delta * seeds + 3.5 * math.sqrt(seeds * delta * (1 - delta))


@given(
    shape=st.tuples(st.integers(2, 50), st.integers(2, 50)),
    kind=st.sampled_from(["gaussian", "decay", "cluster", "lowrank"]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
@settings(max_examples=40)
def test_each_sigma_lies_within_its_error_bar_of_the_true_one(shape, kind, dtype, seed, data):
    m, n = shape
    k = data.draw(st.integers(1, min(m, n, 5)), label="k")
    gen = torch.Generator().manual_seed(seed)
    a = make_matrix(kind, m, n, gen, dtype)
    result = riemsvd.solve(a, k, generator=gen)
    errors = result.info.errors
    assert errors.shape == result.S.shape and bool((errors >= 0).all())
    ref = torch.linalg.svdvals(a.double())
    # The bars carry the rounding of the products they come from and of S (a float32 3×2 matrix
    # had |σ̂ − σ| = 1.48e-7 beside a bar of 1.27e-7, when they did not): only the reference's own
    # error is allowed
    slack = _REF * max(m, n) * ref[0]
    # some singular value within each bar (the residual bound) ...
    dist = (result.S.double().unsqueeze(-1) - ref).abs().amin(-1)
    assert bool((dist <= errors.double() + slack).all()), (dist, errors)
    # ... and, the top k found, σᵢ itself
    assert bool(((result.S.double() - ref[:k]).abs() <= errors.double() + slack).all())


@pytest.mark.parametrize("shape", [(5, 600), (600, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("linear_operator", "method"), [(False, "iterative"), (False, "dense"), (True, "auto")]
)
def test_error_bars_hold_at_the_rounding_floor(shape, dtype, linear_operator, method):
    """At the default tol the residuals of a wide matrix's triplets are as small as the rounding of
    the products that measure them: no σ of A lay within the bars of 67 of 200 float32 5×600 solves,
    by up to 1.44× (a new user's trial), nor of 17 of 60 float64 ones."""
    misses = []
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(*shape, generator=gen, dtype=dtype)
        target = spl.aslinearoperator(a.numpy()) if linear_operator else a
        result = riemsvd.solve(target, 2, generator=gen, method=method)
        dist = (result.S.double().unsqueeze(-1) - torch.linalg.svdvals(a.double())).abs().amin(-1)
        if not bool((dist <= result.info.errors.double()).all()):
            misses.append(seed)
    assert misses == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [2, 8])
@pytest.mark.parametrize(
    ("linear_operator", "method"), [(False, "iterative"), (False, "dense"), (True, "auto")]
)
def test_a_matrix_of_identical_rows_is_solved_at_any_k(dtype, k, linear_operator, method):
    """Rank one with every row the same (a broadcast bias's gradient): the products' terms share
    their rounding, so sums of them down a column grow an error like m·ε. At k ≥ 2 the final check
    summed the k columns so (numpy's sum down a row-major array): σ₁ came 2.6e-5 off in float32 with
    accurate vectors, the solve stalled above the default tol (a new user's trial); in float64 4e-14
    off. float32's SVD (the dense path) left residuals of 2.1e-5. Converged at the default tol, σ₁
    within its bar and within the products' own rounding, ε·√max(m, n)·σ₁."""
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(1, 384, generator=gen, dtype=dtype).expand(1536, 384).contiguous()
        target = spl.aslinearoperator(a.numpy()) if linear_operator else a
        result = riemsvd.solve(target, k, generator=gen, method=method)
        exact = torch.linalg.svdvals(a.double())[0]
        error = (result.S[0].double() - exact).abs()
        assert bool(result.info.converged), seed
        assert float(error) <= float(result.info.errors[0]), seed
        assert float(error) <= torch.finfo(dtype).eps * math.sqrt(1536) * float(exact), seed


def _complete_graph(n: int, dtype: torch.dtype, layout: str):
    """The adjacency matrix of the complete graph on n vertices, J − I: σ = n − 1, then 1 (n − 1
    times), exactly; every row's n − 1 terms share their sign."""
    import scipy.sparse as sp

    dense = torch.ones(n, n, dtype=dtype) - torch.eye(n, dtype=dtype)
    return sp.csr_matrix(dense.numpy()) if layout == "scipy" else dense.to_sparse_csr()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["scipy", "torch"])
def test_a_sparse_matrix_whose_rows_sum_terms_of_one_sign_is_checked_honestly(layout):
    """Sparse kernels add a row's terms one after another, whose rounding grows like their count
    where they share a sign, not like its square root. In float32 at the default tol the check's own
    products put σ₁ of the complete graph's 1000×1000 adjacency 1.2e-5·σ₁ off (3× its bar) and its
    residual at 2.1e-7 where it was 1.2e-5, above tol, "converged" (a new user's trial): a float32
    sparse A is now checked in float64. In float64 σ₁ of the 300×300 one lay outside its bar on 8 of
    15 seeds (1.31e-12 off, the bar 1.28e-12): a sparse A's bar allows ε/2 a term of a row's sum."""
    a = _complete_graph(1000, torch.float32, layout)
    result = riemsvd.solve(a, 1, generator=torch.Generator().manual_seed(0))
    u, s, v = (t.double() for t in result[:3])
    exact = torch.ones(1000, 1000, dtype=torch.float64) - torch.eye(1000, dtype=torch.float64)
    residual = max(float((exact @ v - u * s).norm()), float((exact.T @ u - v * s).norm())) / float(s[0])
    assert bool(result.info.converged) and residual <= result.info.tol
    assert float(result.info.residual) == pytest.approx(residual, rel=1e-3)  # what the check reports
    assert abs(float(s[0]) - 999) <= float(result.info.errors[0])
    for seed in range(6):
        a = _complete_graph(300, torch.float64, layout)
        result = riemsvd.solve(a, 4, generator=torch.Generator().manual_seed(seed), method="iterative")
        exact = torch.tensor([299.0, 1.0, 1.0, 1.0], dtype=torch.float64)
        assert bool(((result.S - exact).abs() <= result.info.errors).all()), seed


def test_float32_values_of_a_dense_matrix_checked_in_float64_are_correctly_rounded():
    """At a tol below float32's product floor (2·ε·√max(m, n), 4.1e-6 to 7.1e-6 here), checked with
    float64 products, and as the Rayleigh quotient of vectors that are unit only to a few ε: from
    float32 products σ was up to 3.9·ε·σ off, from float64 products of vectors 1 − 6.6e-8 long up to
    1.2·ε·σ."""
    for seed, shape in zip(range(20), [(5, 600), (600, 5), (300, 200), (40, 900)] * 5):
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(*shape, generator=gen)
        s = riemsvd.solve(a, 2, tol=1e-6, generator=gen, method="iterative").S.double()
        ref = torch.linalg.svdvals(a.double())[:2]
        # correctly rounded: half an ulp, at most ε/2 relative (plus the reference's error)
        half_ulp = (torch.finfo(torch.float32).eps / 2 + _REF) * ref
        assert bool(((s - ref).abs() <= half_ulp).all()), (seed, s - ref)


def test_error_bars_are_in_the_units_of_a_rescaled_matrix(gen):
    a = make_matrix("decay", 60, 40, gen) * 1e200
    result = riemsvd.solve(a, 3, generator=gen)
    ref = torch.linalg.svdvals(a)[:3]
    assert bool(((result.S - ref).abs() <= result.info.errors + 1e-14 * ref[0]).all())
    # each bar is at most the reported residual, plus the products' own rounding (half the product
    # floor, which residuals computed from them cannot see), times σ₁ (the residual is the larger of
    # the two norms, the bar their root mean square), in the matrix's units: measured 2e-15·1e200
    # with a residual of 5e-16 (the float64 Gram path; the SVD's had been 6e-15, above that rounding)
    floor = 0.5 * product_floor(torch.float64, 60, 40)
    bound = float((result.info.residual + floor) * result.S[0]) * (1 + 1e-12)
    assert float(result.info.errors.max()) <= bound, (result.info.errors, result.info.residual)
    assert float(result.info.residual) <= 1e-12


def test_invalid_arguments_are_named():
    a = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="`confidence`"):
        riemsvd.norm_bounds(a, confidence=1.0)
    with pytest.raises(ValueError, match="`confidence`"):
        riemsvd.norm_bounds(a, confidence=True)
    with pytest.raises(ValueError, match="`confidence`"):
        riemsvd.norm_bounds(a, confidence=torch.tensor(1.5))
    # a one-element tensor is its number, as for tol (it was refused: a new user's trial)
    # (the same start for both: drawn from the global generator, the two bounds had differed in the
    # last digit wherever an earlier test had drawn an odd number of times)
    as_tensor = riemsvd.norm_bounds(
        a, confidence=torch.tensor(0.9), generator=torch.Generator().manual_seed(0)
    )
    as_float = riemsvd.norm_bounds(a, confidence=0.9, generator=torch.Generator().manual_seed(0))
    assert float(as_tensor.upper) == float(as_float.upper)
    with pytest.raises(ValueError, match="`tol`"):
        riemsvd.norm_bounds(a, tol=2.0)
    with pytest.raises(TypeError, match="`A`"):
        riemsvd.norm_bounds(a.int())
    big = torch.randn(300, 280, dtype=torch.float64)
    op = riemsvd.linear_operator(lambda x: x @ big.mT, (280,), dtype=torch.float64)
    with pytest.raises(ValueError, match="^no deterministic bound .*matrix-free.*; pass `confidence`"):
        riemsvd.norm_bounds(op)


@pytest.mark.parametrize("scale", [1e-200, 1e155])
def test_bounds_of_a_linear_operator_far_from_unit_size_hold(scale):
    # a LinearOperator's entries are unknown: at 1e155 its products' squares overflowed and the
    # probabilistic upper bound came out at 0.88 of ‖A‖₂
    import numpy as np
    import scipy.sparse.linalg as sla

    m = np.random.default_rng(0).standard_normal((1000, 500)) * scale  # above the whole-space size
    true = float(np.linalg.norm(m / scale, 2)) * scale
    gen = torch.Generator().manual_seed(0)
    b = riemsvd.norm_bounds(sla.aslinearoperator(m), confidence=0.999, generator=gen)
    assert float(b.lower) <= true <= float(b.upper)
    assert float(b.upper) / true - 1 < 1e-2 and 1 - float(b.lower) / true < 1e-6


def test_an_empty_batch_has_empty_bounds():
    # as solve gives empty results for an empty batch; the Gram path had failed on it
    b = riemsvd.norm_bounds(torch.zeros(0, 5, 4, dtype=torch.float64))
    assert b.lower.shape == b.upper.shape == b.certified.shape == (0,) and b.method == ()


def test_bounds_in_the_subnormal_range_are_rounded_outwards():
    """A review: entries near 1e-318 are scaled to near 1 for the bounds and back; scaled back into the
    subnormal range the bounds were rounded to nearest, upper below ‖A‖₂ on 94 of 200 matrices and
    lower above it on 106. Compared after an exact scaling by 2^1014, where nothing is subnormal."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        m, n = (int(v) for v in torch.randint(1, 40, (2,), generator=gen))
        a = torch.randn(m, n, dtype=torch.float64, generator=gen) * 1e-318
        bounds = riemsvd.norm_bounds(a, generator=gen)
        true = float(spectral_norm(torch.ldexp(a, torch.tensor(1014))))
        slack = _REF * max(m, n) * true
        assert math.ldexp(float(bounds.upper), 1014) >= true - slack
        assert math.ldexp(float(bounds.lower), 1014) <= true + slack


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("layout", ["scipy", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_sparse_graph_laplacian_gets_the_norms_bound(layout, dtype):
    """The path graph's Laplacian (σ₁ = 2 − 2cos(π(n − 1)/n), just below 4; 2 on the diagonal, 1 and
    1 beside it): the subspace bound was 109 at n = 2000, about ‖A‖_F (a new user's trial);
    √(‖A‖₁‖A‖_∞) = 4 is certified and nearly exact. And on random sparse matrices it still holds."""
    import scipy.sparse as sp

    n = 500
    off = np.ones(n - 1)
    lap = sp.diags([2 * np.ones(n), -off, -off], [0, -1, 1], format="csr").astype(dtype_np(dtype))
    lap[0, 0] = lap[n - 1, n - 1] = 1
    exact = 2 - 2 * math.cos(math.pi * (n - 1) / n)
    a = lap if layout == "scipy" else torch.from_numpy(lap.toarray()).to_sparse_csr()
    b = riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(0))
    assert b.method == "norms" and bool(b.certified)
    # the margin: the float64 sums' γ_{n+2} twice, then rounded up to A's dtype
    margin = 2 * (n + 2) * torch.finfo(torch.float64).eps + 2 * torch.finfo(dtype).eps
    assert float(b.lower) <= exact <= float(b.upper) <= 4 * (1 + margin)
    # where all row and column sums are equal the bound is ‖A‖₂ itself: the complete graph, n − 1
    b = riemsvd.norm_bounds(_complete_graph(60, dtype, layout), generator=torch.Generator().manual_seed(0))
    assert b.method == "norms" and float(b.lower) <= 59 <= float(b.upper) <= 59 * (1 + margin)
    # at scales where ‖A‖₁‖A‖_∞ itself over- or underflows (scaled after summing, 1e±200 gave NaN)
    for scale in (1e-200, 1e200) if dtype == torch.float64 else (1e-30, 1e30):
        big = lap * scale if layout == "scipy" else torch.from_numpy((lap * scale).toarray()).to_sparse_csr()
        b = riemsvd.norm_bounds(big, generator=torch.Generator().manual_seed(0))
        assert b.method == "norms" and exact <= float(b.upper) / scale <= 4 * (1 + margin), scale
    # random signs, a few entries a row, where it is the tightest bound
    for seed in range(5):
        r = sp.random(400, 300, density=0.005, random_state=seed, format="csr", dtype=dtype_np(dtype))
        r.data -= 0.5
        a = r if layout == "scipy" else torch.from_numpy(r.toarray()).to_sparse_csr()
        b = riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(seed))
        exact = np.linalg.norm(r.toarray().astype(np.float64), 2)
        assert b.method == "norms", seed
        assert float(b.lower) <= exact * (1 + 1e-6) and exact <= float(b.upper), seed


def test_bounds_of_a_scipy_matrix_with_stored_copies_of_an_entry_hold():
    """A COO matrix may store one entry several times, and they add up: the squares of ten stored 1s
    at (0, 0) fell short of ‖A‖_F² (an "upper" bound of 3.6 for ‖A‖₂ = 10, certified; a review)."""
    import scipy.sparse as sp

    from riemsvd._bounds import _frobenius_sq
    from riemsvd._operator import as_operator

    rows = np.r_[np.zeros(10, dtype=int), [1, 2, 3]]
    a = sp.coo_matrix((np.ones(13), (rows, rows)), shape=(300, 300))
    assert float(_frobenius_sq(as_operator(a))) >= 103
    b = riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(0))
    assert float(b.lower) <= 10 <= float(b.upper)


def test_bounds_of_a_torch_csr_tensor_that_repeats_a_column_hold():
    """A CSR tensor whose row repeats a column index (torch checks its invariants only when asked)
    converts to a COO flagged coalesced with the copies apart: their squares alone gave a certified
    upper bound of 5.48 for ‖A‖₂ = 7, below the lower bound (a new user's trial). The copies add up,
    as in the products; a 300×300 one, past the whole-space size, too."""
    from riemsvd._bounds import _frobenius_sq
    from riemsvd._operator import as_operator

    values = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    a = torch.sparse_csr_tensor(
        torch.tensor([0, 2, 4]), torch.tensor([1, 1, 0, 0]), values, (2, 2), check_invariants=False
    )
    b = riemsvd.norm_bounds(a)
    assert float(b.lower) <= 7 <= float(b.upper) and bool(b.certified)
    crow = torch.arange(301) * 2  # each row (i, i), (i, i): the identity stored as two halves
    cols = torch.arange(300).repeat_interleave(2)
    half = torch.full((600,), 0.5, dtype=torch.float64)
    big = torch.sparse_csr_tensor(crow, cols, half, (300, 300), check_invariants=False)
    assert float(_frobenius_sq(as_operator(big))) >= 300
    b = riemsvd.norm_bounds(big, generator=torch.Generator().manual_seed(0))
    assert float(b.lower) <= 1 <= float(b.upper)


def test_bounds_of_a_float32_sparse_matrix_use_float64_products():
    """A float32 sparse A's bounds took float32 margins: 2.4e-3 above ‖A‖₂ for a 300×200 matrix at
    density 0.05, where its dense copy's were 2.2e-8 (a new user's trial). Its values in float64 cost
    only the nonzeros; the bounds' own products now use them, torch's sparse and scipy's alike."""
    import scipy.sparse as sp

    g = torch.Generator().manual_seed(0)
    d = torch.randn(300, 200, generator=g) * (torch.rand(300, 200, generator=g) < 0.05)
    exact = float(torch.linalg.matrix_norm(d.double(), 2))
    for a in (d.to_sparse_csr(), d.to_sparse(), sp.csr_matrix(d.numpy())):
        b = riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(0))
        assert float(b.lower) <= exact <= float(b.upper) < exact * (1 + 1e-5), type(a)


def dtype_np(dtype: torch.dtype):
    return np.float32 if dtype == torch.float32 else np.float64
