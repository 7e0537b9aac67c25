"""A tight certified upper bound on ‖A‖₂ for a dense A: μ ≥ λ_max(AᵀA) proven by a Cholesky factorization.

μI − AᵀA is positive semidefinite exactly when μ ≥ ‖A‖₂². A floating-point Cholesky factorization of
μI − fl(AᵀA) that runs to completion proves it, once the rounding of the Gram matrix and of the
factorization are bounded (docs/bounds.md, "The Gram–Cholesky certificate"). The work is LAPACK and
BLAS on the host — the Gram matrix in numpy's BLAS, potrf, trsv and symv in scipy's — run under the
thread limits of the solve before it (riemsvd._backend.solver_threads): 2000×1000, 64 ms against 84
with both BLAS pools on 2 threads, whose threads spin beside each other on 2 cores. torch's Cholesky
took 2× scipy's at N = 1000 and 6× at N = 384.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg.blas import dsymv, dtrsv
from scipy.linalg.lapack import dpotrf, dsyevr

from riemsvd._space import blas_for
from riemsvd._tolerance import TINY as _TINY
from riemsvd._tolerance import UNIT_ROUNDOFF as _U
from riemsvd._tolerance import gamma

__all__ = [
    "Gram",
    "batch_norm_bounds",
    "ldexp",
    "ldexp_outward",
    "certify",
    "cholesky_excess",
    "gram_cholesky_upper",
    "gram_first_upper",
]

# μ = σ̂²(1 + δ): δ is this many times the largest rounding term relative to σ̂² (N·γ_N for an N×N
# Gram matrix), so that the factorization of a matrix whose smallest eigenvalue is δ·σ̂² succeeds
# (Higham, Accuracy and Stability, Theorem 10.7: it does once λ_min exceeds N·γ_{N+1} relative to
# the diagonal); each failed attempt multiplies δ by _GROW, up to _MAX_DELTA.
_HEADROOM = 32.0
_GROW = 10.0
_MAX_DELTA = 10.0  # the last attempt: σ̂ may be as low as ‖a‖₂/√11 (a solve that found σ₂ of a pair)
_MIN_DELTA = 1e-12
# Refinement: rounds of a certificate at the current estimate, then shift-invert Lanczos with its
# factor (_shift_invert_ritz), the next certificate at the new estimate plus twice its residual
# (Weyl). A round stops early where a step gains less than _SLOW_RATE after _SLOW_AFTER steps: a new
# factorization, nearer σ₁², costs about 10 steps at N = 384 and converges faster.
_ROUNDS = 5
_INVERSE_STEPS = 24
_SLOW_AFTER, _SLOW_RATE = 4, 0.5
# Lanczos on the Gram matrix (gram_first_upper): at most _LANCZOS_STEPS steps, or until this relative
# residual; what is left is the refinement's (shift-invert Lanczos from a certified shift), which
# converges fast where plain Lanczos on a flat spectrum would need ~N steps. Sums of the medians of 6
# classes (weight, gaussian, flat, cluster, decay, rankdef; 15 interleaved calls each): 36.2 ms with
# 24 steps at 384×384 against 38.5 (32 steps), 38.3 (16) and 41.7 (48); 73.4 ms at 1536×384
# against 73.0, 73.8 and 75.8
_LANCZOS_TOL, _LANCZOS_STEPS = 1e-9, 24
_RITZ_BLOCK = 8  # Ritz vectors kept for the subspace bound, as the k of a dense A's solve (_bounds)


def _chol_gamma(size: int) -> float:
    """γ_{N+3}/(1 − γ_{N+3}): the Cholesky factorization's error relative to tr(X) (+2 in the index
    for a triangular solve that multiplies by a computed reciprocal instead of dividing)."""
    g = gamma(size + 3)
    return g / (1 - g)


def cholesky_excess(size: int) -> float:
    """upper/σ̂ − 1 of a first-attempt certificate for N = ``size``: δ/2 and the rounding terms."""
    return (0.5 * _HEADROOM + 2) * size * _chol_gamma(size)


def ldexp(x: torch.Tensor, e) -> torch.Tensor:
    """x·2^e (e an int or an integer tensor that broadcasts), in two steps where 2^e alone is out of
    float64's range: exact but where the result is subnormal (or overflows)."""
    e = torch.as_tensor(e)
    half = torch.div(e, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half), e - half)


def ldexp_outward(x: torch.Tensor, e, up: bool) -> torch.Tensor:
    """x·2^e rounded outward: never below the exact value if ``up``, never above it otherwise. A bound
    scaled back from the units it was computed in is exact unless it lands among the subnormal
    numbers, where rounding to nearest put upper bounds below ‖A‖₂ and lower bounds above it (a
    review: entries near 1e-318, 94 and 106 of 200 matrices). Scaling the result back is exact, so
    it shows the direction of the rounding, which one step towards ±inf undoes."""
    y = ldexp(x, e)
    back = ldexp(y, -torch.as_tensor(e))
    wrong = back < x if up else back > x
    return torch.where(wrong, torch.nextafter(y, torch.full_like(y, math.inf if up else -math.inf)), y)


def _gram_error(trace, big: int, size: int):
    """A bound on ‖G − aᵀa‖₂ for G = fl(aᵀa), a (M, N), M = ``big`` ≥ N = ``size``, from G's computed
    trace (a float or an array of them): each entry of G is a dot product of M terms, within
    γ_M·(|a|ᵀ|a|)_ij of the exact one (Higham 3.5, any summation order), and ‖|a|ᵀ|a|‖₂ ≤ ‖a‖_F²;
    each diagonal entry is a sum of M squares (relative error γ_M), then N of them summed (γ_N), both
    from below, and a square that underflows loses at most _TINY."""
    fro2 = trace * (1 + 2 * (gamma(big) + gamma(size))) + big * size * _TINY
    return gamma(big) * fro2 + big * size * _TINY


def _certified(mu, size: int, diag, gram_error):
    """ν ≥ λ_max(aᵀa) from a Cholesky factorization of X = fl(μI − G) that ran to completion, X's
    diagonal ``diag`` (..., N) and ``gram_error`` ≥ ‖G − aᵀa‖₂ (floats or arrays): see :func:`certify`."""
    trace = np.sum(diag, axis=-1) * (1 + 2 * gamma(size))
    rounding = 2 * _U * np.max(np.abs(diag), axis=-1)  # fl(μ − G_ii): one rounding each
    underflow = (2 * size + 3) * size * _TINY
    return (mu + _chol_gamma(size) * trace + rounding + gram_error + underflow) * (1 + 8 * _U)


class Gram:
    """G = fl(aᵀa) of the smaller side of one matrix ``a`` (m, n), float64 on the host.

    ``upper`` (N, N), N = min(m, n), Fortran order: G (potrf and symv read its upper triangle);
    ``error`` ≥ ‖G − aᵀa‖₂ (or of a aᵀ): each entry is a dot product of M = max(m, n) terms,
    within γ_M·(|a|ᵀ|a|)_ij of the exact one (Higham 3.5, any summation order), and ‖|a|ᵀ|a|‖₂ ≤
    ‖a‖_F², itself bounded from the computed diagonal. BLAS's syrk: half the flops of a product
    (2000×1000: 21 ms against 35 for torch's aᵀa on 2 threads)."""

    def __init__(self, a: torch.Tensor) -> None:
        m, n = a.shape
        big, self.size = max(m, n), min(m, n)
        host = a.detach().to("cpu", torch.float64).numpy()
        tall = host if n <= m else host.T
        # numpy computes tallᵀ·tall with syrk (it sees one operand transposed), in its own BLAS, the one
        # the solve's products just ran in: scipy's syrk after them took 48–72 ms against 21 alone
        # (2000×1000), both pools spinning on 2 cores
        self.upper = (tall.T @ tall).T  # symmetric: the transpose is the Fortran-ordered same matrix
        self.error = float(_gram_error(np.trace(self.upper), big, self.size))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """G x (estimates only: the certificate never uses it)."""
        return dsymv(1.0, self.upper, x, lower=0)


def certify(gram: Gram, mu: float) -> tuple[float, np.ndarray | None]:
    """(ν, factor): ν ≥ λ_max(aᵀa) where a floating-point Cholesky factorization of μI − G succeeds,
    with its factor; (inf, None) where it fails.

    X = fl(μI − G) differs from μI − G only on its diagonal, by at most u·|X_ii| each. A factorization
    of X that runs to completion gives R̂ᵀR̂ = X + ΔX with |ΔX| ≤ γ_{N+1}|R̂ᵀ||R̂| (Higham, Theorem
    10.3; the analysis needs no definiteness, only completion), and tr(|R̂ᵀ||R̂|) = ‖R̂‖_F² = tr(X + ΔX)
    gives ‖ΔX‖₂ ≤ γ/(1 − γ)·tr(X). As R̂ᵀR̂ ⪰ 0: μI − aᵀa ⪰ −(‖ΔX‖₂ + u·max|X_ii| + ‖G − aᵀa‖₂)·I.
    """
    if not mu > 0:
        return math.inf, None
    size = gram.size
    x = -gram.upper
    diag = np.diag_indices(size)
    x[diag] += mu
    xd = x[diag]
    factor, info = dpotrf(x, lower=0, clean=0, overwrite_a=1)
    if info != 0:  # the factorization did not run to completion
        return math.inf, None
    return float(_certified(mu, size, xd, gram.error)), factor


# batch_norm_bounds: the matrices of a batch whose largest eigenvalue is found before the first
# certificate, as ranked by a few power steps
_CANDIDATES = 8
_POWER_STEPS = 4


def batch_norm_bounds(a: torch.Tensor) -> tuple[float, float]:
    """(lower, upper) on max_b ‖a_b‖₂ over a batch ``a`` (B, m, n) of float64 matrices on the CPU,
    each held exactly: the Gram–Cholesky certificate at one μ for all of them.

    G_b = fl(a_bᵀa_b) of the smaller side (order N). λ̂, the largest eigenvalue LAPACK finds among
    the G_b that a few power steps rank highest, sets μ = λ̂(1 + δ) with δ as
    :func:`gram_cholesky_upper`'s; a Cholesky factorization of μI − G_b that runs to completion
    proves μ-plus-rounding ≥ ‖a_b‖₂² (:func:`certify`), and the bound is the largest of these. Where
    some fail, the largest eigenvalue among them becomes λ̂ where it is larger, else δ grows tenfold
    (up to 10), and those alone are factorized again. The factorizations of a batch are one call
    (LAPACK's potrf for each matrix): many small matrices — a convolution's frequencies — cost one
    call, not one each. ``lower``: λ̂ less the eigensolver's error (backward stable, within
    γ_{16N}·λ̂, the margin the bounds take for LAPACK's SVD) and the Gram matrix's rounding (Weyl).
    """
    tall = a if a.shape[-1] <= a.shape[-2] else a.mT
    big, size = tall.shape[-2:]
    g = tall.mT @ tall
    if not bool(torch.isfinite(g).all()):  # an overflow: no certificate from these
        return 0.0, math.inf
    errors = _gram_error(g.diagonal(dim1=-2, dim2=-1).sum(-1).numpy(), big, size)
    # eigenvalues only where they may be the largest: 64 channels on 32×32, 544 matrices of order
    # 128, took 0.28 s in eigvalsh against 0.07 s for all their factorizations
    estimate = _power_estimates(g)
    lam, top = _largest(g, torch.topk(estimate, min(_CANDIDATES, len(estimate))).indices)
    nu = np.zeros(len(g))
    pending, delta = torch.arange(len(g)), None
    while pending.numel():
        s2 = max(lam, _TINY)
        delta = _first_delta(size, float(errors.max()), s2) if delta is None else delta
        mu = s2 * (1 + delta)
        x = -g[pending]
        x.diagonal(dim1=-2, dim2=-1).add_(mu)  # fl(μ − G_ii), the off-diagonal entries exact
        diag = x.diagonal(dim1=-2, dim2=-1).numpy().copy()
        _, info = torch.linalg.cholesky_ex(x)
        held = (info == 0).numpy()
        # each matrix keeps the bound its own factorization proved; only the others are tried again
        proved = pending.numpy()[held]
        nu[proved] = _certified(mu, size, diag[held], errors[proved])
        pending = pending[~held]
        if not pending.numel():
            break
        found, where = _largest(g, pending)
        if found > lam:
            lam, top, delta = found, where, None
        elif not delta < _MAX_DELTA:
            nu[:] = math.inf
            break
        else:
            delta = min(delta * _GROW, _MAX_DELTA)
    lower = math.sqrt(max(lam * (1 - gamma(16 * size)) - float(errors[top]), 0.0)) * (1 - 2 * _U)
    return lower, math.sqrt(float(nu.max())) * (1 + 2 * _U)


def _power_estimates(g: torch.Tensor) -> torch.Tensor:
    """‖G_b x‖ for a unit x after a few power steps from a fixed random start, for each b (B,):
    estimates of λ_max(G_b) from below, to rank the matrices."""
    x = torch.randn(g.shape[:-1] + (1,), dtype=g.dtype, generator=torch.Generator().manual_seed(0))
    for _ in range(_POWER_STEPS):
        x = g @ (x / torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(_TINY))
    return torch.linalg.vector_norm(x, dim=(-2, -1))


def _largest(g: torch.Tensor, which: torch.Tensor) -> tuple[float, int]:
    """(the largest eigenvalue LAPACK finds among the G_b for b in ``which``, that b)."""
    values = torch.linalg.eigvalsh(g[which])[..., -1]
    i = int(values.argmax())
    return float(values[i]), int(which[i])


def gram_cholesky_upper(
    a: torch.Tensor, sigma: torch.Tensor, vector: torch.Tensor | None = None, uncertainty=None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(upper, vector): a guaranteed upper bound on ‖a‖₂ per matrix, shape (...), float64 on the CPU
    (inf where the certificate could not be made), and the singular vector on the smaller side as
    refined (``vector`` itself where it was not; None without one).

    ``a`` (..., m, n): the matrix itself, exactly (any scaling applied before is the caller's).
    ``sigma`` (...): an estimate of ‖a‖₂ from below or near it, a Ritz value: the bound is about
    σ̂·(1 + δ/2) with δ = 32·N·γ_{N+3} (N = min(m, n); 6e-8 at N = 4096). ``uncertainty`` (...), a
    relative amount by which ‖a‖₂ may exceed σ̂ (an unconverged solve's residual), starts the first
    attempt at δ = 2·that instead. Where a factorization fails, as it must where σ̂²(1 + δ) < ‖a‖₂²,
    δ grows tenfold per attempt (up to 10) until one holds. Where one held above the smallest δ and
    ``vector`` (..., N, 1), the estimate's singular vector on the smaller side, is given, shift-invert
    Lanczos with that factorization (whose shift is above σ₁² by at most δ·σ̂²) refines σ̂ and its
    residual, and the certificate is made again: at most five rounds.
    """
    batch = a.shape[:-2]
    sig = sigma.detach().to("cpu", torch.float64).reshape(-1)
    if vector is not None:
        vector = vector.detach().to("cpu", torch.float64).reshape((-1,) + vector.shape[-2:])
    unc = None if uncertainty is None else uncertainty.detach().to("cpu", torch.float64).reshape(-1)
    out, refined = [], []
    for i, matrix in enumerate(a.reshape((-1,) + a.shape[-2:])):
        x = None if vector is None else vector[i, :, 0].numpy().copy()
        upper, x = _one(Gram(matrix), float(sig[i]), x, None if unc is None else float(unc[i]))
        out.append(upper)
        refined.append(x)
    if vector is not None:
        vector = torch.from_numpy(np.stack(refined)).reshape(batch + vector.shape[-2:])
    return torch.tensor(out, dtype=torch.float64).reshape(batch), vector


def gram_first_upper(
    a: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(upper, vectors, values, lower) as :func:`gram_cholesky_upper`, with σ̂ and its vector from Lanczos on
    the Gram matrix itself rather than from a solve on ``a``: for a small matrix a Lanczos step on G is
    one symmetric product of N² (5 µs at N = 384) where an iteration of the solver costs two products
    and its bookkeeping (70 µs), and G is formed anyway. ``vectors`` (..., N, ≤ 8): the refined top
    vector, then the next Ritz vectors (for the subspace bound of a low-rank spectrum); ``values``
    (..., ≤ 8): the Lanczos Ritz values of G for those vectors (estimates of σᵢ², each below its σᵢ²
    by Cauchy's interlacing). ``lower``: :func:`_rayleigh_lower` at the refined vector."""
    batch = a.shape[:-2]
    size = min(a.shape[-2:])
    start = torch.randn(batch + (size,), dtype=torch.float64, generator=generator).numpy()
    out, blocks, ritz_values, lows = [], [], [], []
    for i, matrix in enumerate(a.reshape((-1,) + a.shape[-2:])):
        gram = Gram(matrix)
        lam, x, residual, block, values = _lanczos_top(gram, start.reshape(-1, size)[i])
        upper, x = _one(gram, math.sqrt(max(lam, 0.0)), x, residual / max(lam, _TINY))
        out.append(upper)
        lows.append(_rayleigh_lower(gram, x))
        blocks.append(np.column_stack([x, block[:, 1:]]))
        ritz_values.append(values)
    width = min(b.shape[1] for b in blocks)
    vectors = torch.from_numpy(np.stack([b[:, :width] for b in blocks])).reshape(batch + (size, width))
    theta = torch.from_numpy(np.stack([v[:width] for v in ritz_values])).reshape(batch + (width,))
    uppers, lowers = (torch.tensor(x, dtype=torch.float64).reshape(batch) for x in (out, lows))
    return uppers, vectors, theta, lowers


def _rayleigh_lower(gram: Gram, x: np.ndarray) -> float:
    """A lower bound on ‖a‖₂ from the Rayleigh quotient of G at x, without a product with a:
    λ₁(aᵀa) ≥ xᵀaᵀax/xᵀx ≥ xᵀGx/xᵀx − ‖G − aᵀa‖₂. The computed q̂ = fl(xᵀ fl(Gx)) is within
    γ_{2N}·|x|ᵀ|G||x| ≤ γ_{2N}·‖G‖_F·‖x‖² of xᵀGx (Higham 3.5), ŝ = fl(xᵀx) within γ_N of ‖x‖², and
    the quotient and the differences round once each."""
    size = gram.size
    x = x / max(float(np.linalg.norm(x)), _TINY)  # about unit: underflow then costs ≤ TINY per term
    q = float(x @ gram.matvec(x))
    s = float(x @ x)
    if not (q > 0 and s > 0.5):
        return 0.0
    fro = float(np.linalg.norm(gram.upper)) * (1 + gamma(size * size + 1))
    underflow = 4 * (size + 1) * _TINY
    lam = (q / s) * (1 - gamma(size)) * (1 - _U) - (gamma(2 * size) * fro + gram.error + underflow)
    return math.sqrt(max(lam * (1 - 4 * _U), 0.0)) * (1 - 2 * _U)


def _lanczos_top(gram: Gram, x: np.ndarray) -> tuple[float, np.ndarray, float, np.ndarray, np.ndarray]:
    """(λ̂, y, ‖Gy − λ̂y‖, Y, θ): the top Ritz pair of G on the Krylov space K(G, x), grown until its
    residual is below _LANCZOS_TOL·λ̂, it spans everything, or _LANCZOS_STEPS; Y (N, ≤ _RITZ_BLOCK)
    the top Ritz vectors, y first, θ their Ritz values. Looks every 4 steps."""
    y, lam, residual, block, values = _krylov_ritz(
        gram, lambda q, gq: gq, x, min(gram.size, _LANCZOS_STEPS), _LANCZOS_TOL, 4, slow=False
    )
    return lam, y, residual, block, values


def _first_delta(size: int, gram_error: float, s2: float) -> float:
    """δ of a first attempt at μ = σ̂²(1 + δ): _HEADROOM times the factorization's rounding, N·γ_N,
    plus the Gram matrix's relative to σ̂²."""
    return max(_HEADROOM * size * _chol_gamma(size) + gram_error / max(s2, _TINY), _MIN_DELTA)


def _one(gram: Gram, sigma: float, x: np.ndarray | None, uncertainty: float | None):
    s2 = sigma * sigma
    first = _first_delta(gram.size, gram.error, s2)
    delta = first if uncertainty is None else max(first, 2 * uncertainty)
    upper = math.inf
    for round_ in range(_ROUNDS):
        bound, held, factor = _ladder(gram, s2, delta)
        upper = min(upper, bound)
        if x is None or factor is None or held <= first:
            return upper, x
        x, lam, residual = _shift_invert_ritz(gram, factor, x, first)
        # Weyl: an eigenvalue of G lies within the residual of λ̂; the one the shift-invert Krylov
        # space finds first, from a shift above λ₁, is λ₁. From the second refinement on, the ladder
        # starts at the least δ instead: in a cluster the residual stays far above λ̂'s error, which
        # is quadratic in it, and five rounds had left the bound up to 1.1e-4 above ‖A‖₂ (ten values
        # 1e-8 to 1e-4 apart at the top of 1000×600 to 700×1100; a new user's trial: 5.3e-5), 9.2e-10
        # at most now, for up to nine more factorizations; where the first refinement's δ serves
        # (flat, Gaussian), as before
        s2, delta = lam, first if round_ >= 1 else max(first, 2 * residual / max(lam, _TINY))
    return upper, x


def _ladder(gram: Gram, s2: float, delta: float):
    """Certify μ = s2·(1 + δ) from δ up, tenfold per failure, to _MAX_DELTA. Returns the bound on
    ‖a‖₂ (inf where none held), the δ that held and its factor (None where none held)."""
    while True:
        lam, factor = certify(gram, s2 * (1 + delta))
        if factor is not None:
            return math.sqrt(lam) * (1 + 2 * _U), delta, factor
        if not delta < _MAX_DELTA:  # NaN too (a non-finite estimate): no certificate, not a loop
            return math.inf, delta, None
        delta = min(delta * _GROW, _MAX_DELTA)


def _shift_invert_ritz(gram: Gram, factor: np.ndarray, x: np.ndarray, target: float):
    """Shift-invert Lanczos on G: Rayleigh–Ritz on G over K((μI − G)⁻¹, x), each step one solve with
    the Cholesky factor of μI − G. Plain inverse iteration gains (μ − σ₁²)/(μ − σ₂²) a step, slow
    where the shift is far above σ₁² against a small gap; the Ritz value converges much faster there
    (two flat 186×199 spectra, fuzz case 1057 of seed 631375346: one left 1.0e-6 above ‖A‖₂ after 5
    rounds of inverse iteration, 6.6e-11 with Rayleigh–Ritz). Stops once λ̂ is within ``target``·λ̂/2
    of an eigenvalue by its residual (Weyl), after _INVERSE_STEPS steps, or where a step gained less
    than _SLOW_RATE (after _SLOW_AFTER), for a new certificate nearer σ₁². Returns (y, λ̂ = yᵀGy,
    ‖Gy − λ̂y‖), y of unit norm: estimates the certificate does not rely on."""
    y, lam, residual, _, _ = _krylov_ritz(
        gram, lambda q, gq: _cholesky_solve(factor, q), x, _INVERSE_STEPS, target / 2, 1, slow=True
    )
    return y, lam, residual


def _cholesky_solve(factor: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(RᵀR)⁻¹q for potrf's upper factor R: two triangular solves. LAPACK's potrs does the same
    through trsm, whose one-column case took 2.8–3.8× as long (N = 384: 52 µs against 19; N = 2048:
    1.9 ms against 0.5)."""
    return dtrsv(factor, dtrsv(factor, q, trans=1), trans=0)


def _krylov_ritz(gram: Gram, apply, x: np.ndarray, steps: int, tol: float, every: int, slow: bool):
    """Rayleigh–Ritz on G over the Krylov space of ``apply`` from x: q₀ = x/‖x‖, then each new vector
    ``apply(q, Gq)`` of the last, orthonormalized against the others (Gram–Schmidt twice: the Krylov
    vectors align fast). Every ``every`` steps the top Ritz pair (λ̂, y) of G on the space and its
    residual ‖Gy − λ̂y‖; stops at a residual ≤ ``tol``·λ̂, an invariant space, ``steps`` steps, or
    (``slow``, after _SLOW_AFTER steps) a step that gained less than _SLOW_RATE. Returns (y, λ̂,
    residual, Y, θ): Y (N, ≤ _RITZ_BLOCK) the top Ritz vectors, y first, and θ their Ritz values.
    Estimates only: the certificate does not rely on them.

    The vectors are level-2 BLAS calls on Fortran-ordered bases, on the certificate's one scipy
    thread, and Y is formed once, after the last look: a step took 45 µs through numpy's operators
    (N = 384)."""
    gemv, _, nrm2, scal, _ = blas_for(np.float64)
    steps = min(steps, x.shape[0] - 1)  # the space cannot exceed N vectors
    basis = np.empty((x.shape[0], steps + 1), order="F")
    images = np.empty((x.shape[0], steps + 1), order="F")  # G times each basis vector
    projected = np.empty((steps + 1, steps + 1))  # basisᵀ G basis, a column per step
    y = basis[:, 0] = x / max(float(nrm2(x)), _TINY)
    gy = images[:, 0] = gram.matvec(y)
    lam = projected[0, 0] = float(y @ gy)
    residual = previous = float(nrm2(gy - lam * y))
    width = 1
    for step in range(1, steps + 1):
        z = apply(basis[:, step - 1], images[:, step - 1])
        z = z / max(float(np.abs(z).max()), _TINY)  # first to O(1): (μI − G)⁻¹ can reach 1/ε
        before = float(nrm2(z))
        known = basis[:, :step]
        for _ in range(2):
            z = gemv(-1.0, known, gemv(1.0, known, z, trans=1), beta=1.0, y=z, overwrite_y=1)
        norm = float(nrm2(z))
        invariant = not norm > 1e-10 * before  # nothing new but rounding: the space is invariant
        if not invariant:
            basis[:, step] = scal(1.0 / norm, z)
            images[:, step] = gram.matvec(basis[:, step])
            projected[: step + 1, step] = projected[step, : step + 1] = gemv(
                1.0, basis[:, : step + 1], images[:, step], trans=1
            )
        if step % every and step < steps and not invariant:
            continue
        width = step if invariant else step + 1
        theta, w = _top_eigenpairs(projected[:width, :width], 1)
        y = gemv(1.0, basis[:, :width], w[:, 0])
        gy = gemv(1.0, images[:, :width], w[:, 0])
        lam = float(theta[0])
        residual = float(nrm2(gy - lam * y))
        if (
            invariant
            or residual <= tol * lam
            or (slow and step >= _SLOW_AFTER and residual > _SLOW_RATE * previous)
        ):
            break
        previous = residual
    theta, w = _top_eigenpairs(projected[:width, :width], min(width, _RITZ_BLOCK))
    block = np.column_stack([y, basis[:, :width] @ w[:, 1:]])
    return y, lam, residual, block, theta


def _top_eigenpairs(a: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` largest eigenvalues of the symmetric ``a`` (p, p), descending, and their
    eigenvectors: LAPACK's MRRR for those alone (p = 25: 17 µs for the top one, where all of them
    by numpy's eigh took 67), torch's eigh (divide and conquer, on torch's threads) for more than
    p/5 of them or where MRRR fails. Only the upper triangle of ``a`` is read (the dense path forms
    no more of its Gram matrix).

    MRRR's vectors cost more than all of divide and conquer's from about p/5 on (one thread: 1.11×
    at p = 128, k = 24; 1.01× at 256, 48; 1.03× at 384, 80; 1.00× at 768, 192; 0.86× at 1024, 256),
    and at p = 384 the top 128 took 22.9 ms against 13.5 for all 384 (11.4 by torch's eigh on 2
    threads): a GaLore projector of a 1536×384 float32 gradient, k = 128, took 1.17 times
    torch.linalg.svd's time."""
    p = a.shape[0]
    if 5 * count <= p:
        values, vectors, found, _, info = dsyevr(a, range="I", il=p - count + 1, iu=p)
        if info == 0 and found == count:  # ascending, the first ``count`` of them
            return values[:count][::-1], vectors[:, :count][:, ::-1]
    whole = torch.linalg.eigh(torch.from_numpy(a), UPLO="U")  # all of them, ascending
    values, vectors = whole.eigenvalues.numpy(), whole.eigenvectors.numpy()
    return values[::-1][:count], vectors[:, ::-1][:, :count]
