"""solve's dense path (method="dense") and the choice method="auto" makes, against torch.linalg.svd."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

import riemsvd
from riemsvd._dense import prefer_dense
from tests.matrices import SHAPES, SPECTRA, check_svd, make_matrix, true_residuals


@given(
    shape=SHAPES,
    kind=st.sampled_from(SPECTRA),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    scale=st.sampled_from([1.0, 1e-8, 1e8]),
    batch=st.sampled_from([(), (3,)]),
    data=st.data(),
)
def test_dense_top_k_match_full_svd_for_any_spectrum(shape, kind, dtype, scale, batch, data):
    m, n = shape
    k = data.draw(st.integers(1, min(m, n)), label="k")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    a = torch.stack([make_matrix(kind, m, n, gen, dtype, scale) for _ in range(3)]) if batch else None
    a = a if a is not None else make_matrix(kind, m, n, gen, dtype, scale)
    result = riemsvd.solve(a, k, method="dense")
    assert result.info.method == "dense"
    check_svd(a, result, k, result.info.tol)


def test_float32_gram_path_is_checked_and_falls_back_to_the_svd(gen):
    # σ from 1 to 1e-12: the Gram matrix cannot resolve σ_k, its vectors lose orthogonality, and
    # the SVD must take over; check_svd asserts orthonormal vectors and the residual.
    a = make_matrix("cond12", 80, 40, gen, torch.float32)
    result = riemsvd.solve(a, 40, method="dense")
    check_svd(a, result, 40, result.info.tol)
    assert result.info.matvecs == 40 + 40 + 2 * 40  # the Gram path tried, then the check's products


@pytest.mark.parametrize("shape, k, batch", [((600, 80), 32, ()), ((80, 600), 8, ()), ((200, 100), 16, (3,))])
def test_float64_dense_path_serves_from_the_gram_matrix_where_it_resolves_sigma_k(
    shape, k, batch, gen, monkeypatch
):
    """A float64 A's dense path takes its triplets from the Gram matrix (Rayleigh–Ritz in span(A V)),
    where LAPACK's SVD had taken 1.2–5.6× the time (a new user's PCA: 200000×50, k = 5, 1.05 s
    against 0.28 on one thread), with no SVD: orthonormal to rounding and to tol as the SVD's were,
    σ_k = 1/32 to 1/8 of σ₁ here (σᵢ = 1/i). Where σ_k lies beyond its reach (σ from 1 to 1e-12,
    k = 40), the SVD serves."""
    import riemsvd._dense as dense

    calls: list[int] = []
    svd = dense._svd_triplets
    monkeypatch.setattr(dense, "_svd_triplets", lambda a, k: calls.append(k) or svd(a, k))
    m, n = shape
    a = torch.stack([make_matrix("decay", m, n, gen) for _ in range(3)]) if batch else None
    a = a if a is not None else make_matrix("decay", m, n, gen)
    result = riemsvd.solve(a, k, method="dense")
    assert calls == [] and result.info.matvecs == min(m, n) + 3 * k, (calls, result.info)
    check_svd(a, result, k, result.info.tol)
    ref = torch.linalg.svdvals(a)[..., :k]
    assert float((result.S - ref).abs().max()) <= 1e-13, (result.S - ref).abs().max()
    c = make_matrix("cond12", 80, 40, gen)
    result = riemsvd.solve(c, 40, method="dense")
    assert calls == [40], calls
    check_svd(c, result, 40, result.info.tol)


def test_float64_gram_path_leaves_values_in_its_rounding_to_the_svd(monkeypatch):
    """Where σ_k lies in the Gram matrix's rounding its k-th eigenvector is noise, and at a loose tol
    the check cannot tell: a rank-3 600×300 A plus noise of 1e-9 at k = 4 and tol 1e-6 came back with
    σ₄ 40% low, converged, its bar short (a review of the float64 Gram path). The SVD serves there,
    once: where it misses a tol below float64's reach (σ₅ = 1e-6·σ₁, tol 1e-16) a redo had repeated
    it, at 2.1 s against 0.87 for the same residual (1500×1000)."""
    import riemsvd._dense as dense

    calls: list[int] = []
    svd = dense._svd_triplets
    monkeypatch.setattr(dense, "_svd_triplets", lambda a, k: calls.append(k) or svd(a, k))
    g = np.random.default_rng(0)
    low = g.standard_normal((600, 3)) @ g.standard_normal((3, 300))
    a = torch.from_numpy(low + 1e-9 * g.standard_normal((600, 300)))
    result = riemsvd.solve(a, 4, tol=1e-6, method="dense")
    exact = torch.from_numpy(np.linalg.svd(a.numpy(), compute_uv=False)[:4])
    assert calls == [4] and bool(result.info.converged), (calls, result.info)
    assert result.info.matvecs == 300 + 2 * 4, result.info  # the Gram matrix and the check, no A V
    assert float((result.S - exact).abs().max()) <= 1e-14 * float(exact[0]), (result.S, exact)
    assert bool(((result.S - exact).abs() <= result.info.errors).all())
    calls.clear()
    q1, q2 = np.linalg.qr(g.standard_normal((300, 8)))[0], np.linalg.qr(g.standard_normal((200, 8)))[0]
    b = torch.from_numpy((q1 * np.array([1, 0.5, 0.3, 0.2, 1e-6, 1e-7, 1e-8, 1e-9])) @ q2.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)  # below float64's reach
        riemsvd.solve(b, 5, tol=1e-16, method="dense")
    assert calls == [5], calls


@pytest.mark.parametrize("shape", [(700, 60), (60, 700)])
def test_float32_gram_path_of_a_large_matrix_casts_in_blocks_to_the_same_triplets(shape, monkeypatch):
    """A float32 matrix whose float64 copy would be large is cast a block of its longer side at a
    time (the whole copy had held 2.2 times A's bytes: a new user's trial): made to here with blocks
    of 64 rows or columns, the last one shorter, the same values and vectors as the whole copy's."""
    import riemsvd._dense as dense

    g = torch.Generator().manual_seed(0)
    a = make_matrix("decay", *shape, g).float()
    whole = riemsvd.solve(a, 5, method="dense")
    monkeypatch.setattr(dense, "_HOST_WORK", 0)  # a tensor, as above that size
    monkeypatch.setattr(dense, "_WHOLE_COPY_BYTES", 0)
    monkeypatch.setattr(dense, "_BLOCK_BYTES", 8 * 64 * min(shape))
    monkeypatch.setattr(dense, "_svd_triplets", None)  # the Gram path's own result, no fallback
    blocks = riemsvd.solve(a, 5, method="dense")
    torch.testing.assert_close(blocks.S, whole.S, rtol=1e-6, atol=0)
    for x, y in ((blocks.U, whole.U), (blocks.V, whole.V)):
        torch.testing.assert_close((x * y).sum(0).abs(), torch.ones(5), rtol=0, atol=1e-5)
    check_svd(a, blocks, 5, float(blocks.info.tol))


def test_float32_gram_path_counts_its_products(gen):
    a = make_matrix("decay", 90, 30, gen, torch.float32)
    result = riemsvd.solve(a, 5, method="dense")
    check_svd(a, result, 5, result.info.tol)
    info = result.info
    assert info.matvecs == 30 + 5 + 2 * 5  # Gram, A V, then the check A V and Aᵀ U
    assert (info.iterations, info.stop_reason, info.restarts, info.history) == (0, "whole space", 0, [])


@pytest.mark.parametrize("tol", [None, 2e-6, 1e-7])
def test_float32_results_short_of_tol_are_redone_in_float64_matrix_by_matrix(tol, gen, monkeypatch):
    """A matrix of identical rows (rank one) came out of float32's SVD with residual 2.1e-5 (a new
    user's trial); its float64 SVD, rounded, reaches the default tol and, checked in float64, 1e-7
    (below float32's product floor, where the retry was first left out). In a batch only the matrices
    short of tol are redone. Which those are depends on the machine's LAPACK: the rank-one matrix's
    first residual was 2.1e-5 on an AMD EPYC and 3.4–4.0e-6 on an Intel Xeon (default tol 9.3e-6),
    so the expected ones are read off the first check. At 2e-6 the rank-one matrix (2.9e-6) was short
    and the Gaussian (1.3e-6) not, on that Xeon: there only the first was redone. The Gram path is
    left out, as it was when this batch came to the SVD: since it completes a zero σ's vectors, it
    serves this batch itself, to 1e-7."""
    import riemsvd._dense as dense

    monkeypatch.setattr(dense, "_gram_triplets", lambda *args: (None, None))

    rows = torch.randn(1, 384, generator=gen).expand(1536, 384)
    batch = torch.stack([rows, torch.randn(1536, 384, generator=gen)])
    redone, checks = [], []
    svd, check = dense._svd_triplets, dense.verify

    def counting(a, k):
        redone.append((a.dtype, tuple(a.shape)))
        return svd(a, k)

    def checking(*args):
        checks.append(check(*args))
        return checks[-1]

    monkeypatch.setattr(dense, "_svd_triplets", counting)
    monkeypatch.setattr(dense, "verify", checking)
    result = riemsvd.solve(batch, 2, tol=tol, method="dense")
    assert bool(result.info.converged.all())
    short = int((checks[0][3] > result.info.tol).sum())
    in_float64 = [shape for dtype, shape in redone if dtype == torch.float64]
    assert in_float64 == ([(short, 1536, 384)] if short else [])
    if tol == 1e-7:  # below float32's product floor: neither float32 result gets there
        assert short == 2
    exact = torch.linalg.svdvals(batch.double())[:, :2]
    assert bool(((result.S.double() - exact).abs() <= result.info.errors.double()).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_and_rank_deficient_matrices_give_orthonormal_vectors(dtype, gen):
    zero = torch.zeros(30, 20, dtype=dtype)
    check_svd(zero, riemsvd.solve(zero, 3, method="dense"), 3, 1e-12)
    low = make_matrix("gaussian", 30, 3, gen, dtype) @ make_matrix("gaussian", 3, 20, gen, dtype)
    result = riemsvd.solve(low, 6, method="dense")  # k beyond the rank
    check_svd(low, result, 6, result.info.tol)


def test_a_zero_singular_value_in_float32_draws_no_numpy_warning():
    """The host Gram path divided by a zero norm in numpy, whose RuntimeWarning an application running
    under -W error took as a crash (a new user's trial); the SVD serves such a matrix, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero = riemsvd.solve(np.zeros((50, 30), np.float32), 2)
        rank_two = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)) @ torch.randn(2, 30)
        low = riemsvd.solve(rank_two, 5, method="dense")
    assert torch.equal(zero.S, torch.zeros(2)) and bool(zero.info.converged)
    check_svd(rank_two, low, 5, low.info.tol)


def test_one_float32_matrix_short_of_tol_is_redone_in_float64_as_a_batch_of_one_is(monkeypatch):
    """At tol 3.5e-8, below what this matrix's float32 vectors reach (3.7e-8), one matrix (numpy arrays
    on the host) takes the float64 SVD as a batch of one (tensors) does, with the same results;
    nothing had tested the one matrix's branch (a review). (At 1e-9, below what any float32 vectors
    reach, there is no SVD since: the next test.)"""
    import riemsvd._dense as dense

    a = torch.randn(300, 200, generator=torch.Generator().manual_seed(0))
    redone = []
    svd = dense._svd_triplets
    monkeypatch.setattr(dense, "_svd_triplets", lambda b, k: redone.append(b.dtype) or svd(b, k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)  # float32 vectors: 3.7e-8
        one, batch = (riemsvd.solve(x, 3, tol=3.5e-8, method="dense") for x in (a, a[None]))
    assert redone == [torch.float64, torch.float64]
    for mine, theirs in ((one.S, batch.S[0]), (one.U, batch.U[0]), (one.V, batch.V[0])):
        torch.testing.assert_close(mine, theirs)  # numpy's products against torch's: to rounding
    assert float(one.info.residual) <= 1e-7 and float(batch.info.residual[0]) <= 1e-7


@pytest.mark.parametrize("batched", [False, True])
def test_k_beyond_the_numerical_rank_completes_the_gram_path_without_the_svd(batched, monkeypatch):
    """A GaLore projector of a rank-100 512×256 float32 gradient, k = 128: the Gram path's vectors of
    the zero σ were not orthonormal, and the SVD ran after the Gram matrix's eigh (13.4 ms against
    torch.linalg.svd's 6.8; a new user's trial). Their columns are now orthonormalized against the
    others; the check confirms the triplets, and no SVD runs."""
    import riemsvd._dense as dense

    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 100, generator=g) @ torch.randn(100, 256, generator=g) / 30
    if batched:
        a = torch.stack([a, torch.randn(512, 256, generator=g)])
    svds = []
    svd = dense._svd_triplets
    monkeypatch.setattr(dense, "_svd_triplets", lambda *args: svds.append(1) or svd(*args))
    result = riemsvd.solve(a, 128, method="dense")
    assert not svds and bool(result.info.converged.all())
    eye = torch.eye(128)
    for q in (result.U, result.V):
        assert float((q.mT @ q - eye).abs().max()) <= 1e-5
    exact = torch.linalg.svdvals(a.double())[..., :128]
    assert bool(((result.S.double() - exact).abs() <= result.info.errors.double()).all())


@pytest.mark.parametrize("batched", [False, True])
def test_values_below_tol_that_the_gram_matrix_resolves_are_returned(batched):
    """A float32 rank-50 gradient plus noise, k = 64 (a new user's trial): σ₅₁…σ₆₄ lie below tol·σ₁
    (about 4e-6·σ₁) but well inside what the float64 Gram matrix resolves, so the dense path returns
    them and their vectors, not random completions (which had returned σ₅₁ 17× and σ₆₄ 560× too small,
    converged and unflagged, their U 1–2% in the true subspace)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1536, 50, generator=g, dtype=torch.float64) @ torch.randn(50, 384, generator=g).double()
    a = (a / 50**0.5 + 1e-5 * torch.randn(1536, 384, generator=g, dtype=torch.float64)).float()
    if batched:
        a = torch.stack([a, a.flip(0)])
    result = riemsvd.solve(a, 64, method="dense")
    u, s, _ = torch.linalg.svd(a.double(), full_matrices=False)
    tail = slice(50, 64)
    assert float((s[..., tail] / s[..., :1]).max()) < result.info.tol  # the case: below tol·σ₁
    assert bool(result.info.converged.all())
    # every value to float32's rounding, 4ε·σ₁, and σ₅₁ … σ₆₄ (3.7e-6·σ₁ … 3.5e-6·σ₁) to 1e-3 of
    # themselves: 1e-8·σ₁ and less was measured
    error = (result.S.double() - s[..., :64]).abs()
    assert float((error / s[..., :1]).max()) <= 4 * torch.finfo(torch.float32).eps
    assert float((error[..., tail] / s[..., tail]).max()) <= 1e-3, error[..., tail] / s[..., tail]
    # their left vectors span the true ones' (the gaps around σ₅₁ … σ₆₄ are 2e-9·σ₁ and more)
    cosines = torch.linalg.svdvals(u[..., tail].mT @ result.U[..., tail].double())
    assert float(cosines.min()) >= 0.99, float(cosines.min())


def test_gradients_do_not_depend_on_the_method(gen):
    a = make_matrix("decay", 40, 25, gen).requires_grad_()
    probe = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    grads = []
    for method in ("dense", "iterative"):
        u, s, _ = riemsvd.solve(a, 3, method=method, generator=gen)
        loss = s.sum() + ((u @ u.mT) * probe).sum()  # invariant under each column's sign
        grads.append(torch.autograd.grad(loss, a)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-8, atol=1e-10)
    # and both are the full SVD's
    u, s, _ = torch.linalg.svd(a, full_matrices=False)
    loss = s[:3].sum() + ((u[:, :3] @ u[:, :3].mT) * probe).sum()
    torch.testing.assert_close(grads[0], torch.autograd.grad(loss, a)[0], rtol=1e-8, atol=1e-10)


def test_dense_under_vmap():
    b = torch.randn(4, 12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = torch.func.vmap(lambda a: riemsvd.solve(a, 2, method="dense").S)(b)
    torch.testing.assert_close(values, torch.linalg.svdvals(b)[:, :2], rtol=1e-12, atol=0)


def test_auto_takes_the_dense_path_for_small_matrices_and_large_k(gen):
    small = make_matrix("gaussian", 30, 20, gen, torch.float32)
    assert riemsvd.solve(small, 2).info.method == "dense"
    # a warm start keeps it: it took the iteration, 1.2–3.1× the dense path's time (a new user's trial)
    batch = torch.randn(4, 100, 60, generator=gen, dtype=torch.float64)
    cold = riemsvd.solve(batch, 3)
    warm = riemsvd.solve(batch + 1e-3 * torch.randn(4, 100, 60, generator=gen, dtype=torch.float64), 3,
                         init=(cold.U, cold.V))  # fmt: skip
    assert cold.info.method == warm.info.method == "dense"
    big = make_matrix("decay", 600, 500, gen, torch.float64)
    assert riemsvd.solve(big, 1).info.method == "iterative"


def test_a_float32_tol_below_the_iterations_reach_takes_the_cheaper_path_that_reaches_it():
    """At tol 1e-7 a float32 weight's own iteration stalled at 3.3–4.8e-7 ("converged" False; 9 of 9
    weights from 768×768 to 1024×4096), where the dense path reached the residual of the exact
    triplets rounded to float32, 4.6–6.6e-8 (a new user's trial); "auto" took the dense path below
    6·ε of float32 up to 1024 wide whatever it cost: 1.85× the faster path's time over 126 cases,
    13.8× at worst (1024×1024, k = 1), since the iteration runs in a float64 copy below 4·ε and
    reaches tol too. The model now prices that copy: here it iterates, and the triplets, checked in
    float64, are within tol either way; a tall matrix at k = 32 still goes dense."""
    from riemsvd._dense import prefer_dense_to_copy

    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(600, 200, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(400, 200, generator=g, dtype=torch.float64))[0]
    s = torch.arange(1, 201, dtype=torch.float64) ** -0.5
    a = ((u * s) @ v.T + torch.randn(600, 400, generator=g, dtype=torch.float64) / 600**0.5).float()
    for method, path in (("auto", "iterative"), ("dense", "dense")):
        result = riemsvd.solve(a, 8, tol=1e-7, method=method, generator=torch.Generator().manual_seed(1))
        assert result.info.method == path and bool(result.info.converged), (method, result.info)
        assert _float32_residual(a, result) <= 1e-7, (method, _float32_residual(a, result))
    assert riemsvd.solve(a, 8, tol=1e-6).info.method == "iterative"
    assert prefer_dense_to_copy((4000, 800), 1, 32, 1e-7)  # 237 ms against 643 measured
    assert not prefer_dense_to_copy((1024, 1024), 1, 1, 1e-7)  # 13–38 against 150–179


def test_a_float32_tol_below_the_iterations_reach_stays_dense_where_no_copy_is_made():
    """Under torch.func's transforms no float64 copy is iterated, and the model's price of that copy had
    chosen an iteration that ran in float32 and stalled (a review: 400×300, k = 4, tol 1e-7, at
    2.6e-7 under vmap and grad, with a ConvergenceWarning): the dense path serves there, as it did."""
    g = torch.Generator().manual_seed(0)
    a = make_matrix("decay", 400, 300, g, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        s = torch.func.vmap(lambda x: riemsvd.solve(x, 4, tol=1e-7).S)(a[None])[0]
        grad = torch.func.grad(lambda x: riemsvd.solve(x, 4, tol=1e-7).S.sum())(a)
    ref = torch.linalg.svd(a.double())
    torch.testing.assert_close(s.double(), ref.S[:4], rtol=2e-7, atol=0)
    outer = ref.U[:, :4] @ ref.Vh[:4]  # dΣσᵢ/dA = Σ uᵢvᵢᵀ
    assert float((grad.double() - outer).abs().max()) <= 1e-5


def _float32_residual(a: torch.Tensor, result) -> float:
    """The relative residual of a float32 result's triplets as returned (float64 products), ‖A‖₂ by
    scipy's SVD (see below)."""
    a64 = a.detach().double()
    s1 = torch.tensor([scipy.linalg.norm(a64.numpy(), 2)], dtype=torch.float64)
    triplets = (x.detach() for x in (result.U, result.S, result.V))
    return float(true_residuals(a64, *triplets, s1=s1).max())


def test_a_float32_tol_below_the_iterations_reach_iterates_a_float64_copy():
    """Where the iteration runs (beyond the dense rule's sizes as it was, or with method="iterative")
    a float32 A at tol 1e-7 was iterated
    in float32, stalled at 2.2–5.3e-7 and warned (60 of 90 solves of 1500×1100 matrices, five classes,
    k = 1 and 4, tol 1e-7 and 2e-7; 4000×2000 at 3.4–5.3e-7). It is iterated in a float64 copy now:
    float32 triplets whose own residual, checked here in float64, is within tol, σ within it of the
    float64 SVD's, no warning, the gradient float32 and σ₁'s u₁v₁ᵀ; tol as a one-element tensor or a
    numpy float32 the same. Where the cast's own rounding is above tol, not converged, "stalled", the
    warning quoting tol at the user's line."""
    g = torch.Generator().manual_seed(0)
    a = make_matrix("decay", 1100, 1030, g, dtype=torch.float32).requires_grad_()
    # scipy's LAPACK: torch's CPU build took 9 s for this SVD on an AMD CPU, scipy's 0.13
    s_ref = torch.from_numpy(scipy.linalg.svdvals(a.detach().double().numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = riemsvd.solve(a, 2, tol=1e-7)
        again = riemsvd.solve(a.detach(), 2, tol=torch.tensor(1e-7))
        once_more = riemsvd.solve(a.detach(), 2, tol=np.float32(1e-7))
    assert result.S.dtype == result.U.dtype == torch.float32 and bool(result.info.converged), result.info
    assert result.info.method == "iterative" and result.info.tol == 1e-7  # the model's choice here
    assert _float32_residual(a, result) <= float(result.info.residual) <= 1e-7, result.info
    for other in (again, once_more):  # tol as a tensor, and as numpy's float32 (not a float)
        assert bool(other.info.converged) and _float32_residual(a, other) <= 1e-7
    off = (result.S.detach().double() - s_ref[:2]).abs()
    assert float(off.max()) <= 1e-7 * float(s_ref[0]) and bool((result.info.errors >= off).all())
    (grad,) = torch.autograd.grad(result.S[0], a)
    outer = torch.outer(result.U[:, 0], result.V[:, 0]).detach().double()
    assert grad.dtype == torch.float32 and float((grad.double() - outer).abs().max()) <= 1e-6
    # where the cast alone leaves them above tol
    c = make_matrix("gaussian", 300, 200, g, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = riemsvd.solve(c, 2, tol=1e-9, method="iterative")
    assert not bool(result.info.converged) and result.info.stop_reason == "stalled", result.info
    assert result.info.tol == 1e-9 and float(result.info.residual) >= _float32_residual(c, result)
    assert [w.filename for w in caught] == [__file__], [str(w.message) for w in caught]
    assert "tol = 1e-09" in str(caught[0].message)


def test_a_float32_tol_below_half_its_epsilon_is_met_where_the_float64_copy_meets_it(gen, monkeypatch):
    """tol 5e-8, below float32's ε/2 (6e-8), had kept the float32 iteration, which stalled 12× above
    what the float64 copy reached (a new user's trial: a 4000×2000 Gaussian, k = 20, stalled at 5.4e-7
    where tol 6e-8 went to the copy and came to 4.5e-8). The copy serves every tol below 4·ε now, to
    tol/4 but no less than a quarter of the least residual float32 triplets were measured to reach.
    And the dense path, whose float32 triplets from the float64 Gram matrix are the exact ones
    rounded, no longer redoes them by a float64 SVD where tol lies below that least residual: 1.5 s
    more for the same residual (3000×1000, k = 5, tol 1e-8: 3.59e-8 either way)."""
    import riemsvd._dense as dense

    a = make_matrix("gaussian", 300, 200, gen, torch.float32)
    result = riemsvd.solve(a, 2, tol=5e-8, method="iterative")
    assert bool(result.info.converged) and result.info.stop_reason == "converged", result.info
    assert _float32_residual(a, result) <= float(result.info.residual) <= 5e-8, result.info
    calls: list[int] = []
    svd = dense._svd_triplets
    monkeypatch.setattr(dense, "_svd_triplets", lambda a, k: calls.append(k) or svd(a, k))
    with pytest.warns(riemsvd.ConvergenceWarning, match="tol = 1e-08"):
        result = riemsvd.solve(a, 2, tol=1e-8, method="dense")
    assert calls == [] and not bool(result.info.converged), (calls, result.info)
    assert max(_float32_residual(a, result), float(result.info.residual)) <= 2e-7, result.info


def test_a_narrow_matrix_at_a_loose_tol_is_solved_dense_and_exactly():
    """σ₂ = (1 − 3e-4)·σ₁ of a 10×2 float32 A at tol 1e-4: the model, its products scaled down for the
    loose tol, took the iteration, whose one-column start returned σ₂ as ‖A‖₂, converged, on 20 of
    200 seeds (a new user's trial). At most 32 wide, one matrix goes dense, whatever tol asks; a
    batch and a wider matrix still take the model."""
    rng = np.random.default_rng(19)
    q1, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    q2, _ = np.linalg.qr(rng.standard_normal((2, 2)))
    a = torch.from_numpy(((q1[:, :2] * np.array([1.0, 1 - 3e-4])) @ q2.T).astype(np.float32))
    for seed in range(40):
        result = riemsvd.solve(a, 1, tol=1e-4, generator=torch.Generator().manual_seed(seed))
        assert result.info.method == "dense" and abs(float(result.S[0]) - 1.0) <= 1e-6, seed
    assert prefer_dense((4000, 24), 1, 1, torch.float64, "cpu", 1e-4)
    assert not prefer_dense((4000, 24), 2, 1, torch.float64, "cpu", 1e-4)  # a batch: the model
    assert not prefer_dense((2000, 64), 1, 1, torch.float64, "cpu", 1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cost_model_crossovers(dtype):
    tol = 1e-6 if dtype == torch.float32 else 1e-12

    def dense(m, n, k, batch=1, device="cpu", tol=tol):
        return prefer_dense((m, n), batch, k, dtype, device, tol)

    assert dense(32, 32, 1) and dense(64, 64, 4)  # small: the iteration's overhead dominates
    assert not dense(2000, 1000, 1) and not dense(4096, 1024, 8)  # few triplets of large matrices
    assert dense(1536, 384, 128) and dense(384, 1536, 128)  # k a third of min(m, n)
    # where the loop's cost a product fell from 30 µs to 12 and the model had not followed: float32
    # 1024×512 at k = 32 took 22–25 ms dense against 8–24 by the iteration (Gaussian, σᵢ = 1/i,
    # rank 10 plus noise, i^−1.5; a new user's trial and the held-out cases of docs/algorithm.md, "The
    # refit of 2026-12-05"). In float64, since the Gram matrix serves the dense path (2026-12-07),
    # 512×256 at k = 16 took 10.4–11.0 ms dense against 3.2–19.4 (Gaussian 19.4), and 1024×1024 at
    # k = 8 135–167 against 17–58 by the iteration (σᵢ = 1/i, Gaussian)
    assert not dense(1024, 512, 32) if dtype == torch.float32 else not dense(1024, 1024, 8)
    # on an H200 (docs/records/bench_gpu_2026-12-04_h200_dense_vs_iterative.csv): a GaLore projector's k = 32
    # and 128 of 1536×384 took 264 and 624 ms by the iteration, 6 and 5 by the dense path (float32)
    assert dense(1536, 384, 32, device="cuda") and dense(1536, 384, 128, device="cuda")
    # 4000×2000, k = 16: dense 28 ms against 140 in float32, 336 against 60 in float64
    assert dense(4000, 2000, 16, device="cuda") == (dtype == torch.float32)
    assert not dense(4000, 2000, 1, device="cuda") and not dense(4000, 2000, 4, device="cuda")
    # batches: (8, 384, 384) float64 at k = 1 took 29 ms by the iteration, 152 dense; at k = 32 in
    # float32 427 ms against 29
    if dtype == torch.float64:
        assert not dense(384, 384, 1, batch=8, device="cuda")
    else:
        assert dense(384, 384, 32, batch=8, device="cuda")
        # a batch's dense path costs less than its matrices' alone (8 of 384×384, k = 4: 30 ms against
        # 42 by the iteration), and its iteration more than one matrix's (16 of 128×128: 27 against 65)
        assert dense(384, 384, 4, batch=8, device="cuda") and dense(128, 128, 4, batch=16, device="cuda")
        # more digits, more of the iteration's products: 2000×1000 at k = 1
        assert not dense(2000, 1000, 1, device="cuda", tol=1e-6)
        assert dense(2000, 1000, 1, device="cuda", tol=1e-7)
    # beyond the range measured (sides to 4096, batches to 64, 2²³ entries) the iteration, as before:
    # the dense path's float64 copy of a 10⁷×512 float32 A would take 41 GB
    assert not dense(10_000_000, 512, 1, device="cuda") and not dense(2_000_000, 2000, 8, device="cuda")
    assert not dense(128, 128, 1, batch=256, device="cuda")
    assert not dense(1536, 384, 128, batch=100, device="cuda")
    # batches of more than 64 (docs/records/bench_gpu_2026-12-04_h200_large_batches_cholesky.csv): float32
    # at k ≥ 4 dense up to p = 256 ((256, 128, 128), k = 4: 417 ms against 619 by the iteration);
    # k = 1, float64 and wider matrices iterate (float64 there: 816 against 954; (96, 384, 384)
    # float32, k = 8: 284 against 320); beyond 2²⁴ entries, as before
    assert dense(128, 128, 4, batch=256, device="cuda") == (dtype == torch.float32)
    assert dense(256, 128, 8, batch=128, device="cuda") == (dtype == torch.float32)
    assert not dense(384, 384, 8, batch=96, device="cuda") and not dense(
        256, 256, 8, batch=512, device="cuda"
    )
    # a dense problem 32 wide at most, any batch: cuSOLVER's batched Jacobi (256 of 32×32: 2.4–3.6 ms
    # against 73–98 by the iteration); float64's SVD reads both sides, so not (64, 128, 32) there
    # (75 ms against 34; docs/records/bench_gpu_2026-12-04_h200_small_batches_jacobi.csv)
    assert dense(32, 32, 1, batch=2, device="cuda") and dense(32, 32, 1, batch=256, device="cuda")
    assert dense(128, 32, 1, batch=64, device="cuda") == (dtype == torch.float32)
    assert not dense(10**6, 32, 1, batch=64, device="cuda")  # its float64 copy: 16 GB
    assert not dense(1536, 384, 128, device="mps")  # not measured there: the iteration
    # more triplets or a tighter tol favour the dense path, never the reverse
    for device in ("cpu", "cuda"):
        for m, n in [(256, 256), (1536, 384), (2048, 512), (4096, 1024), (4000, 2000)]:
            ks = [k for k in range(1, min(m, n) + 1) if dense(m, n, k, device=device)]
            assert ks == list(range(ks[0], min(m, n) + 1)) if ks else True
            for k in (1, 8, 32, 128):
                assert dense(m, n, k, device=device, tol=tol * 1e3) <= dense(m, n, k, device=device)


def test_bad_method_raises_value_error_naming_it(gen):
    a = make_matrix("decay", 10, 8, gen)
    with pytest.raises(ValueError, match="`method`.*'auto', 'iterative', 'dense'.*'svd'"):
        riemsvd.solve(a, 1, method="svd")
    with pytest.raises(ValueError, match="method='dense'.*dense torch.Tensor.*csr_matrix"):
        riemsvd.solve(sp.csr_matrix(a.numpy()), 1, method="dense")
    with pytest.raises(ValueError, match="method='dense'.*layout torch.sparse_coo"):
        riemsvd.solve(a.to_sparse(), 1, method="dense")
    assert riemsvd.solve(a.to_sparse(), 1).info.method == "iterative"  # auto: the one that applies


def test_the_cost_model_takes_the_faster_path_for_batches_of_small_matrices():
    """The batched iteration's own work per product grows with the batch, which the model's fits on
    single matrices missed: it took the iteration for (64, 64, 64) at k = 2 (float32: 47.8 ms against
    the dense path's 23.7; a new user's trial). The choices measured on the 2-core machine
    (2026-12-05, the code of the refit in docs/algorithm.md, best of 3; either way by more than 10%,
    the closer ones left out): a batch term too large sends the (256, 128, 128) batch, whose
    iteration is faster, to the dense path, one too small keeps (8, 256, 128) at k = 2 in float32
    on the iteration, 1.36× the dense path's time. The float64 column was measured again
    (2026-12-07, AMD EPYC, best of 3) once the Gram matrix served the float64 dense path, 2–4× faster
    than the SVD before."""
    from riemsvd._tolerance import default_tol

    dense_faster = {  # (batch, m, n, k): whether the dense path was faster, float32, float64
        (64, 64, 64, 2): (True, True),  # 15.6 ms against 30.5; 26.3 against 82.0
        (64, 32, 32, 1): (True, True),
        (16, 128, 96, 2): (True, True),  # float64: 21.1 against 71.9
        (16, 200, 100, 4): (True, True),
        (8, 512, 256, 1): (False, False),
        (8, 512, 512, 2): (False, False),
        (4, 1024, 512, 2): (False, False),
        (16, 384, 384, 1): (False, False),
        (4, 384, 384, 8): (False, False),
        (256, 128, 128, 1): (False, True),  # README's batch: 133 against 278 ms (float32); 695 against 889
        (8, 256, 128, 2): (True, True),  # 8.9 against 12.2; 24.3 against 47.4
        (4, 100, 60, 3): (True, True),
        (32, 64, 64, 4): (True, True),
        (8, 128, 128, 8): (True, True),
    }
    for (batch, m, n, k), faster in dense_faster.items():
        for dtype, dense in zip((torch.float32, torch.float64), faster):
            tol = default_tol(dtype, m, n)
            if dense is not None:
                assert prefer_dense((m, n), batch, k, dtype, "cpu", tol) == dense, (dtype, batch, m, n, k)


def test_a_matrix_beyond_the_last_level_cache_prices_the_iteration_higher(monkeypatch):
    """Above the 32 MiB L3 of the machine of the fit the iteration's products cost 1.5–3.7× per entry
    what the fit's shapes (within it) said, and the model took the iteration where the dense path was
    up to 3.1× faster (float64 10000×784, k = 32: 0.87 s against 2.70; docs/algorithm.md; on the code
    of the refit 0.75 s against 1.51). The factor is 1 up to half the cache, 3 from its size on
    (remeasured with the refit), and does not fall in between."""
    import riemsvd._dense as dense

    assert dense._last_level_cache() > 0
    dense._last_level_cache.cache_clear()
    monkeypatch.setattr(dense.glob, "glob", lambda pattern: [])  # no sysfs: 32 MiB
    assert dense._last_level_cache() == 32 << 20
    dense._last_level_cache.cache_clear()
    monkeypatch.setattr(dense, "_last_level_cache", lambda: 32 << 20)
    factors = [dense._memory_factor(1 << s) for s in range(20, 31)]
    assert factors == sorted(factors) and factors[4] == 1.0 and factors[5] == 3.0 and factors[-1] == 3.0
    # k = 8 (since the Gram matrix serves the float64 dense path: 0.36 s dense against 0.97 by the
    # iteration, Gaussian; k = 64 0.55 against 3.0)
    assert prefer_dense((10000, 784), 1, 8, torch.float64, "cpu", 1e-12)
    monkeypatch.setattr(dense, "_last_level_cache", lambda: 1 << 40)  # a cache that holds it: the fit alone
    assert not prefer_dense((10000, 784), 1, 8, torch.float64, "cpu", 1e-12)
