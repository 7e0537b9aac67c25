"""Regression tests for the failure modes found in review: never a silent wrong answer."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import riemsvd
from tests.adversarial import KINDS, adversarial_matrix, solve_and_check
from tests.fuzz_warm import crossing_case
from tests.matrices import check_svd, gapped_matrix, make_matrix, orthonormal

# The iterative solver on purpose: on matrices this small, method="auto" would take the dense path
# (tests/test_dense.py tests that one and the choice).
solve = functools.partial(riemsvd.solve, method="iterative")


@pytest.mark.parametrize(
    "dtype,scale",
    [
        (torch.float64, 1e-300),
        (torch.float64, 1e300),
        (torch.float64, 1e-160),
        (torch.float64, 1e160),
        (torch.float32, 1e-22),
        (torch.float32, 1e25),
        (torch.float64, 1e-310),  # every entry subnormal: the rescaling's 2^1030 once overflowed
        (torch.float32, 2e-39),
    ],
)
def test_extreme_scales_are_solved_exactly(dtype, scale, gen):
    """Norms of residuals once underflowed to 0 (S off by 46%, 'converged') or overflowed to inf."""
    a = (make_matrix("decay", 40, 30, gen) * scale).to(dtype)
    result = solve(a, 3, generator=gen)
    ref = torch.linalg.svdvals(make_matrix("decay", 40, 30, torch.Generator().manual_seed(1234)))
    assert bool(result.info.converged)
    assert bool(torch.isfinite(result.S).all()) and bool((result.S > 0).all())
    rel = (result.S.double() / scale - ref[:3]).abs().max() / ref[0]
    assert float(rel) <= 10 * result.info.tol


def test_batch_mixing_scales_solves_each_matrix(gen):
    a = torch.stack([make_matrix("decay", 20, 15, gen) for _ in range(4)])
    a[1] *= 1e-200
    a[2] *= 1e200
    a[3] = 0.0
    result = solve(a, 2, generator=gen)
    assert bool(result.info.converged.all())
    for i, c in ((0, 1.0), (1, 1e-200), (2, 1e200)):
        ref = torch.linalg.svdvals(a[i] / c)[:2]
        torch.testing.assert_close(result.S[i] / c, ref, rtol=1e-10, atol=0)
    assert bool((result.S[3] == 0).all())


def test_gradient_at_extreme_scale_is_finite_and_right(gen):
    for scale in (1e-160, 1e160):
        a = make_matrix("decay", 12, 8, gen) * scale
        x = a.clone().requires_grad_()
        u, s, v = solve(x, 2, generator=gen)
        ((u[:, :1] @ v[:, :1].mT) ** 2).sum().backward()
        y = (a / scale).requires_grad_()
        u2, s2, vh2 = torch.linalg.svd(y, full_matrices=False)
        ((u2[:, :1] @ vh2[:1]) ** 2).sum().backward()
        torch.testing.assert_close(x.grad * scale, y.grad, rtol=1e-8, atol=1e-12)


def test_warm_start_on_an_exact_non_leading_pair_still_finds_the_top():
    """A V0 spanning an exact singular subspace that is not the top one used to be a fixed point."""
    a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    e = torch.eye(100, dtype=torch.float64)
    result = solve(a, 1, init=(e[:, :1], e[:, :1]), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.S, torch.tensor([100.0], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("block", [None, 8])
def test_warm_start_at_the_second_pair_finds_the_first_on_every_seed(dtype, block):
    """From the exact (u₂, v₂) of σ₁ = 1.5, σ₂ = 1 (the rest below 0.5), the Krylov space holds v₁ only
    at the size of the start's random part (10·tol), and whether the solve converged to σ₂ or found σ₁
    was a race: σ₂ came back, converged, on 7 (float64) and 5 (float32) of 20 seeds (a new user's
    trial), and on every seed with blocks of 8 (the GPU's default; a review). A start that passes at
    the first look is probed from a fresh direction first."""
    g = torch.Generator().manual_seed(0)
    m, n = 300, 200
    u = torch.linalg.qr(torch.randn(m, n, dtype=torch.float64, generator=g))[0]
    v = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    s = torch.cat([torch.tensor([1.5, 1.0], dtype=torch.float64), torch.linspace(0.5, 0.01, n - 2)])
    a = ((u * s) @ v.T).to(dtype)
    init = (u[:, 1:2].to(dtype), v[:, 1:2].to(dtype))
    options = riemsvd.SolverOptions(block=block)
    found = [
        float(solve(a, 1, init=init, options=options, generator=torch.Generator().manual_seed(i)).S)
        for i in range(20)
    ]
    assert max(abs(x - 1.5) for x in found) <= 1e-5, found


def test_vmap_over_solve_matches_the_batched_call(gen):
    b = torch.stack([make_matrix("decay", 10, 7, gen) for _ in range(3)])
    values = torch.func.vmap(lambda a: solve(a, 2, generator=torch.Generator().manual_seed(0)).S)(b)
    torch.testing.assert_close(values, torch.linalg.svdvals(b)[:, :2], rtol=1e-10, atol=0)


def test_uncoalesced_coo_is_accepted(gen):
    dense = make_matrix("decay", 30, 20, gen)
    idx = torch.cat([dense.nonzero().T, dense.nonzero().T], dim=1)  # every entry twice
    vals = torch.cat([dense[dense != 0], dense[dense != 0]]) / 2
    a = torch.sparse_coo_tensor(idx, vals, dense.shape)
    result = solve(a, 2, generator=gen)
    check_svd(dense, result, 2, result.info.tol)


def test_unsupported_sparse_layout_and_sparse_with_grad_raise(gen):
    dense = make_matrix("decay", 8, 6, gen)
    with pytest.raises(ValueError, match="COO, CSR or CSC"):
        solve(dense.to_sparse_bsr((2, 2)))
    with pytest.raises(ValueError, match="requires grad"):
        solve(dense.to_sparse().requires_grad_())


def test_bad_options_raise(gen):
    with pytest.raises(TypeError, match="`options"):
        solve(make_matrix("decay", 8, 6, gen), options={"block": 4})


@pytest.mark.parametrize(
    "fields,error",
    [
        ({"block": 0}, ValueError),
        ({"max_basis": -1}, ValueError),
        ({"patience": 0}, ValueError),
        ({"start_block": 0}, ValueError),
        ({"block": 2.0}, TypeError),
        ({"patience": None}, TypeError),
        ({"gap_last": 1}, TypeError),
    ],
)
def test_bad_solver_options_are_refused_when_made(fields, error):
    """Where the mistake is made, not at the solve that uses them (a new user's trial)."""
    (name,) = fields
    with pytest.raises(error, match=rf"`SolverOptions\({name}=\.\.\.\)`"):
        riemsvd.SolverOptions(**fields)


def test_init_with_more_columns_than_k_uses_the_first_k(gen):
    a = make_matrix("decay", 30, 20, gen)
    previous = solve(a, 4, generator=gen)
    result = solve(a, 2, init=(previous.U, previous.V), generator=gen)
    check_svd(a, result, 2, result.info.tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_solve_under_cuda_autocast():
    a = make_matrix("decay", 60, 40, torch.Generator().manual_seed(0)).float().cuda()
    with torch.autocast("cuda"):
        result = solve(a, 2)
    assert result.S.dtype == torch.float32 and bool(result.info.converged)


def test_scipy_matrix_at_extreme_scale(gen):
    s = sp.random(50, 40, density=0.2, format="csr", random_state=np.random.default_rng(0)) * 1e-300
    result = solve(s, 2, generator=gen)
    ref = np.linalg.svd(s.toarray() * 1e300, compute_uv=False)[:2]
    np.testing.assert_allclose(result.S.numpy() * 1e300, ref, rtol=1e-10)


@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    exponent=st.floats(-1.0, 1.0),
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    transpose=st.booleans(),
    data=st.data(),
)
def test_adversarial_matrices_are_solved_never_silently_wrong(kinds, dtype, exponent, shape, transpose, data):
    """Scales over the whole safe range of the dtype, repeated top values, exact rank deficiency,
    zero matrices, batches mixing them, transposed views: the answer matches torch.linalg.svd within
    what the reported residual promises. Nothing here may be merely flagged (converged False with a
    warning): three runs of 3000 fuzz cases over these classes (`python tests/fuzz_solve.py --seed
    0/1/2`) solved every one, so a flag is a solver that gave up where it need not."""
    m, n = shape
    k = data.draw(st.integers(1, min(m, n)), label="k")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    scale = 10.0 ** (exponent * (150 if dtype == torch.float64 else 25))
    mats = [
        adversarial_matrix(kind, n if transpose else m, m if transpose else n, gen, dtype, scale)
        for kind in kinds
    ]
    a = torch.stack(mats)
    assert solve_and_check(a.mT if transpose else a, k, gen) == "ok"


def test_a_zero_matrix_beside_one_whose_values_round_is_converged():
    """A batch of a float32 rank-deficient 3×3 at scale 1e-25 (values that round as subnormals) and a
    zero matrix (hypothesis's example, seed 122200485 of the fuzz profile): the values' rounding is
    charged to each element, and 0/0 had made the zero matrix's residual NaN, not converged."""
    gen = torch.Generator().manual_seed(0)
    mats = [adversarial_matrix(kind, 3, 3, gen, torch.float32, 1e-25) for kind in ("rank_deficient", "zero")]
    assert solve_and_check(torch.stack(mats).mT, 3, gen) == "ok"


def _fuzz_case(seed: int, number: int):
    """Case ``number`` of ``python tests/fuzz_solve.py --seed seed``: (A, k, the case's generator)."""
    from tests import fuzz_solve

    rng = torch.Generator().manual_seed(seed)
    for _ in range(number + 1):
        dtype, scale, m, n, k, batch, kinds, transpose, grad = fuzz_solve.draw_case(rng)
    gen = torch.Generator().manual_seed(number)
    mats = [
        adversarial_matrix(kind, n if transpose else m, m if transpose else n, gen, dtype, scale)
        for kind in kinds
    ]
    a = torch.stack(mats) if batch else mats[0]
    return (a.mT if transpose else a), k, gen


def test_fuzz_case_that_once_converged_to_sigma_2_of_a_cluster():
    """Fuzz case 2372 (seed 0): float32, a batch of a low-rank and a 1e-3-clustered 217×254 matrix at
    scale 3e17, k = 1. A one-column start converged to σ₂ of the cluster with a residual below tol."""
    a, k, gen = _fuzz_case(0, 2372)
    assert a.dtype == torch.float32 and a.shape[0] == 2
    assert solve_and_check(a, k, gen) == "ok"


@pytest.mark.parametrize("shape", [(35, 28), (4, 33), (61, 4), (120, 90)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_repeated_top_values_are_all_found(shape, dtype):
    """σ₁ = σ₂ = σ₃ exactly: a one-vector Krylov space holds one vector of each singular value, so
    the solver once returned (1, 1, 0.5) for (1, 1, 1) with residuals below tol (fuzz cases 1, 135,
    1508: a random direction explored after convergence now finds the missing copies)."""
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        a = adversarial_matrix("repeated_top", *shape, gen, dtype, 1.0)
        assert solve_and_check(a, 3, gen) == "ok"


@pytest.mark.parametrize("number", [388, 1689])
def test_fuzz_cases_that_once_missed_a_third_copy_of_sigma_1(number):
    """Fuzz seed 456797700, cases 388 and 1689: float64 22×28 and 22×272 with σ₁ = σ₂ = σ₃, k = 4,
    returned (1, 1, 0.5, …). Rounding had put the missed copy's u in 𝒰 and its v in the residual
    directions F, and the probe's random direction, orthogonal to F, could not bring it back."""
    a, k, gen = _fuzz_case(456797700, number)
    assert solve_and_check(a, k, gen) == "ok"


def test_three_copies_of_sigma_1_with_k_4_to_6_are_all_found():
    """σ₁ = σ₂ = σ₃ on 10–70 × 10–310 matrices, k = 4–6: before the probe also expanded F's leading
    direction, 8 of 1000 such solves returned σ₃ = 0.5 (seeds 1097, 1167, 1179, 1363 and 1867 below),
    and at 65×25 (seed 1500) the probe's extra column overran the left basis's buffer (an error from
    LAPACK). 0 of 10,000 fail now; the first 200 seeds alone caught the old code twice (20, 96)."""
    for seed in [*range(200), 1097, 1167, 1179, 1363, 1500, 1867, 3355]:
        g = torch.Generator().manual_seed(seed)
        m, n = 10 + int(torch.randint(60, (1,), generator=g)), 10 + int(torch.randint(300, (1,), generator=g))
        k = 4 + int(torch.randint(3, (1,), generator=g))
        a = adversarial_matrix("repeated_top", m, n, g, torch.float64, 1.0)
        assert solve_and_check(a, k, g) == "ok", f"seed {seed}: {m}×{n}, k = {k}"


def _copies_over_a_gap(seed: int, top: float):
    """2–5 exact copies of σ₁ = 1 over values from ``top`` down, one of seven shapes from 20×300 to
    500×400, k = 2–8 (a new user's trial that found missed copies with converged True)."""
    rng = np.random.default_rng(10_000 + seed)
    shapes = [(20, 300), (60, 40), (100, 100), (200, 150), (150, 300), (500, 400), (400, 500)]
    m, n = shapes[rng.integers(len(shapes))]
    copies, k = int(rng.integers(2, 6)), int(rng.integers(2, 9))
    rest = np.sort(rng.uniform(0, 1, min(m, n) - copies))[::-1]
    s = np.concatenate([np.ones(copies), top * rest / rest[0]])
    u, _ = np.linalg.qr(rng.standard_normal((m, s.size)))
    v, _ = np.linalg.qr(rng.standard_normal((n, s.size)))
    return torch.from_numpy((u * s) @ v.T), k


GAP_LAST = riemsvd.SolverOptions(gap_last=True)


@given(
    shape=st.sampled_from([(120, 80), (80, 200), (300, 300)]),
    k=st.integers(2, 4),
    gap=st.floats(1e-3, 0.2),
    below=st.floats(1e-5, 0.05),  # σ_k − σ_{k+1}: the k-th triplet's own gap, often far smaller
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 2**16),
)
def test_gap_last_knows_sigma_k_to_a_tenth_of_its_gap(shape, k, gap, below, dtype, seed):
    """SolverOptions(gap_last=True): σ₁ … σ_{k−1} to tol (as without it), and the k-th only for the gap
    above it: σ_k + its error bar within a tenth of σ_{k−1} − σ_k of the true σ_k (its residual a
    twentieth of that gap, the bar at most the residual), or 2·tol·σ₁ where that is more; converged,
    with the residual counted in the k-th triplet's units. Not an upper bound: with σ_{k+1} closer
    than that residual resolves, the triplet can stand for the pair together (σ₂ − σ₃ = 1e-5, float32
    300×300: σ₂ + its bar 2.7e-6 below σ₂, where the gap above it is 0.125)."""
    gaps = [0.02] * (k - 2) + [gap, below]
    a = gapped_matrix(*shape, gaps, seed, dtype)
    r = solve(a, k, options=GAP_LAST, generator=torch.Generator().manual_seed(seed))
    tol = r.info.tol
    exact = torch.linalg.svdvals(a.double())[: k + 1]
    assert bool(r.info.converged) and float(r.info.residual) <= tol
    floor = 10 * torch.finfo(dtype).eps
    wanted = (r.S[: k - 1].double() - exact[: k - 1]).abs()
    assert bool((wanted <= tol + floor).all()), (r.S, exact)
    bound = float(r.S[k - 1]) + float(r.info.errors[k - 1])
    sk, gap_k = float(exact[k - 1]), float(exact[k - 2] - exact[k - 1])
    assert abs(bound - sk) <= max(0.1 * gap_k, 2 * tol) + floor, (bound, sk, gap_k)
    # the k-th triplet's own residual (float64 products of what was returned): a twentieth of the gap
    u, s, v, a64 = r.U[:, k - 1].double(), float(r.S[k - 1]), r.V[:, k - 1].double(), a.double()
    own = max(float(torch.linalg.vector_norm(x)) for x in (a64 @ v - s * u, a64.mT @ u - s * v))
    assert own <= max(tol, (float(r.S[k - 2]) - s) / 20) * float(r.S[0]) + floor


def test_gap_units_pass_the_kth_residual_below_a_twentieth_of_its_gap():
    """_gap_units: the k-th relative residual over max(tol, (σ_{k−1} − σ_k)/(20·σ₁)), times tol; the others
    as they are; tol itself where the gap is 0 or NaN. A batch of three: gaps 0.1, 0 and NaN."""
    from riemsvd._subspace import _gap_units

    s = np.array([[2.0, 1.8, 1.0], [2.0, 2.0, 1.0], [np.nan, np.nan, 1.0]])
    rel = np.array([[1e-8, 4.9e-3, 1.0], [1e-8, 4.9e-3, 1.0], [1e-8, 4.9e-3, 1.0]])
    scaled = _gap_units(rel, s, 2, 1e-8)
    np.testing.assert_array_equal(scaled[:, [0, 2]], rel[:, [0, 2]])
    np.testing.assert_allclose(scaled[:, 1], [4.9e-3 * 1e-8 / 5e-3, 4.9e-3, 4.9e-3], rtol=1e-15)
    assert scaled[0, 1] <= 1e-8 < _gap_units(np.array([1e-8, 5.1e-3]), s[0, :2], 2, 1e-8)[1]


@given(
    st.lists(st.floats(0.0, 10.0), min_size=2, max_size=9),
    st.floats(0.0, 1.0),
    st.sampled_from([1e-14, 1e-10, 1e-6, 1e-3, 0.5]),
    st.integers(10, 5000),
)
@example([1.0, 0.75, 0.5], 0.0, 0.025, 5000)  # σ₂ − σ₃ ties 10·tol·σ₁: σ₂ is not "above" σ₃
def test_one_matrix_paths_of_the_probe_helpers_equal_the_batch_paths(values, rel, tol, n):
    """_probe_steps and _gap_units take one matrix's values in Python floats (numpy's calls on k numbers
    took 36 and 9 µs, cold after the products): bit for bit what their batch paths give a batch of
    one, on descending values with repeats, zeros and NaN."""
    from riemsvd._subspace import _gap_units, _probe_steps

    s = np.sort(np.array(values))[::-1].copy()
    for spectrum in (s, np.where(np.arange(len(s)) == 0, np.nan, s), np.zeros_like(s)):
        assert _probe_steps(spectrum, n, tol, False) == _probe_steps(spectrum[None], n, tol, False)
        residuals = np.full(len(s), rel)
        for k in range(2, len(s) + 1):
            one = _gap_units(residuals, spectrum, k, tol)
            np.testing.assert_array_equal(one, _gap_units(residuals[None], spectrum[None], k, tol)[0])


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    st.lists(st.one_of(st.floats(0.0, 1.0), st.just(float("nan"))), min_size=6, max_size=6),
    st.floats(0.0, 1.0),
)
def test_one_matrix_look_bookkeeping_equals_the_batch_paths(rel, slack, bound):
    """A look's worst residual (_worst, with and without an estimate's slack, NaN slack included) and
    its comparisons with the target and the best so far (_within, _improved) take one matrix's values
    in Python floats: the same decisions and values as their batch paths give a batch of one."""
    from riemsvd._subspace import Ritz, _improved, _within, _worst

    rel_ = np.array(rel)
    t = k = len(rel)
    one = Ritz(np.eye(t), np.ones(t), None, rel_, np.array(slack[:t]))
    batch = Ritz(np.eye(t)[None], np.ones((1, t)), None, rel_[None], np.array(slack[:t])[None])
    for with_slack in (False, True):
        single, many = _worst(one, k, t, (), with_slack), _worst(batch, k, t, (1,), with_slack)
        assert isinstance(single, float) and single == many[0]
        assert _within(single, bound) == _within(many, np.full(1, bound))
        assert _improved(single, bound) == _improved(many, np.full(1, bound))
    assert _worst(one, k + 1, t, ()) == math.inf  # fewer than k triplets: unknown


@given(st.lists(st.sampled_from([0.0, 0.25, -0.25, 0.5, -1.0, 3.0]), min_size=1, max_size=5))
def test_the_probe_start_of_one_matrix_is_the_general_paths(values):
    """_plus_first (one matrix, F one column) is _inject's coords + sign·lead with lead = e₀ and the
    sign of the dot product, + at 0: bit for bit, zeros and negative first coordinates included."""
    from riemsvd._subspace import _plus_first

    coords = np.array(values)[:, None]
    lead = np.zeros_like(coords)
    lead[0, 0] = 1.0
    sign = np.where(np.sum(lead * coords, axis=-2, keepdims=True) >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(_plus_first(coords), coords + sign * lead)


_TIES = [(0.5, 0.25, 0.75, 0.0), (0.5, 0.2, 0.75, 0.0), (0.7, 0.25, 0.75, 0.025), (0.7, 0.25, 0.75, 0.02)]


@pytest.mark.parametrize("below,r,kth,error", [*_TIES, (0.5, 0.25, 0.0, 0.0), (0.5, 0.5, 0.75, 0.0)])
def test_unresolved_below_of_one_matrix_is_the_batch_paths(below, r, kth, error):
    """_unresolved_below's one-matrix path (Python floats) against its batch path on a batch of one, at
    the ties of its three tests: θ + r = σ_k (0.5 + 0.25 = 0.75), θ = σ_k − 2·bar (0.7 = 0.75 − 0.05),
    σ_k = 0; σ₁ = 1 so that r = |c·y| exactly."""
    from types import SimpleNamespace

    from riemsvd._subspace import Ritz, _unresolved_below

    k, rounding = 2, 0.0
    s = np.array([1.0, kth if kth > 0 else 0.0, below])
    y = np.eye(3)
    c = np.array([[0.0, 0.0, r]])
    verified = (None, np.array([1.0, kth]), None, None, np.array([0.0, error]))
    one = _unresolved_below(SimpleNamespace(c=c, w=1), Ritz(y, s, y, np.zeros(3)), verified, k, rounding)
    batch = tuple(x[None] if isinstance(x, np.ndarray) else x for x in verified)
    many = _unresolved_below(
        SimpleNamespace(c=c[None], w=1), Ritz(y[None], s[None], y[None], np.zeros((1, 3))), batch, k, rounding
    )
    assert one == many, (one, many)


def test_gap_last_saves_the_products_that_sigma_k_would_take_to_tol():
    """σ₂ 0.1 below σ₁ but 1e-3 above σ₃ and the rest close below (300×200, float64, tol 1e-6): to tol
    σ₂ must be told from σ₃, which the gap below σ₁ does not need; gap_last stops once σ₁ is at tol
    and σ₂'s residual within a twentieth of that gap (58 products where 118 took σ₂ to tol; 126 and
    78 with the wide basis, whose looks take the estimate of H Hᵀ's top eigenpairs). Warm-started
    beside a bulk close below (σ₂ − σ₃ = 7e-3, as on a GPT's attention weights), from the triplets of
    A plus noise of 1e-2: 62 where 100 took σ₂ to tol. There the probe's end asks whether σ₂'s
    triplet may stand for a value above σ₁, not whether σ₃'s may for one above σ₂: asked that, the
    loose σ₂ left it unresolved and the probe ran a second round (94)."""

    def products(a, init=None, **options):
        return [
            solve(a, 2, tol=1e-6, init=init, options=riemsvd.SolverOptions(**options, gap_last=last),
                  generator=torch.Generator().manual_seed(0)).info.matvecs
            for last in (False, True)
        ]  # fmt: skip

    a = gapped_matrix(300, 200, [0.1, 1e-3], 0, bulk=0.89)
    for basis in (None, 64):
        both, gap = products(a, max_basis=basis)
        assert gap <= 0.65 * both, (basis, gap, both)
    a = gapped_matrix(300, 200, [0.04, 7e-3], 1, bulk=0.95)
    gen = torch.Generator().manual_seed(101)
    noise = 1e-2 * torch.randn(a.shape, generator=gen, dtype=a.dtype) / 300**0.5
    before = solve(a + noise, 2, tol=1e-6, generator=gen)
    both, gap = products(a, (before.U, before.V))
    assert gap <= 0.7 * both, (gap, both)


@pytest.mark.parametrize("seed", range(10))
def test_gap_last_still_probes_for_a_copy_of_sigma_1(seed):
    """σ₁ = σ₂ = 1 over values from 0.5 down, k = 2 with gap_last: the Krylov space of one start holds
    one copy, and the probe that follows finds the other, so the gap below σ₁ is 0 — not 0.5, which
    would let a power step past a cluster be trusted."""
    gen = torch.Generator().manual_seed(seed)
    rest = 0.5 * torch.rand(148, generator=gen, dtype=torch.float64)
    s = torch.cat([torch.ones(2, dtype=torch.float64), rest])
    a = (orthonormal(200, 150, gen) * s) @ orthonormal(150, 150, gen).mT
    r = solve(a, 2, options=GAP_LAST, generator=gen)
    assert abs(float(r.S[1]) - 1) <= 1e-10, r.S


@pytest.mark.parametrize("seed", range(10))
def test_gap_last_finds_a_sigma_1_that_a_warm_start_lacks(seed):
    """Warm-started from the exact pairs of σ₂ and σ₃ (σ = 1, 0.95, 0.9, the rest below 0.8; 300×300),
    σ₁'s vector only in the start's random part: the probe still guards the first k − 1 under
    gap_last (0 of 30 seeds missed σ₁; without the probe, 10 of these 10). Not σ_k: the rounds after
    the probe, asked of σ_k, had cost most of gap_last's saving, and from the pairs of σ₁ and σ₃ σ₃
    came back for σ₂ on 2 of 20 seeds (a review; SolverOptions, docs/algorithm.md)."""
    gen = torch.Generator().manual_seed(seed)
    u, v = orthonormal(300, 300, gen), orthonormal(300, 300, gen)
    rest = 0.8 * torch.rand(297, generator=gen, dtype=torch.float64)
    s = torch.cat([torch.tensor([1.0, 0.95, 0.9], dtype=torch.float64), rest])
    a = (u * s) @ v.mT
    r = solve(a, 2, init=(u[:, 1:3], v[:, 1:3]), options=GAP_LAST, generator=gen)
    assert abs(float(r.S[0]) - 1) <= 1e-10, r.S
    assert abs(float(r.S[1] + r.info.errors[1]) - 0.95) <= 0.005, r.S


def test_the_probe_resolves_an_interior_pair_its_krylov_space_reaches():
    """σ₈ − σ₉ = 6e-4 = 4·tol·σ₁ (k = 8, tol 1.5e-5, 1024×1024): the iteration can accept σ₉ for σ₈
    (the start's component along v₈ small), and the probe's steps must then resolve the pair. They
    continued C's newest column, which with two columns in F is not the Krylov direction (Aᵀ𝒰's
    leaning on F's other column dropped): the space's cosine with v₈ stalled at 0.998 and σ₉ came back
    for σ₈, converged, on 2 of 40 seeds here (7 of 60 on a new user's 4096×1024 matrix in float64);
    the direction C·h, h the newest column of H, found it on all."""
    s = torch.cat(
        [
            torch.tensor([10, 8, 6, 5, 4, 3, 2.5, 2.0006, 2.0], dtype=torch.float64),
            torch.linspace(1.5, 0.1, 31, dtype=torch.float64),
            torch.zeros(1024 - 40, dtype=torch.float64),
        ]
    )
    a = torch.diag(s)
    missed = []
    for seed in range(40):
        r = solve(a, 8, tol=1.5e-5, generator=torch.Generator().manual_seed(seed))
        if abs(float(r.S[7]) - 2.0006) > 3e-4:
            missed.append((seed, float(r.S[7])))
    assert not missed


def test_a_value_just_above_the_accepted_sigma_k_is_found_after_a_cold_start():
    """σ₄ − σ₅ = 4·tol·σ₁ over a bulk far below (400×300, k = 4, tol 1e-6): from a start with little
    along v₄ the iteration converges to σ₅ first, and the probe's steps bring v₄ into the space only
    partly (a new user's trial at 1000×600: its cosine 0.9994, its Ritz value still under the
    accepted σ₄), so σ₅ came back for σ₄, converged, on 9 of 200 seeds (here 4 of 60). The probe now
    runs on while the top Ritz value below the accepted ones may stand for a value above σ_k, as
    after a warm start."""
    gen = torch.Generator().manual_seed(2)
    bulk = 0.5 * torch.linalg.svdvals(torch.randn(400, 300, dtype=torch.float64, generator=gen) / 20)
    s = torch.cat([torch.tensor([10, 6.5, 3, 2, 2 - 4e-5], dtype=torch.float64), bulk[:295]])
    a = (orthonormal(400, 300, gen) * s) @ orthonormal(300, 300, gen).mT
    exact = torch.linalg.svdvals(a)[:4]
    missed = []
    for seed in range(60):
        r = solve(a, 4, tol=1e-6, method="iterative", generator=torch.Generator().manual_seed(seed))
        if bool(r.info.converged) and bool(((r.S - exact).abs() > r.info.errors).any()):
            missed.append(seed)
    assert not missed


def _two_close_over_noise(gen: torch.Generator) -> torch.Tensor:
    """A 2000×300 float64 matrix of rank 2, σ = 1 and 0.98, plus Gaussian noise of norm about 0.03."""
    noise = 0.02 * torch.randn(2000, 300, dtype=torch.float64, generator=gen) / math.sqrt(2000)
    top = torch.tensor([1.0, 0.98], dtype=torch.float64)
    return (orthonormal(2000, 2, gen) * top) @ orthonormal(300, 2, gen).mT + noise


def test_a_cold_single_triplet_at_a_loose_tol_is_the_leading_one():
    """Data of rank 2 plus noise (2000×300), σ₂ 2% below σ₁, both far above the noise, k = 1 at tol
    1e-2: the iteration resolves σ₂ within a few steps where the start held little of v₁, and σ₂ came
    back as σ₁, converged and within its bar of σ₂, on 10 of these 60 seeds, after 6.9 products on
    average (a new user's PCA at a 3.2% gap missed at tol 1e-3 too). A cold k = 1 solve now runs 8
    iterations before its triplet may pass."""
    a = _two_close_over_noise(torch.Generator().manual_seed(5))
    s1 = float(torch.linalg.svdvals(a)[0])
    missed = []
    for seed in range(60):
        r = solve(a, 1, tol=1e-2, generator=torch.Generator().manual_seed(seed))
        if bool(r.info.converged) and float(r.S[0]) < s1 - float(r.info.errors[0]):
            missed.append(seed)
    assert not missed


def test_the_cold_single_triplet_floor_counts_directions_and_spares_exact_cases():
    """The 8 directions of a cold k = 1 solve are ⌈8/b⌉ iterations of a block of b (counted in
    iterations, a block of 4 had taken 64 products where 16 pass), and a solve whose first look finds
    its residual at rounding (an invariant Krylov space: the identity, a zero matrix) passes at once
    (8–11 times the products before; a review)."""
    gen = torch.Generator().manual_seed(5)
    a = _two_close_over_noise(gen)
    for b in (2, 4):
        r = solve(a, 1, tol=1e-2, options=riemsvd.SolverOptions(block=b), generator=gen)
        assert bool(r.info.converged) and int(r.info.matvecs) <= 16, (b, int(r.info.matvecs))
    for exact in (torch.eye(300, dtype=torch.float64), torch.zeros(300, 200, dtype=torch.float64)):
        r = solve(exact, 1, generator=gen)
        assert bool(r.info.converged) and int(r.info.matvecs) <= 4, int(r.info.matvecs)


@pytest.mark.parametrize("top", [0.9, 0.95])
def test_copies_of_sigma_1_a_few_percent_above_the_rest_are_all_found(top):
    """With σ_k/σ₁ = 0.9 and 0.95, a probe of 4 steps missed a copy in 12 and ~37 of 150 such cases
    (here seeds 9, 22 and 32 at 0.9): 4 steps cannot lift a random direction's component along the
    missed copy (~1/√n) above values within 10% of it. The probe now runs the steps Chebyshev's bound
    asks for at that gap."""
    for seed in range(40):
        a, k = _copies_over_a_gap(seed, top)
        assert solve_and_check(a, k, torch.Generator().manual_seed(seed)) == "ok", f"seed {seed}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_copy_found_above_a_tie_at_sigma_k_is_kept(dtype):
    """Four copies of σ₁ = 2, then 1, 1 (200×150, k = 5): the probe found the missed copy, but it only
    lifted σ_k from 1 to the accepted σ_{k−1}, also 1, and the probe's test watched σ_k alone, so
    (2, 2, 2, 1, 1) came back converged (a new user's trial: 7 of 10 seeds at 1000×600; here 15 of
    16 fail without the fix: 8 in float64, 7 in float32)."""
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        s = torch.cat([torch.tensor([2.0, 2, 2, 2, 1, 1]), torch.linspace(0.5, 0.01, 60)]).double()
        u, v = orthonormal(200, s.numel(), gen), orthonormal(150, s.numel(), gen)
        assert solve_and_check(((u * s) @ v.mT).to(dtype), 5, gen) == "ok", f"seed {seed}"


def test_a_probe_runs_one_step_more_than_chebyshev_counts():
    """Five copies of σ₁ = 1 over values from 0.7 down (213×132, k = 5; repeated-σ fuzz seed 1, case
    86): Chebyshev's count gave the probe 5 steps, which missed the fifth copy and returned 0.7; a
    sixth step finds it. The matrix is made on one thread, as in the fuzz run: with two, its QR
    factors round differently, and the old count happened to find the copy."""
    g, threads = torch.Generator().manual_seed(1), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case in range(87):  # the fuzz run's draws, in its order
            m, n = (int(torch.randint(20, 301, (1,), generator=g)) for _ in range(2))
            r, copies = min(m, n), int(torch.randint(3, 6, (1,), generator=g))
            top = [0.5, 0.6, 0.7, 0.8][case % 4]
            s = torch.cat([torch.ones(copies), torch.linspace(top, 0.01, r - copies, dtype=torch.float64)])
            q1 = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))[0]
            q2 = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]
        a = (q1 * s) @ q2.T
    finally:
        torch.set_num_threads(threads)
    assert (m, n, copies) == (213, 132, 5)
    assert solve_and_check(a, copies, torch.Generator().manual_seed(86)) == "ok"


def test_a_probe_gets_the_room_its_steps_need():
    """Three copies of 1.02 over values from 0.9926 down (600×400, k = 4; a new user's trial): the
    probe needs 16 steps at that 2.7% gap, but a restart that kept the usual 11 vectors left room for
    12, and 6 of 100 seeds of the trial's matrix missed the third copy (2 of 100 of this one, made on
    one thread: the seeds below). The restart before a probe now keeps what leaves its steps room."""
    g, threads = torch.Generator().manual_seed(5), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        u, v = orthonormal(600, 400, g), orthonormal(400, 400, g)
    finally:
        torch.set_num_threads(threads)
    s = torch.linspace(1, 0.01, 400, dtype=torch.float64)
    s[:3] = 1.02
    a = (u * s) @ v.mT
    for seed in (57, 60):
        assert solve_and_check(a, 4, torch.Generator().manual_seed(seed)) == "ok", f"seed {seed}"


@pytest.mark.parametrize("copies", [4, 5])
def test_many_exact_copies_of_the_top_value_are_all_found(copies):
    """Four or five copies of σ₁ = 1 over values from 0.6 down (300×200, k = copies): a thick restart
    inside the probe once discarded its random direction, and (1, 1, 1, 0.6) came back for
    (1, 1, 1, 1) with residual 1e-13 (8 of 8 seeds)."""
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        top = torch.ones(copies, dtype=torch.float64)
        s = torch.cat([top, torch.linspace(0.6, 0.01, 60, dtype=torch.float64)])
        u, v = orthonormal(300, s.numel(), gen), orthonormal(200, s.numel(), gen)
        a = (u * s) @ v.mT
        assert solve_and_check(a, copies, gen) == "ok"


@pytest.mark.parametrize("seed", [3, 5, 12])
def test_probe_finds_a_value_missed_by_less_than_ten_tol(seed):
    """A new user's trial: near k = min(m, n) on a decaying spectrum (200×80, k = 78, σ 0.82 apart,
    tol 1e-8) these seeds returned σ₇₉ in place of σ₇₈ = 30·tol·σ₁, converged: the probe's Ritz value
    for the missed one rose 5.4–6.5·tol·σ₁ above the accepted σ_k, and only a rise of 10·tol·σ₁
    counted. Each returned value is now within tol·σ₁ of the true one of its place."""
    g = torch.Generator().manual_seed(0)
    m, n, k, tol = 200, 80, 78, 1e-8
    s = torch.logspace(0, -float(np.random.RandomState(7).uniform(6, 15)), n, dtype=torch.float64)
    u = orthonormal(m, n, g)
    v = orthonormal(n, n, g)
    a = (u * s) @ v.mT
    result = solve(a, k, tol=tol, generator=torch.Generator().manual_seed(seed))
    assert bool(result.info.converged)
    assert float((result.S - s[:k]).abs().max()) <= tol * float(s[0])


def _planted(m: int, n: int, top: list, rest: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """A (m×n, float64) with singular values ``top`` and then uniform ones below ``rest``; the values
    sorted, and the singular vectors (Q1, Q2) in the order of ``top``."""
    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    bulk = rest * torch.rand(r - len(top), dtype=torch.float64, generator=g).sort(descending=True).values
    s = torch.cat([torch.tensor(top, dtype=torch.float64), bulk])
    q1 = torch.linalg.qr(torch.randn(m, r, dtype=torch.float64, generator=g))[0]
    q2 = torch.linalg.qr(torch.randn(n, r, dtype=torch.float64, generator=g))[0]
    return (q1 * s) @ q2.T, s.sort(descending=True).values, (q1, q2)


@pytest.mark.parametrize("seed", range(4))
def test_copies_of_an_interior_value_are_all_found(seed):
    """σ = 2, 1, 1, 1, 1 over values below 0.95, k = 5: the probe for missed copies was sized by
    σ₁/σ_k, and 8 of 10 seeds returned 0.95 for the fourth 1 as converged, bars 1e-12 (a new user's
    trial). Sized by the least accepted value above σ_k (1 here), every copy is found."""
    a, s, _ = _planted(300, 1000, [2.0, 1.0, 1.0, 1.0, 1.0], 0.95, seed)
    out = riemsvd.solve(a, 5, method="iterative", generator=torch.Generator().manual_seed(seed))
    assert bool(out.info.converged.all())
    assert ((out.S - s[:5]).abs() <= out.info.errors).all(), (out.S, s[:5])


@pytest.mark.parametrize("seed", range(3))
def test_a_warm_start_lacking_an_interior_singular_vector_finds_it(seed):
    """init = the exact vectors of σ₁, σ₂, σ₄ for k = 3 (σ₃ − σ₄ = 0.01): the solve converged at once
    and returned σ₄ for σ₃ on 4 of 10 seeds (a new user's trial); the probe after a start whose first
    look finds it converged now runs its longest, and σ₃ is found."""
    a, s, (q1, q2) = _planted(400, 480, [1.0, 0.7, 0.5, 0.49], 0.45, seed)
    init = (q1[:, [0, 1, 3]], q2[:, [0, 1, 3]])
    out = riemsvd.solve(a, 3, init=init, method="iterative", generator=torch.Generator().manual_seed(seed))
    assert ((out.S - s[:3]).abs() <= out.info.errors).all(), (out.S, s[:3])


def test_a_warm_start_through_a_crossing_finds_the_value_that_rose_above_sigma_k():
    """Tracking the top 3 along a path: the old σ₂ (0.8973) falls to 0.89, below σ₃ = 0.8946 and
    σ₄ = 0.8920 of a 300×300 diagonal A. Warm-started from the previous top 3 (solved to 1e-10), the
    solve returned 0.89 for σ₃ as converged, 2.7e-3 off with a bar of 5e-11, on 21 of 30 seeds (a
    new user's trial; a cold start on none): the probe's 16 steps had left the top Ritz value below
    the accepted ones within 0.003 of σ₃ with a residual of 1.5e-2. A warm start's probe now runs on
    until that value is resolved below σ_k."""
    s = np.linspace(0.9, 0.1, 300)
    s[0] = 0.95
    previous = riemsvd.solve(sp.diags(s, format="csr"), 3, tol=1e-10)
    s[1] = 0.89
    true = np.sort(s)[::-1][:3]
    a = sp.diags(s, format="csr")
    for seed in range(6):
        out = riemsvd.solve(a, 3, tol=1e-10, init=previous, generator=torch.Generator().manual_seed(seed))
        assert bool(out.info.converged)
        assert (np.abs(out.S.numpy() - true) <= out.info.errors.numpy()).all(), (seed, out.S, true)


@pytest.mark.parametrize("case", [28, 58])
def test_a_warm_start_through_a_crossing_with_a_small_basis_finds_the_value(case):
    """Crossings of the warm fuzz (tests/fuzz_warm.py, seed 0) with ``max_basis=12``: a round is a
    restart and the few steps that fit, and 8 such rounds had given up unresolved, the old value
    accepted in place of the one that rose above σ_k (these 2, case 3, and 2 more of the first 80
    cases, which still miss: their Ritz value converged to another one). The rounds now run up to
    8·16 steps in all, whatever fits in each. Case 3 (k = 6, tol 1e-8) now stops at maxiter, not
    converged, where a cold solve with that basis takes 2980 products (230 with the default one)."""
    first, second, k, tol = crossing_case(0, case)
    gen = torch.Generator().manual_seed(case)
    previous = riemsvd.solve(first, k, tol=1e-10, generator=gen)
    options = riemsvd.SolverOptions(max_basis=12)
    gen = torch.Generator().manual_seed(case)
    out = solve(second, k, tol=tol, init=previous, generator=gen, options=options)
    true = torch.linalg.svdvals(second)[:k]
    assert bool(out.info.converged.all())
    assert ((out.S - true).abs() <= out.info.errors + 1e-12).all(), (out.S, true)


@pytest.mark.parametrize("maxiter", [20, 30, 41])
def test_maxiter_inside_a_warm_starts_rounds_is_not_converged(maxiter):
    """A warm start through a crossing (the warm fuzz's case 28, seed 0) stopped by maxiter while
    its rounds still could not tell whether the start lacked a value above σ_k: it returned the
    crossed value as converged (maxiter 11–41; a review). Now not converged, and the warning says
    why, though every residual passes tol."""
    first, second, k, tol = crossing_case(0, 28)
    previous = riemsvd.solve(first, k, tol=1e-10, generator=torch.Generator().manual_seed(28))
    gen = torch.Generator().manual_seed(28)
    with pytest.warns(riemsvd.ConvergenceWarning, match="before it could tell whether the warm start"):
        out = solve(second, k, tol=tol, init=previous, generator=gen, maxiter=maxiter)
    assert not bool(out.info.converged.all()) and out.info.stop_reason == "maxiter"


def test_a_warm_start_on_a_repeated_sigma_k_does_not_run_the_rounds_for_its_copy():
    """σ_{k+1} = σ_k (an orthogonal Q): the probe's rounds counted the copy as a value that might lie
    above σ_k and ran all 8, 290 products where a warm k = 1 solve took 34 (a review). A copy of σ_k
    changes no value returned."""
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(256, 256, dtype=torch.float64, generator=gen)).Q
    solve = functools.partial(riemsvd.solve, q, tol=1e-6, method="iterative")
    for k in (1, 2):
        cold = solve(k, generator=torch.Generator().manual_seed(1))
        warm = solve(k, init=cold, generator=torch.Generator().manual_seed(1))
        assert bool(warm.info.converged) and int(warm.info.matvecs) <= 60, (k, int(warm.info.matvecs))
        torch.testing.assert_close(warm.S, torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed,top", [(228, 0.98), (56, 0.985), (169, 0.985)])
@pytest.mark.parametrize("threads", [1, 2])
def test_copies_one_and_two_percent_above_the_rest_are_found(seed, top, threads):
    """Copies of σ₁ 1.5% and 2% above the rest, where Chebyshev's bound asks the probe for 17–19 steps:
    capped at 16 these three missed a copy, converged, on one thread (500×400 at k = 5 and 3, 150×300 at
    k = 3); the probe now takes the bound's steps up to _PROBE_STRETCH."""
    a, k = _copies_over_a_gap(seed, top)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)  # the pass's shares, and with them its rounding, follow the count
        assert solve_and_check(a, k, torch.Generator().manual_seed(seed)) == "ok"
    finally:
        torch.set_num_threads(before)
