"""bfloat16 and float16 inputs: solved in float32 (which holds their values exactly), returned in the
input's dtype, with gradients in that dtype; against float64 references of the rounded input."""

from __future__ import annotations

import collections
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import riemsvd
import riemsvd.nn as rnn
from tests.matrices import SPECTRA, make_matrix

HALF = [torch.bfloat16, torch.float16]


def unit(dtype) -> float:
    """The unit roundoff of a half dtype: each returned entry carries up to this relative error."""
    return torch.finfo(dtype).eps / 2


@given(
    shape=st.tuples(st.integers(2, 80), st.integers(2, 80)),
    kind=st.sampled_from(SPECTRA),
    dtype=st.sampled_from(HALF),
    method=st.sampled_from(["auto", "iterative", "dense"]),
    batch=st.sampled_from([(), (2,)]),
    data=st.data(),
)
def test_half_precision_matches_a_float64_reference_of_the_rounded_input(
    shape, kind, dtype, method, batch, data
):
    m, n = shape
    k = data.draw(st.integers(1, min(m, n, 5)), label="k")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    a = (
        torch.stack([make_matrix(kind, m, n, gen) for _ in range(2)])
        if batch
        else make_matrix(kind, m, n, gen)
    )
    a = a.to(dtype)
    u, s, v = result = riemsvd.solve(a, k, method=method, generator=gen)
    assert u.dtype == s.dtype == v.dtype == dtype
    assert (
        u.shape == a.shape[:-1] + (k,) and v.shape == a.shape[:-2] + (n, k) and s.shape == a.shape[:-2] + (k,)
    )
    assert bool(result.info.converged.all()) and float(result.info.residual.max()) <= result.info.tol
    assert result.info.tol == riemsvd.solve(a.float(), k, method=method).info.tol  # float32's default
    ref = torch.linalg.svdvals(a.double())
    s1 = ref[..., :1]
    # σ to the float32 solve's tol·σ₁, then rounded to the half dtype
    bound = result.info.tol * s1 + unit(dtype) * ref[..., :k] + 1e-30
    assert bool(((s.double() - ref[..., :k]).abs() <= bound).all()), (s, ref[..., :k])
    # the returned vectors: orthonormal and singular to the half dtype's resolution
    eye = torch.eye(k, dtype=torch.float64)
    # each entry rounded by at most `unit` relative: an inner product of two rounded unit vectors moves
    # by at most about 2·unit (measured worst 1.1·unit)
    assert bool(((u.double().mT @ u.double()) - eye).abs().max() <= 4 * unit(dtype) + 2 * result.info.tol)
    tol_vec = 8 * unit(dtype) * max(m, n) ** 0.5
    res = (a.double() @ v.double() - u.double() * s.double().unsqueeze(-2)).norm(dim=-2) / s1
    assert bool((res <= tol_vec + 2 * result.info.tol).all()), res


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("m", "n", "k"), [(120, 90, 4), (60, 200, 3), (384, 384, 4)])
def test_half_precision_error_bars_hold_for_the_values_returned(dtype, m, n, k):
    """``info.errors`` bound |Sᵢ − σᵢ| for the half-precision S returned, not only for the float32
    values before the cast (a 384×384 bfloat16 Gaussian: S off by up to 0.076, bars of 1e-5 to 1e-4;
    a new user's trial)."""
    gen = torch.Generator().manual_seed(m + n + k)
    a = torch.randn(m, n, generator=gen).to(dtype)
    result = riemsvd.solve(a, k, generator=gen)
    ref = torch.linalg.svdvals(a.double())
    error = (result.S.double() - ref[:k]).abs()
    assert bool((error <= result.info.errors.double()).all()), (error, result.info.errors)


def test_float16_values_beyond_its_range_are_not_claimed_converged():
    """σ ≈ 1e5 does not fit float16 (largest 65504): S came back inf with converged True and no
    warning (a review); the float32 solve had reached tol, the values returned had not."""
    a = (3000 * torch.randn(300, 300, generator=torch.Generator().manual_seed(0))).half()
    # the remedy: float32 holds σ (the warning had sent the user to float64)
    with pytest.warns(riemsvd.ConvergenceWarning, match=r"outside the range of torch.float16.*`A.float\(\)`"):
        result = riemsvd.solve(a, 2)
    assert not bool(torch.isfinite(result.S).all())
    assert not bool(result.info.converged) and not float(result.info.residual) <= result.info.tol
    assert result.info.stop_reason == "out of range"
    # norm_bounds' upper bound is inf there, still a bound, but it had come unsaid (a new user's trial)
    with pytest.warns(RuntimeWarning, match=r"exceeds the largest torch.float16.*`A.float\(\)`"):
        bounds = riemsvd.norm_bounds(a)
    assert float(bounds.upper) == float("inf") and float(bounds.lower) == torch.finfo(torch.float16).max


def test_the_float32_solves_warnings_name_the_callers_line():
    """They named the line of riemsvd's own that called the float32 solve (a new user's trial)."""
    a = torch.randn(300, 200, generator=torch.Generator().manual_seed(0)).bfloat16()
    with pytest.warns(riemsvd.ConvergenceWarning, match="maxiter") as record:
        riemsvd.solve(a, 2, maxiter=3)
    assert [w.filename for w in record] == [__file__]


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_gradient_flows_back_in_the_input_dtype(dtype, gen):
    a = make_matrix("decay", 30, 20, gen).to(dtype).requires_grad_()
    probe = torch.randn(30, 30, generator=gen, dtype=torch.float64)
    u, s, _ = riemsvd.solve(a, 2, generator=gen)
    (s.double().sum() + ((u.double() @ u.double().mT) * probe).sum()).backward()
    assert a.grad.dtype == dtype
    ref = a.detach().double().requires_grad_()
    ur, sr, _ = torch.linalg.svd(ref, full_matrices=False)
    (sr[:2].sum() + ((ur[:, :2] @ ur[:, :2].mT) * probe).sum()).backward()
    err = (a.grad.double() - ref.grad).norm() / ref.grad.norm()
    assert float(err) <= 16 * unit(dtype), float(err)


def test_half_precision_sparse_and_warm_start(gen):
    a = make_matrix("decay", 40, 30, gen)
    sparse = a.to(torch.bfloat16).to_sparse()
    s = riemsvd.solve(sparse, 2).S
    assert s.dtype == torch.bfloat16
    torch.testing.assert_close(
        s.double(), torch.linalg.svdvals(a.to(torch.bfloat16).double())[:2], rtol=4e-3, atol=0
    )
    first = riemsvd.solve(a.to(torch.float16), 2, method="iterative")
    again = riemsvd.solve(a.to(torch.float16), 2, init=(first.U, first.V), method="iterative")
    torch.testing.assert_close(again.S, first.S, rtol=2 * unit(torch.float16), atol=0)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("method", ["auto", "iterative"])
def test_a_half_precision_result_is_a_warm_start(dtype, method, gen):
    """init=the previous SVDResult, as the docstring allows: for a bfloat16 or float16 A it crashed in
    SVDResult's constructor (the half-precision path rebuilt init as its own type; a new user's
    trial). It stands for its (U, V), as for float32."""
    a = make_matrix("decay", 60, 40, gen).to(dtype)
    first = riemsvd.solve(a, 3, method=method)
    again = riemsvd.solve(a, 3, init=first, method=method)
    torch.testing.assert_close(again.S, first.S, rtol=2 * unit(dtype), atol=0)
    pair = collections.namedtuple("Pair", "U V")  # any other tuple too: it crashed in its constructor
    again = riemsvd.solve(a, 3, init=pair(first.U, first.V), method=method)
    torch.testing.assert_close(again.S, first.S, rtol=2 * unit(dtype), atol=0)


@pytest.mark.parametrize("dtype", HALF)
def test_norm_bounds_and_operator_norm_of_half_precision(dtype, gen):
    a = make_matrix("decay", 40, 30, gen).to(dtype)
    true = float(torch.linalg.matrix_norm(a.double(), 2))
    bounds = riemsvd.norm_bounds(a)
    assert float(bounds.lower) <= true <= float(bounds.upper)  # rounded outward: they still hold
    if dtype == torch.float16:  # a float16 array, as solve takes it (it was refused; a new user's trial)
        from_array = riemsvd.norm_bounds(a.numpy())
        assert from_array.upper.dtype == dtype and float(from_array.upper) == float(bounds.upper)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).to(dtype)
    sigma = rnn.operator_norm(conv, (2, 6, 6))
    assert sigma.dtype == dtype
    ref = rnn.operator_norm(conv.double(), (2, 6, 6))
    assert abs(float(sigma) - float(ref)) <= 2 * unit(dtype) * float(ref)


def _conv():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 4, 3, padding=1)


@pytest.mark.parametrize(
    "make, exact",
    [
        (lambda: rnn.spectral_norm(torch.nn.Linear(12, 8)), lambda m: m.weight.detach().double().flatten(1)),
        (lambda: rnn.spectral_norm(_conv()), lambda m: m.weight.detach().double().flatten(1)),
        (
            lambda: rnn.spectral_norm(_conv(), input_shape=(3, 6, 6)),
            lambda m: riemsvd.linear_operator(_bias_free_double(m), (3, 6, 6)),
        ),
    ],
    ids=["linear", "conv kernel", "conv operator"],
)
def test_every_spectral_norm_path_is_exact_under_autocast(make, exact):
    layer = make()
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(1.7)  # a training forward must solve again
    x = torch.randn(2, 12) if isinstance(layer, torch.nn.Linear) else torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        layer.eval()
        w = layer.weight  # the normalized weight that forward used (no update in eval mode)
    assert out.dtype == torch.bfloat16 and w.dtype == torch.float32
    layer.eval()
    a = exact(layer)
    sigma = float(riemsvd.solve(a, 1, tol=1e-12).S[0])
    assert abs(sigma - 1) <= 2e-6, sigma


def _bias_free_double(conv):
    twin = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        twin.weight.copy_(conv.weight.double())
    return twin


def test_project_and_operator_norm_under_autocast():
    w = torch.randn(10, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = rnn.project_spectral_(w, 1.0, mode="sphere")
        sigma = rnn.operator_norm(_conv(), (3, 6, 6))
    assert abs(float(torch.linalg.matrix_norm(w.double(), 2)) - 1) <= 2e-6 and p.u.dtype == torch.float32
    assert sigma.dtype == torch.float32
    ref = float(rnn.operator_norm(_conv().double(), (3, 6, 6)))
    assert abs(float(sigma) - ref) <= 2e-6 * ref


@pytest.mark.parametrize("dtype", HALF)
def test_spectral_norm_of_a_half_precision_module(dtype):
    torch.manual_seed(0)
    layer = rnn.spectral_norm(torch.nn.Linear(24, 16).to(dtype))
    # the pair in the weight's dtype, as torch stores it, for the map's norm too (a bfloat16
    # convolution's pair had been float32, in its state_dict alone; a new user's trial)
    conv = rnn.spectral_norm(torch.nn.Conv2d(2, 3, 3).to(dtype), input_shape=(2, 6, 6))
    assert {x.dtype for k, x in conv.state_dict().items() if k.endswith(("_u", "_v"))} == {dtype}
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        out = layer(torch.randn(4, 24, dtype=dtype))
        assert out.dtype == dtype
        w = layer.weight.detach()
        assert w.dtype == dtype
        # W/σ computed with an exact σ in float32 and rounded once: ‖W/σ‖₂ is 1 to the rounding of W/σ
        assert abs(float(torch.linalg.matrix_norm(w.double(), 2)) - 1) <= 4 * unit(dtype) * 24**0.5
        out.float().square().sum().backward()
        opt.step()


def test_linear_operator_of_a_half_precision_layer_is_solved():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False).to(torch.bfloat16)
    op = riemsvd.linear_operator(conv, (2, 5, 5))
    assert op.dtype == torch.float32
    ref = riemsvd.linear_operator(conv.double(), (2, 5, 5))  # the same (bf16) values, in float64
    torch.testing.assert_close(
        riemsvd.solve(op, 1).S.double(), riemsvd.solve(ref, 1, tol=1e-12).S, rtol=1e-5, atol=0
    )


def test_a_float16_numpy_array_is_solved_as_the_float16_tensor(gen):
    """As a float16 tensor is, with a float16 numpy warm start too; it had been refused (riemsvd
    "needs float32 or float64"; a new user's trial)."""
    a = torch.randn(60, 40, dtype=torch.float64, generator=gen).to(torch.float16)
    expected = riemsvd.solve(a, 2, generator=torch.Generator().manual_seed(0))
    got = riemsvd.solve(a.numpy(), 2, generator=torch.Generator().manual_seed(0))
    assert got.S.dtype == torch.float16 and torch.equal(got.S, expected.S) and torch.equal(got.U, expected.U)
    warm = riemsvd.solve(a.numpy(), 2, init=(expected.U.numpy(), expected.V.numpy()))
    assert bool(warm.info.converged) and torch.equal(warm.S, expected.S)


def test_derivatives_taken_under_autocast_are_those_taken_outside():
    # a backward run under torch.autocast had run its adjoint solve's products in bfloat16: the
    # gradient of a float32 loss 5.9e-3 off (4.4e-5 outside) and a false warning of a tie (a new
    # user's trial)
    gen = torch.Generator().manual_seed(3)
    a = make_matrix("decay", 150, 90, gen).float()
    x, y = torch.randn(150, 1, generator=gen), torch.randn(90, 1, generator=gen)
    a_req = a.clone().requires_grad_()
    result = tuple(riemsvd.solve(a_req, 4, tol=1e-6))
    # the cotangents of ‖U Uᵀ x‖² + ‖V Vᵀ y‖² + Σσ, given: torch's own backward runs in bfloat16
    # under autocast, riemsvd's must not
    u, _, v = (t.detach() for t in result)
    cotangents = (2 * (x @ (x.T @ u) + u @ (u.T @ x) @ x.T @ u), torch.ones(4), 2 * (y @ (y.T @ v)))
    outside = torch.autograd.grad(result, a_req, cotangents, retain_graph=True)[0]
    tangent = torch.randn(150, 90, generator=gen)
    triplets = lambda m: tuple(riemsvd.solve(m, 4, tol=1e-6))  # noqa: E731
    jvp_outside = torch.func.jvp(triplets, (a,), (tangent,))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = torch.autograd.grad(result, a_req, cotangents)[0]
            jvp_inside = torch.func.jvp(triplets, (a,), (tangent,))[1]
    assert inside.dtype == torch.float32
    assert float((inside - outside).norm() / outside.norm()) <= 1e-5
    for got, want in zip(jvp_inside, jvp_outside):
        assert got.dtype == torch.float32
        assert float((got - want).norm() / want.norm()) <= 1e-5
