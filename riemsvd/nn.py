"""Spectral normalization and spectral-norm projection of neural-network weights with ``riemsvd.solve``.

``spectral_norm`` is a drop-in for ``torch.nn.utils.parametrizations.spectral_norm`` whose σ is exact
(each training step a power step whose σ error is bounded, or a warm-started solve where it is not),
optionally the norm of a convolution as a linear map (``input_shape``, with ``operator_norm``);
``project_spectral_`` and ``register_projection_hook`` clip or rescale weights after an optimizer step.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import NamedTuple, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from riemsvd._backend import no_autocast
from riemsvd._linear import check_layer_input, conv_apply, conv_operator, is_conv, linear_operator
from riemsvd._result import ResolutionWarning
from riemsvd._solve import solve
from riemsvd._tolerance import default_tol, solver_dtype

__all__ = [
    "SpectralProjection",
    "operator_norm",
    "project_spectral_",
    "register_projection_hook",
    "spectral_norm",
]

_MODES = ("ball", "sphere")
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# --------------------------------------------------------------------------------------------------
# Argument checks (each error names the argument in backticks, like riemsvd/_validate.py)


def _check_weight(weight, what: str) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"`{what}` must be a torch.Tensor, got {type(weight).__name__}.")
    if weight.dim() < 2:
        raise ValueError(
            f"`{what}` must have at least 2 dimensions, got shape {tuple(weight.shape)}; the spectral "
            "norm of a vector is its Euclidean norm (use torch.nn.functional.normalize)."
        )
    if not weight.is_floating_point():
        raise TypeError(f"`{what}` has dtype {weight.dtype}; the spectral norm needs a real floating dtype.")
    if weight.numel() == 0:
        raise ValueError(f"`{what}` is empty (shape {tuple(weight.shape)}); it has no singular values.")


def _check_dim(dim, ndim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"`dim` must be an int, got {type(dim).__name__}.")
    if not -ndim <= dim < ndim:  # type: ignore[operator]  # numbers.Integral: no int comparison in typeshed
        raise ValueError(f"`dim` must be in [-{ndim}, {ndim - 1}] for a {ndim}-D weight, got {dim}.")
    return int(dim) % ndim


def _check_tol(tol) -> None:
    # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1):  # type: ignore[operator]
        raise ValueError(f"`tol` must be a number in (0, 1) or None, got {tol!r}.")


def _check_positive(value, name: str) -> None:
    # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):  # type: ignore[operator]
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def _check_mode(mode) -> None:
    if mode not in _MODES:
        raise ValueError(
            f"`mode` must be 'ball' (clip σ at max_norm) or 'sphere' (set σ = max_norm), got {mode!r}."
        )


# --------------------------------------------------------------------------------------------------
# The numerical core: the leading singular pair of a weight, warm-started


def _as_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The weight (d0, …) as a matrix (d_dim, ∏ other dims), like torch's spectral_norm."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.flatten(1)


class _Products(NamedTuple):
    """A v and Aᵀ u for vectors (n,) and (m,) of a matrix or operator in the solver's dtype."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    adjoint: Callable[[torch.Tensor], torch.Tensor]


def _matrix_products(a: torch.Tensor) -> _Products:
    return _Products(lambda v: a @ v, lambda u: a.mT @ u)


def _operator_products(op) -> _Products:
    return _Products(lambda v: op.matmat(v.unsqueeze(-1))[:, 0], lambda u: op.rmatmat(u.unsqueeze(-1))[:, 0])


class _PairTracker:
    """What a warm start needs to trust a power step: σ₁ and σ₂ (plus its error bar) at the last
    two-triplet solve, and how many steps ago that was.

    A module keeps one across training steps (it is not state-dict state: after a load or a new
    weight it starts empty). An empty tracker accepts a power step only on its residual.
    """

    refresh_every = 50  # steps between two-triplet solves, so a gap that closes slowly is noticed
    relearn_after = 10  # steps after which a solve that runs anyway also measures σ₂ again

    def __init__(self, power_steps: int = 2) -> None:
        self.power_steps = power_steps  # tried per update before a solve (see _warm_pair)
        self.forget()

    def forget(self) -> None:
        self.sigma1: float | None = None
        self.sigma2: float | None = None
        self.age = 0

    def gap(self) -> float:
        assert self.sigma1 is not None and self.sigma2 is not None  # set together by record
        return self.sigma1 - self.sigma2

    def margin(self, sigma: float, seen: float = 0.0) -> float | None:
        """sigma minus an estimate of today's σ₂, or None when the last σ₂ is unknown or stale.

        The estimate is the larger of σ₂ as measured plus how far σ₁ moved since (an estimate, not a
        bound: σ₂ can rise while σ₁ stays) and ``seen``, a value σ₂ has now been seen to reach (the
        image of the power step's residual direction, which σ₂'s vector dominates when the gap
        closes). A margin below half the measured gap means the spectrum moved too much to trust.
        """
        if self.sigma2 is None or self.age >= self.refresh_every:
            return None
        assert self.sigma1 is not None  # set together with sigma2 by record
        margin = sigma - max(self.sigma2 + abs(sigma - self.sigma1), seen)
        return margin if margin >= 0.5 * self.gap() else None

    def stale(self) -> bool:
        """Whether a solve that has to run should be one for two triplets, to measure σ₂ again: never
        measured, or not for ``relearn_after`` steps (where the spectrum moves faster than its gap,
        a measurement every step would cost more than it saves)."""
        return self.sigma2 is None or self.age >= self.relearn_after

    def record(self, s: torch.Tensor, errors: torch.Tensor) -> None:
        """Remember a solve's σ₁ and σ₂ + its error bar (σ₂ = 0 for a matrix with one row or column)."""
        self.sigma1, self.sigma2 = _floats(s[0], s[1] + errors[1]) if s.numel() > 1 else (*_floats(s[0]), 0.0)
        self.age = 0


def _floats(*scalars: torch.Tensor) -> list[float]:
    """0-dim tensors as floats in one transfer; DTensors (a sharded weight's) as their whole value."""
    whole = [x.full_tensor() if hasattr(x, "full_tensor") else x for x in scalars]
    return torch.stack(whole).tolist()


class _Step(NamedTuple):
    """A power step from unit v0 (see ``_power_step``)."""

    u: torch.Tensor
    v: torch.Tensor
    sigma: float  # ‖Aᵀu‖ = uᵀAv
    r: float  # ‖d‖, the residual of the unit pair (u, v0)
    s0: float  # ‖A v0‖ = uᵀA v0 ≤ sigma
    d: torch.Tensor  # Aᵀu − s0·v0, orthogonal to v0


def _power_step(products: _Products, v0: torch.Tensor) -> _Step:
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
    return _Step(u, b / sigma_ if sigma_ > 0 else b, sigma_, r_, s0_, d)


def _trusted(step: _Step, tol: float, tracker: _PairTracker | None, products: _Products) -> bool:
    """Whether a power step's σ is within tol·σ of σ₁ (see ``_warm_pair``)."""
    r, s0 = step.r, step.s0
    if not s0 > 0:
        return False
    if r <= tol * s0:  # a singular value lies within r/√2 of s0 ≤ σ (Weinstein)
        return True
    # Kato–Temple on [[0, A], [Aᵀ, 0]]: σ₁ − s0 ≤ (r²/2) / (s0 − σ₂) when s0 > σ₂; asked with a
    # factor 2 to spare, since σ₂ is an estimate.
    margin = tracker.margin(s0) if tracker is not None else None
    if margin is None or r * r > tol * s0 * margin:
        return False
    # The step would pass: check σ₂ once more where it can be seen now. d ⊥ v0 ≈ v₁, so ‖A d‖/‖d‖ is
    # about the largest σ below σ₁ that d reaches, and a rising σ₂ shows there (one more product).
    (seen,) = _floats(torch.linalg.vector_norm(products.forward(step.d / r)))
    assert tracker is not None  # a margin came from it
    margin = tracker.margin(s0, seen)
    return margin is not None and r * r <= tol * s0 * margin


@torch.no_grad()
def _leading_pair(
    w: torch.Tensor, init, tol: float | None, tracker: _PairTracker | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u (m,), v (n,), σ) of the 2-D w, warm-started from init = (u0, v0) when given (see
    ``_warm_pair``). Half-precision weights are solved in float32."""
    dtype = solver_dtype(w.dtype)
    a = w.detach().to(dtype)
    with no_autocast(a.device):
        if init is not None:
            init = tuple(x.to(device=a.device, dtype=dtype) for x in init)
        u, v, s = _warm_pair(a, _matrix_products(a), init, tol, tracker)
    return u.to(w.dtype), v.to(w.dtype), s


def _warm_pair(target, products: _Products, init, tol: float | None, tracker: _PairTracker | None = None):
    """(u (m,), v (n,), σ) of ``target`` (a matrix or an operator of the solver's dtype), warm-started
    from init = (u0, v0) when given; σ is within tol·σ₁ of σ₁.

    A warm start first takes one power step (two products, like torch's spectral_norm) and keeps it
    when its σ is trusted: when the residual r of the pair (u, v0) is below tol·σ, or, with a
    ``tracker`` that estimates σ₂, when Kato–Temple's (r²/2)/(σ − σ₂) is — the σ error of a power
    step is quadratic in r, so during training this usually holds with r far above tol. Otherwise
    :func:`riemsvd.solve` runs from the power step's pair: for one triplet, or for two when the
    tracker's σ₂ is unknown or stale (then it learns σ₂ and its error bar). The random draws a solve
    may need come from a fixed-seed generator, so a training forward never consumes the global RNG.
    """
    m, n = (target.shape[-2], target.shape[-1])
    s0: float | None = None
    if init is not None:
        tol_ = tol if tol is not None else default_tol(init[1].dtype, m, n)
        v = init[1]
        for _ in range(tracker.power_steps if tracker is not None else 1):
            step = _power_step(products, v)
            u, v, s0 = step.u, step.v, step.s0
            if _trusted(step, tol_, tracker, products):
                if tracker is not None:
                    tracker.age += 1
                return u, v, torch.tensor(step.sigma, dtype=u.dtype, device=u.device)
            if not (s0 > 0 and tracker is not None and tracker.margin(s0) is not None):
                break  # a second step is worth it only where the quadratic test can pass
        assert s0 is not None  # the loop takes one power step at least
        # laid out like the stored pair (a sharded weight's power step leaves other placements)
        init = (
            tuple(torch.empty_like(x0).copy_(x).unsqueeze(-1) for x0, x in zip(init, (u, v)))
            if s0 > 0
            else None
        )
    learn = tracker is not None and (s0 is None or not s0 > 0 or tracker.stale())
    k = min(2, m, n) if learn else 1
    generator = torch.Generator().manual_seed(0) if init is not None else None
    with warnings.catch_warnings():  # σ₂ only feeds the gap estimate, error bar included
        warnings.simplefilter("ignore", ResolutionWarning)
        out = solve(target, k, tol=tol, init=init, generator=generator)
    if learn:
        # learn implies a tracker; solve's info always carries the error bars
        assert tracker is not None and out.info is not None and out.info.errors is not None
        tracker.record(out.S, out.info.errors)
    elif tracker is not None:
        tracker.age += 1
    return out.U[:, 0], out.V[:, 0], out.S[0]


# --------------------------------------------------------------------------------------------------
# Spectral normalization as a parametrization


class _SpectralNorm(nn.Module):
    """W ↦ W / σ(W), σ = uᵀ W v with (u, v) the leading singular pair, kept in buffers ``_u``, ``_v``.

    W is seen as the matrix (W.shape[dim], ∏ other dims). In training mode each forward refreshes
    (u, v) by a power step or a solve warm-started from the buffers (``_warm_pair``); in eval mode the
    stored vectors are used as they are.
    """

    _u: torch.Tensor  # buffers, registered in __init__
    _v: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        dim: int = 0,
        tol: float | None = None,
        eps: float = 1e-12,
        power_steps: int = 2,
    ):
        super().__init__()
        self.dim = dim
        self.tol = tol
        self.eps = eps
        self._tracker = _PairTracker(power_steps)
        # one triplet: registration's right_inverse starts the tracker afresh anyway
        u, v, _ = _leading_pair(_as_matrix(weight.detach(), dim), None, tol)
        self.register_buffer("_u", u.contiguous())
        self.register_buffer("_v", v.contiguous())

    def _load_from_state_dict(self, *args, **kwargs):
        self._tracker.forget()  # the loaded vectors belong to another weight's spectrum
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _update(self, w_mat: torch.Tensor) -> None:
        u, v, _ = _leading_pair(w_mat, (self._u, self._v), self.tol, self._tracker)
        # In place, so that replicas sharing the buffers' storage (DataParallel) see the update.
        self._u.copy_(u)
        self._v.copy_(v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w_mat = _as_matrix(weight, self.dim)
        if self.training:
            self._update(w_mat.detach())
        # Clones: a later forward updates the buffers in place while this graph may still need them.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        # u, v are constants of the graph: at a singular pair dσ = uᵀ dW v exactly. In float32 at
        # least and outside autocast, so that a half-precision W/σ is rounded once, with an exact σ.
        dt = torch.promote_types(weight.dtype, torch.float32)
        with no_autocast(weight.device):
            sigma = torch.dot(u.to(dt), torch.mv(w_mat.to(dt), v.to(dt))).abs().clamp_min(self.eps)
            return (weight.to(dt) / sigma).to(weight.dtype)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Stored as given (like torch's); refresh (u, v) so an assigned weight is exact in eval mode too.
        self._tracker.forget()
        self._update(_as_matrix(value.detach(), self.dim))
        return value

    def extra_repr(self) -> str:
        return f"dim={self.dim}, tol={self.tol}, eps={self.eps}"


def spectral_norm(
    module: nn.Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
    *,
    tol: float | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    r"""Normalize a parameter of ``module`` to spectral norm 1 with an exact σ: W ↦ W / ‖W‖₂.

    A drop-in for :func:`torch.nn.utils.parametrizations.spectral_norm` (same registration through
    :func:`torch.nn.utils.parametrize.register_parametrization`, same ``dim`` convention, buffers ``_u``
    and ``_v`` in the state dict, nothing updated in eval mode), but σ is not one power-iteration step
    away from the truth: each training-mode forward runs :func:`riemsvd.solve` for the leading singular
    pair (u, v), warm-started from the stored one, to relative residual ``tol``, and the first forward
    is already exact. The normalized weight is W / σ with σ = uᵀ W v computed differentiably with u, v
    held constant, which at a singular pair is the exact derivative of ‖W‖₂: the gradient with respect
    to W is (Ḡ − ⟨Ḡ, W/σ⟩ u vᵀ) / σ for an upstream gradient Ḡ of the normalized weight.

    Parameters
    ----------
    module : torch.nn.Module
        The module holding the weight (Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, Embedding, …).
    name : str
        Name of the parameter (or buffer) to normalize, ``"weight"`` by default.
    n_power_iterations : int
        torch's argument, accepted so that the signatures match (positionally too): here the power
        steps tried from the stored pair per training forward before a solve runs — at least 2 (a
        second step costs less than a solve), more if given. σ is exact to ``tol`` whatever it is.
    eps : float
        σ is clamped below at ``eps``, so a zero weight gives zeros, not NaN.
    dim : int, optional
        The output dimension: the weight of shape ``(d0, d1, …)`` is seen as the matrix
        ``(d_dim, ∏ other dims)``. Default 0, and 1 for ConvTranspose1d/2d/3d (as in torch).
    tol : float, optional
        Relative accuracy of σ: each training forward's σ is within tol·σ of ‖W‖₂, so ‖W/σ‖₂ is 1 to
        tol (see Notes; where the top singular values lie closer together than tol·σ, a solve can
        stop on a lower one of them, so keep tol below the gaps that matter). Default that of
        :func:`riemsvd.solve` (1e-12 in float64, 1e-6 in float32, or
        2·ε·√max(m, n) if larger). Solves, when a step needs one, run to relative residual ``tol``.
    input_shape : tuple of int, optional
        For a Conv1d/2d/3d or ConvTranspose1d/2d/3d ``module`` (zero padding): normalize by the norm of
        the convolution as a linear map on inputs of this shape ``(C, *spatial)`` (no batch
        dimension), as :func:`operator_norm` computes it, instead of the reshaped kernel's norm. Then
        σ = ⟨u, conv(v; W)⟩ with the singular pair (u, v) of the operator in buffers ``_u`` (the output
        flattened) and ``_v`` (the input flattened), refreshed like the kernel's pair in each
        training forward; ``dim`` is not used. The layer is then 1-Lipschitz on inputs of that shape.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, with ``module.parametrizations.<name>[0]`` the normalization.

    Raises
    ------
    TypeError
        If ``module`` is not an ``nn.Module`` or the weight is not a real floating tensor.
    ValueError
        If ``module`` has no tensor called ``name``, the weight has fewer than 2 dimensions, or ``dim``,
        ``tol`` or ``eps`` is out of range.

    Notes
    -----
    A training step usually costs what torch's costs: one power step from the stored pair (two
    products with W), kept when its σ is known to ``tol``. The error of a power step's σ is quadratic
    in the residual r of the pair: at most (r²/2)/(σ − σ₂) (Kato–Temple). σ₂ is estimated from a
    two-triplet solve (again after at most 50 steps, 10 when a solve has to run anyway), allowed to
    have moved as far as σ₁ did, and raised to what the power step's residual direction shows; the
    step is kept when r² ≤ tol·σ·(σ − σ₂), half the allowance (an estimate of σ₂, not a bound).
    Otherwise a second power step is tried where that test was usable, then :func:`riemsvd.solve` runs
    warm-started from it: every step where the top of the spectrum is clustered (σ₂/σ₁ above about 0.99, as in
    freshly initialized MLPs), which then costs several times torch's step (docs/spectral_norm.md).
    When the top two singular values cross in a step, the stored pair can be an almost exact
    singular pair of the new σ₂: it passes the residual test and that step's σ is σ₂, off by the
    (small) relative gap (seen once in 1980 layer-steps of the digits example, error 9.5e-4; see
    docs/spectral_norm.md). The next steps recover.

    Examples
    --------
    >>> import torch, riemsvd.nn
    >>> _ = torch.manual_seed(0)
    >>> layer = riemsvd.nn.spectral_norm(torch.nn.Linear(20, 40, dtype=torch.float64))
    >>> W = layer.weight  # W / σ, exact from the first forward
    >>> round(float(torch.linalg.matrix_norm(W.detach(), 2)), 12)
    1.0
    >>> y = layer(torch.randn(8, 20, dtype=torch.float64))
    >>> [k for k in layer.state_dict() if k.startswith("parametrizations")]  # doctest: +NORMALIZE_WHITESPACE
    ['parametrizations.weight.original', 'parametrizations.weight.0._u',
     'parametrizations.weight.0._v']
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be a torch.nn.Module, got {type(module).__name__}.")
    weight = getattr(module, name, None) if isinstance(name, str) else None
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"`name`: {type(module).__name__} has no parameter or buffer called {name!r}.")
    _check_weight(weight, f"module.{name}")
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    dim = _check_dim(dim, weight.dim())
    _check_tol(tol)
    _check_positive(eps, "eps")
    if (
        isinstance(n_power_iterations, bool)
        or not isinstance(n_power_iterations, numbers.Integral)
        or (n_power_iterations <= 0)
    ):
        raise ValueError(f"`n_power_iterations` must be a positive int, got {n_power_iterations!r}.")
    steps = max(2, int(n_power_iterations))
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"`module.{name}` has NaN or Inf entries; its spectral norm is undefined.")
    if input_shape is not None:
        if not is_conv(module) or name != "weight":
            raise ValueError(
                "`input_shape` applies to the `weight` of a zero-padded Conv1d/2d/3d or "
                f"ConvTranspose1d/2d/3d, got {type(module).__name__}.{name}; leave it None for the "
                "reshaped kernel's norm."
            )
        norm = _OperatorNorm(module, weight, check_layer_input(module, input_shape), tol, float(eps), steps)
    else:
        norm = _SpectralNorm(weight, dim, tol, float(eps), steps)
    parametrize.register_parametrization(module, name, norm)
    return module


# --------------------------------------------------------------------------------------------------
# The norm of a layer as a linear map on inputs of a given shape


@torch.no_grad()
def _leading_pair_op(op, init, tol: float | None, tracker: _PairTracker | None = None):
    """(u (m,), v (n,), σ) of an operator, warm-started from init = (u0, v0) as ``_leading_pair``."""
    return _warm_pair(op, _operator_products(op), init, tol, tracker)


class _OperatorNorm(nn.Module):
    """W ↦ W / σ(W) with σ the norm of the convolution by W as a linear map on inputs of ``input_shape``.

    σ = ⟨u, conv(v; W)⟩ with (u, v) the operator's leading singular pair in buffers ``_u`` (output
    flattened) and ``_v`` (input flattened), held constant in the graph: at a singular pair that is the
    exact derivative of the operator norm, dσ = ⟨u, conv(v; dW)⟩.
    """

    _u: torch.Tensor  # buffers, registered in __init__
    _v: torch.Tensor

    def __init__(
        self, module: nn.Module, weight: torch.Tensor, input_shape, tol, eps: float, power_steps: int = 2
    ):
        super().__init__()
        self.layer = [module]  # a list: not registered as a submodule (no cycle, no state_dict keys)
        self.input_shape = tuple(input_shape)
        self.tol = tol
        self.eps = eps
        self._tracker = _PairTracker(power_steps)
        self._output_shape: torch.Size | None = None
        op = self._operator(weight.detach())
        u, v, _ = _leading_pair_op(op, None, tol)  # one triplet, as in _SpectralNorm
        self.register_buffer("_u", u.contiguous())
        self.register_buffer("_v", v.contiguous())

    def _operator(self, w: torch.Tensor):
        op = conv_operator(self.layer[0], w.to(solver_dtype(w.dtype)), self.input_shape, self._output_shape)
        self._output_shape = op.output_shape  # checked and found by the first call
        return op

    @torch.no_grad()
    def _update(self, w: torch.Tensor) -> None:
        op = self._operator(w)
        with no_autocast(w.device):
            init = (self._u.to(op.dtype), self._v.to(op.dtype))
            u, v, _ = _leading_pair_op(op, init, self.tol, self._tracker)
        self._u.copy_(u)
        self._v.copy_(v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(weight.detach())
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        dt = torch.promote_types(weight.dtype, torch.float32)  # as in _SpectralNorm.forward
        with no_autocast(weight.device):
            image = conv_apply(self.layer[0], weight.to(dt), v.to(dt).reshape((1,) + self.input_shape))
            sigma = torch.dot(u.to(dt), image.reshape(-1)).abs().clamp_min(self.eps)
            return (weight.to(dt) / sigma).to(weight.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._tracker.forget()
        super()._load_from_state_dict(*args, **kwargs)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        self._tracker.forget()
        self._update(value.detach())
        return value

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, tol={self.tol}, eps={self.eps}"


def operator_norm(
    layer: nn.Module,
    input_shape: tuple[int, ...],
    *,
    tol: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""The norm of a layer as a linear map on inputs of ``input_shape``: its Lipschitz constant there.

    For a convolution this is not the norm of the reshaped kernel (which :func:`spectral_norm`
    normalizes by default): strides, padding, dilation, groups and the input size all change it. The
    layer is wrapped by :func:`riemsvd.linear_operator` (the bias, which does not change a Lipschitz
    constant, is left out) and its leading singular value found by :func:`riemsvd.solve`. For a
    guaranteed upper bound instead of an estimate, use
    ``riemsvd.norm_bounds(riemsvd.linear_operator(layer, input_shape))`` (bias-free layer).

    Parameters
    ----------
    layer : torch.nn.Module
        A Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear layer, or any module whose forward is linear
        apart from a ``bias`` attribute.
    input_shape : tuple of int
        One input's shape without the batch dimension, ``(C, *spatial)`` or ``(in_features,)``.
    tol : float, optional
        Relative residual of the solve (default that of :func:`riemsvd.solve`).
    generator : torch.Generator, optional
        Source of the solve's random start.

    Returns
    -------
    torch.Tensor
        The norm, a 0-dim tensor in the layer's dtype; within ``tol`` times itself of the true norm
        (to first order; the error is quadratic in the residual).

    Raises
    ------
    TypeError, ValueError
        If ``layer`` is not an ``nn.Module`` or ``input_shape`` is not a tuple of positive ints.

    Examples
    --------
    >>> import torch, riemsvd.nn
    >>> _ = torch.manual_seed(0)
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    >>> sigma = riemsvd.nn.operator_norm(conv, (2, 6, 6))
    >>> kernel = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), 2)
    >>> bool(sigma > kernel)  # the map's norm, not the reshaped kernel's
    True
    """
    if not isinstance(layer, nn.Module):
        raise TypeError(f"`layer` must be a torch.nn.Module, got {type(layer).__name__}.")
    input_shape = check_layer_input(layer, input_shape)
    with torch.no_grad():
        if is_conv(layer) or isinstance(layer, nn.Linear):  # the weight read once (a parametrized
            weight = cast(torch.Tensor, layer.weight).detach()  # one is computed once)
            dtype = weight.dtype
            weight = weight.to(solver_dtype(dtype))
            op = conv_operator(layer, weight, input_shape) if is_conv(layer) else weight
        else:
            dtype = next((p.dtype for p in layer.parameters()), torch.get_default_dtype())
            op = linear_operator(layer, input_shape)  # a half-precision layer as a float32 copy
        return solve(op, 1, tol=tol, generator=generator).S[0].to(dtype)  # solve runs outside autocast


# --------------------------------------------------------------------------------------------------
# Projection onto the spectral-norm ball or sphere


class SpectralProjection(NamedTuple):
    """What :func:`project_spectral_` did: the leading pair it used and the norm before projecting.

    ``u`` has shape ``(d_dim,)`` and ``v`` ``(∏ other dims,)`` (the weight seen as a matrix); pass
    ``init=(p.u, p.v)`` to the next call to warm start it. ``scale`` is the factor the weight was
    multiplied by (1.0 where it was left alone).
    """

    u: torch.Tensor
    v: torch.Tensor
    sigma: float
    scale: float


@torch.no_grad()
def project_spectral_(
    weight: torch.Tensor,
    max_norm: float = 1.0,
    *,
    mode: str = "ball",
    tol: float | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    dim: int = 0,
) -> SpectralProjection:
    r"""Project a weight in place onto {‖W‖₂ ≤ c} (``"ball"``) or {‖W‖₂ = c} (``"sphere"``).

    ``"ball"``: W ← W · min(1, c / ‖W‖₂); ``"sphere"``: W ← c · W / ‖W‖₂ (a zero weight is left
    alone), with c = ``max_norm`` and ‖W‖₂ from :func:`riemsvd.solve` (k = 1). Both are the exact
    Euclidean projections for rescaling; the ball one is what a projected-gradient step needs. Runs
    under ``torch.no_grad``, so a leaf parameter can be passed directly.

    Parameters
    ----------
    weight : torch.Tensor
        Shape ``(d0, d1, …)`` with at least 2 dimensions, seen as the matrix ``(d_dim, ∏ other dims)``.
    max_norm : float
        c > 0.
    mode : {"ball", "sphere"}
        Clip the spectral norm at c, or set it to c.
    tol : float, optional
        Relative residual for the solve (default that of :func:`riemsvd.solve`).
    init : (u, v), optional
        Warm start, e.g. the previous call's ``(p.u, p.v)``: shapes ``(d_dim,)`` and ``(∏ other dims,)``.
    dim : int
        Which dimension of ``weight`` gives the rows (0, the output dimension of Linear and Conv).

    Returns
    -------
    SpectralProjection
        ``(u, v, sigma, scale)``: the leading singular pair, ‖W‖₂ before the projection, the factor applied.

    Raises
    ------
    TypeError
        If ``weight`` is not a real floating tensor.
    ValueError
        If ``weight`` has fewer than 2 dimensions, ``max_norm`` is not positive, ``mode`` is unknown, or
        ``dim`` or ``tol`` is out of range.

    Examples
    --------
    >>> import torch, riemsvd.nn
    >>> W = torch.diag(torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64))
    >>> p = riemsvd.nn.project_spectral_(W, 1.5)
    >>> round(p.sigma, 12), round(p.scale, 12), torch.diagonal(W)
    (3.0, 0.5, tensor([1.5000, 1.0000, 0.2500], dtype=torch.float64))
    >>> p = riemsvd.nn.project_spectral_(W, 2.0, mode="sphere", init=(p.u, p.v))
    >>> round(float(torch.linalg.matrix_norm(W, 2)), 12)
    2.0
    """
    _check_weight(weight, "weight")
    _check_positive(max_norm, "max_norm")
    _check_mode(mode)
    _check_tol(tol)
    return _project(weight, max_norm, mode, tol, init, _check_dim(dim, weight.dim()))


def _project(weight, max_norm: float, mode: str, tol, init, dim: int, tracker=None) -> SpectralProjection:
    """``project_spectral_`` on checked arguments, with the tracker of a hook that calls it each step."""
    u, v, s = _leading_pair(_as_matrix(weight, dim), init, tol, tracker)
    sigma = float(s)
    if mode == "ball":
        scale = min(1.0, max_norm / sigma) if sigma > 0 else 1.0
    else:
        scale = max_norm / sigma if sigma > 0 else 1.0
    if scale != 1.0:
        weight.mul_(scale)
    return SpectralProjection(u, v, sigma, scale)


class _ProjectionHook:
    """An optimizer step post-hook projecting each of ``params``; ``state[i]`` is param i's (u, v)."""

    def __init__(self, params: list[torch.Tensor], max_norm: float, mode: str, tol, dim: int) -> None:
        self.params = params
        self.max_norm = max_norm
        self.mode = mode
        self.tol = tol
        self.dim = dim
        self.state: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(params)
        self.trackers = [_PairTracker() for _ in params]

    @torch.no_grad()
    def __call__(self, optimizer, args, kwargs) -> None:
        for i, p in enumerate(self.params):
            dim = self.dim % p.dim()
            out = _project(p, self.max_norm, self.mode, self.tol, self.state[i], dim, self.trackers[i])
            self.state[i] = (out.u, out.v)


def register_projection_hook(
    optimizer: torch.optim.Optimizer,
    params,
    max_norm: float = 1.0,
    *,
    mode: str = "ball",
    tol: float | None = None,
    dim: int = 0,
):
    r"""Project ``params`` with :func:`project_spectral_` after every ``optimizer.step()``.

    Registers a step post-hook (``optimizer.register_step_post_hook``) that keeps each parameter's
    leading singular pair between steps and warm starts the next solve from it, so a step that moves
    a weight little costs a few products with it. Together with :func:`spectral_norm` and
    ``mode="sphere"`` on ``module.parametrizations.weight.original`` it gives the projected-gradient
    scheme W ← P(W − η ∇L(W/‖W‖₂)).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer whose steps to follow.
    params : torch.Tensor or iterable of torch.Tensor
        The weights to project, each with at least 2 dimensions (seen as ``(d_dim, ∏ other dims)``).
    max_norm : float
        c > 0.
    mode : {"ball", "sphere"}
        ‖W‖₂ ≤ c after each step, or ‖W‖₂ = c.
    tol : float, optional
        Relative residual for the solves (default that of :func:`riemsvd.solve`).
    dim : int
        Which dimension of each weight gives the rows.

    Returns
    -------
    torch.utils.hooks.RemovableHandle
        ``handle.remove()`` unregisters the hook.

    Raises
    ------
    TypeError
        If ``optimizer`` has no ``register_step_post_hook`` or a parameter is not a real floating tensor.
    ValueError
        If ``params`` is empty, a parameter has fewer than 2 dimensions, or ``max_norm``, ``mode``,
        ``dim`` or ``tol`` is out of range.

    Examples
    --------
    >>> import torch, riemsvd.nn
    >>> _ = torch.manual_seed(0)
    >>> layer = torch.nn.Linear(30, 20, dtype=torch.float64)
    >>> opt = torch.optim.SGD(layer.parameters(), lr=10.0)
    >>> handle = riemsvd.nn.register_projection_hook(opt, [layer.weight], max_norm=0.5)
    >>> layer(torch.randn(16, 30, dtype=torch.float64)).square().sum().backward()
    >>> opt.step()
    >>> bool(torch.linalg.matrix_norm(layer.weight, 2) <= 0.5 + 1e-12)
    True
    >>> handle.remove()
    """
    if not callable(getattr(optimizer, "register_step_post_hook", None)):
        raise TypeError(
            f"`optimizer` must be a torch.optim.Optimizer (with register_step_post_hook), "
            f"got {type(optimizer).__name__}."
        )
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params:
        raise ValueError("`params` is empty; pass the weights to project, e.g. [layer.weight].")
    for i, p in enumerate(params):
        _check_weight(p, f"params[{i}]")
    _check_positive(max_norm, "max_norm")
    _check_mode(mode)
    _check_tol(tol)
    for p in params:
        _check_dim(dim, p.dim())
    hook = _ProjectionHook(params, float(max_norm), mode, tol, dim)
    return optimizer.register_step_post_hook(hook)
