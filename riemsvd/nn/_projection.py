"""Projection of weights onto the spectral-norm ball or sphere after an optimizer step:
``riemsvd.nn.project_spectral_`` and ``register_projection_hook``."""

from __future__ import annotations

from typing import NamedTuple

import torch

from riemsvd._validate import (
    as_number,
    check_dim,
    check_mode,
    check_positive,
    check_projection_hook_args,
    check_projection_init,
    check_tol,
    check_weight,
)
from riemsvd.nn._leading import PairTracker, as_matrix, leading_pair


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
    under ``torch.no_grad``, so a leaf parameter can be passed directly. The scaled entries are
    rounded to the weight's dtype, each by at most its unit roundoff u (2⁻⁸ ≈ 3.9e-3 in bfloat16,
    2⁻¹¹ ≈ 4.9e-4 in float16, 2⁻²⁴ ≈ 6e-8 in float32), which moves ‖W‖₂ off c, either way, by at
    most u·c·‖W‖_F/‖W‖₂ (‖E‖₂ ≤ ‖E‖_F) beside σ's own error (``tol``). Measured on random weights:
    up to 2.3e-3·c in bfloat16 and 2.6e-4·c in float16 on 3×3 ones, 2.7e-4·c and 3.0e-5·c on 50×400
    ones, 2.5e-7·c in float32. Where ‖W‖₂ ≤ c must hold strictly, pass ``max_norm`` c·(1 − u·‖W‖_F/‖W‖₂).

    Parameters
    ----------
    weight : torch.Tensor
        Shape ``(d0, d1, …)`` with at least 2 dimensions, seen as the matrix ``(d_dim, ∏ other dims)``:
        for a convolution's kernel that matrix's norm, not the layer's operator norm, which can be
        larger (:func:`riemsvd.nn.operator_norm`).
    max_norm : float
        c > 0.
    mode : {"ball", "sphere"}
        Clip the spectral norm at c, or set it to c.
    tol : float, optional
        Relative residual for the solve (default that of :func:`riemsvd.solve`).
        One below 2·ε·√max(m, n), the rounding of the weight's products in its dtype, is raised to
        it with a ConvergenceWarning, once.
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
    check_weight(weight, "weight")
    check_positive(max_norm, "max_norm")
    check_mode(mode)
    tol = as_number(tol)  # as riemsvd.solve takes it
    check_tol(tol)
    dim = check_dim(dim, weight.dim())
    check_projection_init(init, weight, dim)
    return _project(weight, max_norm, mode, tol, init, dim)


def _project(weight, max_norm: float, mode: str, tol, init, dim: int, tracker=None) -> SpectralProjection:
    """``project_spectral_`` on checked arguments, with the tracker of a hook that calls it each step."""
    u, v, s = leading_pair(as_matrix(weight, dim), init, tol, tracker)
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
        self.trackers = [PairTracker() for _ in params]

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
        One below 2·ε·√max(m, n), the rounding of the weight's products in its dtype, is raised to
        it with a ConvergenceWarning, once.
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
    tol = as_number(tol)  # as riemsvd.solve takes it
    params = check_projection_hook_args(optimizer, params, max_norm, mode, tol, dim)
    hook = _ProjectionHook(params, float(max_norm), mode, tol, dim)
    return optimizer.register_step_post_hook(hook)
