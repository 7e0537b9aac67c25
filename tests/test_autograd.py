"""The derivatives of riemsvd.solve: against torch.linalg.svd's, finite differences and gradcheck."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.func import jacfwd, jvp

import riemsvd
from tests.matrices import make_matrix, orthonormal

# The iterative solver on purpose: on matrices this small, method="auto" would take the dense path
# (tests/test_dense.py tests that one and the choice).
solve = functools.partial(riemsvd.solve, method="iterative")

# Sign-invariant losses: unchanged when (uᵢ, vᵢ) → (−uᵢ, −vᵢ), the only well-posed ones.
LOSSES = {
    "sum_w_sigma": lambda u, s, v, w, c, d, b: (w * s).sum(),
    "cu_squared": lambda u, s, v, w, c, d, b: (w * (c @ u) ** 2).sum(),
    "cu_dv": lambda u, s, v, w, c, d, b: (w * (c @ u) * (d @ v)).sum(),
    "projector": lambda u, s, v, w, c, d, b: ((u * w) @ u.mT @ b).square().sum(),
    "mixed": lambda u, s, v, w, c, d, b: (s * (c @ u) * (d @ v)).sum() + (v * v * w).sum(),
}


def with_gaps(m, n, k, gen, gap=0.05):
    """A matrix whose top k + 1 singular values are separated by at least ``gap`` (relative)."""
    r = min(m, n)
    top = 1.0 - gap * torch.arange(min(r, k + 1), dtype=torch.float64)
    rest = (1.0 - gap * (k + 1)) * torch.rand(r - top.numel(), generator=gen, dtype=torch.float64)
    s = torch.cat([top, torch.sort(rest, descending=True).values])
    return (orthonormal(m, r, gen) * s) @ orthonormal(n, r, gen).mT


def _grads(a, k, loss, gen, batch=()):
    m, n = a.shape[-2:]
    w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    c, d = (
        torch.randn(m, generator=gen, dtype=torch.float64),
        torch.randn(n, generator=gen, dtype=torch.float64),
    )
    b = torch.randn(m, 3, generator=gen, dtype=torch.float64)
    a1 = a.clone().requires_grad_()
    u, s, v = solve(a1, k, generator=gen)
    loss(u, s, v, w, c, d, b).sum().backward()
    a2 = a.clone().requires_grad_()
    u2, s2, vh2 = torch.linalg.svd(a2, full_matrices=False)
    loss(u2[..., :k], s2[..., :k], vh2[..., :k, :].mT, w, c, d, b).sum().backward()
    return a1.grad, a2.grad


@given(
    m=st.integers(2, 40),
    n=st.integers(2, 40),
    loss=st.sampled_from(sorted(LOSSES)),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_gradient_matches_full_svd_backward_on_sign_invariant_losses(m, n, loss, seed, data):
    k = data.draw(st.integers(1, min(m, n, 5)), label="k")
    gen = torch.Generator().manual_seed(seed)
    # Relative gaps down to 1e-4 between the top k + 1 values: the derivative of U and V grows like
    # 1/gap, and so does its error (measured, 150 matrices per gap, largest relative error: 2e-12 at
    # 5e-2, 5e-11 at 1e-3, 4e-10 at 1e-4), still 25× inside the 1e-8 asked here.
    gap = data.draw(st.sampled_from([5e-2, 1e-2, 1e-3, 1e-4]), label="gap")
    a = with_gaps(m, n, k, gen, gap) * data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="scale")
    ours, ref = _grads(a, k, LOSSES[loss], gen)
    assert float((ours - ref).norm()) <= 1e-8 * float(ref.norm()) + 1e-300


def test_gradient_of_a_batch_matches_per_matrix(gen):
    a = torch.stack([with_gaps(30, 20, 3, gen) for _ in range(4)])
    ours, ref = _grads(a, 3, LOSSES["mixed"], gen)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-10)


def test_gradcheck_on_a_small_problem(gen):
    a = with_gaps(7, 5, 2, gen).requires_grad_()

    def f(x):
        u, s, v = solve(x, 2, generator=torch.Generator().manual_seed(0))
        return s.sum() + (u[:3] ** 2).sum() + (u[:, 0] @ x @ v[:, 1]) ** 2 + (u[:, :1] @ v[:, :1].mT).sum()

    assert torch.autograd.gradcheck(f, (a,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize(("shape", "k"), [((6, 4), 1), ((6, 4), 2), ((2, 6, 4), 1)])
def test_forward_mode_through_the_dense_path(shape, k, gen):
    # a 6×4 A takes the dense path, whose k = 1 outputs were views of its SVD's factors: forward mode
    # (torch.autograd.forward_ad, gradcheck's check_forward_ad) failed inside autograd on them
    a = torch.randn(shape, dtype=torch.float64, generator=gen).requires_grad_()

    def loss(x):
        out = riemsvd.solve(x, k)
        return out.S, (out.U * out.U).sum(-1), (out.U @ out.V.mT)

    assert torch.autograd.gradcheck(loss, (a,), check_forward_ad=True)


def test_only_sigma_needs_no_linear_solve(gen, monkeypatch):
    import riemsvd._autograd as ad

    def forbidden(*args, **kwargs):
        raise AssertionError("the S-only backward must not solve")

    monkeypatch.setattr(ad, "_complement_solve", forbidden)
    a = with_gaps(50, 30, 2, gen)
    ours, ref = _grads(a, 2, LOSSES["sum_w_sigma"], gen)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_repeated_zero_singular_values_below_k_get_a_finite_right_gradient(gen):
    """A gradient-like matrix with zero columns: torch.linalg.svd's backward is NaN here."""
    a = make_matrix("decay", 30, 20, gen)
    a[:, 10:] = 0.0
    weights = torch.arange(600, dtype=torch.float64).reshape(30, 20)

    def loss(x):
        u, s, v = solve(x, 2, generator=torch.Generator().manual_seed(0))
        return ((u @ v.mT) ** 2 * weights).sum() + s.sum()

    x = a.clone().requires_grad_()
    loss(x).backward()
    assert bool(torch.isfinite(x.grad).all())
    x2 = a.clone().requires_grad_()
    u2, s2, vh2 = torch.linalg.svd(x2, full_matrices=False)
    (((u2[:, :2] @ vh2[:2]) ** 2 * weights).sum() + s2[:2].sum()).backward()
    assert not bool(torch.isfinite(x2.grad).all())  # the reason for this test
    for _ in range(3):
        e = torch.randn(30, 20, generator=gen, dtype=torch.float64)
        h = 1e-6
        fd = (loss(a + h * e) - loss(a - h * e)) / (2 * h)
        torch.testing.assert_close((x.grad * e).sum(), fd, rtol=1e-6, atol=1e-6)


def test_vector_gradients_of_a_zero_matrix_warn_and_sigma_gradients_do_not():
    """σ₁ = σ₂ = 0: the loss on U of the dense path's coordinate vectors drew a silent 0 gradient
    (torch.linalg.svd gives NaN; a new user's trial), the iteration's random ones a warning of an
    ill-conditioned solve. One warning, that of the zero values, either way; a loss of S alone draws
    none, and its gradient (u vᵀ) is exact."""
    zero = torch.zeros(30, 20, dtype=torch.float64, requires_grad=True)
    for method in ("dense", "iterative"):
        u, s, v = riemsvd.solve(zero, 1, generator=torch.Generator().manual_seed(0), method=method)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (u @ u.mT).diagonal().pow(2).sum().backward()
        messages = [str(w.message) for w in caught if w.category is riemsvd.DegenerateSpectrumWarning]
        assert len(messages) == 1 and messages[0].startswith("σ_k is 0, as is σ_{k+1}"), method
    zero.grad = None
    u, s, v = solve(zero, 1, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
        s.sum().backward()
    torch.testing.assert_close(zero.grad, u[:, 0:1] @ v[:, 0:1].mT, rtol=0, atol=0)


def _warnings_of_func_grad(loss, a) -> list:
    """The warnings of torch.func.grad(loss)(a), torch's own included each time (it warns of a
    tensor read as a scalar once a process otherwise)."""
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.func.grad(loss)(a)
    finally:
        torch.set_warn_always(always)
    return caught


def test_a_tie_under_func_grad_warns_of_itself_alone():
    """torch.func.grad of a loss on U at σ₂ = σ₃ (k = 2): the DegenerateSpectrumWarning, and not
    torch's "Converting a tensor with requires_grad=True to a scalar", which the warning's own reading
    of its figures had raised beside it (a new user's trial)."""
    g = torch.Generator().manual_seed(0)
    q1, q2 = (torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))[0] for d in (30, 20))
    s = torch.tensor([5.0, 3.0, 3.0, 2.0] + [1.0 - 0.01 * i for i in range(16)], dtype=torch.float64)
    a = (q1[:, :20] * s) @ q2.T
    x = torch.randn(30, 30, dtype=torch.float64, generator=g)

    def loss(a):
        u = riemsvd.solve(a, 2, generator=torch.Generator().manual_seed(0), method="iterative").U
        return ((u @ u.T) * x).sum()

    caught = _warnings_of_func_grad(loss, a)
    kinds = [w.category for w in caught]
    assert riemsvd.DegenerateSpectrumWarning in kinds, [str(w.message)[:80] for w in caught]
    assert not any("requires_grad=True to a scalar" in str(w.message) for w in caught)


def test_an_out_of_range_solve_under_func_grad_warns_of_itself_alone():
    """torch.func.grad of σ's sum for a float32 A whose σ are subnormal (2^−140): the ConvergenceWarning
    that σ is beyond float32's range, and not torch's "Converting a tensor with requires_grad=True to a
    scalar", which its message's reading of the returned σ₁ had raised beside it (a review)."""
    a = torch.randn(30, 20, generator=torch.Generator().manual_seed(0)) * 2.0**-140

    def loss(a):
        return riemsvd.solve(a, 2, generator=torch.Generator().manual_seed(1)).S.sum()

    caught = _warnings_of_func_grad(loss, a)
    assert any("outside the range of torch.float32" in str(w.message) for w in caught)
    assert not any("requires_grad=True to a scalar" in str(w.message) for w in caught)


def _degenerate_warnings(x, k, gen) -> dict[str, str]:
    """The DegenerateSpectrumWarnings of a loss on the vectors of x's k triplets: each message's first
    word, with what it ends with."""
    u, s, v = solve(x, k, generator=gen, method="iterative")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (u**3).sum().backward()
    messages = [str(w.message) for w in caught if w.category is riemsvd.DegenerateSpectrumWarning]
    return {m.split(" ")[0]: m[m.rfind(". ") + 2 :] for m in messages}


def test_degenerate_warnings_of_a_batch_name_its_elements(gen):
    """Each of the three warnings of a batched backward names the matrices it is about (a new user's
    trial): a tie inside the k values, σ_k = σ_{k+1}, a zero σ_k."""
    q = [(orthonormal(30, 7, gen), orthonormal(20, 7, gen)) for _ in range(3)]
    spectra = [[5, 4, 3, 2, 1, 0.5, 0.25], [5, 4, 3, 3, 1, 0.5, 0.25], [5, 4, 3, 2, 2, 0.5, 0.25]]
    a = torch.stack([(u * torch.tensor(s, dtype=torch.float64)) @ v.mT for (u, v), s in zip(q, spectra)])
    ends = _degenerate_warnings(a.requires_grad_(), 4, gen)
    assert ends == {"two": "Batch element 1.", "the": "Batch element 2."}
    zero_second = torch.stack([a[0].detach(), torch.zeros(30, 20, dtype=torch.float64)])
    assert _degenerate_warnings(zero_second.requires_grad_(), 1, gen) == {"σ_k": "Batch element 1."}


def test_adjoint_solution_is_tangent(gen):
    import riemsvd._autograd as ad

    a = with_gaps(25, 15, 3, gen)
    u, s, v = solve(a, 3, generator=gen)
    gu, gv = torch.randn_like(u), torch.randn_like(v)
    p, q = ad._complement_solve(ad.DenseOperator(a), u, s, v, gu, gv)
    assert float((u.mT @ p).abs().max()) < 1e-12 and float((v.mT @ q).abs().max()) < 1e-12


def _double_top(gen):
    """A 20×10 matrix with σ₁ = σ₂ = 2 and the rest 1/2, 1/3, …"""
    s = torch.tensor([2.0, 2.0] + [1.0 / (i + 2) for i in range(8)], dtype=torch.float64)
    return (orthonormal(20, 10, gen) * s) @ orthonormal(10, 10, gen).mT


def test_coinciding_singular_values_warn_and_keep_the_sigma_gradient_exact(gen):
    a = _double_top(gen)
    x = a.clone().requires_grad_()
    u, sv, v = solve(x, 2, generator=gen)
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="coincide"):
        (sv.sum() + u[0, 0] ** 2).backward()  # u₁ alone: not (u[0] ** 2).sum(), blind to the rotation
    assert bool(torch.isfinite(x.grad).all())
    y = a.clone().requires_grad_()
    solve(y, 2, generator=gen).S.sum().backward()
    torch.testing.assert_close(y.grad, (u @ v.mT).detach(), rtol=1e-10, atol=1e-10)


def test_a_loss_on_separated_pairs_is_exact_without_a_warning_for_others_that_coincide(gen):
    # σ = 3, 2, 1, 1: a loss on the first pair alone is blind to the rotation of the last two
    s = torch.tensor([3.0, 2.0, 1.0, 1.0] + [0.5 / (i + 1) for i in range(6)], dtype=torch.float64)
    a = (orthonormal(20, 10, gen) * s) @ orthonormal(10, 10, gen).mT
    w, z, da = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((20,), (10,), (20, 10)))

    def loss(u, v):  # sign-invariant
        return (u[:, 0] @ w) ** 2 + (v[:, 0] @ z) ** 2

    def reference(y):
        u, _, vh = torch.linalg.svd(y)
        return loss(u, vh.mT)

    x = a.clone().requires_grad_()
    u, _, v = solve(x, 4, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
        loss(u, v).backward()
    # the directional derivative against central differences (error about h² + ε/h: 1e-11)
    h = 1e-6
    slope = (reference(a + h * da) - reference(a - h * da)) / (2 * h)
    torch.testing.assert_close((x.grad * da).sum(), slope, rtol=1e-8, atol=1e-9)
    # a loss on the third pair does see it
    y = a.clone().requires_grad_()
    u, _, v = solve(y, 4, generator=gen)
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="coincide"):
        (u[:, 2] @ w).square().backward()


def test_a_loss_of_the_span_alone_draws_no_warning_where_values_inside_it_coincide(gen):
    """σ = 3, 2, 2, k = 3, loss ‖UᵀX‖² = tr(XᵀUUᵀX), blind to rotations inside span(U): UᵀŪ is
    symmetric, its skew part rounding only, which measured against itself drew the warning that the
    gradient "is not defined" (a new user's trial). The gradient against central differences."""
    s = torch.cat([torch.tensor([3.0, 2.0, 2.0]), torch.linspace(1, 0.1, 12)]).double()
    a = (orthonormal(30, 15, gen) * s) @ orthonormal(15, 15, gen).mT
    x, da = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in ((30, 5), (30, 15)))

    def loss(y):
        return (solve(y, 3, generator=torch.Generator().manual_seed(0)).U.mT @ x).square().sum()

    y = a.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
        loss(y).backward()
    h = 1e-5
    slope = (loss(a + h * da) - loss(a - h * da)) / (2 * h)
    torch.testing.assert_close((y.grad * da).sum(), slope, rtol=1e-7, atol=1e-8)


def _tie_inside(gen):
    """A 60×40 matrix with σ = 5, 3, 3, 2.5, 2, 1, 0.9, 0.8 and zeros: σ₂ = σ₃ inside the top 5."""
    s = torch.tensor([5, 3, 3, 2.5, 2, 1, 0.9, 0.8] + [0] * 32, dtype=torch.float64)
    return (orthonormal(60, 40, gen) * s) @ orthonormal(40, 40, gen).mT


def _slope(loss, a, da, h=1e-4):
    """The derivative of loss (on torch.linalg.svd's top 5) along da by 4th-order central differences:
    truncation about h⁴ ≈ 1e-16 relative, rounding ε/h ≈ 1e-12."""

    def f(y):
        u, s, vh = torch.linalg.svd(y, full_matrices=False)
        return loss(y, u[:, :5], s[:5], vh[:5].mT)

    return (-f(a + 2 * h * da) + 8 * f(a + h * da) - 8 * f(a - h * da) + f(a - 2 * h * da)) / (12 * h)


def test_u_v_transpose_is_differentiated_exactly_where_values_inside_the_k_coincide(gen):
    """U Vᵀ is smooth where σ₂ = σ₃ (k = 5): the coinciding pairs' common rotation changes no
    triplet and U Vᵀ not at all, while their relative rotation, at the rate (P − Pᵀ)/(σ_i + σ_j), is
    defined. Both had been left out, and ⟨W, U Vᵀ⟩'s gradient and tangent came out 6% off (a new
    user's trial); now they match central differences, backward and forward."""
    a = _tie_inside(gen)
    w, da = (torch.randn(60, 40, generator=gen, dtype=torch.float64) for _ in range(2))

    def loss(y, u, s, v):
        return (w * (u @ v.mT)).sum()

    slope = _slope(loss, a, da)
    x = a.clone().requires_grad_()
    u, s, v = riemsvd.solve(x, 5, tol=1e-13, generator=torch.Generator().manual_seed(0))
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="Exact all the same.*U Vᵀ"):
        loss(x, u, s, v).backward()
    torch.testing.assert_close((x.grad * da).sum(), slope, rtol=1e-9, atol=0)

    def uv(y):
        u, _, v = riemsvd.solve(y, 5, tol=1e-13, generator=torch.Generator().manual_seed(0))
        return u @ v.mT

    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="coincide"):
        _, tangent = torch.func.jvp(uv, (a,), (da,))
    torch.testing.assert_close((w * tangent).sum(), slope, rtol=1e-9, atol=0)


def test_the_rank_k_part_through_the_span_is_exact_where_values_inside_the_k_coincide(gen):
    """U S Vᵀ at σ₂ = σ₃: its gradient needs the common rotation's effect, (P + Pᵀ)/2 in the block,
    which the cotangents of U, S, V no longer carry (0/0 at the tie): it comes out 6% off, and the
    warning says so and names A V Vᵀ, the same matrix through span(V), whose gradient is exact with
    no warning."""
    a = _tie_inside(gen)
    w, da = (torch.randn(60, 40, generator=gen, dtype=torch.float64) for _ in range(2))
    slope = _slope(lambda y, u, s, v: (w * (y @ v @ v.mT)).sum(), a, da)
    x = a.clone().requires_grad_()
    u, s, v = riemsvd.solve(x, 5, tol=1e-13, generator=torch.Generator().manual_seed(0))
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="not those of U S Vᵀ.*A V Vᵀ"):
        (w * ((u * s) @ v.mT)).sum().backward()
    y = a.clone().requires_grad_()
    v = riemsvd.solve(y, 5, tol=1e-13, generator=torch.Generator().manual_seed(0)).V
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
        (w * (y @ v @ v.mT)).sum().backward()
    torch.testing.assert_close((y.grad * da).sum(), slope, rtol=1e-9, atol=0)


def test_small_values_apart_are_not_taken_for_a_tie(gen):
    """float32, σ = 5, 3, 2.5, 2e-3, 1e-3 (k = 5): σ₄ and σ₅ are 1e-3 apart, 1700·ε·σ₁, but their
    squares within 64ε·σ₁², which counted as a tie: u₄'s gradient came out 2.7e-10 for −3.97e-5, no
    warning (a review). Ties are judged on the values themselves now."""
    s = torch.tensor([5, 3, 2.5, 2e-3, 1e-3] + [1e-4 / (i + 1) for i in range(25)], dtype=torch.float64)
    a = (orthonormal(40, 30, gen) * s) @ orthonormal(30, 30, gen).mT
    x = torch.randn(40, dtype=torch.float64, generator=gen)
    u0, _, vh0 = torch.linalg.svd(a)
    da = torch.outer(u0[:, 3], vh0[4]) + torch.outer(u0[:, 4], vh0[3])  # turns u₄ towards u₅

    def loss(y):
        u, _, vh = torch.linalg.svd(y)
        return (u[:, 3] @ x) ** 2

    h = 1e-6  # error about h²·(1/gap)² ≈ 1e-6 relative, and ε/h
    slope = (loss(a + h * da) - loss(a - h * da)) / (2 * h)
    y = a.float().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
        u = riemsvd.solve(y, 5, method="dense").U
        ((u[:, 3] @ x.float()) ** 2).backward()
    torch.testing.assert_close((y.grad.double() * da).sum(), slope, rtol=1e-3, atol=0)


@pytest.mark.parametrize("method", ["dense", "iterative"])
def test_a_float32_gap_inside_the_k_above_rounding_keeps_its_rotation(method):
    """σ₄ = σ₃ − 3e-6 (25ε of float32; 300×200, k = 6): the common rotation of the two pairs is
    defined, and a loss that turns with it (Σ i·‖uᵢᵀX‖²) needs its rate, 1/(σ₃ − σ₄). Left out below
    64ε·σ₁, as a tie, it made the gradient 100% off the float64 reference; kept, the rounding of the
    float32 skew parts that the rate divides by 25ε leaves it 1–7% off (5 seeds; torch.linalg.svd in
    float32, 11–130%), and a warning says so. Where σ₃ = σ₄ exactly, the values tie as before."""
    gen = torch.Generator().manual_seed(0)
    spectrum = [1.0, 0.9, 0.8, 0.8 - 3e-6, 0.7, 0.6] + [0.5 * 0.97**i for i in range(194)]
    left, right = orthonormal(300, 200, gen), orthonormal(200, 200, gen)
    x = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    weights = torch.arange(1, 7, dtype=torch.float64)

    def loss(u):
        return ((u.mT @ x.to(u.dtype)) ** 2 * weights.to(u.dtype)[:, None]).sum()

    a = ((left * torch.tensor(spectrum, dtype=torch.float64)) @ right.mT).float()
    reference = a.double().requires_grad_()
    loss(torch.linalg.svd(reference, full_matrices=False)[0][:, :6]).backward()
    y = a.clone().requires_grad_()
    u = riemsvd.solve(y, 6, method=method, generator=torch.Generator().manual_seed(0)).U
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="apart, within 64 times the rounding"):
        loss(u).backward()
    assert float((y.grad.double() - reference.grad).norm() / reference.grad.norm()) < 0.2
    spectrum[3] = spectrum[2]
    tied = ((left * torch.tensor(spectrum, dtype=torch.float64)) @ right.mT).float().requires_grad_()
    u = riemsvd.solve(tied, 6, method=method, generator=torch.Generator().manual_seed(0)).U
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="coincide"):
        loss(u).backward()


def test_losses_blind_to_the_rotation_keep_the_tie_floor_at_a_float32_gap_above_rounding():
    """At a 25ε gap the rate stays out where the loss does not turn with the pair (a review of the 16ε
    floor): ⟨G, U Vᵀ⟩, whose skew parts cancel in the part the rate multiplies, had come out 1.9e-3
    off where it was 1.0e-5; and forward mode, whose tangents serve any function, 0.2 off for the
    tangent of ‖UᵀX‖² (2.3e-4 before). The backward does not say the rate divides rounding by the
    gap (U Vᵀ is told, as at a tie, that its gradient is exact)."""
    gen = torch.Generator().manual_seed(0)
    spectrum = [1.0, 0.9, 0.8, 0.8 - 25 * 2.0**-23, 0.7, 0.6] + [0.5 * 0.97**i for i in range(194)]
    a = (orthonormal(300, 200, gen) * torch.tensor(spectrum, dtype=torch.float64)) @ orthonormal(
        200, 200, gen
    ).mT
    a = a.float().double()  # the float32 matrix, exactly
    x, g, da = (
        torch.randn(*shape, generator=gen, dtype=torch.float64)
        for shape in ((300, 5), (300, 200), (300, 200))
    )

    def solve6(y):
        return riemsvd.solve(y, 6, method="dense", generator=torch.Generator().manual_seed(0))

    reference = a.clone().requires_grad_()
    u, _, vh = torch.linalg.svd(reference, full_matrices=False)
    (g * (u[:, :6] @ vh[:6])).sum().backward()
    y = a.float().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        u, _, v = solve6(y)
        (g.float() * (u @ v.mT)).sum().backward()
    assert float((y.grad.double() - reference.grad).norm() / reference.grad.norm()) < 1e-4
    assert not any("within 64 times the rounding" in str(w.message) for w in caught)

    def span(y):
        return ((solve6(y).U.mT @ x.to(y.dtype)) ** 2).sum()

    _, exact = jvp(
        lambda y: ((torch.linalg.svd(y, full_matrices=False)[0][:, :6].mT @ x) ** 2).sum(), (a,), (da,)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.DegenerateSpectrumWarning)  # the tangents of U warn
        _, tangent = jvp(span, (a.float(),), (da.float(),))
    # 1.0e-5 off with the rate left out at 25ε; kept, 2.8e-4 here (the review's matrix: 0.2)
    assert abs(float(tangent) - float(exact)) < 1e-4 * abs(float(exact))


def test_a_bfloat16_results_cotangent_keeps_the_tie_floor():
    """A bfloat16 A's U reaches the backward in float32 with bfloat16's rounding in its cotangent,
    which the 16ε floor took for a loss turning with the pair: ‖UᵀX‖² of a block-diagonal bfloat16 A
    whose top two values lie 41ε (float32) apart came out 10.6× off the float64 gradient, where it
    was 0.6% off (a review). It is the old 0.6% again."""
    gen = torch.Generator().manual_seed(1)
    blocks = torch.randn(20000, 2, 2, generator=gen).bfloat16()
    norms = torch.linalg.matrix_norm(blocks.double(), 2)
    order = torch.argsort(norms)
    ordered = norms[order]
    gaps = (ordered[1:] - ordered[:-1]) / ordered[1:]
    eps32 = torch.finfo(torch.float32).eps
    pick = ((gaps > 25 * eps32) & (gaps < 45 * eps32) & (ordered[1:] > 2.5) & (ordered[1:] < 3)).nonzero()[
        0, 0
    ]
    rest = (0.03 * torch.randn(40, 30, generator=gen)).bfloat16()
    a = torch.block_diag(blocks[order[pick]], blocks[order[pick + 1]], rest)  # 44×34, σ₁ and σ₂ 25–45ε apart
    x = torch.randn(44, 3, generator=torch.Generator().manual_seed(0))
    reference = a.double().requires_grad_()
    ((torch.linalg.svd(reference, full_matrices=False)[0][:, :4].mT @ x.double()) ** 2).sum().backward()
    y = a.clone().requires_grad_()
    u = riemsvd.solve(y, 4, method="dense").U
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.DegenerateSpectrumWarning)  # the tie's, as before
        ((u.mT @ x.bfloat16()) ** 2).sum().backward()
    assert float((y.grad.double() - reference.grad).norm() / reference.grad.norm()) < 0.05


def test_the_cotangents_rounding_is_read_per_matrix_and_from_any_coarser_dtype():
    """Two more routes by which rounding reached the rate (a second review): a float64 solve's U fed
    to a float32 loss hands back a float32-rounded cotangent (its span loss came out 2.0e4 off at a
    30ε gap, 2.3e-7 before), and under vmap(grad) the cotangent's values could not be read, so the
    rate was left out as at a tie (a float32 batch element at 30ε: 1.00 off, 1.7e-2 eagerly)."""
    gen = torch.Generator().manual_seed(0)
    eps64 = torch.finfo(torch.float64).eps
    spectrum = [1.0, 0.9, 0.8, 0.8 - 30 * eps64, 0.7, 0.6] + [0.5 * 0.97**i for i in range(94)]
    a = (orthonormal(150, 100, gen) * torch.tensor(spectrum, dtype=torch.float64)) @ orthonormal(
        100, 100, gen
    ).mT
    x = torch.randn(150, 5, generator=gen, dtype=torch.float64)
    grads = []
    for cast in (torch.float64, torch.float32):
        y = a.clone().requires_grad_()
        ((riemsvd.solve(y, 6, method="dense").U.to(cast).mT @ x.to(cast)) ** 2).sum().backward()
        grads.append(y.grad)
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-5

    eps32 = torch.finfo(torch.float32).eps
    weights = torch.arange(1, 7, dtype=torch.float32)
    batch = []
    for gap in (2e4, 30):
        spectrum = [1.0, 0.9, 0.8, 0.8 - gap * eps32, 0.7, 0.6] + [0.5 * 0.97**i for i in range(74)]
        batch.append(
            (orthonormal(120, 80, gen) * torch.tensor(spectrum, dtype=torch.float64))
            @ orthonormal(80, 80, gen).mT
        )
    b = torch.stack(batch).float()
    x = x[:120].float()

    def loss(y):
        return (
            ((riemsvd.solve(y, 6, method="dense").U.mT @ x.to(y.dtype)) ** 2).sum(-1) * weights.to(y.dtype)
        ).sum()

    reference = b.double().requires_grad_()
    u = torch.linalg.svd(reference, full_matrices=False)[0][..., :6]
    (((u.mT @ x.double()) ** 2).sum(-1) * weights.double()).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.DegenerateSpectrumWarning)
        mapped = torch.func.vmap(torch.func.grad(loss))(b)
    error = (mapped.double() - reference.grad).flatten(1).norm(dim=1) / reference.grad.flatten(1).norm(dim=1)
    assert float(error[1]) < 0.2, error


def test_the_adjoint_cg_under_vmap_stops_when_every_matrix_has_converged(monkeypatch):
    """Under vmap(grad) CG's convergence test could not be read, and CG ran to its cap, max(200,
    4(m + n)) iterations (1400 where 95 served: 63 times the eager backward's time at (4, 200, 150),
    k = 4; a new user's trial). It now stops where the last matrix of the batch does, as an eager
    batch's does: after as many iterations as the slowest matrix takes alone under grad, with the
    same gradient."""
    import riemsvd._autograd as autograd

    counts: list[int] = []
    tcg = autograd.tcg

    def counted(*args, **kwargs):
        out = tcg(*args, **kwargs)
        counts.append(out[1]["iterations"])
        return out

    monkeypatch.setattr(autograd, "tcg", counted)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 60, 40, generator=gen, dtype=torch.float64)
    w = torch.cos(torch.arange(60, dtype=torch.float64))

    def loss(y):
        return ((w @ riemsvd.solve(y, 3).U) ** 2).sum()

    mapped = torch.func.vmap(torch.func.grad(loss))(a)
    under_vmap = counts[:]
    counts.clear()
    alone = torch.stack([torch.func.grad(loss)(y) for y in a])
    assert len(under_vmap) == 1 and len(counts) == 3, (under_vmap, counts)
    assert under_vmap[0] == max(counts) < 200, (under_vmap, counts)  # the cap here: 400
    y = a.clone().requires_grad_()
    ((w @ torch.linalg.svd(y, full_matrices=False)[0][..., :3]) ** 2).sum().backward()
    torch.testing.assert_close(mapped, y.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(alone, y.grad, rtol=0, atol=1e-10)


def test_block_rates_leave_out_what_is_not_defined():
    """D⁻ = 1/(σ_j − σ_i) and D⁺ = 1/(σ_j + σ_i) (over the unit c): D⁻ is 0 where two values tie
    (the common rotation), D⁺ only where both are zero to rounding (their relative rotation too: at
    1/(2e-17) it had been 1e16 times the others); both 0 on the diagonal."""
    from riemsvd._autograd import _block_rates, _unit

    s = torch.tensor([3.0, 2.0, 2.0, 1e-17, 1e-17], dtype=torch.float64)
    c = _unit(s).reshape(1, 1)
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="coincide"):
        d_minus, d_plus = _block_rates(s, c, "U/V")
    minus, plus = s[None, :] - s[:, None], s[None, :] + s[:, None]
    tie = (minus.abs() < 1e-12) | torch.eye(5, dtype=torch.bool)
    zeros = plus < 1e-12
    torch.testing.assert_close(d_minus * c, torch.where(tie, 0.0, 1 / minus), rtol=1e-15, atol=0)
    expected_plus = torch.where(zeros | torch.eye(5, dtype=torch.bool), 0.0, 1 / plus)
    torch.testing.assert_close(d_plus * c, expected_plus, rtol=1e-15, atol=0)


def test_top_value_equal_to_the_next_warns_for_vector_gradients(gen):
    x = _double_top(gen).requires_grad_()
    u, sv, v = solve(x, 1, generator=gen)
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="ill-conditioned"):
        (u[0] ** 2).sum().backward()
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("route", ["cg", "direct"])
def test_a_gap_below_the_triplets_residual_warns_for_vector_gradients(route, monkeypatch):
    """Float32, σ₆ = (1 − 1e-6)·σ₅ under k = 5: the solve's residual (2–4e-6) exceeds the gap, span(U)
    is not determined to that accuracy, and the gradient of ⟨X, U Uᵀ⟩ came out a median 120% (up to
    4600%) off float64's, without a warning, on 8 of 12 seeds (a new user's trial). It now warns on
    every seed. With the gap resolved (1e-2) float32 stays quiet and within 1e-3 of float64's
    gradient, and float64 stays quiet at the 1e-6 gap, within 1e-6 of torch.linalg.svd's. Both
    adjoint solves: CG, and the direct one (the Gram matrix of the complement)."""
    import riemsvd._autograd as ad

    monkeypatch.setattr(ad, "_cg_budget", lambda *args: 0 if route == "direct" else 10**9)
    m, n, k = 300, 200, 5

    def matrix(gap, seed):
        g = torch.Generator().manual_seed(seed)
        s = torch.linspace(1, 0.01, n, dtype=torch.float64)
        s[k] = s[k - 1] * (1 - gap)
        a = orthonormal(m, n, g) * s @ orthonormal(n, n, g).mT
        return a, torch.randn(m, m, dtype=torch.float64, generator=g)

    def gradient(a, x, how):
        a = a.clone().requires_grad_()
        u = how(a)
        ((u.double() @ u.double().mT) * x).sum().backward()
        return a.grad.double()

    exact = lambda a: torch.linalg.svd(a, full_matrices=False)[0][:, :k]  # noqa: E731
    ours = lambda a: solve(a, k, generator=torch.Generator().manual_seed(0)).U  # noqa: E731
    for seed in (3, 4, 5):  # silent before, 180%, 150% and 40% off
        a, x = matrix(1e-6, seed)
        with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="ill-conditioned") as rec:
            gradient(a.float(), x, ours)
        assert rec[0].filename == __file__  # the backward's caller (it had pointed into torch)
        with warnings.catch_warnings():
            warnings.simplefilter("error", riemsvd.DegenerateSpectrumWarning)
            reference = gradient(a, x, exact)
            assert (gradient(a, x, ours) - reference).norm() <= 1e-6 * reference.norm()
            a, x = matrix(1e-2, seed)
            reference = gradient(a, x, exact)
            assert (gradient(a.float(), x, ours) - reference).norm() <= 1e-3 * reference.norm()


def _jvp_fd(f, a, da, h=1e-6):
    return (f(a + h * da) - f(a - h * da)) / (2 * h)


def test_jvp_matches_finite_differences(gen):
    a = with_gaps(12, 8, 3, gen)
    da = torch.randn(12, 8, generator=gen, dtype=torch.float64)

    def f(x):  # sign-invariant outputs of U, S, V
        u, s, v = solve(x, 3, generator=torch.Generator().manual_seed(0))
        return torch.cat([s, (u * u).flatten(), (u[:, :2] @ v[:, :2].mT).flatten()])

    _, tangent = jvp(f, (a,), (da,))
    torch.testing.assert_close(tangent, _jvp_fd(f, a, da), rtol=1e-6, atol=1e-7)


def test_jacfwd_matches_reverse_mode_jacobian(gen):
    a = with_gaps(6, 4, 2, gen)

    def f(x):
        u, s, v = solve(x, 2, generator=torch.Generator().manual_seed(0))
        return torch.cat([s, (u[:, :1] @ v[:, :1].mT).flatten()])

    forward = jacfwd(f)(a)
    reverse = torch.autograd.functional.jacobian(f, a)
    torch.testing.assert_close(forward, reverse, rtol=1e-9, atol=1e-10)


def test_float32_gradient_is_close_to_float64(gen):
    a = with_gaps(40, 30, 2, gen)
    x32 = a.float().requires_grad_()
    u, s, v = solve(x32, 2, generator=gen)
    ((u[:, :1] @ v[:, :1].mT).sum() + s.sum()).backward()
    x64 = a.clone().requires_grad_()
    u, s, v = solve(x64, 2, generator=gen)
    ((u[:, :1] @ v[:, :1].mT).sum() + s.sum()).backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["iterative", "dense"])
def test_float32_projector_gradient_is_as_accurate_as_torchs(method):
    """The gradient of ⟨U S Vᵀ, W⟩ in float32 against float64 torch.linalg.svd's, on Gaussian 300×200
    matrices, k = 3: torch.linalg.svd's own float32 gradient was 1.2e-5 to 2.2e-4 off there; riemsvd's
    was 6.4e-5 to 4.8e-4 with the adjoint's CG stopped at 1e3·ε (a new user's trial), 6e-6 to 2.5e-5
    at 1e2·ε."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        a, w = torch.randn(300, 200, generator=g), torch.randn(300, 200, generator=g)
        a64 = a.double().requires_grad_()
        u, s, vh = torch.linalg.svd(a64, full_matrices=False)
        ((u[:, :3] * s[:3] @ vh[:3]) * w.double()).sum().backward()
        a32 = a.clone().requires_grad_()
        r = riemsvd.solve(a32, 3, method=method, generator=torch.Generator().manual_seed(1))
        ((r.U * r.S @ r.V.mT) * w).sum().backward()
        error = float((a32.grad.double() - a64.grad).norm() / a64.grad.norm())
        assert error <= 1e-4, (seed, error)


@pytest.mark.parametrize("method", ["auto", "iterative"])
def test_vmap_with_a_warm_start(method):
    """torch.func.vmap of a solve with init, shared (U0 alone) or per matrix ((u, v), or U0 alone),
    raised vmap's "data-dependent control flow" from the check that init is finite (a new user's
    trial); the iterative path, which uses the start, then found the per-matrix start outside its
    vmap level ("your tensor may have escaped", another trial). All give the batched solve's values."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4, 12, 9, dtype=torch.float64, generator=g)
    u, s, vh = torch.linalg.svd(b, full_matrices=False)
    shared = torch.func.vmap(lambda a: riemsvd.solve(a, 2, init=u[0, :, :2], method=method).S)(b)
    solve_from = lambda a, u0, v0: riemsvd.solve(a, 2, init=(u0, v0), method=method).S  # noqa: E731
    own = torch.func.vmap(solve_from)(b, u[..., :2], vh[..., :2, :].mT)
    left = torch.func.vmap(lambda a, u0: riemsvd.solve(a, 2, init=u0, method=method).S)(b, u[..., :2])
    for got in (shared, own, left):
        torch.testing.assert_close(got, s[:, :2], rtol=1e-12, atol=0)


def test_vmap_gives_each_matrix_its_own_info():
    """Under torch.func.vmap, info's converged, residual and errors held the whole batch's values, so a
    per-matrix bound S[0] − errors[0] read another matrix's bar (a new user's trial): now the mapped
    matrix's own, as the batched call gives them (one matrix 1000 times the others)."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4, 30, 20, dtype=torch.float64, generator=g)
    b[2] *= 1000
    batched = riemsvd.solve(b, 2, method="iterative", generator=torch.Generator().manual_seed(1))

    def each(a):
        info = riemsvd.solve(a, 2, method="iterative", generator=torch.Generator().manual_seed(1)).info
        return info.converged, info.residual, info.errors

    converged, residual, errors = torch.func.vmap(each, randomness="same")(b)
    assert converged.shape == (4,) and bool(converged.all())
    torch.testing.assert_close(residual, batched.info.residual, rtol=1e-3, atol=0)
    torch.testing.assert_close(errors, batched.info.errors, rtol=1e-3, atol=0)
    assert float(errors[2].min()) > 100 * float(errors[[0, 1, 3]].max())


@pytest.mark.parametrize("route", ["cg", "direct", "cg, then direct"])
@pytest.mark.parametrize("shape, k", [((40, 25), 3), ((25, 40), 1), ((3, 30, 30), 4)])
def test_both_adjoint_solves_give_torch_svds_gradient(route, shape, k, gen, monkeypatch):
    """The complement's adjoint solve by CG, and directly from the complement's Gram matrix where CG
    has not converged within the iterations that cost as much: each forced on the same losses, against
    torch.linalg.svd's gradients, a batch and the null space of the larger side included."""
    import riemsvd._autograd as ad

    budget = {"cg": 10**9, "direct": 0, "cg, then direct": 2}[route]
    monkeypatch.setattr(ad, "_cg_budget", lambda *args: budget)
    monkeypatch.setattr(ad, "_CG_LEAST", 1)
    called = []
    for name in ("_direct_complement_solve", "tcg"):

        def counted(*args, real=getattr(ad, name), name=name, **kw):
            called.append(name)
            return real(*args, **kw)

        monkeypatch.setattr(ad, name, counted)
    a = torch.stack([with_gaps(*shape[-2:], k, gen) for _ in range(shape[0])]) if len(shape) == 3 else None
    a = with_gaps(*shape, k, gen) if a is None else a
    for name in ("cu_squared", "projector", "mixed"):
        ours, reference = _grads(a, k, LOSSES[name], gen)
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9 * float(reference.abs().max()))
    expected = {"cg": {"tcg"}, "direct": {"_direct_complement_solve"}}
    assert set(called) == expected.get(route, {"tcg", "_direct_complement_solve"})


def test_cg_gives_up_for_the_direct_solve_once_its_rate_projects_past_the_budget(monkeypatch):
    """A Gaussian 300×200 float64 matrix, k = 4: CG takes about 110 steps. With a budget of 20 its rate
    projects more than that still to go, and it gives up at the second look that says so (step 12,
    not at its maxiter of 60); the direct solve then gives torch.linalg.svd's gradient. A cotangent
    of 1e-170 (its ‖r‖² had underflowed: CG stopped at once, the gradient 96% off; a review) takes the
    same path, scaled."""
    import riemsvd._autograd as ad

    monkeypatch.setattr(ad, "_cg_budget", lambda *args: 20)
    seen = []
    real = ad.tcg

    def recorded(*args, **kw):
        out = real(*args, **kw)
        seen.append(out[1])
        return out

    monkeypatch.setattr(ad, "tcg", recorded)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 200, generator=g, dtype=torch.float64)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    for size in (1.0, 1e-170):
        y = a.clone().requires_grad_()
        (size * (solve(y, 4, generator=g).U.mT @ x).square().sum()).backward()
        ref = a.clone().requires_grad_()
        (size * (torch.linalg.svd(ref, full_matrices=False)[0][:, :4].mT @ x).square().sum()).backward()
        assert seen[-1]["gave_up"] and seen[-1]["iterations"] == 12, seen[-1]["iterations"]
        torch.testing.assert_close(
            y.grad / size, ref.grad / size, rtol=1e-8, atol=1e-8 * float((ref.grad / size).abs().max())
        )


@pytest.mark.parametrize("dtype, power", [(torch.float64, 1030), (torch.float32, 132)])
@pytest.mark.parametrize("method", ["iterative", "dense"])
def test_u_and_v_derivatives_of_a_matrix_whose_singular_values_are_subnormal(dtype, power, method):
    """A = B·2^−power, σ₁ subnormal (about 2^−1027 in float64, 2^−128 in float32): its U and V do
    not depend on the scale, so their gradient is B's times 2^power, and their tangent along dA is
    B's along dA·2^power, B being A scaled back up exactly. The backward's unit 2^−⌊log₂ σ₁⌋ was
    infinite there: eigh failed, or the gradient came back NaN with a DegenerateSpectrumWarning (a new
    user's trial). The loss's weights are small enough that the gradient fits the dtype."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 20, dtype=dtype, generator=g) * 2.0**-power
    up = a * 2.0 ** (power // 2) * 2.0 ** (power - power // 2)  # exact: a's bits, scaled back up
    w = torch.randn(30, dtype=dtype, generator=g) * 2.0**-60
    direction = torch.randn(30, 20, dtype=dtype, generator=g)

    def loss(x):
        u, _, v = solve(x, 2, method=method, generator=torch.Generator().manual_seed(1))
        return ((u**2).sum(-1) * w).sum() + ((v[:, :1] ** 2).sum(-1) * w[:20]).sum()

    # float32: the subnormal A keeps 17 to 20 of its 24 bits, and its triplets their tol
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, reference = (torch.func.grad(loss)(x) for x in (a, up))
        tangent = torch.func.jvp(loss, (a,), (direction * 2.0**-power,))[1]
        along = torch.func.jvp(loss, (up,), (direction,))[1]
    flagged = (RuntimeWarning, riemsvd.DegenerateSpectrumWarning, riemsvd.ConvergenceWarning)
    assert not [str(w.message) for w in caught if issubclass(w.category, flagged)]
    scaled = reference * 2.0 ** (power // 2) * 2.0 ** (power - power // 2)
    assert bool(torch.isfinite(scaled).all())
    torch.testing.assert_close(ours, scaled, rtol=rtol, atol=rtol * float(scaled.abs().max()))
    torch.testing.assert_close(tangent, along, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("method", ["auto", "iterative"])
def test_second_derivatives_match_torch_linalg_in_every_form(method):
    """Hessian-vector products of σ₁, of a spectrally normalized layer and of a span loss, against the
    same losses through torch.linalg: torch.autograd.functional's vhp and hvp (the latter
    differentiates the double backward in its cotangent, at a zero one: CG's graph had no derivative
    there, and σ₁'s hvp came back 0, the layer's 19% off; a new user's trial) and torch.func.hessian."""
    g = torch.Generator().manual_seed(0)
    w, direction = (torch.randn(7, 6, dtype=torch.float64, generator=g) for _ in range(2))
    x = torch.randn(4, 6, dtype=torch.float64, generator=g)
    c = torch.randn(7, dtype=torch.float64, generator=g)

    def losses(top_pair):
        return (
            lambda a: top_pair(a)[1][0],
            lambda a: torch.tanh(x @ (a / top_pair(a)[1][0]).mT).sum(),
            lambda a: ((top_pair(a)[0][:, :2].mT @ c) ** 2).sum(),
        )

    ours = losses(lambda a: riemsvd.solve(a, 2, method=method, generator=torch.Generator().manual_seed(1)))
    exact = losses(lambda a: torch.linalg.svd(a, full_matrices=False))
    functional = torch.autograd.functional
    for mine, theirs in zip(ours, exact):
        for product in (functional.vhp, functional.hvp):
            torch.testing.assert_close(product(mine, w, direction)[1], product(theirs, w, direction)[1])
        torch.testing.assert_close(torch.func.hessian(mine)(w), torch.func.hessian(theirs)(w))


@pytest.mark.parametrize("method", ["dense", "iterative"])
def test_an_exact_tie_at_sigma_k_warns_on_every_path(method):
    """diag(3, 3, …), k = 1, and a sign-free loss of u whose cotangent leans on the tied vector: the
    dense path returns exact triplets, whose adjoint solve met a curvature of 0 beside a residual of
    0 and did not warn, the U gradient finite and meaningless (a new user's trial)."""
    d = torch.linspace(1, 0.1, 12, dtype=torch.float64)
    d[0] = d[1] = 3.0
    a = torch.diag(d).requires_grad_()
    u = riemsvd.solve(a, 1, method=method, generator=torch.Generator().manual_seed(0)).U[:, 0]
    with pytest.warns(riemsvd.DegenerateSpectrumWarning, match="ill-conditioned"):
        ((u[0] + u[1]) ** 2).backward()


def test_a_previous_result_as_warm_start_adds_no_edge_to_the_graph():
    """A training loop's solve warm-started from the last step's result (or its U): once the warm
    start passed through the autograd.Function as an input, it kept an edge into the last step's freed
    graph, and the next backward raised "backward through the graph a second time" (a review)."""
    w = torch.randn(
        60, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True
    )
    for init_of in (lambda r: r, lambda r: r.U):
        previous = None
        for _ in range(3):
            init = None if previous is None else init_of(previous)
            r = riemsvd.solve(w * 1.0, 3, init=init, method="iterative")
            (r.S.sum() + (r.U[:, 0] ** 4).sum()).backward()
            previous = r


def test_the_hessian_under_no_grad_is_the_hessian():
    """torch.func.hessian (jacfwd of jacrev) under an outer torch.no_grad(): vjp's backward inside
    jacfwd runs with grad mode off, and a complement solve whose A was detached there (for numpy's
    products) dropped jacfwd's tangent, the Hessian of a subspace loss 19% off, unsaid (a review)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 6, dtype=torch.float64, generator=g)
    weight = torch.randn(8, 8, dtype=torch.float64, generator=g)

    def loss(x):
        u = riemsvd.solve(x, 2).U
        return (weight * (u @ u.mT)).sum()

    exact = torch.func.hessian(loss)(a)
    with torch.no_grad():
        torch.testing.assert_close(torch.func.hessian(loss)(a), exact)


@pytest.mark.parametrize("create_graph", [True, False])
def test_forward_over_reverse_gives_the_hessian_vector_product(create_graph):
    """A forward_ad dual through a backward with create_graph: the right-hand sides' linear part of the
    adjoint solve had no forward rule ("You must implement the jvp function"; a review). Without
    create_graph the backward's own operations carry the tangent: its direct solve (numpy, LAPACK) and
    a detached A had dropped it, 47–93% off, unsaid (a review)."""
    import torch.autograd.forward_ad as fwad

    g = torch.Generator().manual_seed(0)
    a, direction = (torch.randn(7, 6, dtype=torch.float64, generator=g) for _ in range(2))
    c = torch.randn(7, dtype=torch.float64, generator=g)

    def hessian_vector(top_pair):
        with fwad.dual_level():
            x = fwad.make_dual(a.clone().requires_grad_(), direction)
            loss = ((top_pair(x)[0][:, :2].mT @ c) ** 2).sum()
            (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
            return fwad.unpack_dual(grad).tangent

    exact = hessian_vector(lambda x: torch.linalg.svd(x, full_matrices=False))
    for method in ("auto", "iterative"):
        mine = hessian_vector(
            lambda x, method=method: riemsvd.solve(
                x, 2, method=method, generator=torch.Generator().manual_seed(1)
            )
        )
        torch.testing.assert_close(mine, exact)
