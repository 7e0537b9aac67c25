"""The numerical core of ``riemsvd.nn``: the leading singular pair of a weight (or of a layer's operator),
warm-started, with the power step whose σ error is bounded and the σ₂ tracker that bounds it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from riemsvd._backend import no_autocast
from riemsvd._dense import prefer_dense
from riemsvd._ops import pair_owner_key, refresh_pair
from riemsvd._result import ConvergenceWarning, ResolutionWarning, callers_level
from riemsvd._solve import solve
from riemsvd._subspace import SolverOptions
from riemsvd._tolerance import default_tol, product_floor, solver_dtype
from riemsvd._validate import NON_FINITE_A


def as_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The weight (d0, …) as a matrix (d_dim, ∏ other dims), like torch's spectral_norm."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.flatten(1)


class Products(NamedTuple):
    """A v and Aᵀ u for vectors (n,) and (m,) of a matrix or operator in the solver's dtype."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    adjoint: Callable[[torch.Tensor], torch.Tensor]


def matrix_products(a: torch.Tensor) -> Products:
    return Products(lambda v: a @ v, lambda u: a.mT @ u)


def operator_products(op) -> Products:
    return Products(lambda v: op.matmat(v.unsqueeze(-1))[:, 0], lambda u: op.rmatmat(u.unsqueeze(-1))[:, 0])


class PairTracker:
    """What a warm start needs to trust a power step: σ₁ and σ₂ (plus its error bar) at the last
    two-triplet solve, and how many steps ago that was.

    A module keeps one across training steps (it is not state-dict state: after a load or a new
    weight it starts empty). An empty tracker accepts a power step only on its residual, and only
    where nothing above its σ shows in the complement of its vector (``above_in_complement``).
    """

    refresh_every = 50  # steps after a solve whose σ₂ the quadratic test still uses (a gap may close slowly)

    def __init__(self, power_steps: int = 2, blocks: int = 1) -> None:
        self.power_steps = power_steps  # tried per update before a solve (see warm_pair)
        self.probe: torch.Tensor | None = None  # power iterate on the complement of v, across steps
        # diagonal blocks of the operator, equal and in order in both its input and its output (a
        # grouped convolution's groups): the iterate is one per block (see complement_top)
        self.blocks = blocks
        self._draws: dict[torch.device, torch.Generator] = {}  # the complement step's, one per device
        # the weight this forward solves for, ‖ΔA‖₂ per unit of its ‖ΔW‖_F, and ‖W − the anchor‖ (see
        # watch); the anchor, the weight at the last solve, is set by record
        self._now: torch.Tensor | None = None
        self._scale = 1.0
        self._drift: float | None = None
        self.forget()

    def forget(self) -> None:
        self.sigma1: float | None = None
        self.sigma2: float | None = None
        self.age = 0
        self.rival: tuple[torch.Tensor, torch.Tensor] | None = None  # σ₂'s (u, v) at the last solve
        self.misses = 0  # forwards in a row that solved (see resting)
        self._anchor: torch.Tensor | None = None

    def watch(self, weight: torch.Tensor, scale: float = 1.0) -> None:
        """The weight this forward's pair is for: a matrix, or a convolution's kernel with ``scale``
        √(kernel taps), so that ``scale``·‖ΔW‖_F bounds how far the operator's values moved since the
        last solve (Weyl: |Δσᵢ| ≤ ‖ΔA‖₂; a convolution's operator is the sum over the taps of a
        shift, of norm at most 1, times that tap's channel matrix)."""
        self._now, self._scale, self._drift = weight, scale, None

    def _moved(self) -> float | None:
        """scale·‖W − anchor‖_F (computed once a forward), or None where there is no anchor for it."""
        now, anchor = self._now, self._anchor
        # a sparse weight's difference has no vector norm in torch: no bound, as for a sharded one
        if now is None or anchor is None or hasattr(now, "full_tensor") or now.layout != torch.strided:
            return None
        if not _alike(anchor, now):  # moved to another device or dtype since
            return None
        if self._drift is None:
            self._drift = self._scale * _floats(_distance(now.detach(), anchor))[0]
        return self._drift

    def resting(self) -> bool:
        """Whether a forward whose solve is a whole decomposition (a small weight: the dense path,
        whose cost the power steps approach) goes to it straight: after two forwards in a row that
        solved, the power steps are tried on every eighth only. Where a layer's top stays clustered
        every forward solves, and its power steps, their test and the start's rival took 120–150 µs
        of the 0.35–0.5 ms a forward cost (a 64×64 weight; a new user's trial of fresh CNN,
        attention and LSTM layers, whose steps took 1.9–3.6× torch's)."""
        return self.misses >= 2 and self.misses % 8 != 0

    def gap(self) -> float:
        assert self.sigma1 is not None and self.sigma2 is not None  # set together by record
        return self.sigma1 - self.sigma2

    def margin(self, sigma: float, seen: float = 0.0) -> float | None:
        """sigma minus an estimate of today's σ₂, or None when σ₂ is unknown or was measured
        ``refresh_every`` steps ago or more.

        The estimate is the larger of σ₂ as measured plus how far the values can have moved since
        and ``seen``, a value σ₂ has now been seen to reach (the image of the power step's residual
        direction, which σ₂'s vector dominates when the gap closes). How far they moved: Weyl's
        bound from the weight's change (:meth:`watch`), or where the weight at the solve is not kept
        (no ``watch``, a sharded weight) how far σ₁ moved, an estimate only: σ₂ can rise while σ₁
        stays, and a grouped Conv1d trained by Adam at lr 1e-2, whose value crossed the pair's within
        its group, was trusted on 5 forwards in a row, 3.7e-4 to 3.6e-3 off (a new user's trial;
        with the bound, 0, for 59 solves in 60 forwards where there were 48). A margin below half
        the measured gap means the spectrum moved too much to trust.
        """
        if self.sigma2 is None or self.age >= self.refresh_every:
            return None
        assert self.sigma1 is not None  # set together with sigma2 by record
        estimate, ceiling = self.sigma2 + abs(sigma - self.sigma1), self.ceiling()
        margin = sigma - max(estimate if ceiling is None else max(ceiling, estimate), seen)
        return margin if margin >= 0.5 * self.gap() else None

    def above_in_complement(
        self, products: Products, u: torch.Tensor, v: torch.Tensor, s0: float, tol: float
    ) -> bool:
        """Whether A has a singular value above s0·(1 + tol) outside v (unit), as one power step on
        v's complement shows (:meth:`complement_top`): ‖A z‖/‖z‖ for z ⊥ v is at most the top σ
        there, so above that it proves that the pair is not the leading one to tol (the slack: where
        σ₁ = σ₂, as for an orthogonal weight, rounding alone raised the alarm on 7–34% of forwards,
        each then a solve; a review). A power step whose residual is 0 says nothing about the rest:
        a partly frozen block-diagonal weight, trained outside the stored pair's block, reached
        ‖W/σ‖₂ = 24 in 200 steps (a new user's trial)."""
        return self.complement_top(products, u, v, s0, tol) > s0 * (1 + tol)

    def rival_above(self, products: Products, v: torch.Tensor, s0: float, r: float, tol: float) -> bool:
        """Whether the rival's v (σ₂'s at the last solve), less its part along v (unit), now has a
        quotient ‖A z‖/‖z‖ above s0·(1 + tol): a value above the pair's, in v's complement. One
        product, taken only where σ₂ may have reached s0 − r since (Weyl's bound from the weight's
        change, :meth:`margin`; always where there is no such bound). The complement's power iterate
        can lag a value that rises where the rival lies: a depthwise Conv2d(32, 32, 3) on 16×16
        inputs under SGD with momentum, its channels' tops within 2e-4 of each other, passed a
        forward 92·tol off on the residual alone, the iterate below s0 and the last solve's σ₂ the
        channel that had risen above (a new user's trial)."""
        if self.rival is None or hasattr(v, "full_tensor"):
            return False
        rv = self.rival[1]
        if not _alike(rv, v):
            return False
        ceiling = self.ceiling()
        if ceiling is not None and ceiling < s0 - r:
            return False  # no value but σ₁'s can lie within r of s0 (Weinstein), nor above it
        z = _orthogonal(rv, v)
        size, image = _floats(torch.linalg.vector_norm(z), torch.linalg.vector_norm(products.forward(z)))
        return 0 < size and image > s0 * (1 + tol) * size

    def ceiling(self) -> float | None:
        """An upper bound on today's σ₂: σ₂ at the last solve, its error bar included, plus Weyl's
        bound on how far the values moved since (:meth:`watch`); None where either is unknown or σ₂
        is ``refresh_every`` steps old."""
        if self.sigma2 is None or self.age >= self.refresh_every:
            return None
        moved = self._moved()
        return None if moved is None else self.sigma2 + moved

    def complement_top(
        self, products: Products, u: torch.Tensor, v: torch.Tensor, s0: float, tol: float
    ) -> float:
        """‖A z‖/‖z‖ for this call's power iterate z on the complement of v (unit): at most the top
        singular value of A there, and close to it once the iterate has followed it for a few
        steps; 0 where there is nothing to see, and inf or 0 for a z whose image is not finite (or
        zero), by whether that image exceeds s0. z is the last call's iterate (at first, and after a
        zero one, a random vector), so over the steps it follows that top, plus a fresh random part: an
        iterate converged onto the top held a value rising from below it only at the size of
        rounding, and took 17–45 forwards to turn where this takes 0–14 (a second trial and the
        tests; docs/spectral_norm.md). Two products; not run for a sharded weight, nor for one row or
        column (nothing lies outside its pair).

        With ``blocks`` (a block-diagonal operator: a grouped convolution, a block a group), the
        iterate is one per block, each made unit on its own, and the quotient is the largest block's:
        one iterate for the whole followed the top of the complement over all blocks, and where the
        blocks' tops lay within 1e-3 of each other it turned onto none of them; a solve whose start
        held the stored pair's block and the rival's found that block's top, another's lying above
        (a depthwise Conv2d(8, 8, 3, groups=8) on 8×8 inputs, 74·tol off at one forward, and groups=4
        from identical kernels 19·tol; a new user's trial). Each block's iterate follows its own top,
        and a solve's start holds them all (see ``_beside``)."""
        # a DTensor has no plain random vector laid out like it; one row or column, no complement
        if hasattr(v, "full_tensor") or min(u.shape[-1], v.shape[-1]) == 1:
            return 0.0
        z = self.probe
        if z is None or not _alike(z, v):
            z = self._random(v)
        z = _orthogonal(z, v)
        a = products.forward(z)
        b = products.adjoint(a)
        blocks = self.blocks if v.shape[-1] % self.blocks == 0 and u.shape[-1] % self.blocks == 0 else 1
        if blocks > 1:
            return self._complement_top_by_block(a, b, z, s0, tol, blocks)
        size, image, back = _floats(*(torch.linalg.vector_norm(x) for x in (z, a, b)))
        if not 0 < image < math.inf:  # z in A's null space (or lost): a fresh draw next time, not 0 forever
            self.probe = None
            return math.inf if image > s0 * (1 + tol) * size else 0.0
        top = image / size
        fresh = self._random(v)
        self.probe = _outside(b / back + self._share(top, s0, tol) * fresh / torch.linalg.vector_norm(fresh))
        return top

    @staticmethod
    def _share(top: float, s0: float, tol: float) -> float:
        """The fresh part of the next iterate: at most 1/10 of it, and small against the room between
        top and s0 (its own share of the quotient, a deficit of about its size squared, must not
        hide a value just above s0 where top is tied with it: 1/10 there kept a block past a tie
        unseen)."""
        return 0.1 * math.sqrt(min(1.0, max(tol, 1 - (top / s0) ** 2)))

    def _complement_top_by_block(self, a, b, z, s0: float, tol: float, blocks: int) -> float:
        """complement_top's quotient and next iterate for a block-diagonal operator: each block's
        ‖A z‖/‖z‖ (A z's block g is A_g z_g), the largest returned, and each block's iterate made unit
        on its own, one whose image is 0 left to the fresh part."""
        norms = torch.stack([torch.linalg.vector_norm(x.reshape(blocks, -1), dim=-1) for x in (z, a, b)])
        size, image, back = norms.tolist()  # one transfer
        if not all(0 <= i < math.inf for i in image) or not any(image):  # as for one block
            self.probe = None
            return math.inf if any(i > s0 * (1 + tol) * sz for i, sz in zip(image, size)) else 0.0
        top = max(i / sz for i, sz in zip(image, size) if i > 0)
        fresh = self._random(z).reshape(blocks, -1)
        fresh = fresh / torch.linalg.vector_norm(fresh, dim=-1, keepdim=True)
        scale = b.new_tensor([1 / x if i > 0 and x > 0 else 0.0 for i, x in zip(image, back)])
        share = self._share(top, s0, tol)
        self.probe = _outside((b.reshape(blocks, -1) * scale.unsqueeze(-1) + share * fresh).reshape(-1))
        return top

    def follow_turn(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Where a solve turned the pair from v ``old`` to ``new`` (the top two values swapped:
        |oldᵀnew| < ½), the complement's power iterate starts again from the old v, now below the new
        top, where a swap back will show first. It had followed the new top, which the new pair's
        complement then lacks: two values overtaking each other by 1% a step (a new user's trial)
        passed 67 of 150 forwards with the wrong one, ‖W/σ‖₂ off by up to 7.3e-3, the iterate finding
        the old v again only after the swap."""
        if hasattr(new, "full_tensor") or old.shape != new.shape:
            return
        (overlap,) = _floats(torch.dot(old.to(new.dtype), new))
        if abs(overlap) < 0.5:
            self.probe = _outside(old.to(new.dtype).clone())

    def _random(self, like: torch.Tensor) -> torch.Tensor:
        """A normal random vector like ``like``, from the tracker's own generator for its device (seeded
        once; a training forward never draws from the global RNG, and replicas on several devices do
        not draw the same vectors in turn)."""
        gen = self._draws.get(like.device)
        if gen is None:
            gen = self._draws[like.device] = torch.Generator(device=like.device).manual_seed(1)
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=gen)

    def record(self, s: torch.Tensor, errors: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
        """Remember a solve's σ₁ and σ₂ + its error bar (σ₂ = 0 for a matrix with one row or column),
        and σ₂'s pair (u: (m, 2), v: (n, 2), or one column each) as the rival."""
        self.sigma1, self.sigma2 = _floats(s[0], s[1] + errors[1]) if s.numel() > 1 else (*_floats(s[0]), 0.0)
        # inside torch.func's transforms (per-sample gradients: vmap of grad) the tensors are the
        # transform's, which must neither be written in place (the anchor's copy_ raised "attempted to
        # call in-place operation ... that would mutate a captured Tensor") nor outlive it: the rival
        # and the anchor are kept from the forwards outside them only (a new user's trial)
        transformed = _transformed(u)
        self.rival = (u[:, 1], v[:, 1]) if v.shape[-1] > 1 and not transformed else None
        self.age = 0
        # the weight of this solve, for Weyl's bound (see margin); a copy, as the optimizer changes
        # the weight in place
        now, anchor = self._now, self._anchor
        if now is None or hasattr(now, "full_tensor") or transformed:
            self._anchor = None
        elif anchor is not None and _alike(anchor, now):
            anchor.copy_(now.detach())
        else:
            self._anchor = now.detach().clone()
        self._drift = None


# Entries of a − b whose squares _distance has torch sum at a time (the error of each sum below this
# many rounding units), the sums' own sum in float64
_DISTANCE_CHUNK = 1 << 12


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """An upper bound on ‖a − b‖_F (a float64 number), from one difference: torch's norm of the whole
    sums its squares in float32 lanes, which lost 1.0% of it at 4096×4096 in float32 (constant-size
    steps; a review), where the bound needs none lost; here torch sums chunks of
    ``_DISTANCE_CHUNK`` entries and the chunks' norms are summed in float64, and what the chunks'
    sums can lose (float32's, float64's for float64) is added. A bfloat16 difference and each chunk's
    norm are rounded to its 8 bits, allowed for by 2⁻⁶; float16's differences overflow beyond 65504,
    and it is cast to float32. 0.25 ms for a 1536×384 bfloat16 weight where its float32 casts and
    their difference had taken 0.57 (float32 0.37 ms against 0.32; 35 against 34 at 4096×4096)."""
    if a.dtype == torch.float16:
        a, b = a.float(), b.float()
    flat = (a - b).reshape(-1)
    whole = flat.numel() // _DISTANCE_CHUNK * _DISTANCE_CHUNK
    norms = torch.linalg.vector_norm(flat[:whole].view(-1, _DISTANCE_CHUNK), dim=-1)
    if whole < flat.numel():
        norms = torch.cat((norms, torch.linalg.vector_norm(flat[whole:]).reshape(1)))
    total = torch.linalg.vector_norm(norms.double())
    if a.dtype == torch.float64:
        return total * (1 + _DISTANCE_CHUNK * 2.0**-52)
    return total * (1 + _DISTANCE_CHUNK * 2.0**-23) * (1 + 2.0**-6 if a.dtype == torch.bfloat16 else 1)


def _transformed(x: torch.Tensor) -> bool:
    """Whether x is a tensor of torch.func's transforms (vmap's, grad's), not a plain one."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def _batched(x: torch.Tensor) -> bool:
    """Whether x is vmap's batched tensor at some level of torch.func's wrappers (a weight of models
    stacked along a vmap), not only grad's or jvp's."""
    while _transformed(x):
        if torch._C._functorch.is_batchedtensor(x):
            return True
        x = torch._C._functorch.get_unwrapped(x)
    return False


def _outside(x: torch.Tensor) -> torch.Tensor | None:
    """x to be kept across forwards, or None where it is a transform's tensor, which must not outlive
    it: a complement iterate kept from one hessian (jacfwd of jacrev) in training mode made the next
    one fail ("INTERNAL ASSERT FAILED ... escaped?"; a review)."""
    return None if _transformed(x) else x


def _alike(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device


def _orthogonal(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x less its part along the unit vector v."""
    return x - torch.dot(v, x) * v


def pair_sigma(u: torch.Tensor, image: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """|uᵀ(A v)|/(‖u‖‖v‖) for a stored pair (u, v) and the image A v, in their dtype. The stored pair
    is unit only to the rounding of the dtype it was stored in, which is of first order in uᵀAv and of
    second in the quotient: in a bfloat16 weight σ came 2.9e-4 above ‖W‖₂ (float16 1.1e-5), now
    2.6e-6 (9e-8); and a checkpoint of a bfloat16 run loaded into a float32 model, whose buffers keep
    bfloat16's rounding, gave ‖W/σ‖₂ − 1 = 4.4e-4 in eval mode where the quotient gives float32's
    (new users' trials)."""
    # a zero pair (buffers made on the meta device, then to_empty) gives 0, which the caller clamps
    return (torch.dot(u, image) / pair_norms(u, v)).abs()


def pair_norms(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """‖u‖‖v‖, at least the dtype's least normal number (so that a zero pair divides to 0)."""
    norms = torch.linalg.vector_norm(u) * torch.linalg.vector_norm(v)
    return norms.clamp_min(torch.finfo(norms.dtype).tiny)


def _floats(*scalars: torch.Tensor) -> list[float]:
    """0-dim tensors as floats in one transfer; DTensors (a sharded weight's) as their whole value."""
    whole = [x.full_tensor() if hasattr(x, "full_tensor") else x for x in scalars]
    return torch.stack(whole).tolist()


class Step(NamedTuple):
    """A power step from unit v0 (see ``power_step``)."""

    u: torch.Tensor
    v: torch.Tensor
    sigma: float  # ‖Aᵀu‖ = uᵀAv
    r: float  # ‖d‖, the residual of the unit pair (u, v0)
    s0: float  # ‖A v0‖ = uᵀA v0 ≤ sigma
    d: torch.Tensor  # Aᵀu − s0·v0, orthogonal to v0


def power_step(products: Products, v0: torch.Tensor) -> Step:
    """One power step from unit v0: u = A v0 / ‖A v0‖, v = Aᵀu / ‖Aᵀu‖. The pair (u, v0) has left
    residual A v0 − s0 u = 0 and right residual d = Aᵀu − s0·v0. The floats come to the host in
    one transfer."""
    a = products.forward(v0)
    s0 = torch.linalg.vector_norm(a)
    u = a / s0  # not finite where A v0 = 0; the caller then solves instead
    b = products.adjoint(u)
    sigma = torch.linalg.vector_norm(b)
    d = torch.addcmul(b, s0, v0, value=-1)  # not from σ² − s0²: it cancels
    sigma_, r_, s0_ = _floats(sigma, torch.linalg.vector_norm(d), s0)
    return Step(u, b / sigma_ if sigma_ > 0 else b, sigma_, r_, s0_, d)


def _in_range(norm: float, dtype: torch.dtype) -> bool:
    """Whether a vector norm in ``dtype`` is one whose squares torch summed without overflow or a
    relevant underflow: torch's vector_norm does not rescale on the CPU, so a float32 weight of norm
    9.4e19 gave ‖A v0‖ = inf, its residual inf ≤ inf passed the test, and every other training step
    returned W/eps with a zero pair (a new user's trial); below, squares under the smallest normal
    number lose digits (σ 1e-3 and 27% off at weights of 1e-21 and 1e-22, with eps lowered to 1e-35).
    Bounds 1e-3·√max and 1e3·√(tiny/ε): 1.8e16 and 3e-13 in float32."""
    f = torch.finfo(dtype)
    return 1e3 * math.sqrt(f.tiny / f.eps) < norm < 1e-3 * math.sqrt(f.max)


def trusted(step: Step, tol: float, tracker: PairTracker | None, products: Products) -> bool:
    """Whether a power step's σ is within tol·σ of σ₁ (see ``warm_pair``)."""
    r, s0 = step.r, step.s0
    if not (_in_range(s0, step.u.dtype) and _in_range(step.sigma, step.u.dtype) and math.isfinite(r)):
        return False  # a solve, which rescales, decides
    if r <= tol * s0:  # a singular value lies within r/√2 of s0 ≤ σ (Weinstein): σ₁, if none above
        return tracker is not None and not (
            tracker.rival_above(products, step.v, s0, r, tol)
            or tracker.above_in_complement(products, step.u, step.v, s0, tol)
        )
    # Kato–Temple on [[0, A], [Aᵀ, 0]]: σ₁ − s0 ≤ (r²/2) / (s0 − σ₂) when s0 > σ₂; asked with a
    # factor 2 to spare, since σ₂ is an estimate.
    margin = tracker.margin(s0) if tracker is not None else None
    if margin is None or r * r > tol * s0 * margin:
        return False
    # The step would pass: check σ₂ once more where it can be seen now. d ⊥ v0 ≈ v₁, so ‖A d‖/‖d‖ is
    # about the largest σ below σ₁ that d reaches, and a σ₂ rising as the vectors turn shows there
    # (one more product). One rising along vectors that stay shows only in the complement's power
    # iterate, which follows σ₂ over the steps (two more): σ₂ grown 1% a step past a still σ₁ = 1,
    # 1e-5 noise on W, had 13 forwards in a row pass with the last solve's σ₂, ‖W/σ‖₂ up to 1.13
    # (a new user's trial).
    (seen,) = _floats(torch.linalg.vector_norm(products.forward(step.d / r)))
    assert tracker is not None  # a margin came from it
    seen = max(seen, tracker.complement_top(products, step.u, step.v, s0, tol))
    margin = tracker.margin(s0, seen)
    return margin is not None and r * r <= tol * s0 * margin


@torch.no_grad()
def leading_pair(
    w: torch.Tensor,
    init,
    tol: float | None,
    tracker: PairTracker | None = None,
    cast: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u (m,), v (n,), σ) of the 2-D w, warm-started from init = (u0, v0) when given (see
    ``warm_pair``). Half-precision weights are solved in float32: ``cast``, w's float32 copy where
    the caller has one (the tracker keeps its anchor in w's own dtype)."""
    dtype = solver_dtype(w.dtype)
    a = w.detach().to(dtype) if cast is None else cast
    if tracker is not None:
        tracker.watch(w)
    with no_autocast(a.device):
        if init is not None:
            init = tuple(x.to(device=a.device, dtype=dtype) for x in init)
        u, v, s = warm_pair(a, matrix_products(a), init, tol, tracker)
    return u.to(w.dtype), v.to(w.dtype), s


def warm_pair(target, products: Products, init, tol: float | None, tracker: PairTracker | None = None):
    """(u (m,), v (n,), σ) of ``target`` (a matrix or an operator of the solver's dtype), warm-started
    from init = (u0, v0) when given; σ is within tol·σ₁ of σ₁.

    A warm start first takes one power step (two products, like torch's spectral_norm) and keeps it
    when its σ is trusted: when the residual r of the pair (u, v0) is below tol·σ, or, with a
    ``tracker`` that estimates σ₂, when Kato–Temple's (r²/2)/(σ − σ₂) is — the σ error of a power
    step is quadratic in r, so during training this usually holds with r far above tol. Otherwise
    :func:`riemsvd.solve` runs from the power step's pair, for two triplets where a ``tracker``
    keeps σ₂ (it learns σ₂, its error bar and its pair at every solve; see ``_beside``); where that solve is a
    whole decomposition, after two forwards in a row that solved, without the power steps on seven
    forwards of eight (:meth:`PairTracker.resting`). The random draws a solve may need come from a
    fixed-seed generator, so a training forward (or an assignment, whose solve is cold) never
    consumes the global RNG.
    """
    m, n = (target.shape[-2], target.shape[-1])
    tol = _resolvable(tol, target.dtype, m, n)
    s0: float | None = None
    stored_v = None if init is None else init[1]
    tol_ = kept_tol(tol, target.dtype, m, n)
    k = min(2, m, n) if tracker is not None else 1  # the triplets a solve is for (see below)
    # whether the solve is a whole decomposition, asked once a forward, and only where it matters:
    # resting, or about to solve
    whole = _whole(target, tol_, k) if tracker is not None and tracker.resting() else None
    if init is not None and not whole:
        v = init[1]
        for _ in range(tracker.power_steps if tracker is not None else 1):
            step = power_step(products, v)
            u, v, s0 = step.u, step.v, step.s0
            if trusted(step, tol_, tracker, products):
                if tracker is not None:
                    tracker.age += 1
                    tracker.misses = 0
                return u, v, torch.tensor(step.sigma, dtype=u.dtype, device=u.device)
            if not (s0 > 0 and tracker is not None and tracker.margin(s0) is not None):
                break  # a second step is worth it only where the quadratic test can pass
        assert s0 is not None  # the loop takes one power step at least
        # laid out like the stored pair (a sharded weight's power step leaves other placements)
        init = (
            tuple(torch.empty_like(x0).copy_(x).unsqueeze(-1) for x0, x in zip(init, (u, v)))
            if 0 < s0 < math.inf  # a stored pair that is garbage (an uninitialized buffer): a cold solve
            else None
        )
        if init is not None and tracker is not None and tracker.blocks > 1:
            # a block-diagonal operator's iterate, one per block, moved on where the forward solves
            # too, whose start holds it (see _beside): a forward that solves tests nothing in the
            # complement, and in a cluster every forward solved (two products, twice a forward
            # where the power step's test moved it already)
            tracker.complement_top(products, u, v, s0, tol_)
    if tracker is not None:
        tracker.misses += 1
    if whole is None:
        whole = _whole(target, tol_, k)
    if init is not None and whole:
        init = None  # which it does not use: its checks cost 20–50 µs
    elif init is not None and tracker is not None and tracker.rival is not None:
        init = _beside(init, tracker.rival, tracker.probe)
    # Every solve of the warm path with a tracker is for two triplets (one for a weight of one row or
    # column), from the pair, the rival (σ₂'s pair at the last solve) and the complement's power iterate
    # (see _beside), and σ is the larger value. For
    # one triplet, a start that was a singular pair already converged to its own value after the rival's
    # had risen above it, with a residual below tol: the rival's part of the start, 1% of it, lifted the
    # Ritz value by 1e-4 of the gap (an MLP 384-1536-384 under SGD at lr 1e-2, its top two values
    # swapping every few steps 5e-4 apart: 36 of 685 such solves returned σ₂, ‖W/σ‖₂ − 1 up to 52·tol;
    # a new user's trial). No test of the last measured gap picks those out: σ₁ had moved by more than
    # that gap since on all 36, and on 825 of the 985 one-triplet solves that were right in that run and
    # two under Adam.
    generator = torch.Generator().manual_seed(0)
    # σ₂'s triplet can end above a tol at the rounding floor where σ₁'s does not (a float64 weight at
    # tol 1e-17: nine warnings in 30 steps): where a two-triplet solve did not converge, σ₁'s own
    # residual decides (two products), and where it too is above tol, or σ does not fit the dtype
    # (whose products then underflow to a residual of 0, or overflow to NaN), σ₁'s own solve from its
    # pair, which warns where σ₁ is not known to tol
    method = "dense" if whole else "auto"
    out = _solve_quietly(target, k, tol, init, generator, method, quiet_convergence=k > 1)
    if tracker is not None:  # solve's info always carries the error bars
        assert out.info is not None and out.info.errors is not None
        tracker.record(out.S, out.info.errors, out.U, out.V)
    if k > 1 and not bool(out.info.converged.all()):
        if out.info.stop_reason == "out of range" or not _top_residual(products, out) <= tol_:
            out = _solve_quietly(target, 1, tol, (out.U[..., :1], out.V[..., :1]), generator, method)
    if tracker is not None and stored_v is not None:
        tracker.follow_turn(stored_v, out.V[:, 0])
    return out.U[:, 0], out.V[:, 0], out.S[0]


def _top_residual(products: Products, out) -> float:
    """max(‖A v₁ − σ₁u₁‖, ‖Aᵀu₁ − σ₁v₁‖)/σ₁ of a solve's top triplet, from two fresh products."""
    u, v, s = out.U[:, 0], out.V[:, 0], out.S[0]
    left = torch.linalg.vector_norm(products.forward(v) - s * u)
    right = torch.linalg.vector_norm(products.adjoint(u) - s * v)
    return _floats(torch.maximum(left, right) / s)[0]


# A two-triplet solve wants σ₂ only for the gap below σ₁ (the quadratic test's margin): σ₂'s residual
# need only be a twentieth of that gap, not tol (SolverOptions.gap_last). A GPT's 512×512 attention
# weights, which solve on most forwards under AdamW: 72 products a solve where 105 took σ₂ to tol
# (232 warm solves, float32), σ₂ + its bar within 0.035 of the gap of σ₂ at most
_FOR_THE_GAP = SolverOptions(gap_last=True)


def _solve_quietly(
    target, k: int, tol: float | None, init, generator, method: str = "auto", quiet_convergence: bool = False
):
    """riemsvd.solve for the leading pair (and for k = 2 σ₂, for the gap only), without its
    ResolutionWarning (σ₂ only feeds the gap estimate, error bar included) and, if asked, without its
    ConvergenceWarning; a NaN or Inf weight raises an error that names the weight."""
    options = _FOR_THE_GAP if k > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)
        if quiet_convergence:
            warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            return solve(target, k, tol=tol, init=init, generator=generator, method=method, options=options)
        except ValueError as err:  # it named `A`, which the user never passed (a new user's trial)
            if str(err) != NON_FINITE_A:
                raise
            raise ValueError(NON_FINITE_WEIGHT) from err


STACKED_UNDER_VMAP = (
    "riemsvd.nn: a training-mode forward refreshes the layer's stored singular pair (u, v) in place, "
    "one pair per layer, and cannot do so for weights or buffers batched by torch.func.vmap (models "
    "stacked for an ensemble). Run the vmapped "
    "forward in eval mode (model.eval()), which divides each weight by σ from its own stacked pair; "
    "to refresh the pairs, run each model's forward in training mode outside vmap and stack its "
    "buffers again."
)

NON_FINITE_WEIGHT = (
    "the weight has NaN or Inf entries (an optimizer step that diverged?); its spectral norm is undefined."
)


# The float32 weights whose two-triplet solve is a whole decomposition on the CPU (see _whole)
_DENSE_PAIR_UP_TO, _DENSE_PAIR_ENTRIES = 128, 1 << 17


def _whole(target, tol: float, k: int) -> bool:
    """Whether a solve of ``target`` for k triplets is a whole decomposition (the dense path), which
    takes no start: where :func:`~riemsvd._dense.prefer_dense`'s model says so, and for two triplets of
    a float32 weight on the CPU at most ``_DENSE_PAIR_UP_TO`` wide (of at most 2¹⁷ entries), where
    that model priced the warm solve below what it took. A forward solves where its power steps
    failed, at a moving or clustered top, whose two triplets and the probe after them took 62–90
    products there (fresh uniform weights, σ₂/σ₁ 0.97–0.99, moved by 1e-3 an entry, from the power
    step's pair as here; the model's fit, 46): the dense path took 0.40–0.70 of the warm solve's time
    (64×64 to 1024×128, three seeds each, medians of 7, 2 threads; 0.59–0.62 on one), as long at
    192×192 and 768×192 (0.96–1.09), and 1.33–2.85 from 256 wide on. In float64 the model's choice
    stands: when the float64 dense path was an SVD it took 0.59 at 64×64, which the model took, and
    1.3–5.5 from 128 wide on; since it is the Gram matrix's (2026-12-07) the model takes it up to
    about 180 wide at k = 2 (128×512: 2.3 ms against the warm solve's 6.8, for a weight moved by a
    Gaussian of its own size; 256×256, which iterates, 6.4 against 8.4, and 6.3 cold)."""
    m, n = target.shape[-2:]
    if type(target) is not torch.Tensor or target.layout != torch.strided:  # a sparse weight iterates
        return False
    if k == 2 and target.device.type == "cpu" and target.dtype == torch.float32:
        if min(m, n) <= _DENSE_PAIR_UP_TO and m * n <= _DENSE_PAIR_ENTRIES:
            return True
    return prefer_dense((m, n), 1, k, target.dtype, target.device, tol)


_FLOOR_WARNED: set[tuple] = set()  # (tol, dtype, m, n) that _resolvable has warned of


def kept_tol(tol: float | None, dtype: torch.dtype, m: int, n: int) -> float:
    """The relative accuracy σ is kept to for an m×n weight solved in ``dtype``: ``tol`` raised to the
    rounding of its products (as :func:`_resolvable` raises it, which also warns), or the default."""
    if tol is None:
        return default_tol(dtype, m, n)
    if dtype not in (torch.float32, torch.float64):
        return float(tol)
    return max(float(tol), product_floor(dtype, m, n))


def _resolvable(tol: float | None, dtype: torch.dtype, m: int, n: int) -> float | None:
    """``tol``, or where it lies below the rounding of an m×n weight's products in ``dtype``
    (:func:`~riemsvd._tolerance.product_floor`), that floor, with a ConvergenceWarning once per tol,
    dtype and shape (Python's own once-only filter forgets what it has shown each time a solve's
    ``catch_warnings`` changes the filters). Asked for tol 1e-9 in float32, every training step's
    solve stalled near 3e-7 and warned with its own residual: 61 warnings and 41 ms a step in 60
    steps of a 200×300 layer, against 1.6 ms at the default tol, with ‖W/σ‖₂ as close to 1 (a new
    user's trial)."""
    if tol is None:
        return tol
    floor = kept_tol(tol, dtype, m, n)
    if floor == tol:
        return tol
    if (tol, dtype, m, n) in _FLOOR_WARNED:
        return floor
    _FLOOR_WARNED.add((tol, dtype, m, n))
    remedy = "" if dtype == torch.float64 else ", or keep the weight in float64"
    warnings.warn(
        f"riemsvd.nn: tol={tol:.3g} is below what {dtype} arithmetic resolves for a {m}×{n} weight "
        f"(about {floor:.2g}, the rounding of its products): its solves run to {floor:.2g} instead, "
        f"which is what σ is known to. Pass tol={floor:.2g} or more{remedy}.",
        ConvergenceWarning,
        stacklevel=callers_level(),
    )
    return floor


def _beside(init: tuple, rival: tuple, probe: torch.Tensor | None = None) -> tuple:
    """The start (u0, v0), one column each, with a second column: in v, the unit sum of the rival's
    part orthogonal to v0 and the complement's power iterate's (``probe``, where there is one), each
    made unit, the iterate's turned to lean towards the rival's (the solver starts from V0's columns,
    summed for its one-column blocks, and implies U from A V0; U0's column is the rival's own). The
    start as it is where the rival's part vanishes, or for a sharded weight.

    The two triplets alone keep σ₂ from being returned; the rival's part saves products (10% in the
    swap test of tests/test_nn.py in float64, 7% in an MLP's run under Adam; a review). The
    iterate's sign is its random draw's: added unturned, half the time it cancelled the rival's
    part, and the swap test's 40 float64 solves took 3242 products where the rival alone took 2558;
    turned, 2566 (a review). The
    iterate's part is for a value that neither holds: a grouped convolution is block-diagonal, and
    where the pair and the rival lay in one group, the other group's top entered the Krylov space
    only at the size of the start's random part (10·tol), which the solve did not lift before its
    two triplets converged. The iterate follows the top of v0's complement, which holds that value
    too: ``Conv2d(8, 8, 3, padding=1, groups=2)`` whose groups start from the same kernels, on 12×12
    inputs (float32), trained 100 steps on two seeds under Adam 1e-3 and SGD 1e-2, had 12 of 400
    forwards off by more than 1e-6 (up to 6.1e-4, 75·tol), 0 with it (1 on a second draw, by 1.4·tol,
    where the top four values lay within 2.9·tol); the iterate at a tenth of the rival's weight, or in
    its place, left 2 of 100 (a new user's trial, run again here)."""
    (u0, v0), (ru, rv) = init, rival
    if hasattr(v0, "full_tensor") or rv.shape != v0.shape[:-1] or rv.dtype != v0.dtype:
        return init
    x, rv = v0[:, 0], rv.to(v0.device)
    w = _orthogonal(rv, x)
    if probe is not None and _alike(probe, rv):
        z = _orthogonal(probe, x)
        size, other, cos = _floats(torch.linalg.vector_norm(w), torch.linalg.vector_norm(z), torch.dot(w, z))
        if 0 < size < math.inf and 0 < other < math.inf:
            # the iterate's sign is its draw's, not the rival's: turned against it, the sum cancelled.
            # The sum of the two unit parts has norm √(2 + 2|cos|/(‖w‖‖z‖)): no second transfer
            w = w / size + math.copysign(1 / other, cos) * z
            size = math.sqrt(2 + 2 * abs(cos) / (size * other))
    else:
        (size,) = _floats(torch.linalg.vector_norm(w))
    if not 0 < size < math.inf:
        return init
    return torch.cat([u0, ru.to(u0).unsqueeze(-1)], -1), torch.stack([x, w / size], -1)


class PairNormalization(nn.Module):
    """What ``SpectralNorm`` and ``OperatorNorm`` share: the leading pair (u, v) in buffers ``_u``,
    ``_v``, refreshed in training mode by the subclass's ``update_pair(w, u, v)`` (through one custom
    operator under ``torch.compile``), the σ₂ tracker of the warm start, and the key by which the
    compiled refresh finds the module. ``_pair_input(weight)`` is what ``update_pair`` takes."""

    _u: torch.Tensor  # buffers, registered by _store_pair and __init__
    _v: torch.Tensor
    _owner: torch.Tensor
    tol: float | None = None  # each subclass sets its own
    # The buffers hold no pair yet: registered on the meta device, whose values come later (to_empty
    # leaves whatever memory held). The first forward then solves, in eval mode too: read in eval
    # before any training forward, such a layer's W/σ came out non-finite, or with ‖W/σ‖₂ = 1.7e-25
    # (a new user's trial; torch's own spectral_norm does the same).
    _unset = False

    def __init__(self, power_steps: int, blocks: int = 1) -> None:
        super().__init__()
        self._tracker = PairTracker(power_steps, blocks)
        self._pair_of: int | None = None  # id() of the weight the subclass solved for at construction
        # the refresh's key as a buffer: a graph input, so a compiled forward serves every copy
        self._owner_key = pair_owner_key(self)
        self.register_buffer("_owner", torch.tensor(self._owner_key), persistent=False)

    @property
    def effective_tol(self) -> float:
        """The relative accuracy to which each training forward keeps σ (|‖W/σ‖₂ − 1| ≤ it, plus, for a
        half-precision weight, its stored pair's rounding: 2.5–5e-6 in bfloat16, docs/spectral_norm.md):
        ``tol``, or where it is None :func:`riemsvd.solve`'s default for the matrix (m, n the lengths
        of u and v) in the solver's dtype (float32 for a half-precision weight), raised to the
        rounding of the matrix's products where below it; the layer's repr shows it beside ``tol`` (a
        new user's trial had to import a private function to check the promise)."""
        return kept_tol(self.tol, solver_dtype(self._u.dtype), self._u.numel(), self._v.numel())

    def _store_pair(self, u: torch.Tensor, v: torch.Tensor, weight: torch.Tensor) -> None:
        """The buffers, with the pair just solved for ``weight`` (which registration hands back)."""
        self.register_buffer("_u", u.contiguous())
        self.register_buffer("_v", v.contiguous())
        self._pair_of = id(weight)
        self._unset = weight.is_meta

    def _pair_input(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update_pair(
        self,
        w: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        warm: bool = True,
        cast: torch.Tensor | None = None,
    ) -> None:
        raise NotImplementedError

    def _refresh(self, weight: torch.Tensor, cast: torch.Tensor | None = None) -> None:
        """In training mode (or where the buffers hold no pair yet), the stored pair refreshed for
        ``weight``; ``cast``: its ``_pair_input`` in the solver's dtype, where the forward made one
        (in the weight's own dtype it is that input: a weight along dim 1 is not copied again)."""
        if self.training or self._unset:
            if not torch.compiler.is_compiling() and any(_batched(x) for x in (weight, self._u, self._v)):
                raise RuntimeError(STACKED_UNDER_VMAP)
            w = cast if cast is not None and cast.dtype == weight.dtype else self._pair_input(weight).detach()
            refresh_pair(self, self._owner, w, self._u, self._v, cast)
            if self._unset:
                self._unset = weight.is_meta

    def __setstate__(self, state) -> None:  # a copy (deepcopy, unpickling) refreshes its own pair
        super().__setstate__(state)
        self._owner_key = pair_owner_key(self)
        self._owner.fill_(self._owner_key)

    def _apply(self, fn, recurse=True):
        # to_empty (deferred initialization) leaves the key's buffer holding whatever memory held: a
        # compiled forward's refresh then looked up a garbage key (KeyError; a review), or could have
        # found another module's
        out = super()._apply(fn, recurse)
        if not self._owner.is_meta:
            self._owner.fill_(self._owner_key)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._tracker.forget()  # the loaded vectors belong to another weight's spectrum
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "_u" in state_dict and prefix + "_v" in state_dict:  # not a partial one (strict=False)
            self._unset = self._u.is_meta

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Stored as given (like torch's); refresh (u, v) so an assigned weight is exact in eval mode too.
        # Cold for a new weight: the old pair may be an exact singular pair of it but not its leading
        # one (W + 3σ·x yᵀ with x ⊥ u, y ⊥ v kept σ, and ‖W/σ‖₂ came out 3.1: a new user's trial).
        # Warm at registration, which hands in the weight the pair was just solved for (a second cold
        # solve took 1024×1024 registration from 34 to 61 ms).
        shape = getattr(self, "_weight_shape", None)  # set at registration, the first call
        if shape is not None and tuple(value.shape) != shape:
            # the pair's buffers have the registered weight's sizes; torch's own error named neither
            # (a new user's trial)
            raise ValueError(
                f"the parametrized weight has shape {shape}; a value assigned to it must have the same "
                f"shape, got {tuple(value.shape)}. To change its shape, remove the parametrization "
                "(torch.nn.utils.parametrize.remove_parametrizations), assign, and register it again."
            )
        pair = self._u
        if shape is not None and (value.dtype != pair.dtype or value.device != pair.device):
            # torch refuses such a value only after this returns, and the pair refreshed for it had
            # been kept: eval-mode outputs 18.4 off ‖W/σ‖₂ = 1 after a caught float64 assignment to a
            # float32 layer (a new user's trial); a CPU value caught on a meta layer left it believing
            # its pair set, 1.5e13 off after to_empty (a review)
            fix = (
                "materialize the module first (`module.to_empty(device=...)`), then assign"
                if pair.is_meta
                else f"assign `value.to(device={str(pair.device)!r}, dtype={pair.dtype})`, or convert the "
                "module first (e.g. `module.double()`)"
            )
            raise ValueError(
                f"the parametrized weight is {pair.dtype} on {pair.device}; a value assigned to it must be "
                f"too, got {value.dtype} on {value.device}: {fix}."
            )
        self._weight_shape = tuple(value.shape)
        warm, self._pair_of = id(value) == self._pair_of, None
        self._tracker.forget()
        self.update_pair(self._pair_input(value.detach()), self._u, self._v, warm=warm)
        self._unset = value.is_meta
        return value
