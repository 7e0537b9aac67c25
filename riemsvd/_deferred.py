"""Block Golub–Kahan steps whose coefficients stay on the device until the next look.

The solver's general step (``_subspace._expand``) takes each Gram–Schmidt pass's coefficients and
norms to the host, to decide on a second pass and to fill H and C there. On a GPU each of those
copies is a host sync: a 4000×2000 float32 solve (k = 8, blocks of 16) made 419 of them and 2773
kernel launches in 41 iterations, and took 99.6 ms, of which its kernels ran 15.7 and its products
2.1 (an H200; docs/benchmarks_gpu.md). Between two looks at the small matrices nothing on the host
needs those numbers, so these steps leave them on the device: two classical Gram–Schmidt passes
always (no decision to make), the QR of what is left, and for a block one more pass for the QR
factor's columns. At the next look :meth:`Deferred.pull` takes the coefficients of all the steps
since the last one to the host in one copy, fills H and C as ``_expand`` would, and checks each step
as ``_orth`` does; a step that lost a column to rounding (or met a non-finite value) is undone with
the ones after it, and the caller takes it again by the general step, which draws a random
direction. The same solve then made 96 syncs. (A batch of 8 or more matrices on a GPU reads one
flag per block QR: its Cholesky QR's breakdown, riemsvd._space.cholesky_qr, which in one call for the
batch replaced Householder QR's calls per matrix.)

Used where the solver's vectors are tensors (a GPU; on the CPU with ``RIEMSVD_CPU_BLAS=torch``)
and F is moved whole at each step (its width is the block's): the
wanted Ritz vectors then choose nothing, since the span moved is F's whatever its rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from riemsvd._tolerance import DGKS, eps

__all__ = ["Deferred"]


def _plus_product(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, sign: int = 1, out=None) -> torch.Tensor:
    """x ± a·b (batched), in one kernel where the shapes allow (2-D and 3-D tensors), into ``out``
    where given (a column block of a basis buffer: no copy into it afterwards)."""
    if x.dim() == 2:
        return torch.addmm(x, a, b, alpha=sign, out=out)
    if x.dim() == 3:
        return torch.baddbmm(x, a, b, alpha=sign, out=out)
    return torch.add(x, a @ b, alpha=sign, out=out)


def _orth_on_device(space, basis: torch.Tensor, x: torch.Tensor, with_cq: bool, out: torch.Tensor):
    """x = basis·coef + q·r with q orthonormal and outside span(basis), without a host sync (but a
    batch's Cholesky QR's, :mod:`riemsvd._deferred`): two
    classical Gram–Schmidt passes, the QR of what is left, and for a block q's columns projected out
    of the basis once more (where x's columns cancel among themselves, q = x r⁻¹ magnifies by
    ‖xᵢ‖/rᵢᵢ what rounding left of them along the basis; the projection removes that to first order,
    and leaves q orthonormal to its square). The part of x that the recurrence knows in exact
    arithmetic (along the basis's last block) is not subtracted first, as ``_subspace._orth`` does:
    the first pass finds it (the same products and float32 checks at the vectors' rounding, 3.80 ε
    against 3.79, without the kernel and the host copy it took).

    q is written into ``out``. Returns (r, parts): the passes' coefficients [c1, c2], and cq where
    ``with_cq`` and x is a block. The host sums them to coef = c1 + c2 + cq·r and reads the norms off
    them and r (see :func:`_lost`): each sum or norm here would be one more kernel, and on a GPU a
    kernel's launch costs more than its work (a solve's time went with its launches, not with its
    host syncs: docs/benchmarks_gpu.md)."""
    c1 = space.inner(basis, x)
    x = _plus_product(x, basis, c1, -1)
    c2 = space.inner(basis, x)
    x = _plus_product(x, basis, c2, -1)
    if x.shape[-1] == 1:
        # one column: scaled by its norm, as _subspace._orth does (with a Householder QR's q, float32
        # solves at the vectors' rounding checked 3.95 ε against 3.79: 40 Gaussians, 400×200, k = 2),
        # and nothing among columns to cancel
        r = space.norms(x)[..., None, :]
        torch.div(x, r, out=out)
        return r, [c1, c2]
    q, r = space.qr(x)
    cq = space.inner(basis, q)
    _plus_product(q, basis, cq, -1, out=out)
    return r, [c1, c2, cq] if with_cq else [c1, c2]


def _lost(r: np.ndarray, c1: np.ndarray, c2: np.ndarray, unit: float) -> bool:
    """Whether a step's orthogonalization (:func:`_orth_on_device`, host copies of its r, c1 and c2)
    lost a column, as ``_subspace._orth`` judges it: the second pass removed as much again of what
    the first left (rounding noise), nothing is left beyond rounding, or the columns cancelled among
    themselves by more than the projection of q repairs (rᵢᵢ below √ε times the column, where the
    error it leaves, the magnification squared times ε, would exceed ε); or any of it is not finite.
    The norms come from ‖x‖² = ‖basisᵀx‖² + ‖x − basis·basisᵀx‖², as in ``_orth``: n2 after both
    passes (r's column norms), n1 after the first, n0 before it."""
    n2 = np.sqrt((r * r).sum(-2))
    n1 = np.sqrt(n2 * n2 + (c2 * c2).sum(-2))
    n0 = np.sqrt(n1 * n1 + (c1 * c1).sum(-2))
    diag = np.abs(np.diagonal(r, axis1=-2, axis2=-1))
    with np.errstate(invalid="ignore"):
        noise = (n1 < DGKS * n0) & ~(n2 > DGKS * n1)
        gone = ~(diag > 4 * unit * n0) | ~(diag > math.sqrt(unit) * n2)
    return bool((noise | gone).any()) or not np.isfinite(n0).all()


@dataclass
class _Record:
    """One deferred step: where it began, and its tensors on the device, whose host copies
    :meth:`Deferred.pull` reads in this order: the left half step's r, c1, c2 (cq where w > 1), the
    right one's gr, c1, c2."""

    pv: int
    pu: int
    parts: list


@dataclass
class Deferred:
    """Steps taken since the last look, their coefficients not yet on the host."""

    records: list = field(default_factory=list)
    # set once a step lost a column: every step after is the general one. In a batch one element
    # that keeps losing (a zero matrix beside a Gaussian) undid every other's steps at each look
    # (300×200, k = 4: 1792 products against the host path's 416)
    stopped: bool = False

    def fits(self, st, b: int) -> bool:
        """Whether the next step can be deferred: F moved whole (width b), a basis to orthogonalize
        against, and room for it in both bases (else the general step, which truncates at an
        exhausted space)."""
        pv, pu, w = st.pv, st.pu, st.w
        return (
            not self.stopped
            and w == b
            and pu > 0
            and pu + w <= min(st.ubuf.shape[-2], st.ubuf.shape[-1])
            and pv + 2 * w <= min(st.vbuf.shape[-2], st.vbuf.shape[-1])
        )

    def step(self, op, st) -> None:
        """F moved into 𝒱 and 𝒰 extended by the new part of A F, as ``_subspace._expand`` with b = w;
        the coefficients recorded for :meth:`pull`."""
        pv, pu, w = st.pv, st.pu, st.w
        ax = op.matmat(st.vbuf[..., pv : pv + w])
        st.avbuf[..., pv : pv + w] = ax
        q = st.ubuf[..., pu : pu + w]
        r, left = _orth_on_device(op.left, st.ubuf[..., :pu], ax, True, out=q)
        atq = op.rmatmat(q)
        st.atubuf[..., pu : pu + w] = atq
        # against 𝒱 and F together: F's columns are the new 𝒱's, and the new F lies outside both; its
        # coefficients are not needed (F's were moved whole)
        g = st.vbuf[..., pv + w : pv + 2 * w]
        gr, right = _orth_on_device(op.right, st.vbuf[..., : pv + w], atq, False, out=g)
        self.records.append(_Record(pv, pu, [r, *left, gr, *right]))
        st.pv, st.pu = pv + w, pu + w

    def pull(self, space, st) -> int:
        """The recorded steps' coefficients to the host in one copy, H and C filled from them as the
        general step fills them. A step that lost a column is undone with those after it (the state
        is as before it), and no step is deferred after. Returns how many steps were undone."""
        records, self.records = self.records, []
        if not records:
            return 0
        batch = tuple(st.hbuf.shape[:-2])
        parts = [t for rec in records for t in rec.parts]
        # a column-major part (a QR's r) goes as its transpose, a view, not a copy
        transposed = [not t.is_contiguous() and t.mT.is_contiguous() for t in parts]
        flat = [(t.mT if tr else t).reshape(batch + (-1,)) for t, tr in zip(parts, transposed)]
        host = space.to_host(torch.cat(flat, dim=-1))
        ends = np.cumsum([f.shape[-1] for f in flat])[:-1]
        arrays = iter(
            piece.reshape(batch + t.mT.shape[-2:]).swapaxes(-1, -2) if tr else piece.reshape(t.shape)
            for piece, t, tr in zip(np.split(host, ends, axis=-1), parts, transposed)
        )
        unit, w = eps(parts[0].dtype), st.w
        h, c = st.hbuf, st.cbuf
        for kept, rec in enumerate(records):
            pv, pu = rec.pv, rec.pu
            r, c1, c2 = next(arrays), next(arrays), next(arrays)
            coef = c1 + c2
            if w > 1:
                coef += next(arrays) @ r  # cq
            gr, g1, g2 = next(arrays), next(arrays), next(arrays)
            if _lost(r, c1, c2, unit) or _lost(gr, g1, g2, unit):
                st.pv, st.pu, self.stopped = pv, pu, True
                return len(records) - kept
            h[..., pu : pu + w, :pv] = 0.0
            h[..., :pu, pv : pv + w] = coef
            h[..., pu : pu + w, pv : pv + w] = r
            c[..., :w, :pu] = 0.0
            c[..., :w, pu : pu + w] = gr
        return 0
