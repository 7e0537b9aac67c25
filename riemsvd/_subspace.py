"""The subspace-accelerated Riemannian Newton solver for the leading k singular triplets.

Search bases 𝒰, 𝒱 and their images A𝒱, Aᵀ𝒰 are kept together, so Rayleigh–Ritz on H = 𝒰ᵀ A 𝒱 and
every Ritz residual cost no pass over A; corrections come from the Newton (Jacobi–Davidson) equation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from riemsvd._backend import mm
from riemsvd._newton import NewtonOperator, tcg
from riemsvd._operator import Operator
from riemsvd._space import Space
from riemsvd._tolerance import eps

__all__ = ["SolverOptions", "subspace_svd"]

_NON_FINITE = "the operator returned NaN or Inf during the iteration; check `A` (or its matvec)."


@dataclass(frozen=True)
class SolverOptions:
    """Knobs of the subspace solver; the defaults come from measurements (docs/benchmarks.md)."""

    block: int | None = None  # Ritz triplets corrected per iteration (b ≥ k)
    max_basis: int | None = None  # columns of each search basis before a thick restart
    inner_steps: int = 0  # tCG steps on the Newton equation per correction (0: the residual)
    keep_previous: bool = True  # keep the previous step's Ritz vectors at a restart (GD+k)
    patience: int = 60  # iterations without progress before giving up
    # Golub–Kahan expansions at most between two Rayleigh–Ritz steps. They save the Python cost of
    # an iteration but overshoot the stop: 2000×1000 Gaussian, k = 1, 8 gave 93 against 154 ms and
    # 172 against 148 products; a warm start after a 1e-3 change took 130 against 82 products.
    max_lanczos: int = 0


@dataclass
class Basis:
    """Orthonormal bases U (..., m, pu), V (..., n, pv), images AV, ATU and H = Uᵀ A V."""

    u: torch.Tensor
    v: torch.Tensor
    av: torch.Tensor
    atu: torch.Tensor
    h: torch.Tensor
    last_u: int = 0  # columns the last expansion added to U


@dataclass
class Ritz:
    """H = Y diag(s) Zᵀ, and the top t Ritz triplets with their residuals; res has shape (..., t)."""

    y: torch.Tensor
    s: torch.Tensor
    z: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    ru: torch.Tensor
    rv: torch.Tensor
    res: torch.Tensor


@dataclass
class Outcome:
    """What the solver returns: sorted triplets and their true residuals.

    ``errors`` (..., k): sqrt((‖A vᵢ − σᵢuᵢ‖² + ‖Aᵀuᵢ − σᵢvᵢ‖²)/2) per triplet in the operator's units,
    a distance from σᵢ within which A has a singular value; residual·σ₁ where only the largest
    residual is known (a solve that never restarted)."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    iterations: int
    history: list = field(default_factory=list)
    errors: torch.Tensor | None = None


def _bmask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a batch mask (...,) against a tensor (..., a, b)."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - mask.dim()))


def orthonormalize(
    x: torch.Tensor,
    basis: torch.Tensor | None,
    generator: torch.Generator | None,
    space: Space | None = None,
    first: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Orthonormal columns spanning x's component outside span(basis), shape of x.

    Block classical Gram–Schmidt with a second pass after normalization (so that a column with little
    new content does not bring back the basis it was cleaned of), each pass followed by QR. A column
    that the basis or the previous columns already span is replaced by a random direction, so the
    shape stays fixed over a batch and the search space always grows. ``space`` holds the vectors
    (whole in this process when None); ``first`` is ``space.gram(basis, x)`` when the caller has it.
    """
    space = space if space is not None else Space(x.shape[-2])
    tiny = 4 * eps(x.dtype)
    has_basis = basis is not None and basis.shape[-1] > 0
    for attempt in range(3):
        if has_basis:
            coef, norms = first if attempt == 0 and first is not None else space.gram(basis, x)
            x = x - mm(basis, coef)
        else:
            norms = space.norms(x)
        q, r1 = space.qr(x)
        if has_basis:
            q = space.project_out(basis, q)
        q, r2 = space.qr(q)
        d1 = torch.diagonal(r1, dim1=-2, dim2=-1).abs()
        d2 = torch.diagonal(r2, dim1=-2, dim2=-1).abs()
        bad = ~((d1 > tiny * norms) & (d2 > 1e-3))
        if attempt == 2 or not bool(bad.any()):
            return q
        fresh = space.randn_like(x, generator)
        x = torch.where(bad.unsqueeze(-2), fresh, q)
    return q  # unreachable


def _ritz(op: Operator, basis: Basis, t: int) -> Ritz:
    # The small SVD runs in float64 on the host whatever the dtype and device: it costs O(p³) with
    # p ≤ ~100; in float32 it would set the floor of the attainable residual (measured on a 7×8
    # matrix, k = 5: 1.2e-6 against 1.6e-7), and on a GPU it is latency-bound (cuSOLVER took ~1 ms
    # per iteration on an H100, the host a tenth of that).
    h = basis.h
    try:
        y, s, zt = torch.linalg.svd(h.detach().to("cpu", torch.float64), full_matrices=False)
    except torch.linalg.LinAlgError as err:  # the LAPACK kernel refuses NaN
        raise ValueError(_NON_FINITE) from err
    y, s, zt = (x.to(h.device, h.dtype, non_blocking=True) for x in (y, s, zt))
    z = zt.mT
    yt, st, ztop = y[..., :t], s[..., :t].unsqueeze(-2), z[..., :t]
    u, v = mm(basis.u, yt), mm(basis.v, ztop)
    ru, rv, nu, nv = _residuals(op, mm(basis.av, ztop), u, mm(basis.atu, yt), v, st)
    return Ritz(y, s, z, u, v, ru, rv, torch.maximum(nu, nv))


def _residuals(op: Operator, av, u, atu, v, s):
    """(A v − σu, Aᵀu − σv) and their norms per column, from the images av, atu."""
    ru, rv = av - u * s, atu - v * s
    return ru, rv, op.left.norms(ru), op.right.norms(rv)


def _relative(res: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """res / σ₁, with 0/0 = 0 (a zero matrix is solved exactly) and r/0 = inf otherwise."""
    safe = torch.where(s1 > 0, s1, torch.ones_like(s1)).unsqueeze(-1)
    rel = res / safe
    return torch.where((s1 > 0).unsqueeze(-1), rel, torch.where(res > 0, math.inf, 0.0))


def _pad(c: torch.Tensor, rows: int) -> torch.Tensor:
    """Coefficients in a basis that has since grown by appended columns."""
    return torch.nn.functional.pad(c, (0, 0, 0, rows - c.shape[-2]))


def _restart(basis: Basis, ritz: Ritz, keep: int, prev_z, generator) -> Basis:
    """Thick restart onto the top ``keep`` Ritz vectors and the previous step's ones (GD+k).

    ``prev_z`` holds the coefficients of the previous iteration's right Ritz vectors; keeping their
    span next to the current ones retains the direction of convergence that a plain restart loses.
    The left basis is chosen as span(H Z) so that 𝒰 keeps containing A𝒱.
    """
    y, z = ritz.y[..., :keep], ritz.z[..., :keep]
    if prev_z is not None:
        pz = orthonormalize(_pad(prev_z, z.shape[-2]), z, generator)
        py = orthonormalize(basis.h @ pz, y, generator)
        y, z = torch.cat([y, py], dim=-1), torch.cat([z, pz], dim=-1)
    return Basis(
        mm(basis.u, y),
        mm(basis.v, z),
        mm(basis.av, z),
        mm(basis.atu, y),
        y.mT @ basis.h @ z,
    )


def _expand(op: Operator, basis: Basis, sv: torch.Tensor, generator) -> Basis:
    """Append the orthonormal block sv to 𝒱 and the new part of A sv to 𝒰: one product with A, one
    with Aᵀ. 𝒰 keeps containing A𝒱, so Rayleigh–Ritz on H sees what a Lanczos bidiagonalization
    would, and the Ritz residual A v − σ u vanishes: only Aᵀ u − σ v needs a correction."""
    u, v, av, atu, h = basis.u, basis.v, basis.av, basis.atu, basis.h
    asv = op.matmat(sv)
    coef, norms = op.left.gram(u, asv)  # H's new columns, and the first Gram–Schmidt pass's coefficients
    h = torch.cat([h, coef], dim=-1)
    v, av = torch.cat([v, sv], dim=-1), torch.cat([av, asv], dim=-1)
    bu = min(asv.shape[-1], op.shape[0] - u.shape[-1])
    if bu > 0:
        su = orthonormalize(asv[..., :bu], u, generator, op.left, (coef[..., :bu], norms[..., :bu]))
        atsu = op.rmatmat(su)
        h = torch.cat([h, op.right.inner(atsu, v)], dim=-2)
        u, atu = torch.cat([u, su], dim=-1), torch.cat([atu, atsu], dim=-1)
    return Basis(u, v, av, atu, h, max(bu, 0))


def _initial_basis(op: Operator, k: int, b: int, init, generator) -> Basis:
    """𝒱 from the warm start's V (filled up with random columns) and 𝒰 = span(A𝒱).

    The warm start's U is implied by A V and is not used: adding it would cost products with Aᵀ and
    break 𝒰 ⊇ A𝒱 (the structure that makes the left residuals vanish)."""
    m, n = op.shape
    shape, dt, dev = op.batch_shape, op.dtype, op.device
    # A warm start gets at least one random column beside its own: a V0 spanning an exact singular
    # subspace that is not the top one would otherwise be a fixed point.
    # A cold start draws at least 4 random columns: with a single one, a start with a small
    # component along v₁ converged to σ₂ of a cluster 1e-3 apart with a residual below tol (1 of
    # 3000 fuzz cases); four make that as likely as four such draws at once, for 4–6 more products.
    j = 0 if init is None else min(k, 1 if init[1].dim() == 1 else init[1].shape[-1])
    bv = min(max(b, 4) if init is None else max(b, j + 1), n)
    if init is None:
        x = op.right.randn(shape, bv, dt, dev, generator)
    else:
        v0 = init[1].to(dtype=dt, device=dev)
        v0 = v0.unsqueeze(-1) if v0.dim() == 1 else v0[..., :k]
        x = v0.expand(shape + v0.shape[-2:])
        if bv > x.shape[-1]:  # fill the block with random columns; draw nothing when none is needed
            x = torch.cat([x, op.right.randn(shape, bv - x.shape[-1], dt, dev, generator)], dim=-1)
    v = orthonormalize(x, None, generator, op.right)
    av = op.matmat(v)
    u = orthonormalize(av[..., : min(bv, m)], None, generator, op.left)
    atu = op.rmatmat(u)
    return Basis(u, v, av, atu, op.left.inner(u, av))


def _select(ritz: Ritz, conv: torch.Tensor, b: int) -> torch.Tensor:
    """Indices (..., b) of the Ritz triplets to correct: unconverged ones first, in order."""
    t = ritz.res.shape[-1]
    order = torch.arange(t, device=conv.device).expand_as(conv)
    key = order + t * conv.to(order.dtype)
    return torch.argsort(key, dim=-1)[..., :b]


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, -1, idx.unsqueeze(-2).expand(x.shape[:-1] + idx.shape[-1:]))


def _lanczos_steps(worst: float, last, tol: float, cap: int) -> int:
    """Expansions to add without Rayleigh–Ritz: a quarter of those the last rate of convergence predicts
    are still needed (so the stop is overshot by little), at most ``cap``."""
    if not (0 < worst < last[0] < math.inf) or last[1] == 0 or worst <= tol:
        return 0
    rate = (worst / last[0]) ** (1.0 / last[1])
    if rate >= 1.0 or rate <= 0.0:
        return 0
    needed = math.log(tol / worst) / math.log(rate)
    return int(max(0, min(cap, needed // 4)))


def default_basis(b: int) -> int:
    """Columns of each search basis before a thick restart, for a block of b (docs/algorithm.md)."""
    return max(16, 4 * b + min(8 * b, 64))


def _default_block(k: int, device: torch.device) -> int:
    """Ritz triplets corrected per iteration. On the CPU a block of b columns costs about b times one
    column (memory-bound gemv and gemm are close there), so b = k needs the fewest products and time.
    On a GPU a pass with 16 columns costs about what one does, and a wider block converges in fewer
    iterations (measured on an H100: k = 1 on 4000×2000 Gaussian float32, 212 ms with b = 1 against
    118 ms with b = 16)."""
    if torch.device(device).type == "cpu":
        return k
    return max(8, k + min(k, 16))


def subspace_svd(
    op: Operator,
    k: int,
    *,
    tol: float,
    maxiter: int,
    init,
    generator: torch.Generator | None,
    options: SolverOptions = SolverOptions(),
) -> Outcome:
    """Leading k singular triplets of ``op`` to relative residual ``tol``; see :func:`riemsvd.solve`.

    Convergence is first judged on the residuals that the stored images give for free; once every
    batch element passes, fresh products check the claim. An element whose true residual still
    exceeds ``tol`` (rounding in the images, near the floor of the dtype) goes on with a target
    tightened by the discrepancy seen.
    """
    m, n = op.shape
    b = max(k, min(m, n, options.block or _default_block(k, op.device)))
    p_max = max(options.max_basis or default_basis(b), k + 3 * b)
    p_keep = min(max(k + b, p_max // 2), p_max - 2 * b)
    basis = _initial_basis(op, k, b, init, generator)
    batch = op.batch_shape
    best = Snapshot.empty(batch, op.left.local_rows, op.right.local_rows, k, op.dtype, op.device)
    target = torch.full(batch, tol, dtype=op.dtype, device=op.device)
    stalled, history, prev, checks = 0, [], None, 0
    verified = None
    iterations = restarts = steps = 0
    prev_worst = math.inf
    while iterations < maxiter:
        iterations += 1
        t = min(basis.h.shape[-1], basis.h.shape[-2], 2 * b)
        ritz = _ritz(op, basis, t)
        rel = _relative(ritz.res, ritz.s[..., 0])
        improved = best.update(ritz, rel[..., :k].amax(-1))
        done = best.res <= target
        # one host sync per iteration for all the decisions below
        open_res = torch.where(done, torch.zeros_like(best.res), best.res)
        flags = torch.stack(
            [done.all(), torch.isfinite(ritz.s[..., 0]).all(), improved.any(), open_res.max()]
        ).tolist()
        history.append((op.matvecs, best.res.max()))
        if not flags[1]:
            raise ValueError(_NON_FINITE)
        if flags[0]:
            # Without a restart every image is a fresh product of its basis column, and the Ritz
            # residuals are those of fresh products up to rounding: no pass is needed to check them.
            verified = _unverified(best) if restarts == 0 else verify(op, best.u, best.v)
            passed = verified[3] <= tol
            if checks == 2 or bool(passed.all()):
                break
            checks += 1
            # Demand of the estimate what the true residual lacked, then go on from the same basis.
            ratio = best.res / verified[3].clamp_min(torch.finfo(op.dtype).tiny)
            target = torch.where(passed, target, 0.5 * tol * ratio.clamp(max=1.0))
            best.res = torch.where(passed, best.res, torch.full_like(best.res, math.inf))
            verified = None
            continue
        stalled = 0 if flags[2] else stalled + 1
        if stalled >= options.patience:
            break
        lanczos = _lanczos_steps(flags[3], (prev_worst, steps), tol, options.max_lanczos)
        prev_worst = flags[3]
        grown, prev, steps = _step(
            op, basis, ritz, rel, prev, k, b, p_max, p_keep, target, options, generator, lanczos
        )
        if grown is basis:  # both bases span their whole spaces: Rayleigh–Ritz is already exact
            break
        restarts += grown.v.shape[-1] < basis.v.shape[-1]
        basis = grown
    u, s, v, residual, errors = verified if verified is not None else verify(op, best.u, best.v)
    history = [(mv, float(r)) for mv, r in history]  # read back once, after the loop
    return Outcome(u, s, v, residual <= tol, residual, iterations, history, errors)


@dataclass
class Snapshot:
    """The best k triplets seen so far for each batch element, with their estimated residual."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    res: torch.Tensor

    @classmethod
    def empty(cls, batch, m, n, k, dtype, device) -> Snapshot:
        z = lambda *shape: torch.zeros(batch + shape, dtype=dtype, device=device)  # noqa: E731
        return cls(z(m, k), z(k), z(n, k), torch.full(batch, math.inf, dtype=dtype, device=device))

    def update(self, ritz: Ritz, res: torch.Tensor) -> torch.Tensor:
        """Keep the Ritz triplets where they improve on the snapshot; return where they did."""
        k = self.s.shape[-1]
        take = ~(res >= self.res)  # NaN or inf residuals still replace the zero start
        self.u = torch.where(_bmask(take, self.u), ritz.u[..., :k], self.u)
        self.v = torch.where(_bmask(take, self.v), ritz.v[..., :k], self.v)
        self.s = torch.where(_bmask(take, self.s), ritz.s[..., :k], self.s)
        self.res = torch.where(take, res, self.res)
        return take


def verify(op: Operator, u: torch.Tensor, v: torch.Tensor):
    """Rayleigh quotients σᵢ = uᵢᵀ A vᵢ and true relative residuals from fresh products.

    Returns (u, s, v, residual, errors) with the triplets sorted by descending σ, residual of shape
    (...) and errors (..., k) = sqrt((‖A vᵢ − σᵢuᵢ‖² + ‖Aᵀuᵢ − σᵢvᵢ‖²)/2): the residual norm of the
    unit vector (uᵢ, vᵢ)/√2 for the eigenvalue σᵢ of [[0, A], [Aᵀ, 0]], whose eigenvalues are ±σⱼ.
    """
    av, atu = op.matmat(v), op.rmatmat(u)
    s = op.left.dots(u, av)
    s, order = torch.sort(s, dim=-1, descending=True)
    u, v, av, atu = (_take(x, order) for x in (u, v, av, atu))
    _, _, nu, nv = _residuals(op, av, u, atu, v, s.unsqueeze(-2))
    errors = torch.hypot(nu, nv) * math.sqrt(0.5)
    return u, s, v, _relative(torch.maximum(nu, nv), s[..., 0]).amax(-1), errors


def _unverified(best: Snapshot):
    """``verify``'s result from the snapshot's own residuals, without products: each error is bounded by
    the largest residual, sqrt((a² + b²)/2) ≤ max(a, b)."""
    errors = (best.res * best.s[..., 0].abs()).unsqueeze(-1).expand_as(best.s)
    return best.u, best.s, best.v, best.res, errors


def _step(op, basis, ritz, rel, prev_z, k, b, p_max, p_keep, target, options, generator, lanczos=0):
    """One outer iteration: corrections for b Ritz triplets, a thick restart if full, expansion,
    then up to ``lanczos`` further expansions without Rayleigh–Ritz in between.

    Those further steps take the new part of Aᵀ times the last left block as the next right block:
    the Golub–Kahan recurrence. They span what the Ritz residuals would (the residual of a Ritz
    vector of a Krylov space lies in the next Krylov space) and skip the small SVD, the Ritz vectors
    and the host sync of an iteration. Returns (basis, prev_z, expansions made)."""
    n = op.shape[1]
    conv = rel <= target.unsqueeze(-1)
    idx = _select(ritz, conv, b)
    rv = _take(ritz.rv, idx)  # the left residuals vanish (𝒰 ⊇ A𝒱): only the right ones expand 𝒱
    if options.inner_steps > 0:
        uu, vv, ss = _take(ritz.u, idx), _take(ritz.v, idx), torch.gather(ritz.s, -1, idx)
        newton = NewtonOperator(op, uu, vv, ss)
        rhs = newton.project(_take(ritz.ru, idx), rv)
        (_, rv), _ = tcg(newton, rhs, maxiter=options.inner_steps, rtol=0.1)
    pv = basis.v.shape[-1]
    bv = min(b, n - pv)
    if pv + bv > p_max and n > p_max:
        keep = min(p_keep, ritz.s.shape[-1])
        basis = _restart(basis, ritz, keep, prev_z if options.keep_previous else None, generator)
        bv = min(b, n - basis.v.shape[-1])
        prev_z = None
    else:
        prev_z = _take(ritz.z, idx)
    if bv == 0:
        return basis, prev_z, 0
    sv = orthonormalize(rv[..., :bv], basis.v, generator, op.right)
    basis = _expand(op, basis, sv, generator)
    steps = 1
    while steps <= lanczos:
        pv = basis.v.shape[-1]
        bv = min(b, n - pv)
        if bv == 0 or (pv + bv > p_max and n > p_max) or basis.last_u == 0:
            break
        sv = orthonormalize(basis.atu[..., -basis.last_u :][..., :bv], basis.v, generator, op.right)
        basis = _expand(op, basis, sv, generator)
        steps += 1
    return basis, prev_z, steps
