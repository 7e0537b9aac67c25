"""Spectral normalization and spectral-norm projection of neural-network weights with ``riemsvd.solve``.

``spectral_norm`` is a drop-in for ``torch.nn.utils.parametrizations.spectral_norm`` whose σ is exact
(a warm-started solve each training step instead of one power iteration), optionally the norm of a
convolution as a linear map (``input_shape``, with ``operator_norm``); ``project_spectral_`` and
``register_projection_hook`` clip or rescale weights after an optimizer step.
"""

from __future__ import annotations

import contextlib
import copy
import numbers
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from riemsvd._linear import check_input_shape, conv_apply, conv_operator, is_conv, linear_operator
from riemsvd._solve import solve
from riemsvd._tolerance import default_tol

__all__ = [
    "SpectralProjection",
    "operator_norm",
    "project_spectral_",
    "register_projection_hook",
    "spectral_norm",
]

_SOLVER_DTYPES = (torch.float32, torch.float64)
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
    if not -ndim <= dim < ndim:
        raise ValueError(f"`dim` must be in [-{ndim}, {ndim - 1}] for a {ndim}-D weight, got {dim}.")
    return int(dim) % ndim


def _check_tol(tol) -> None:
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1):
        raise ValueError(f"`tol` must be a number in (0, 1) or None, got {tol!r}.")


def _check_positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
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


def _no_autocast(device: torch.device):
    # Under autocast, CUDA matmuls would hand the solver float16 products mixed with float32 bases.
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _passes(av, atu, u: torch.Tensor, v: torch.Tensor, tol: float) -> tuple[bool, torch.Tensor]:
    """Whether unit (u, v) is already a leading-pair candidate to solve's relative residual tol.

    The same test as the end of ``riemsvd.solve``: max(‖A v − σu‖, ‖Aᵀu − σv‖)/σ ≤ tol, σ = uᵀAv,
    from the images ``av`` = A v and ``atu`` = Aᵀ u. Returns (passed, σ).
    """
    s = torch.dot(u, av)
    res = torch.maximum(torch.linalg.vector_norm(av - s * u), torch.linalg.vector_norm(atu - s * v))
    unit = torch.maximum((torch.linalg.vector_norm(u) - 1).abs(), (torch.linalg.vector_norm(v) - 1).abs())
    return bool((res <= tol * s) & (unit <= tol)), s


@torch.no_grad()
def _leading_pair(
    w: torch.Tensor, init, tol: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u (m,), v (n,), σ) of the 2-D w, warm-started from init = (u0, v0) when given.

    Stored vectors that already pass ``tol`` are returned without a solve (two products instead of a
    solve's validation and four). Half-precision weights are solved in float32. The random draws the
    solver may need come from a fixed-seed generator, so a forward never consumes the global RNG.
    """
    dtype = w.dtype if w.dtype in _SOLVER_DTYPES else torch.float32
    a = w.detach().to(dtype)
    with _no_autocast(a.device):
        if init is not None:
            init = tuple(x.to(device=a.device, dtype=dtype) for x in init)
        u, v, s = _warm_pair(a, lambda u, v: (a @ v, a.mT @ u), init, tol)
    return u.to(w.dtype), v.to(w.dtype), s


def _warm_pair(a, products, init, tol: float | None):
    """(u (m,), v (n,), σ) of ``a`` (a matrix or an operator of the solver's dtype), warm-started from
    init = (u0, v0) when given; ``products(u, v)`` gives (A v, Aᵀ u).

    Stored vectors that already pass ``tol`` are returned without a solve (two products instead of a
    solve's validation and four). The random draws a warm solve may need come from a fixed-seed
    generator, so a training forward never consumes the global RNG.
    """
    if init is not None:
        u0, v0 = init
        tol_ = tol if tol is not None else default_tol(u0.dtype, *a.shape)
        ok, s = _passes(*products(u0, v0), u0, v0, tol_)
        if ok:
            return u0, v0, s
        init = (u0.unsqueeze(-1), v0.unsqueeze(-1))
    generator = torch.Generator().manual_seed(0) if init is not None else None
    u, s, v = solve(a, 1, tol=tol, init=init, generator=generator)
    return u[:, 0], v[:, 0], s[0]


# --------------------------------------------------------------------------------------------------
# Spectral normalization as a parametrization


class _SpectralNorm(nn.Module):
    """W ↦ W / σ(W), σ = uᵀ W v with (u, v) the leading singular pair, kept in buffers ``_u``, ``_v``.

    W is seen as the matrix (W.shape[dim], ∏ other dims). In training mode each forward refreshes
    (u, v) by a solve warm-started from the buffers; in eval mode the stored vectors are used as they are.
    """

    def __init__(self, weight: torch.Tensor, dim: int = 0, tol: float | None = None, eps: float = 1e-12):
        super().__init__()
        self.dim = dim
        self.tol = tol
        self.eps = eps
        u, v, _ = _leading_pair(_as_matrix(weight.detach(), dim), None, tol)
        self.register_buffer("_u", u.contiguous())
        self.register_buffer("_v", v.contiguous())

    @torch.no_grad()
    def _update(self, w_mat: torch.Tensor) -> None:
        u, v, _ = _leading_pair(w_mat, (self._u, self._v), self.tol)
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
        # u, v are constants of the graph: at a singular pair dσ = uᵀ dW v exactly.
        sigma = torch.dot(u, torch.mv(w_mat, v)).abs().clamp_min(self.eps)
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Stored as given (like torch's); refresh (u, v) so an assigned weight is exact in eval mode too.
        self._update(_as_matrix(value.detach(), self.dim))
        return value

    def extra_repr(self) -> str:
        return f"dim={self.dim}, tol={self.tol}, eps={self.eps}"


def spectral_norm(
    module: nn.Module,
    name: str = "weight",
    *,
    dim: int | None = None,
    tol: float | None = None,
    eps: float = 1e-12,
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
    dim : int, optional
        The output dimension: the weight of shape ``(d0, d1, …)`` is seen as the matrix
        ``(d_dim, ∏ other dims)``. Default 0, and 1 for ConvTranspose1d/2d/3d (as in torch).
    tol : float, optional
        Relative residual of the singular pair, passed to :func:`riemsvd.solve`; default that of
        ``solve`` (1e-12 in float64, about 1e-6 in float32). ‖W/σ‖₂ is then 1 to about this accuracy.
    eps : float
        σ is clamped below at ``eps``, so a zero weight gives zeros, not NaN.
    input_shape : tuple of int, optional
        For a Conv1d/2d/3d or ConvTranspose1d/2d/3d ``module`` (zero padding): normalize by the norm of
        the convolution as a linear map on inputs of this shape ``(C, *spatial)`` (no batch
        dimension), as :func:`operator_norm` computes it, instead of the reshaped kernel's norm. Then
        σ = ⟨u, conv(v; W)⟩ with the singular pair (u, v) of the operator in buffers ``_u`` (the output
        flattened) and ``_v`` (the input flattened), refreshed by a warm-started solve in each
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
    Warm starting makes a step cost a few products with W when W moves little; stored vectors that
    still pass ``tol`` skip the solve (two products). When the top two singular values cross in a
    step, the stored pair can be an almost exact singular pair of the new σ₂: it passes the residual
    test and that step's σ is σ₂, off by the (small) relative gap (seen once in 1980 layer-steps of
    the digits example, error 9.5e-4; see docs/spectral_norm.md). The next step recovers.

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
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"`module.{name}` has NaN or Inf entries; its spectral norm is undefined.")
    if input_shape is not None:
        if not is_conv(module) or name != "weight":
            raise ValueError(
                "`input_shape` applies to the `weight` of a zero-padded Conv1d/2d/3d or "
                f"ConvTranspose1d/2d/3d, got {type(module).__name__}.{name}; leave it None for the "
                "reshaped kernel's norm."
            )
        norm = _OperatorNorm(module, weight, check_input_shape(input_shape), tol, float(eps))
    else:
        norm = _SpectralNorm(weight, dim, tol, float(eps))
    parametrize.register_parametrization(module, name, norm)
    return module


# --------------------------------------------------------------------------------------------------
# The norm of a layer as a linear map on inputs of a given shape


@torch.no_grad()
def _leading_pair_op(op, init, tol: float | None):
    """(u (m,), v (n,), σ) of an operator, warm-started from init = (u0, v0) as ``_leading_pair``."""
    products = lambda u, v: (op.matmat(v.unsqueeze(-1))[:, 0], op.rmatmat(u.unsqueeze(-1))[:, 0])  # noqa: E731
    return _warm_pair(op, products, init, tol)


def _bias_free(layer: nn.Module) -> nn.Module:
    """A shallow copy of a layer that shares its weight but has no bias (the layer is left as it is)."""
    if getattr(layer, "bias", None) is None:
        return layer
    twin = copy.copy(layer)
    object.__setattr__(twin, "_parameters", {**layer._parameters, "bias": None})
    return twin


class _OperatorNorm(nn.Module):
    """W ↦ W / σ(W) with σ the norm of the convolution by W as a linear map on inputs of ``input_shape``.

    σ = ⟨u, conv(v; W)⟩ with (u, v) the operator's leading singular pair in buffers ``_u`` (output
    flattened) and ``_v`` (input flattened), held constant in the graph: at a singular pair that is the
    exact derivative of the operator norm, dσ = ⟨u, conv(v; dW)⟩.
    """

    def __init__(self, module: nn.Module, weight: torch.Tensor, input_shape, tol, eps: float):
        super().__init__()
        self.layer = [module]  # a list: not registered as a submodule (no cycle, no state_dict keys)
        self.input_shape = tuple(input_shape)
        self.tol = tol
        self.eps = eps
        op = self._operator(weight.detach())
        u, v, _ = _leading_pair_op(op, None, tol)
        self.register_buffer("_u", u.contiguous())
        self.register_buffer("_v", v.contiguous())

    def _operator(self, w: torch.Tensor):
        dtype = w.dtype if w.dtype in _SOLVER_DTYPES else torch.float32
        return conv_operator(self.layer[0], w.to(dtype), self.input_shape)

    @torch.no_grad()
    def _update(self, w: torch.Tensor) -> None:
        op = self._operator(w)
        with _no_autocast(w.device):
            u, v, _ = _leading_pair_op(op, (self._u.to(op.dtype), self._v.to(op.dtype)), self.tol)
        self._u.copy_(u)
        self._v.copy_(v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(weight.detach())
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        image = conv_apply(self.layer[0], weight, v.to(weight.dtype).reshape((1,) + self.input_shape))
        sigma = torch.dot(u.to(weight.dtype), image.reshape(-1)).abs().clamp_min(self.eps)
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
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
    input_shape = check_input_shape(input_shape)
    with torch.no_grad():
        if is_conv(layer):  # the weight read once (a parametrized one is computed once)
            op = conv_operator(layer, layer.weight, input_shape)
        elif isinstance(layer, nn.Linear):
            op = layer.weight.detach()
        else:
            op = linear_operator(_bias_free(layer), input_shape)
        return solve(op, 1, tol=tol, generator=generator).S[0]


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
    dim = _check_dim(dim, weight.dim())
    u, v, s = _leading_pair(_as_matrix(weight, dim), init, tol)
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

    def __call__(self, optimizer, args, kwargs) -> None:
        for i, p in enumerate(self.params):
            out = project_spectral_(
                p, self.max_norm, mode=self.mode, tol=self.tol, init=self.state[i], dim=self.dim
            )
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
