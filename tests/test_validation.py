"""Every bad input to riemsvd.solve gets an error that names the argument."""

import dataclasses
import functools
import itertools
import math
import re
import warnings
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import riemsvd
from riemsvd._backend import STEPS
from riemsvd._operator import max_abs
from tests.matrices import orthonormal


@pytest.fixture
def a():
    return torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_entries_raise_value_error(a, bad):
    a[2, 1] = bad
    with pytest.raises(ValueError, match="`A` has NaN or Inf"):
        riemsvd.solve(a)


def test_non_finite_entries_in_a_batch_name_the_matrices():
    """One NaN in a batch was not found from the message (a new user's trial)."""
    a = torch.randn(4, 3, 10, 6, dtype=torch.float64)
    a[1, 2, 0, 0], a[3, 0, 1, 1] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"`A` has NaN or Inf.*Batch elements \(1, 2\), \(3, 0\)\.$"):
        riemsvd.solve(a)
    with pytest.raises(ValueError, match=r"Batch element 2\.$"):
        riemsvd.solve(torch.stack([torch.ones(5, 4)] * 2 + [torch.full((5, 4), float("nan"))]))


@pytest.mark.skipif(STEPS is None, reason="riemsvd._steps was not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_large_as_entries_are_read_by_the_first_pass(dtype, monkeypatch):
    """A dense A above READ_IN_PASS_ABOVE bytes with contiguous rows has its entries read by the
    solve's first pass over A (max |a_ij| there), not before it: the same ValueError for a NaN or an
    Inf anywhere in A (whatever path the solve takes: the pass, the dense path, the trust region, a
    start of several columns, a warm start), and A scaled as before where its entries are far from 1
    (the solve begun unscaled starts again scaled), each σ as the SVD's; a transposed view is read
    before, as before."""
    from riemsvd import _operator, _solve, _validate

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 300, dtype=dtype, generator=gen)
    assert a.numel() * a.element_size() > _operator.READ_IN_PASS_ABOVE
    reads = []
    counted = functools.partial(lambda f, x: reads.append(x.shape) or f(x), _validate.max_abs)
    monkeypatch.setattr(_validate, "max_abs", counted)
    result = riemsvd.solve(a, 2, generator=gen)
    assert not reads and bool(result.info.converged)  # read by the pass alone
    riemsvd.solve(a.mT, 2, generator=gen)
    assert reads == [(300, 500)]  # a transposed view: read before (its products are two)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    u0 = torch.linalg.qr(torch.randn(500, 2, dtype=dtype, generator=gen))[0]
    start = (u0, a.mT @ u0)  # (U0, V0): U0 alone is read before (V0 = AᵀU0 would carry A's NaN)
    ways = [{}, {"method": "dense"}, {"options": riemsvd.SolverOptions(start_block=3)}, {"init": start}]
    for where, bad in (((0, 0), float("nan")), ((499, 299), float("inf")), ((250, 7), -float("inf"))):
        b = a.clone()
        b[where] = bad
        for way in ways:
            with pytest.raises(ValueError, match="`A` has NaN or Inf entries"):
                riemsvd.solve(b, 2, tol=tol, generator=gen, **way)
    with pytest.raises(ValueError, match="`A` has NaN or Inf entries"):
        riemsvd.solve(b.double(), 2, method="trust-region", generator=gen)
    reference = torch.linalg.svdvals(a.double())[:2]
    huge, tiny = (1e200, 1e-200) if dtype == torch.float64 else (1e30, 1e-30)
    again = []
    iterate = _solve.subspace_svd
    monkeypatch.setattr(_solve, "subspace_svd", lambda *x, **kw: again.append(1) or iterate(*x, **kw))
    for scale in (huge, tiny, 1e-10 if dtype == torch.float32 else 1e-100):
        again.clear()
        out = riemsvd.solve(a * scale, 2, tol=tol, generator=gen)
        assert bool(out.info.converged) and len(again) == 2, scale  # begun unscaled, then scaled
        torch.testing.assert_close(out.S.double() / scale, reference, rtol=10 * tol, atol=0)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia", "lil", "dok"])
def test_non_finite_sparse_entries_raise_value_error(fmt):
    s = sp.random(10, 8, density=0.3, format="csr", random_state=np.random.default_rng(0))
    s.data[0] = np.nan
    with pytest.raises(ValueError, match="`A` has NaN or Inf"):
        riemsvd.solve(s.asformat(fmt))
    t = torch.from_numpy(s.toarray()).to_sparse()
    with pytest.raises(ValueError, match="`A` has NaN or Inf"):
        riemsvd.solve(t)


def test_a_hybrid_torch_sparse_a_is_refused_by_name():
    """A COO tensor with one sparse and one dense dimension met torch's own RuntimeError about a CSR
    conversion ('sparse_dim()!=2 is not supported'), which named neither `A` nor a way out."""
    a = torch.randn(30, 20, dtype=torch.float64).to_sparse(1)
    with pytest.raises(ValueError, match=r"sparse `A` must have both dimensions sparse.*dense_dim=1"):
        riemsvd.solve(a)
    fixed = riemsvd.solve(a.to_dense().to_sparse())  # the conversion the message names
    torch.testing.assert_close(fixed.S, torch.linalg.svdvals(a.to_dense())[:1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("k", [0, -1, 5])
def test_k_out_of_range_raises_value_error(a, k):
    with pytest.raises(ValueError, match="`k` must be"):
        riemsvd.solve(a, k)


def test_a_k_too_large_for_a_batch_names_the_whole_shape():
    """A batch (3, 5, 4) asked for k = 5 was told "for A of shape 5×4", not the shape it passed (a new
    user's trial); a single matrix is still told its m×n."""
    with pytest.raises(
        ValueError, match=r"= 4 for A of shape \(3, 5, 4\) \(a batch of 5×4 matrices\), got 5"
    ):
        riemsvd.solve(torch.randn(3, 5, 4), 5)
    with pytest.raises(ValueError, match=r"= 4 for A of shape 5×4, got 5"):
        riemsvd.solve(torch.randn(5, 4), 5)


def test_non_integer_k_raises_type_error(a):
    with pytest.raises(TypeError, match="`k` must be an int"):
        riemsvd.solve(a, 1.5)


def test_fewer_than_two_dimensions_raises_value_error():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        riemsvd.solve(torch.randn(5, dtype=torch.float64))


def test_empty_matrix_raises_value_error():
    with pytest.raises(ValueError, match="`A` is empty"):
        riemsvd.solve(torch.zeros(0, 3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_non_float_dtype_raises_type_error(dtype):
    """An integer A's message spoke of bfloat16 and float16 (a new user's trial, from norm_bounds)."""
    for call in (riemsvd.solve, riemsvd.norm_bounds):
        with pytest.raises(TypeError, match="float32 or float64") as caught:
            call(torch.ones(4, 3, dtype=dtype))
        assert "float16" not in str(caught.value)


def test_complex_dtype_raises_type_error():
    with pytest.raises(TypeError, match="complex"):
        riemsvd.solve(torch.ones(4, 3, dtype=torch.complex128))
    with pytest.raises(TypeError, match="complex"):
        riemsvd.solve(sp.random(5, 4, density=0.5, format="csr").astype(np.complex128))


def test_float8_is_named_with_the_dtypes_riemsvd_takes():
    """solve told a float8 A that it takes bfloat16 (solve itself), and spectral_norm let torch's
    isfinite fail on a float8 weight with NotImplementedError (a new user's trial)."""
    a = torch.randn(5, 4).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"float8_e4m3fn, which riemsvd does not take.*A\.float\(\)"):
        riemsvd.solve(a, 1)
    layer = torch.nn.Linear(4, 5).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"`module.weight` has dtype torch.float8_e4m3fn.*and float16"):
        riemsvd.nn.spectral_norm(layer)


def test_the_normalizations_take_tol_as_a_one_element_tensor_as_solve_does():
    """spectral_norm refused tol=torch.tensor(1e-4), which solve reads (a new user's trial)."""
    tol = torch.tensor(1e-4)
    layer = riemsvd.nn.spectral_norm(torch.nn.Linear(40, 50, dtype=torch.float64), tol=tol)
    assert layer.parametrizations.weight[0].tol == float(tol)  # a number, as solve reads it
    w = torch.randn(50, 40, dtype=torch.float64)
    riemsvd.nn.project_spectral_(w, 1.0, tol=tol)
    assert abs(float(torch.linalg.matrix_norm(w, 2)) - 1.0) < 1e-6
    p = torch.nn.Parameter(3 * torch.randn(50, 40, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=0.0)
    riemsvd.nn.register_projection_hook(opt, [p], max_norm=1.0, tol=tol)
    opt.step()
    assert abs(float(torch.linalg.matrix_norm(p.detach(), 2)) - 1.0) < 1e-6


def test_a_nested_tensor_is_refused_naming_what_to_do():
    """torch's own errors said "Internal error ... Please file an issue" or named aten::amax (a review)."""
    with warnings.catch_warnings():  # "the PyTorch API of nested tensors is in prototype stage"
        warnings.simplefilter("ignore", UserWarning)
        nested = torch.nested.nested_tensor([torch.randn(3, 4), torch.randn(3, 5)])
    with pytest.raises(TypeError, match="nested tensor.*unbind"):
        riemsvd.solve(nested, 1)


def test_tensors_of_other_layouts_and_quantized_ones_are_told_what_to_pass():
    """An MKL-DNN tensor had been told it was a sparse one to convert to CSR, a quantized one to call
    `A.double()`, which it refuses (a new user's trial)."""
    with pytest.raises(ValueError, match=r"layout torch._mkldnn.*A\.to_dense\(\)"):
        riemsvd.solve(torch.randn(5, 4).to_mkldnn(), 2)
    with warnings.catch_warnings():  # torch deprecates its quantized tensors' constructors
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch.quantize_per_tensor(torch.randn(5, 4), 0.1, 0, torch.qint8)
    with pytest.raises(TypeError, match=r"quantized tensor \(torch.qint8\).*A\.dequantize\(\)"):
        riemsvd.solve(quantized, 2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["auto", "dense", "iterative"])
def test_entries_not_aligned_to_their_size_are_solved(dtype, method):
    """A matrix read at an odd offset of a buffer (torch.frombuffer past a one-byte header): the C
    kernels had refused it with a TypeError from inside, in every method (a new user's trial). In
    float32 at a tol below its product floor, the float64 check's one pass over A runs in C too."""
    a = torch.randn(60, 40, generator=torch.Generator().manual_seed(0), dtype=dtype)
    raw = bytearray(b"H" + a.numpy().tobytes())
    odd = torch.frombuffer(raw, dtype=dtype, offset=1).reshape(60, 40).requires_grad_()
    assert odd.data_ptr() % odd.element_size() != 0
    tol = 3e-7 if dtype == torch.float32 else None  # below float32's product floor here, 1.8e-6
    result = riemsvd.solve(odd, 2, tol=tol, method=method)
    exact = torch.linalg.svdvals(a.double())[:2]
    assert bool(result.info.converged)
    assert bool(((result.S.double() - exact).abs() <= result.info.errors.double()).all())
    (grad,) = torch.autograd.grad(result.S[0], odd)  # uᵢvᵢᵀ, reached through the copy
    torch.testing.assert_close(grad, torch.outer(result.U[:, 0], result.V[:, 0]))
    odd_array = np.frombuffer(raw, dtype=a.numpy().dtype, offset=1).reshape(60, 40)
    torch.testing.assert_close(riemsvd.solve(odd_array, 2, tol=tol, method=method).S, result.S.detach())


def test_numpy_array_of_integers_raises_type_error_naming_the_dtype():
    with pytest.raises(TypeError, match="numpy array of dtype int64.*astype"):
        riemsvd.solve(np.ones((4, 3), dtype=np.int64))


def test_scipy_inputs_of_other_dtypes_are_told_the_conversion_that_keeps_their_values():
    """scipy's svds takes integer matrices; riemsvd's refusal gave no fix for sparse matrices and
    LinearOperators, and for a complex numpy array suggested `astype(np.float64)`, which drops the
    imaginary part (a new user's trial)."""

    ints = sp.random(20, 10, density=0.3, format="csr", random_state=0).astype(np.int64)
    with pytest.raises(TypeError, match=r"dtype int64.*A\.astype\(np\.float64\)"):
        riemsvd.solve(ints, 2)
    with pytest.raises(TypeError, match=r"dtype int64.*dtype=np\.float64.*aslinearoperator"):
        riemsvd.solve(spla.aslinearoperator(ints), 2)
    for complex_a in (np.ones((4, 3), dtype=complex), sp.csr_matrix(np.ones((4, 3), dtype=complex))):
        with pytest.raises(TypeError, match="real matrices only.*drop the imaginary part") as caught:
            riemsvd.solve(complex_a, 1)
        assert "e.g. `A.astype" not in str(caught.value)


def test_messages_that_pointed_elsewhere_name_the_argument_and_the_fix():
    """A LinearOperator-like object with a 3-D shape got the generic "must be a torch.Tensor, …";
    `init` as lists was told only tensors are taken; `tol=0`, machine precision to svds, got no way
    to ask for it (a new user's trial)."""

    class ThreeD:
        shape, dtype = (3, 4, 5), np.float64

        def matvec(self, x):
            return x

        def rmatvec(self, y):
            return y

    with pytest.raises(ValueError, match=r"`A` must be 2-D, got shape \(3, 4, 5\)"):
        riemsvd.solve(ThreeD(), 1)
    a = torch.randn(10, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match="`init` U0 must be a torch.Tensor or a float numpy array, got list"):
        riemsvd.solve(a, 2, init=([[0.0] * 2] * 10, [[0.0] * 2] * 8))
    with pytest.raises(ValueError, match="got 0.*`tol=None`"):
        riemsvd.solve(a, 2, tol=0)


def test_unknown_type_raises_type_error():
    with pytest.raises(TypeError, match="`A` must be"):
        riemsvd.solve([[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("tol", [0, -1e-3, 1.0, float("nan"), "1e-6"])
def test_bad_tol_raises_value_error(a, tol):
    with pytest.raises(ValueError, match="`tol`"):
        riemsvd.solve(a, tol=tol)


def test_bad_maxiter_raises(a):
    with pytest.raises(ValueError, match="`maxiter`"):
        riemsvd.solve(a, maxiter=0)
    with pytest.raises(TypeError, match="`maxiter`"):
        riemsvd.solve(a, maxiter=2.5)


def test_bad_generator_raises_type_error(a):
    with pytest.raises(TypeError, match="`generator`"):
        riemsvd.solve(a, generator=0)


@pytest.mark.parametrize(
    "init",
    [
        (torch.zeros(5, 1), torch.zeros(4, 1)),  # wrong rows in U0
        (torch.zeros(6, 1), torch.zeros(3, 1)),  # wrong rows in V0
        (torch.zeros(2, 6, 1), torch.zeros(2, 4, 1)),  # batch dims A does not have
    ],
)
def test_init_of_wrong_shape_raises_value_error(a, init):
    init = tuple(x.double() for x in init)
    with pytest.raises(ValueError, match="`init`"):
        riemsvd.solve(a, 2, init=init)


def test_init_with_u0_and_v0_swapped_says_so(a):
    """(V0, U0) for (U0, V0), as scipy's svds (u, s, vh) and torch.svd_lowrank (U, S, V) order them
    differently: the message says they look swapped (a new user's trial), and svds's vh = Vᵀ passed as
    V0 transposed (a second trial); other wrong shapes get neither hint."""
    u0, v0 = torch.zeros(6, 1, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="U0 must have shape .* U0 and V0 look swapped"):
        riemsvd.solve(a, init=(v0, u0))
    with pytest.raises(ValueError, match=r"got \(5, 1\)\.$"):
        riemsvd.solve(a, init=(torch.zeros(5, 1, dtype=torch.float64), v0))
    # scipy's svds: (u, s, vh) with vh = Vᵀ, passed as it is
    u2, vh2 = torch.zeros(6, 2, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"V0 looks transposed \(scipy's svds .* pass V0\.mT\."):
        riemsvd.solve(a, 2, init=(u2, vh2))
    with pytest.raises(ValueError, match=r"U0 looks transposed: pass U0\.mT\."):  # batched too
        riemsvd.solve(a.expand(3, 6, 4), 2, init=(u2.mT.expand(3, 2, 6), vh2.mT))
    # a vector per matrix of a batch, as U[..., 0] gives: .mT had been advised, which then failed on
    # the batch shape (a new user's trial)
    with pytest.raises(ValueError, match=r"U0 looks like one vector per matrix: pass U0\.unsqueeze\(-1\)\.$"):
        riemsvd.solve(a.expand(2, 3, 6, 4), 1, init=(torch.zeros(2, 3, 6, dtype=torch.float64), v0))
    # a wrong 1-D vector is not "transposed" (a review: A of one row), and a scalar is named
    row = torch.zeros(1, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"U0 must have shape \(\.\.\., 1, j\) .*got \(3, 1\)\.$"):
        riemsvd.solve(row, 1, init=(torch.zeros(3, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)))
    with pytest.raises(ValueError, match="`init` U0 must be a vector or a matrix"):
        riemsvd.solve(a, 1, init=(torch.zeros((), dtype=torch.float64), v0))


def test_a_half_precision_init_is_cast_and_a_non_float_one_named(a):
    """A bfloat16 or float16 (U0, V0) for a float32 or float64 A was refused with a message that
    said such tensors are solved in float32 and then to convert `init U0.double()` (a new user's
    trial); the start is cast to A's dtype, so they serve as any float does."""
    ref = riemsvd.solve(a, 2, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16):
        warm = riemsvd.solve(a, 2, init=(ref.U.to(dtype), ref.V.to(dtype)), method="iterative")
        torch.testing.assert_close(warm.S, ref.S, rtol=1e-10, atol=0)
    with pytest.raises(TypeError, match=r"`init` U0 has dtype torch.int64; it must be a float tensor"):
        riemsvd.solve(a, 2, init=(torch.zeros(6, 2, dtype=torch.int64), ref.V))


def test_init_that_is_not_a_pair_or_u0_raises(a):
    with pytest.raises(TypeError, match="`init` must be a pair"):
        riemsvd.solve(a, init=[torch.zeros(6, 1)])
    with pytest.raises(ValueError, match="`init` as U0 alone must be a float tensor of shape"):
        riemsvd.solve(a, init=torch.zeros(5, 1))
    with pytest.raises(TypeError, match="`init` as U0 alone needs A as a dense or sparse"):
        riemsvd.solve(spla.aslinearoperator(a.numpy()), init=torch.zeros(6, 1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_init_as_u0_alone_serves_a_scipy_sparse_matrix(dtype):
    """U0 alone (what a GaLore projector keeps) raised TypeError for a scipy sparse A, where a torch
    tensor's served (a new user's trial): V0 = Aᵀ U0, and the warm solve takes fewer products than a
    cold one, to the same values."""
    a = sp.random(300, 200, density=0.05, random_state=0, format="csr", dtype=dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    cold = riemsvd.solve(a, 3, tol=tol, generator=torch.Generator().manual_seed(0))
    rough = riemsvd.solve(a, 3, tol=1e-3, generator=torch.Generator().manual_seed(1))
    for u0 in (rough.U, rough.U.numpy()):
        warm = riemsvd.solve(a, 3, tol=tol, init=u0, generator=torch.Generator().manual_seed(0))
        assert bool(warm.info.converged.all()) and warm.S.dtype == cold.S.dtype
        assert warm.info.matvecs < cold.info.matvecs, (warm.info.matvecs, cold.info.matvecs)
        torch.testing.assert_close(warm.S, cold.S, rtol=2 * tol, atol=0)


def test_init_with_nan_raises_value_error(a):
    u0, v0 = torch.zeros(6, 1, dtype=torch.float64), torch.full((4, 1), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="`init` V0 has NaN"):
        riemsvd.solve(a, init=(u0, v0))


def test_operator_returning_nan_mid_iteration_raises_value_error():
    big = torch.randn(60, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).numpy()

    class Broken:
        shape, dtype, calls = (60, 40), np.float64, 0

        def matmat(self, x):
            self.calls += 1
            out = big @ x
            return out * np.nan if self.calls > 2 else out

        def rmatmat(self, y):
            return big.T @ y

    with pytest.raises(ValueError, match="NaN or Inf during the iteration"):
        riemsvd.solve(Broken(), 1, tol=1e-14)


def test_a_callers_own_floating_point_warnings_in_its_products_reach_it():
    """The iteration ignores numpy's invalid and overflow warnings in its own arithmetic (NaN or Inf
    from the products is its ValueError to raise), but a caller's matvec runs under the caller's own
    settings: its exp overflowing to inf, then 1/inf = 0, warned before that change and went silent
    with it (a review)."""
    m = np.random.default_rng(1).standard_normal((50, 40))

    class Overflowing(spla.LinearOperator):
        def __init__(self):
            super().__init__(np.float64, (50, 40))
            self.calls = 0

        def _matvec(self, x):
            self.calls += 1  # from the sixth on: inside the iteration, past the products that size A
            spill = 1.0 / np.exp(np.float64(1000)) if self.calls > 5 else 0.0
            return m @ x.ravel() + spill

        def _rmatvec(self, y):
            return m.T @ y.ravel()

    with pytest.warns(RuntimeWarning, match="overflow encountered in exp"):
        result = riemsvd.solve(Overflowing(), 2)
    assert bool(result.info.converged)


def test_linear_operator_without_dtype_raises_type_error():
    class NoDtype:
        shape = (3, 2)

        def matvec(self, x):
            return x

        def rmatvec(self, y):
            return y

    with pytest.raises(TypeError, match="`dtype`"):
        riemsvd.solve(NoDtype())


def test_one_dimensional_init_vectors_are_accepted_for_k_1():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, dtype=torch.float64, generator=g)
    u, s, vh = torch.linalg.svd(a)
    result = riemsvd.solve(a, 1, init=(u[:, 0], vh[0]))
    torch.testing.assert_close(result.S, s[:1], rtol=1e-12, atol=0)


def test_init_with_different_column_counts_raises_value_error(a):
    with pytest.raises(ValueError, match="same number of columns"):
        riemsvd.solve(
            a, 2, init=(torch.zeros(6, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))
        )


def test_convergence_warning_says_the_remedy_that_fits():
    with pytest.warns(riemsvd.ConvergenceWarning, match="maxiter.*raise `maxiter`") as caught:
        riemsvd.solve(torch.randn(300, 200, dtype=torch.float64), 2, maxiter=3, method="iterative")
    assert "raised" not in str(caught[0].message)
    # a maxiter below the k iterations k triplets need is raised, and the warning says so (it had
    # quoted 8 iterations for maxiter=5, unexplained; a new user's trial)
    with pytest.warns(riemsvd.ConvergenceWarning, match=r"after 8 iterations \(maxiter = 5, raised to the 8"):
        riemsvd.solve(torch.randn(300, 200, dtype=torch.float64), 8, maxiter=5, method="iterative")
    with pytest.warns(riemsvd.ConvergenceWarning, match="dense path.*below what rounding.*float64") as caught:
        riemsvd.solve(torch.randn(50, 30), 2, tol=1e-20, method="dense")
    assert "maxiter" not in str(caught[0].message)
    # a tol above the rounding's scale that LAPACK's SVD still missed (6.1e-15 at a scale of 2e-15,
    # a 20×12 Gaussian): "below" had read as wrong beside the smaller scale quoted (a new user's trial)
    from riemsvd._solve import _not_converged

    missed = riemsvd.SolveInfo(torch.tensor(False), 0, 12, torch.tensor(6.1e-15), 4e-15, method="dense")
    text = _not_converged(missed, torch.float64, (20, 12))
    assert re.search(r"tol = 4e-15 .*tol is near what rounding.*\(about 2e-15", text), text


def test_a_stall_far_above_rounding_is_not_blamed_on_rounding():
    """60 values within 1e-6 of each other, k = 8, a basis of 20 and a patience of 1 look: the
    iteration stalls at a residual of 2e-2 to 5e-1 (12 seeds; with the default basis whether it
    stalls depends on the draw and on how far apart the looks are: it converged on 1 of 6 seeds). The
    warning said tol was below what rounding resolves (a new user's trial: 177 such values, k = 18,
    stalled at 4.8e-7 where the floor is 8e-15; patience 2000 reached 1e-12)."""
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.rand(n, dtype=torch.float64, generator=g)  # noqa: E731
    s = torch.cat([2 + 1e-6 * rand(60), rand(40)])
    a = (orthonormal(120, 100, g) * s) @ orthonormal(100, 100, g).mT
    with pytest.warns(riemsvd.ConvergenceWarning, match="stopped making progress.*patience") as caught:
        result = riemsvd.solve(
            a,
            8,
            tol=1e-12,
            method="iterative",
            options=riemsvd.SolverOptions(patience=1, max_basis=20),
            generator=g,
        )
    assert result.info.stop_reason == "stalled" and float(result.info.residual) > 1e-6
    assert "below what rounding" not in str(caught[0].message)
    # what resolved a trial's cluster; a max_basis given below the default is named as the suspect
    text = str(caught[0].message)
    assert "SolverOptions(max_basis=20)" in text and "default for k = 8 with these options is 32" in text


def test_a_stall_far_above_rounding_widens_the_default_basis():
    """40 values 1e-6 apart at the top of a 2000×1000 spectrum, k = 4, tol 1e-12: the default basis of
    24 stalled at 1.5e-5 after 886 products (a new user's trial; as with an explicit max_basis=24,
    which is kept); doubled where it stalls far above rounding, up to 4 times, it converges."""
    g = torch.Generator().manual_seed(1)
    s = torch.linspace(1, 0.1, 1000, dtype=torch.float64)
    s[:40] = 1 - 1e-6 * torch.arange(40, dtype=torch.float64)
    a = (orthonormal(2000, 1000, g) * s) @ orthonormal(1000, 1000, g).mT
    solve = functools.partial(
        riemsvd.solve, a, 4, method="iterative", generator=torch.Generator().manual_seed(0)
    )
    with pytest.warns(riemsvd.ConvergenceWarning, match="stopped making progress"):
        fixed = solve(options=riemsvd.SolverOptions(max_basis=24))
    assert fixed.info.stop_reason == "stalled" and float(fixed.info.residual) > 1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        wide = solve()
    assert bool(wide.info.converged) and float(wide.info.residual) <= 1e-12
    torch.testing.assert_close(wide.S, s[:4], rtol=0, atol=1e-13)


def test_a_stall_below_the_product_floor_does_not_quote_the_floor_as_a_limit(monkeypatch):
    """A float32 1536×384 Gaussian stalls at a residual of about 4e-7 for tol = 1e-7, below the
    product floor 2·ε·√1536 = 9.3e-6: the warning quoted "about 9e-06" as what rounding resolves, beside
    a residual 20 times smaller (a new user's trial). The float32 iteration's own stall, as a GPU's
    runs or a CPU's beyond the float64 copy's 2²⁷ entries (riemsvd._solve._iterates_in_float64)."""
    monkeypatch.setattr(riemsvd._solve, "_iterates_in_float64", lambda *args: False)
    g = torch.Generator().manual_seed(0)
    with pytest.warns(riemsvd.ConvergenceWarning, match="below what rounding") as caught:
        # the iteration's warning (method="iterative": "auto" may take the dense path below 4·ε)
        result = riemsvd.solve(
            torch.randn(1536, 384, generator=g), 1, tol=1e-7, generator=g, method="iterative"
        )
    assert float(result.info.residual) < 9e-6
    assert "9e-06" not in str(caught[0].message)
    # and it names the dense path, whose float64 Gram matrix reaches that tol (a new user's trial: the
    # remedy said only "loosen tol, or solve in float64")
    assert "method='dense'" in str(caught[0].message)
    a = torch.randn(1536, 384, generator=torch.Generator().manual_seed(0))
    assert bool(riemsvd.solve(a, 1, tol=1e-7, method="dense").info.converged)


def test_a_float32_tol_below_its_triplets_rounding_is_not_sent_to_the_dense_path(monkeypatch):
    """Below FLOAT32_CAST_LEAST float32 triplets are their exact ones rounded, the dense path's too:
    a 3000×1500 float32 Gaussian at tol 1e-12 stalled at 4.9e-8 and was advised method='dense', whose
    triplets of a 600×300 one came to 5.6e-8. The message asks for a tol within their reach instead:
    the float32 iteration's own, 4.8e-7 (it had advised 3e-8, the float32 triplets' own limit, where
    a scipy sparse float32 A stalled at 2.65e-7 for any tol from 1e-8 to 2e-7; a new user's trial),
    or float64."""
    monkeypatch.setattr(riemsvd._solve, "_iterates_in_float64", lambda *args: False)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 200, generator=g)
    with pytest.warns(riemsvd.ConvergenceWarning, match="below what rounding") as caught:
        riemsvd.solve(a, 2, tol=1e-12, generator=g, method="iterative")
    message = str(caught[0].message)
    assert "method='dense'" not in message and "Loosen `tol` to 5e-07 or more" in message, message
    sparse = sp.random(600, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
    with pytest.warns(riemsvd.ConvergenceWarning, match="below what rounding") as caught:
        stalled = riemsvd.solve(sparse, 2, tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert float(stalled.info.residual) > 5e-8, stalled.info  # 1.1e-7 measured: 3e-8 is out of reach
    message = str(caught[0].message)
    assert "to 5e-07 or more" in message and "A.astype(np.float64)" in message, message
    with pytest.warns(riemsvd.ConvergenceWarning) as caught:
        dense = riemsvd.solve(a, 2, tol=1e-12, method="dense")
    assert float(dense.info.residual) > 1e-9  # the dense path would not have met it either
    assert "method='dense'" not in str(caught[0].message)


def test_tol_as_a_one_element_float_tensor_is_accepted(a):
    """As k's integer tensor: it raised "`tol` must be a number in (0, 1), got tensor(1.0000e-06)"."""
    assert riemsvd.solve(a, 2, tol=torch.tensor(1e-8, dtype=torch.float64)).info.tol == 1e-8
    with pytest.raises(TypeError, match="`tol` must be a number.*shape \\(2,\\).*float\\(tol\\)"):
        riemsvd.solve(a, 2, tol=torch.tensor([1e-8, 1e-9]))


def test_tol_as_a_one_element_numpy_array_or_a_tensor_that_requires_grad_is_accepted(a):
    """A new user's trial: np.array([1e-8]) raised "must be a number in (0, 1)" where the tensor was
    accepted, and a tol tensor that requires grad let torch's conversion warning through."""
    assert riemsvd.solve(a, 2, tol=np.array([1e-8])).info.tol == 1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tol = torch.tensor([1e-8], dtype=torch.float64, requires_grad=True)
        assert riemsvd.solve(a, 2, tol=tol).info.tol == 1e-8


def test_a_tensor_on_the_meta_device_is_named(a):
    """torch's own errors named no argument: "Cannot copy out of meta tensor" for A, "Tensor.item()
    cannot be called on meta tensors" for init."""
    with pytest.raises(ValueError, match="`A` is on the meta device"):
        riemsvd.solve(a.to("meta"), 2)
    with pytest.raises(ValueError, match="`A` is on the meta device"):
        riemsvd.norm_bounds(a.to("meta"))
    meta = torch.zeros(6, 2, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="`init` U0 is on the meta device"):
        riemsvd.solve(a, 2, init=(meta, torch.zeros(4, 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="`init` U0 is on the meta device"):
        riemsvd.solve(a, 2, init=meta)


def test_a_layer_that_cannot_take_its_input_shape_names_input_shape():
    """A 3×3 Conv2d on 2×2 inputs: the error blamed `fn`, which the user did not pass as a function."""
    with pytest.raises(ValueError, match="`input_shape` \\(3, 2, 2\\) does not fit this Conv2d"):
        riemsvd.linear_operator(torch.nn.Conv2d(3, 4, 3), (3, 2, 2))
    with pytest.raises(ValueError, match="`fn` failed on a zero input"):
        riemsvd.linear_operator(lambda x: x[:, :, 5], (3, 2))


def test_k_as_an_integer_tensor_is_accepted(a):
    assert riemsvd.solve(a, torch.tensor(2)).S.shape == (2,)
    with pytest.raises(TypeError, match="`k`"):
        riemsvd.solve(a, torch.tensor(2.0))


def test_a_linear_operator_without_an_adjoint_is_named():
    """scipy's LinearOperator(shape, matvec=f) has no Aᵀ: the error came from deep in scipy ('NoneType'
    object is not callable)."""
    import scipy.sparse.linalg as spl

    m = np.random.default_rng(0).standard_normal((30, 20))
    op = spl.LinearOperator((30, 20), matvec=lambda x: m @ x, dtype=np.float64)
    for k in (1, 3):  # k = 3 took the path that wrapped the message in one on product lengths
        with pytest.raises(
            ValueError, match=r"`A`'s product with Aᵀ .* give the LinearOperator an rmatvec"
        ) as e:
            riemsvd.solve(op, k)
        assert str(e.value).count("`A`'s product") == 1 and "entries a column" not in str(e.value), e.value
    with pytest.raises(ValueError, match=r"`A`'s product with Aᵀ"):
        riemsvd.norm_bounds(op, confidence=0.99)


def test_an_adjoint_that_does_not_match_a_is_named():
    """A caller's Aᵀ that is not A's transpose (rmatvec returning 1.1·Aᵀy, or another matrix's
    transpose) stalled with a warning that blamed a cluster of close values, and norm_bounds returned
    bounds that missed ‖A‖₂ (3000×2000, Aᵀ from A plus 30% noise: [98.42, 98.42] around 98.89), unsaid.
    The solve's warning and norm_bounds' error now name the adjoint; a correct one, float32 included,
    is not suspected."""
    import scipy.sparse.linalg as spl

    from riemsvd._operator import as_operator, product_fault

    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, dtype=torch.float64, generator=g)
    m = w.numpy()
    scaled = spl.LinearOperator((300, 200), matvec=lambda x: m @ x, rmatvec=lambda y: 1.1 * (m.T @ y))
    noisy = w + 0.01 * torch.randn(w.shape, dtype=w.dtype, generator=g)
    given = riemsvd.linear_operator(lambda x: x @ w.mT, (200,), adjoint=lambda y: y @ noisy, dtype=w.dtype)
    for op, source in ((scaled, "rmatvec"), (given, r"linear_operator\(\.\.\., adjoint=\.\.\.\)")):
        with pytest.warns(riemsvd.ConvergenceWarning, match=rf"do not match A's.*Check .*{source}") as rec:
            riemsvd.solve(op, 2, generator=g)
        assert not any("cluster" in str(r.message) for r in rec)
        refused = rf"norm_bounds: no bound for `A`, because Aᵀ's products do not match.*{source}"
        with pytest.raises(ValueError, match=refused):
            riemsvd.norm_bounds(op)
    for dtype in (torch.float64, torch.float32):  # rounding is not a mismatch
        a = torch.randn(2000, 1500, dtype=dtype, generator=g)
        exact = riemsvd.linear_operator(
            lambda x, a=a: x @ a.mT, (1500,), adjoint=lambda y, a=a: y @ a, dtype=dtype
        )
        assert product_fault(exact) is None
        assert product_fault(as_operator(spl.aslinearoperator(a.numpy()))) is None
    off = riemsvd.linear_operator(
        lambda x: x @ w.mT, (200,), adjoint=lambda y: y @ (w * (1 + 1e-9)), dtype=w.dtype
    )
    assert product_fault(off) is not None  # far below any tol a solve is given, far above rounding


def test_a_callers_faulty_products_end_the_solve_at_its_first_stall(monkeypatch):
    """A rmatvec off by 1e-7 of A's entries, and float64 products computed in float32, ran on to
    maxiter or a late stall (1543–4027 products here, where the correct operator takes 77–165) before
    the warning named them. The steps' own inner products show the fault (riemsvd._subspace's
    AdjointWatch), one column or a block (`SolverOptions(block=2)`) an iteration; where it exceeds tol
    the solve stops at its first stall, without widening its basis, and names it. A correct
    operator's steps stay far below the products' rounding: float32 and float64, entries near
    1e-200, scipy's and linear_operator's."""
    import scipy.sparse.linalg as spl

    import riemsvd._subspace as subspace
    from riemsvd._tolerance import product_floor

    rng = np.random.default_rng(0)
    a = rng.standard_normal((600, 400)) @ np.diag(np.geomspace(1, 0.01, 400))
    b = a + 1e-7 / np.sqrt(600) * rng.standard_normal(a.shape)
    a32 = a.astype(np.float32)
    in_float32 = (
        lambda x: (a32 @ x.astype(np.float32)).astype(float),
        lambda y: (a32.T @ y.astype(np.float32)).astype(float),
    )
    faulty = {
        "do not match A's.*Check `A`'s rmatvec": spl.LinearOperator(
            a.shape, matvec=lambda x: a @ x, rmatvec=lambda y: b.T @ y, dtype=float
        ),
        "computed in a lower precision": spl.LinearOperator(
            a.shape, matvec=in_float32[0], rmatvec=in_float32[1], dtype=float
        ),
    }
    for named, op in faulty.items():
        # over seeds: a stall that any new least residual put off ran to maxiter on 1 of 16 (a new
        # least must halve the old, whose noise sets it)
        runs = [(seed, k, None) for seed, k in itertools.product(range(8), (1, 5))] + [(0, 5, 2)]
        for seed, k, block in runs:
            options = riemsvd.SolverOptions(block=block)
            with pytest.warns(riemsvd.ConvergenceWarning, match=rf"because .*{named}"):
                result = riemsvd.solve(op, k, generator=torch.Generator().manual_seed(seed), options=options)
            assert result.info.stop_reason == "stalled" and result.info.matvecs < 800, (named, k, result.info)
    gaps = []
    checked = subspace._adjoint_off

    def watched(st):
        dtype = torch.float64 if st.vbuf.dtype == np.float64 else torch.float32
        gaps.append(st.adjoint.gap / (100 * product_floor(dtype, *a.shape)))
        return checked(st)

    monkeypatch.setattr(subspace, "_adjoint_off", watched)
    for dtype in (np.float64, np.float32):
        for scale in (1.0, 1e-200) if dtype == np.float64 else (1.0,):
            c = (scale * a).astype(dtype)
            t = torch.from_numpy(c)
            scipys = spl.LinearOperator(c.shape, matvec=lambda x, c=c: c @ x, rmatvec=lambda y, c=c: c.T @ y)
            given = riemsvd.linear_operator(
                lambda x, t=t: x @ t.mT, (400,), adjoint=lambda y, t=t: y @ t, dtype=t.dtype
            )
            for op, k in itertools.product((scipys, given), (1, 5)):
                assert riemsvd.solve(op, k, generator=torch.Generator().manual_seed(0)).info.converged.all()
    assert gaps and max(gaps) < 0.01, max(gaps)


def test_a_callers_products_off_below_tol_still_converge():
    """Products off by less than tol: a correct Aᵀ of centred data whose products cancel (a mean of
    1e6, 1e-9 off on the steps' vectors), in a cluster of values 1e-4 apart, at tol 1e-7. The solve
    converges as it did before its steps tested a caller's Aᵀ; when any mismatch above rounding cut
    its patience it had stopped at residuals up to 2.1e-3 (a review)."""
    import scipy.sparse.linalg as spl

    m, n = 900, 300
    s = np.concatenate([1 - 1e-4 * np.arange(30), np.linspace(0.99, 0.5, n - 30)])
    rng = np.random.default_rng(0)
    u = rng.standard_normal((m, n))
    u, _ = np.linalg.qr(u - u.mean(0))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    x = (u * s) @ v.T + 1e6
    mu = x.mean(0)
    op = spl.LinearOperator(
        (m, n), matvec=lambda z: x @ z - mu @ z, rmatvec=lambda y: x.T @ y - mu * y.sum(), dtype=float
    )
    for k in (1, 5):
        result = riemsvd.solve(op, k, tol=1e-7, generator=torch.Generator().manual_seed(0))
        assert result.info.converged.all(), result.info
        np.testing.assert_allclose(result.S.numpy(), s[:k], atol=1e-8)


@pytest.mark.parametrize("tol", [None, 1e-10])
def test_info_counts_every_product_of_a_callers_operator(tol):
    """info.matvecs is every product with A and Aᵀ the call made: where a solve with a caller's
    products does not converge (float32 at tol 1e-10, below its products' rounding), the diagnosis of
    those products (six more, riemsvd._operator.adjoint_mismatch) counts too. A new user's operator
    that counted its calls found six more than info said, on every such stall."""
    import scipy.sparse.linalg as spl

    a = np.random.default_rng(0).standard_normal((600, 300)).astype(np.float32)
    calls = []
    op = spl.LinearOperator(
        a.shape,
        matvec=lambda x: calls.append(1) or a @ x,
        rmatvec=lambda y: calls.append(1) or a.T @ y,
        dtype=np.float32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        result = riemsvd.solve(op, 1, tol=tol, generator=torch.Generator().manual_seed(0))
    assert bool(result.info.converged) == (tol is None)
    assert result.info.matvecs == len(calls), (result.info.matvecs, len(calls))


def test_an_operator_that_is_zero_up_to_rounding_is_not_blamed_on_its_adjoint():
    """A data matrix of identical rows, centred by its operator (X − 1μᵀ, PCA on data without variation),
    is zero up to the rounding of its products, which are then noise: the solve's warning and
    norm_bounds' error blamed the operator's rmatvec (⟨A x, y⟩ and ⟨x, Aᵀ y⟩ differing by 1.1 of
    their size; a new user's trial). They now say that the products are not linear to their rounding;
    a centred matrix that is not zero, its mean 1e4 above its spread, is still solved (its products'
    cancellation named, not its adjoint), and a wrong adjoint beside a centring is still named."""
    import scipy.sparse.linalg as spl

    from riemsvd._operator import as_operator, product_fault

    def centred(x, adjoint_factor=1.0):
        mu = x.mean(0)
        return spl.LinearOperator(
            x.shape,
            matvec=lambda v: x @ v.ravel() - mu @ v.ravel(),
            rmatvec=lambda u: adjoint_factor * (x.T @ u.ravel() - mu * u.sum()),
            dtype=np.float64,
        )

    rng = np.random.default_rng(0)
    for rows in (np.ones((300, 200)), np.tile(rng.standard_normal(200), (300, 1))):
        fault = product_fault(as_operator(centred(rows)))
        assert fault is not None and "not linear to their rounding" in fault and "do not match" not in fault
        with pytest.warns(riemsvd.ConvergenceWarning, match="not linear to their rounding") as rec:
            riemsvd.solve(centred(rows), 2)
        assert not any("do not match" in str(r.message) for r in rec)
        refused = r"norm_bounds: no bound for `A`, because its products are not linear"
        with pytest.raises(ValueError, match=refused):
            riemsvd.norm_bounds(centred(rows))
    data = 1e4 + rng.standard_normal((300, 200))
    fault = product_fault(as_operator(centred(data)))  # not its adjoint: its rounding, 720 times float64's
    assert fault is not None and "subtract it from the data first" in fault and "do not match" not in fault
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # tol above the products' rounding, whose cancellation (entries 1e4 for a spread of 1) puts
        # it near 1e-12 relative to σ₁
        out = riemsvd.solve(centred(data), 3, tol=1e-9)
    exact = np.linalg.svd(data - data.mean(0), compute_uv=False)[:3]
    assert np.allclose(out.S.numpy(), exact, rtol=1e-9)
    wrong = product_fault(as_operator(centred(data, adjoint_factor=1.01)))
    assert wrong is not None and "do not match" in wrong


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_a_numpy_init_of_another_dtype_is_named_by_its_dtype(a, dtype):
    """Float numpy arrays are taken as init; an int64 one (float16 too, before it was taken) was told
    it "must be a torch.Tensor, got ndarray" (a new user's trial)."""
    u0, v0 = np.ones((6, 1), dtype=dtype), np.ones((4, 1), dtype=np.float64)
    with pytest.raises(TypeError, match=rf"`init` U0 is a numpy array of dtype {np.dtype(dtype)}; .*float64"):
        riemsvd.solve(a, 1, init=(u0, v0))


def test_messages_name_what_the_caller_passed():
    """From a new user's trial: a module passed to register_projection_hook as its params ("'Linear'
    object is not iterable"); operator_norm of an affine Sequential named `fn`, which its caller never
    passed; a float64 closure in linear_operator failed on float32 input without naming `dtype=`."""
    lin = torch.nn.Linear(10, 10)
    with pytest.raises(TypeError, match=r"`params` must be a tensor .* got the module Linear; pass e\.g\."):
        riemsvd.nn.register_projection_hook(torch.optim.SGD(lin.parameters(), lr=0.1), lin)
    # (an affine Sequential is taken bias-free now, its chain's linear part)
    bent = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh())
    with pytest.raises(ValueError, match=r"^`layer` is not linear"):
        riemsvd.nn.operator_norm(bent, (7,))
    a = torch.randn(20, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"torch\.float32 on cpu: .* pass `dtype=`"):
        riemsvd.linear_operator(lambda x: x @ a.T, (12,))


@pytest.mark.parametrize("option", [{"radius": "1"}, {"gradient_tol": "0"}, {"accept": "x"}, {"grow": True}])
def test_trust_region_options_that_are_not_numbers_are_named(option):
    """They reached a comparison, whose TypeError named no argument."""
    import geoopt

    from riemsvd.optim import RiemannianTrustRegion

    x = torch.nn.functional.normalize(torch.randn(3, 2, dtype=torch.float64), dim=0)
    p = geoopt.ManifoldParameter(x, manifold=riemsvd.manifolds.Sphere())
    with pytest.raises(TypeError, match=f"`{next(iter(option))}` must be a real number"):
        RiemannianTrustRegion([p], **option)


def test_init_whose_batch_shape_does_not_broadcast_to_a_names_the_fix():
    a = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    for batch in ((2,), (3,), (4, 4), (2, 3, 4)):
        u0, v0 = (torch.randn(*batch, rows, 1, dtype=torch.float64) for rows in (6, 5))
        with pytest.raises(ValueError, match=rf"`init` U0 has batch shape \({batch[0]},.*broadcasts to it"):
            riemsvd.solve(a, 1, init=(u0, v0))


def test_init_u0_alone_with_another_batch_shape_is_named():
    a = torch.randn(3, 6, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`init` as U0 alone has batch shape \(2,\), but A's is \(3,\)"):
        riemsvd.solve(a, 1, init=torch.randn(2, 6, 1, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.long, "float64"])
def test_singular_pair_dtype_that_is_not_a_float_dtype_is_named(dtype):
    with pytest.raises(TypeError, match="`dtype` must be a real floating torch.dtype"):
        riemsvd.SingularPair(5, 4, dtype=dtype)


@pytest.mark.parametrize("generator", [1, np.random.default_rng(0)])
def test_singular_pair_generator_that_is_not_a_generator_is_named(generator):
    """An int raised AttributeError ("'int' object has no attribute 'device'") from the draw, where
    riemsvd.solve and norm_bounds name the argument (a new user's trial)."""
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        riemsvd.SingularPair(5, 4, generator=generator)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_singular_pair_in_half_precision_is_refused_with_the_way_out(dtype):
    """It passed the check and then failed in QR: "geqrf_cpu" not implemented for 'BFloat16' (a new
    user's trial)."""
    with pytest.raises(TypeError, match="has no QR.*torch.float32.*A.float"):
        riemsvd.SingularPair(5, 4, dtype=dtype)


@settings(max_examples=120, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    layout=st.sampled_from(["contiguous", "transposed", "sliced", "batched"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.sampled_from([1e-30, 1.0, 1e30]),
    special=st.sampled_from(["nan", "inf", "-inf", "nan and inf", "largest finite", "-0"]),
    where=st.integers(0, 2**31 - 1),
    kernel=st.sampled_from(["c", "torch"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_max_abs_is_the_largest_magnitude_in_every_layout(
    rows, cols, layout, dtype, scale, special, where, kernel, seed
):
    """The magnitude that rescales A and finds NaN/Inf: max |a_ij|, whichever sign holds it, read in
    the memory order of a transposed view, and per matrix of a batch; NaN wherever a NaN stands (in
    the C kernel's vector blocks or their tail), Inf where an infinity does and no NaN. Through
    riemsvd._steps' kernel and through torch's aminmax, where that module is not built."""
    from riemsvd import _operator

    if kernel == "c" and _operator.STEPS is None:
        return  # not built here: test_the_c_half_steps_are_built_where_a_c_compiler_is says why
    gen = torch.Generator().manual_seed(seed)
    a = (scale * torch.randn(3, rows + 1, cols + 2, dtype=torch.float64, generator=gen)).to(dtype)
    view = {
        "contiguous": a[0],
        "transposed": a[0].mT,
        "sliced": a[0, 1:, ::2],
        "batched": a,
    }[layout]
    with mock.patch.object(_operator, "STEPS", _operator.STEPS if kernel == "c" else None):
        assert torch.equal(max_abs(view), view.abs().amax((-2, -1)))
        corrupted = view.clone()  # in the view's memory order
        size = corrupted.shape[-2] * corrupted.shape[-1]
        i, j = where % size, (where // 7) % size
        values = {
            "nan": [(i, math.nan)],
            "inf": [(i, math.inf)],
            "-inf": [(i, -math.inf)],
            "nan and inf": [(i, -math.inf), (j, math.nan)] if i != j else [(i, math.nan)],
            "largest finite": [(i, -torch.finfo(dtype).max)],
            "-0": [],
        }[special]
        if special == "-0":
            corrupted.zero_().neg_()
        for index, value in values:
            corrupted[(..., *divmod(index, corrupted.shape[-1]))] = value
        top = max_abs(corrupted)
        if special in ("nan", "nan and inf"):
            assert torch.isnan(top).all()
        else:
            assert torch.equal(top, corrupted.abs().amax((-2, -1)))


@pytest.mark.skipif(STEPS is None, reason="riemsvd._steps (setup.py) was not built")
def test_the_c_max_abs_refuses_what_it_cannot_read():
    unaligned = np.ndarray((1000,), np.float64, buffer=bytearray(8009), offset=1)
    for x in (np.zeros(6, np.int64), np.zeros((4, 4))[::2], np.zeros((4, 4), np.float16), unaligned):
        with pytest.raises(TypeError):
            STEPS.max_abs(x, 1)
    assert STEPS.max_abs(np.zeros((0, 3)), 2) == 0.0


@pytest.mark.skipif(STEPS is None, reason="riemsvd._steps (setup.py) was not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_c_max_abs_sees_every_entry(dtype):
    """Every position of arrays whose lengths cover the vector blocks (16 doubles, 32 floats a pass),
    their lanes and the tail: the largest magnitude there (of either sign), a NaN, an infinity, and an
    infinity beside a NaN. A review found the property test above, over random positions, catching a
    skipped block or a lost lane on some seeds only."""
    rng = np.random.default_rng(0)
    big = np.finfo(dtype).max
    for size in [*range(1, 71), 127, 128, 129, 1000, 1001]:
        x = rng.uniform(-1.0, 1.0, size).astype(dtype)
        for i in range(size):
            y = x.copy()
            y[i] = -2.0 if i % 2 else 2.0
            assert STEPS.max_abs(y, 1) == 2.0, (size, i)
            y[i] = -big
            assert STEPS.max_abs(y, 1) == big, (size, i)
            y[i] = -math.inf
            assert STEPS.max_abs(y, 1) == math.inf, (size, i)
            y[(i * 7 + 3) % size] = math.nan  # beside the infinity, or in its place
            assert math.isnan(STEPS.max_abs(y, 1)), (size, i)
            y = x.copy()
            y[i] = math.nan
            assert math.isnan(STEPS.max_abs(y, 1)), (size, i)


@pytest.mark.skipif(STEPS is None, reason="riemsvd._steps (setup.py) was not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_c_max_abs_on_threads_sees_every_share(dtype):
    """An array of several 2 MiB shares on 1 to 3 threads: the largest magnitude, a NaN, an infinity
    and an infinity beside a NaN at the start and end of each share and between them, where a share
    that lost its result or a combination that let a finite value win over them would show."""
    share = (2 << 20) // np.dtype(dtype).itemsize
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 3 * share + 5).astype(dtype)
    n = x.size
    places = sorted({0, n - 1} | {n * p // q + d for q in (2, 3) for p in range(1, q) for d in (-1, 0)})
    for threads in (1, 2, 3):
        assert STEPS.max_abs(x, threads) == np.abs(x).max()
        for i in places:
            y = x.copy()
            y[i] = -2.0
            assert STEPS.max_abs(y, threads) == 2.0, (threads, i)
            y[i] = -math.inf
            assert STEPS.max_abs(y, threads) == math.inf, (threads, i)
            y[n - 1 - i] = math.nan  # in another share than the infinity, or in its place
            assert math.isnan(STEPS.max_abs(y, threads)), (threads, i)
            y = x.copy()
            y[i] = math.nan
            assert math.isnan(STEPS.max_abs(y, threads)), (threads, i)


@pytest.mark.skipif(STEPS is None, reason="riemsvd._steps (setup.py) was not built")
def test_the_c_float64_products_write_every_entry_and_refuse_what_they_cannot_read():
    """widened_both overwrites its outputs (filled with NaN here: a fresh numpy array may hold zeros,
    which would hide an Aᵀ y added to instead of written) on 1–3 threads: row counts that leave a short
    last panel of the eight rows taken at a time, in each share where A is split, rows longer than the
    256 columns cast at a time and not a multiple of them, up to 9 and 64 columns x, y; rows further
    apart than their length. And it refuses a float64 A, A with strided rows, non-contiguous or float32
    vectors, a misaligned or read-only output, and shapes that do not fit (with a TypeError or
    ValueError, never a wrong read or write). A short last panel is read once: an infinity there stays
    one in Aᵀ y (it had been read again with y = 0, and inf·0 made a NaN; a review)."""
    rng = np.random.default_rng(0)
    cases = [(1, 1, 1), (7, 5, 2), (8, 3, 1), (33, 65, 2), (9, 300, 9), (70, 520, 3), (130, 257, 64)]
    cases += [(70, 20000, 2), (2, 200000, 4)]  # two shares of 35 rows, a short panel each; one share
    for m, n, k in cases:
        wide = rng.standard_normal((m, n + 3)).astype(np.float32)
        for a in (wide[:, :n], np.ascontiguousarray(wide[:, :n])):
            x, y = rng.standard_normal((k, n)), rng.standard_normal((k, m))
            a64 = a.astype(np.float64)
            for threads in (1, 2, 3):
                ax, aty = np.full((k, m), np.nan), np.full((k, n), np.nan)
                STEPS.widened_both(a, x, y, ax, aty, threads)
                np.testing.assert_allclose(ax, x @ a64.T, rtol=1e-13, atol=1e-13)
                np.testing.assert_allclose(aty, y @ a64, rtol=1e-13, atol=1e-13)
    for m in (3, 9):
        odd = np.ones((m, 4), np.float32)
        odd[m - 1, 0] = np.inf
        aty = np.full((1, 4), np.nan)
        STEPS.widened_both(odd, np.ones((1, 4)), np.ones((1, m)), np.empty((1, m)), aty, 1)
        assert aty[0, 0] == np.inf and (aty[0, 1:] == m).all()
    a, x, y = np.zeros((4, 3), np.float32), np.zeros((1, 3)), np.zeros((1, 4))
    ax, aty = np.zeros((1, 4)), np.zeros((1, 3))
    read_only_ax, read_only_aty = np.zeros((1, 4)), np.zeros((1, 3))
    read_only_ax.setflags(write=False)
    read_only_aty.setflags(write=False)
    refused = {
        TypeError: [
            (a.astype(np.float64), x, y, ax, aty),
            (np.zeros((4, 6), np.float32)[:, ::2], x, y, ax, aty),
            (a, np.zeros((3, 2)).T, y, ax, aty),
            (a, x.astype(np.float32), y, ax, aty),
            (a, x, y, np.ndarray((1, 4), np.float64, buffer=bytearray(33), offset=1), aty),
        ],
        ValueError: [
            (a, x, y, read_only_ax, aty),  # numpy's "buffer source array is read-only"
            (a, x, y, ax, read_only_aty),
            (a, np.zeros((1, 4)), y, ax, aty),
            (a, x, y, np.zeros((2, 4)), aty),
            (a, x, np.zeros((2, 4)), ax, aty),
        ],
    }
    for error, cases in refused.items():
        for bad in cases:
            with pytest.raises(error):
                STEPS.widened_both(*bad, 1)


def test_max_abs_answers_on_a_cpu_matrix_device_whatever_the_default_device():
    """The C kernel's answer was made on torch's default device, where aminmax's stayed on A's: under
    ``torch.device("meta")`` a CPU matrix with a NaN passed the check (a review)."""
    a = torch.randn(30, 20, dtype=torch.float64)
    a[2, 3] = math.nan
    with torch.device("meta"):
        top = max_abs(a)
        assert top.device == a.device
        with pytest.raises(ValueError, match="NaN or Inf"):
            riemsvd.solve(a, 1)


def test_a_linear_operator_whose_product_has_the_wrong_length_is_named():
    """numpy's "cannot reshape array of size 40 into shape (50,1)" named neither A nor its products
    (a new user's trial)."""
    from scipy.sparse.linalg import LinearOperator

    m = np.random.default_rng(0).standard_normal((50, 30))
    short = LinearOperator(
        (50, 30), matvec=lambda x: (m @ x)[:40], rmatvec=lambda y: m.T @ y, dtype=np.float64
    )
    with pytest.raises(ValueError, match=r"`A`'s product A x failed .*shape \(50, 30\) gives 50 .*matvec"):
        riemsvd.solve(short, 2)

    class Duck:  # matmat of the wrong length, without scipy's own reshape
        shape, dtype = (50, 30), np.float64

        def matmat(self, x):
            return m[:40] @ x

        def rmatmat(self, y):
            return m.T @ y

    with pytest.raises(ValueError, match=r"`A`'s product A x returned 40 entries for 1 column"):
        riemsvd.solve(Duck(), 2)


def test_a_duck_operator_with_a_torch_dtype_is_told_to_use_a_numpy_one():
    class Duck:
        shape, dtype = (50, 30), torch.float64

        def matvec(self, x):
            return np.zeros(50)

        def rmatvec(self, y):
            return np.zeros(30)

    with pytest.raises(TypeError, match="torch dtype.*np.float64"):
        riemsvd.solve(Duck(), 2)


def test_a_read_only_numpy_a_is_solved_without_torchs_writability_warning():
    """torch.from_numpy warns on a non-writable array; riemsvd only reads A, and a memory map or a
    broadcast view is no mistake of the caller's (a new user's trial)."""
    a = np.random.default_rng(0).standard_normal((30, 20))
    a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = riemsvd.solve(a, 2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out.S.numpy(), np.linalg.svd(a, compute_uv=False)[:2], rtol=1e-10)


def test_a_masked_array_with_masked_entries_is_refused_by_name():
    """A masked array's data was read whole, its mask ignored, and the SVD of the stored values came
    back converged (a new user's trial): a masked entry is missing, not a value. One without masked
    entries is its data."""
    a = np.random.default_rng(0).standard_normal((30, 20))
    masked = np.ma.masked_array(a, mask=a > 2)
    with pytest.raises(TypeError, match=r"`A` is a numpy masked array with \d+ masked entries.*A\.filled"):
        riemsvd.solve(masked, 2)
    with pytest.raises(TypeError, match=r"`A` is a numpy masked array"):
        riemsvd.norm_bounds(masked)
    u, _, vt = np.linalg.svd(a, full_matrices=False)
    with pytest.raises(TypeError, match=r"`init` is a numpy masked array.*init\.filled"):
        riemsvd.solve(a, 2, init=(np.ma.masked_array(u[:, :2], mask=u[:, :2] > 0.3), vt[:2].T))
    whole = riemsvd.solve(np.ma.masked_array(a), 2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(whole.S.numpy(), np.linalg.svd(a, compute_uv=False)[:2], rtol=1e-10)


def test_a_stall_in_a_narrowed_basis_names_the_max_basis_given():
    """SolverOptions(max_basis=1) at k = 4 (raised to the 7 columns the iteration needs) stalled at
    3.7e-3 on a 300×200 Gaussian where the default converged in 184 products, and the warning blamed
    a cluster of close values (a new user's trial): it names the basis given and the default."""
    a = torch.randn(300, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    stalled = 0
    for seed in range(4, 10):  # seed 5 stalled on the machine of the trial; the others converged
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            options = riemsvd.SolverOptions(max_basis=1)
            gen = torch.Generator().manual_seed(seed)  # the iteration's (since 2026-12-07 "auto" goes dense)
            result = riemsvd.solve(a, 4, options=options, generator=gen, method="iterative")
        if result.info.stop_reason == "stalled":
            stalled += 1
            text = str(caught[0].message)
            assert "SolverOptions(max_basis=1)" in text and "k = 4 with these options is 24" in text
            assert "(7 columns" in text and "cluster" not in text
    assert stalled
    # with steps of 8 columns (the GPU's default) the least basis is 28 and the default 96 (a review:
    # the message said 24, and a max_basis of 40, below 96, got the cluster message)
    from riemsvd._solve import _not_converged

    info = dataclasses.replace(result.info, stop_reason="stalled")
    for narrowed, used in ((20, 28), (40, 40)):
        options = riemsvd.SolverOptions(max_basis=narrowed, block=8)
        text = _not_converged(info, a.dtype, a.shape, result.S, options)
        assert f"max_basis={narrowed})` ({used} columns" in text and "these options is 96" in text


def test_an_operator_with_a_product_but_not_its_adjoint_is_told_which_is_missing():
    """shape, dtype and matvec but no rmatvec: the message listed what A may be, not what it lacked (a
    new user's trial)."""
    a = np.random.default_rng(0).standard_normal((50, 30))

    class Forward:
        shape, dtype = (50, 30), np.float64

        def matvec(self, x):
            return a @ x

    with pytest.raises(TypeError, match=r"`A` \(Forward\) has `matvec` or `matmat` but not .* `rmatvec`"):
        riemsvd.solve(Forward(), 2)


def test_products_less_precise_than_their_dtype_are_named_and_refused_a_certificate():
    """A LinearOperator declared float64 that computes in float32: norm_bounds had certified bounds
    that missed ‖A‖₂ (by up to 1.6e-8, 10 of 10 seeds), and the solve's stall blamed a cluster of
    close values (a new user's trial). Both now say that the products are less precise than A's dtype."""
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl

    def in_float32(shape, seed):
        m32 = sp.random(*shape, density=0.3, random_state=seed, format="csr").astype(np.float32)
        op = spl.LinearOperator(
            shape,
            matvec=lambda x: m32 @ x.astype(np.float32),
            rmatvec=lambda y: m32.T @ y.astype(np.float32),
            dtype=np.float64,
        )
        return op, m32

    op, m32 = in_float32((200, 150), 0)
    with pytest.raises(ValueError, match="lower precision than the dtype A declares"):
        riemsvd.norm_bounds(op)
    # declared as what it computes in, the same products are bounded, and the bounds hold
    declared = spl.LinearOperator(op.shape, matvec=op.matvec, rmatvec=op.rmatvec, dtype=np.float32)
    bounds = riemsvd.norm_bounds(declared)
    exact = np.linalg.norm(m32.toarray().astype(np.float64), 2)
    assert float(bounds.lower) <= exact <= float(bounds.upper)
    big, _ = in_float32((1200, 900), 1)
    with pytest.warns(riemsvd.ConvergenceWarning, match="lower precision than the dtype A declares"):
        out = riemsvd.solve(big, 6)
    assert not bool(out.info.converged)
    # float64 operators whose products cancel a little, within the certificate's allowance, are still
    # bounded, and rightly: a difference of two operators 1e-4 apart (1.4e3 times the product floor)
    # and data 1e4 above their spread centred inside the operator (720 times; a review)
    rng = np.random.default_rng(0)
    b = rng.standard_normal((400, 200))
    d = b + 1e-4 * rng.standard_normal((400, 200))
    data = 1e4 + rng.standard_normal((300, 200))
    mu = data.mean(0)
    centred = spl.LinearOperator(
        data.shape,
        matvec=lambda x: data @ x.ravel() - mu @ x.ravel(),
        rmatvec=lambda y: data.T @ y.ravel() - mu * y.sum(),
        dtype=np.float64,
    )
    for op, exact in ((spl.aslinearoperator(d) - spl.aslinearoperator(b), d - b), (centred, data - mu)):
        bounds = riemsvd.norm_bounds(op)
        norm = np.linalg.norm(exact, 2)
        assert bool(bounds.certified) and float(bounds.lower) <= norm <= float(bounds.upper)
