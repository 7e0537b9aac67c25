"""``riemsvd.nn.spectral_norm``: W ↦ W / σ(W) with σ exact, as a ``torch.nn.utils.parametrize``
parametrization (a drop-in for torch's), or the norm of a convolution as a linear map."""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils import parametrize

from riemsvd._backend import no_autocast
from riemsvd._result import callers_level
from riemsvd._validate import as_number, check_spectral_norm_args
from riemsvd.nn._leading import (
    PairNormalization,
    _transformed,
    as_matrix,
    leading_pair,
    pair_norms,
    pair_sigma,
)
from riemsvd.nn._operator_norm import OperatorNorm

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# Entries from which a weight's W/σ takes divided_by_sigma. Its forward and backward alone took
# 0.25–0.27 ms against autograd's 0.25–0.29 at 256×256, 0.29–0.33 against 0.32–0.43 at 256×384 and
# 0.38 against 0.61 at 256×512 (float32, one thread), but a training step of a 256×256 Linear took
# 1.12 ms against 1.05 with it: the Function's Python (about 200 calls a step) costs more than it
# saves there
_WRITTEN_OUT_FROM = 1 << 17


def divided_by_sigma(
    wd: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    dim: int,
    eps: float,
    cast: torch.Tensor | None = None,
    half: torch.Tensor | None = None,
) -> torch.Tensor:
    """W / σ for σ = max(|uᵀ W v|/(‖u‖‖v‖), eps), u and v constants, W seen as a matrix by
    :func:`as_matrix` along ``dim``: SpectralNorm's forward, with its gradient written out,
    G ↦ (G − ⟨G, W⟩/σ · ∂σ/∂W)/σ with ∂σ/∂W = sign(uᵀW v)·u vᵀ/(‖u‖‖v‖), in two passes over the
    weight (a dot product and a rank-one update) where autograd's graph of the expression took about
    six (the division's backward alone negates, multiplies, divides and sums whole matrices). A
    forward and backward (one thread) took 0.43 ms against 0.67 at 384×384 in float32, 1.2 against
    2.9 at 384×1536, 10 against 32 at 1024×4096; a spectral-normalized MLP's training step
    (384-1536-384-384, Adam) 1.04–1.10× torch's against 1.28–1.31× in float32. The backward is made of
    differentiable operations on W, u and v (σ recomputed from W where a double backward records
    it), so that second derivatives are those of the expression.

    ``wd`` is W in u's dtype (float32 or float64), where a half-precision weight's gradients, first
    and second, are summed before they are rounded once (with a cast for σ and one for the
    quotient, the gradient's two terms had been rounded apart: entries 5–171% off where they
    cancel). ``cast``: wd as that matrix, detached (made here where not given), which the refresh
    solved with, so that a half weight is cast once a forward. ``half``: the half-precision weight
    wd was cast from, detached: W/σ comes in its dtype, rounded once. In bfloat16, a forward and
    backward took 1.4–1.6 ms against 1.7 at 1536×384 and 9.6–11.5 against 21–27 at 4096×1024 with
    the W/σ of the cast rounded afterwards."""
    if cast is None:
        cast = as_matrix(wd.detach(), dim)
    return _DividedBySigma.apply(wd, cast, half, u, v, _coefficients(cast, u, v, eps), dim, eps)


def _coefficients(matrix: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """(σ, c) in one tensor for W as a matrix: σ = max(|q|, eps) for q = uᵀ W v/(‖u‖‖v‖)
    (:func:`pair_sigma`'s), and c = −sign(q)/(‖u‖‖v‖σ), by which the gradient's rank-one term is
    ⟨G, W⟩·c·u vᵀ/σ; 0 where σ is clamped at eps, a constant there (clamp_min's gradient passes where
    |q| ≥ eps). Made with the forward, so that the backward's own small operations are few."""
    _, norms, quotient = _quotient(matrix, u, v)
    sigma = quotient.abs().clamp_min(eps)
    return torch.stack((sigma, torch.where(quotient.abs() >= eps, -quotient.sign() / (norms * sigma), 0.0)))


def _quotient(matrix: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """(W v, ‖u‖‖v‖, q = uᵀ W v/(‖u‖‖v‖)) for W as a matrix."""
    image, norms = torch.mv(matrix, v), pair_norms(u, v)
    return image, norms, torch.dot(u, image) / norms


class _DividedBySigma(torch.autograd.Function):
    """:func:`divided_by_sigma`, with ``setup_context``, as torch.func's transforms (vmap for
    per-sample gradients) and torch.compile take a Function. Its inputs: (W in float32 or float64,
    its matrix ``cast``, the ``half`` weight or None, u, v, (σ, c) of :func:`_coefficients`, dim,
    eps); the cast and the half weight are constants, W's value, and (σ, c) an input rather than a
    second output (whose gradient, None, torch's generated vmap rule of the backward did not take
    under jvp of a vmapped loss: an INTERNAL ASSERT about forward grads; a review)."""

    generate_vmap_rule = True  # vmap runs it as it runs its operations

    @staticmethod
    def forward(wd, cast, half, u, v, coefficients, dim, eps):  # type: ignore[override]
        if half is None:
            return wd / coefficients[0]
        # A half W divided on the CPU by the 0-dim float32 σ is the float32 quotient rounded once
        # (its kernel keeps such a divisor in float32; tests/test_nn.py checks it bit for bit): one
        # pass over W where the quotient of the cast and its rounding took two, and a fresh float32
        # matrix. Not relied on elsewhere, nor inside torch.func's transforms, whose σ may be batched
        # (a tensor, not a scalar, which the division would round to W's dtype first).
        if half.device.type == "cpu" and not _transformed(coefficients):
            return half / coefficients[0]
        return (wd / coefficients[0]).to(half.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        wd, cast, half, u, v, coefficients, dim, eps = inputs
        ctx.save_for_backward(wd, u, v, coefficients)  # not the cast: a copy of W along a dim other than 0
        # jvp's tensors only under forward mode (forward_ad's dual level, which torch.func.jvp enters
        # too): saved otherwise, they broke torch's generated vmap rule of the backward, whose grad of
        # a vmapped loss (an ensemble's, models stacked) raised "flat_bdims must not be None" (a
        # review); a torch without the level saves them always
        if getattr(forward_ad, "_current_level", 0) >= 0:
            ctx.save_for_forward(cast, u, v)
        ctx.dim, ctx.eps, ctx.shape, ctx.dtype = dim, eps, wd.shape, output.dtype
        ctx.set_materialize_grads(False)

    @staticmethod
    def jvp(ctx, dw, _cast, _half, du, dv, *_):  # type: ignore[override]
        """Forward mode: d(W/σ) = dW/σ − W dσ/σ², dσ = sign(q)·dq where |q| ≥ eps, with q's tangent
        from all three of W, u and v (any of them None: no tangent; the cast's and the half
        weight's are W's)."""
        cast, u, v = ctx.saved_tensors
        image, norms, quotient = _quotient(cast, u, v)
        sigma = quotient.abs().clamp_min(ctx.eps)
        inner, scale = torch.zeros_like(quotient), torch.zeros_like(quotient)  # of uᵀWv and of ‖u‖‖v‖
        if dw is not None:
            dw = as_matrix(dw, ctx.dim)
            inner = inner + torch.dot(u, torch.mv(dw, v))
        if du is not None:
            inner, scale = inner + torch.dot(du, image), scale + torch.dot(u, du) / torch.dot(u, u)
        if dv is not None:
            inner = inner + torch.dot(u, torch.mv(cast, dv))
            scale = scale + torch.dot(v, dv) / torch.dot(v, v)
        rate = quotient.sign() * (inner / norms - quotient * scale)  # σ's, where it is not clamped
        out = -cast * (torch.where(quotient.abs() >= ctx.eps, rate, 0.0) / (sigma * sigma))
        out = out if dw is None else out + dw / sigma
        return _from_matrix(out, ctx.shape, ctx.dim).to(ctx.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """The gradient with respect to W alone, in W's float32 or float64 (u's and v's are not made:
        SpectralNorm.forward takes autograd's graph where they are wanted)."""
        if grad is None:
            return (None,) * 8
        wd, u, v, coefficients = ctx.saved_tensors
        own = grad.dtype != wd.dtype  # a half G's cast: a matrix of this backward's own
        grad = grad.to(wd.dtype)
        inner = torch.dot(grad.reshape(-1), wd.reshape(-1))  # ⟨G, W⟩ in W's own layout: no copy of W
        g = as_matrix(grad, ctx.dim)
        # a double backward, or forward mode over this backward (forward_ad's duals, which run with
        # grad off: their tangent came 7.9e-3 off; a review): σ and c as functions of W, not constants
        if torch.is_grad_enabled() or forward_ad.unpack_dual(wd).tangent is not None:
            sigma, rank_one = _coefficients(as_matrix(wd, ctx.dim), u, v, ctx.eps).unbind()
            out = torch.addr(g, u * (inner * rank_one), v) / sigma
        else:  # in place in the cast of a half G, else in addr's result
            sigma, rank_one = coefficients.unbind()
            part = u * (inner * rank_one)
            if g.device.type == "cpu" and not _transformed(g):
                # 1/σ as addr's scale (σ read to the host, free on the CPU): one pass where a division
                # after it took a second
                scale = 1 / float(sigma)
                out = (g.addr_ if own else g.addr)(part, v, beta=scale, alpha=scale)
            else:
                out = (g.addr_(part, v) if own else torch.addr(g, part, v)).div_(sigma)
        return (_from_matrix(out, ctx.shape, ctx.dim),) + (None,) * 7


def _from_matrix(mat: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """The inverse of :func:`as_matrix`: the matrix (shape[dim], ∏ other dims) as a tensor of ``shape``."""
    if dim == 0:
        return mat.reshape(shape)
    order = (dim, *(d for d in range(len(shape)) if d != dim))
    inverse = sorted(range(len(shape)), key=order.__getitem__)
    return mat.reshape([shape[d] for d in order]).permute(inverse)


class SpectralNorm(PairNormalization):
    """W ↦ W / σ(W), σ = uᵀ W v with (u, v) the leading singular pair, kept in buffers ``_u``, ``_v``.

    W is seen as the matrix (W.shape[dim], ∏ other dims). In training mode each forward refreshes
    (u, v) by a power step or a solve warm-started from the buffers (``warm_pair``); in eval mode the
    stored vectors are used as they are.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        dim: int = 0,
        tol: float | None = None,
        eps: float = 1e-12,
        power_steps: int = 2,
    ):
        super().__init__(power_steps)
        self.dim = dim
        self.tol = tol
        self.eps = eps
        if not weight.is_meta and weight.numel() and not bool(weight.detach().any()):
            # the docstring said so, and two new users' trials met it all the same: a zero-initialized
            # last layer (a residual or LoRA branch) went to ‖W‖ = 2.3e10 at its first SGD step and
            # stayed there, frozen, its loss 0.977 where a default init reached 0.799
            warnings.warn(
                "spectral_norm of a weight that is zero: W/σ is 0, and its gradient is that of W/eps "
                f"({1 / eps:.3g} times the incoming one), so a first SGD step takes the weight to a norm "
                "of about 1e10, where it barely learns. Initialize it away from zero (a small random "
                "init); for a branch that should start at zero, scale the normalized layer's output by "
                "a parameter initialized to 0 instead.",
                stacklevel=callers_level(),
            )
        self._store_pair(*self._first_pair(as_matrix(weight.detach(), dim), tol), weight)

    def _first_pair(self, w_mat: torch.Tensor, tol) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v) of w_mat from a cold solve; empty ones for a weight on the meta device, whose values
        come later (the first forward, in eval mode too, then solves from scratch: ``_unset``).

        The solve is for two triplets, as a warm one is (the tracker passed for that; registration's
        right_inverse starts it afresh): a cold solve for one converged to σ₂ where σ₁ lay 1e-4
        above it (20·tol) on 2 of 200 convolutions as linear maps, whose top values come in close
        pairs (Conv2d(8, 8, 3, padding=1), 1 to 8 groups, 8×8 inputs, float32), 0 of 200 for two,
        and the registered pair passed every check of the forwards after it (a new user's trial:
        the first forward 2.2e-4 off)."""
        if w_mat.is_meta:
            return w_mat.new_empty(w_mat.shape[0]), w_mat.new_empty(w_mat.shape[1])
        u, v, _ = leading_pair(w_mat, None, tol, self._tracker)
        return u, v

    @torch.no_grad()
    def update_pair(
        self,
        w_mat: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        warm: bool = True,
        cast: torch.Tensor | None = None,
    ) -> None:
        """The leading pair of w_mat, warm-started from (u, v) (or not: ``warm=False``), written into
        them (nothing to do for a weight on the meta device); ``cast``: w_mat in the solver's dtype,
        where the caller has it."""
        if w_mat.is_meta:
            return
        u_new, v_new, _ = leading_pair(w_mat, (u, v) if warm else None, self.tol, self._tracker, cast)
        # In place, so that replicas sharing the buffers' storage (DataParallel) see the update.
        u.copy_(u_new)
        v.copy_(v_new)

    def _pair_input(self, weight: torch.Tensor) -> torch.Tensor:
        return as_matrix(weight, self.dim)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # u, v are constants of the graph: at a singular pair dσ = uᵀ dW v exactly. In float32 at
        # least and outside autocast, so that a half-precision W/σ is rounded once, with an exact σ
        # (one cast of W, whose gradient is then rounded once too).
        dt = torch.promote_types(weight.dtype, torch.float32)
        wd = weight.to(dt)
        # autograd's graph of the expression for a sharded weight (DTensor's operators), a small one,
        # whose graph's nodes cost less than the written-out backward's Python, where u or v is
        # differentiated too (functional_call over the buffers: that backward is W's alone), and
        # under torch.compile, whose Dynamo refuses a Function with a jvp ("Unsupported custom
        # jvp": a graph break, an error with fullgraph=True) and whose inductor fuses the graph
        written_out = (
            wd.numel() >= _WRITTEN_OUT_FROM
            and not hasattr(wd, "full_tensor")
            and not (self._u.requires_grad or self._v.requires_grad)
            and not torch.compiler.is_compiling()
        )
        # there, the refresh solves with the cast too: a half weight's float32 copy had been made
        # twice a forward (the refresh's, W/σ's), and a float32 one along dim 1 its matrix twice
        half = weight.detach() if weight.dtype != dt and written_out else None
        cast = as_matrix(wd.detach(), self.dim) if written_out else None
        self._refresh(weight, cast)
        # Clones: a later forward updates the buffers in place while this graph may still need them.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        with no_autocast(weight.device):
            u, v = u.to(dt), v.to(dt)
            if written_out:
                return divided_by_sigma(wd, u, v, self.dim, self.eps, cast, half)
            sigma = pair_sigma(u, torch.mv(as_matrix(wd, self.dim), v), v).clamp_min(self.eps)
            return (wd / sigma).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, tol={self.tol} ({self.effective_tol:.2g}), eps={self.eps}"


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
    away from the truth: each training-mode forward refreshes the leading singular pair (u, v) from
    the stored one, by power steps where their σ error is bounded within ``tol`` (the usual case), by
    :func:`riemsvd.solve` warm-started from it where not (see Notes), and the first forward is
    already exact. The normalized weight is W / σ with σ = uᵀ W v computed differentiably with u, v
    held constant, which at a singular pair is the exact derivative of ‖W‖₂: the gradient with respect
    to W is (Ḡ − ⟨Ḡ, W/σ⟩ u vᵀ) / σ for an upstream gradient Ḡ of the normalized weight. Second
    derivatives (a double backward: Hessian-vector products, MAML,
    :class:`~riemsvd.optim.RiemannianTrustRegion`) are not exact through it, as they are not through
    torch's: u and v held constant leave out their own derivatives (a Hessian-vector product of
    tanh(x Wᵀ/σ) 0.19 off, relative, on a 5×6 float64 layer; a new user's trial found 3.4e-2 on
    another). Where they are needed, divide by ``riemsvd.solve(W, 1).S[0]``, whose second derivatives
    are exact (7e-16 on that layer).

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
        σ is clamped below at ``eps``, so a zero weight gives zeros, not NaN. The gradient there is that
        of W/eps, about 1/eps times the incoming one (1e12 by default): a zero-initialized weight
        jumps to ‖W‖ ≈ 1e10 at its first SGD step and then barely learns (torch's gives NaN), and
        registering a zero weight warns. Start the weight away from zero, as torch's own
        initializations do.
    dim : int, optional
        The output dimension: the weight of shape ``(d0, d1, …)`` is seen as the matrix
        ``(d_dim, ∏ other dims)``. Default 0, and 1 for ConvTranspose1d/2d/3d (as in torch).
    tol : float, optional
        Relative accuracy of σ: each training forward's σ is within tol·σ of ‖W‖₂, so ‖W/σ‖₂ is 1 to
        tol (see Notes; where the top singular values lie closer together than tol·σ, a solve can
        stop on a lower one of them, so keep tol below the gaps that matter; the parametrization's
        ``effective_tol`` is the tol it keeps, its default or raised). Default that of
        :func:`riemsvd.solve` (1e-12 in float64, 1e-6 in float32, or
        2·ε·√max(m, n) if larger). Solves, when a step needs one, run to relative residual ``tol``.
        A tol below 2·ε·√max(m, n), the rounding of the products of the m×n matrix in its dtype (ε
        of float32 for half weights), is raised to it with a ConvergenceWarning, once.
    input_shape : tuple of int, optional
        For a Conv1d/2d/3d or ConvTranspose1d/2d/3d ``module`` (zero padding): normalize by the norm of
        the convolution as a linear map on inputs of this shape ``(C, *spatial)`` (no batch
        dimension), as :func:`operator_norm` computes it, instead of the reshaped kernel's norm. Then
        σ = ⟨u, conv(v; W)⟩ with the singular pair (u, v) of the operator in buffers ``_u`` (the output
        flattened) and ``_v`` (the input flattened), refreshed like the kernel's pair in each
        training forward; ``dim`` is not used. The layer is then 1-Lipschitz on inputs of that shape
        (a forward on inputs of another shape warns, once: its norm there differs).

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
    A training step usually costs what torch's costs: one power step from the stored pair (two products
    with W), kept when its σ is known to ``tol`` (where its residual is below tol, with a power step on
    the pair's complement, two products more, to see that nothing lies above). The error of a power step's
    σ is quadratic in the residual r of the pair: at most (r²/2)/(σ − σ₂) (Kato–Temple). σ₂ is estimated
    from the last solve (every solve is for two triplets, and one at most 50 steps old), allowed to
    have moved as far as σ₁ did, and raised to what the power step's residual direction shows; the step is
    kept when r² ≤ tol·σ·(σ − σ₂), half the allowance (an estimate of σ₂, not a bound).
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
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    tol = as_number(tol)  # a one-element float tensor, as riemsvd.solve takes it (a new user's trial)
    weight, dim, input_shape = check_spectral_norm_args(
        module, name, dim, tol, eps, n_power_iterations, input_shape
    )
    steps = max(2, int(n_power_iterations))
    norm: nn.Module
    if input_shape is not None:
        norm = OperatorNorm(module, weight, input_shape, tol, float(eps), steps)
        hook = functools.partial(_check_input_shape, name=name)
        hook.observes_only = True  # type: ignore[attr-defined]  # the layer's map stays plain (_linear.plain_layer)
        module.register_forward_pre_hook(hook)
    else:
        norm = SpectralNorm(weight, dim, tol, float(eps), steps)
    _warn_if_normalized(module, name)
    parametrize.register_parametrization(module, name, norm)
    return module


def _warn_if_normalized(module: nn.Module, name: str) -> None:
    """A UserWarning where ``module.<name>`` is spectrally normalized already (by this function or by
    torch's): a second normalization stacks on the first (as torch's does), divides by σ = 1, and
    costs its products again on every forward, unsaid (a new user's trial)."""
    chain = getattr(getattr(module, "parametrizations", None), name, None)
    if chain is None:
        return
    # torch's parametrization is a private class of torch.nn.utils.parametrizations: known by its name
    kinds = [type(p).__name__ for p in chain]
    kinds = [k for p, k in zip(chain, kinds) if isinstance(p, PairNormalization) or "SpectralNorm" in k]
    if kinds:
        warnings.warn(
            f"the module's `{name}` is spectrally normalized already ({kinds[0]}); a second "
            "normalization stacks on it, divides by σ = 1 and costs its products again on every forward. "
            "Remove the first (`torch.nn.utils.parametrize.remove_parametrizations`) or register once.",
            UserWarning,
            stacklevel=callers_level(),
        )


def _check_input_shape(module: nn.Module, args, *, name: str) -> None:
    """A UserWarning, once per normalization, where a forward's input is not of the shape the
    convolution was normalized on: its norm on other inputs differs, and the layer is not 1-Lipschitz
    there (a 3→8 3×3 Conv2d normalized on 3×4×4 inputs had norm 1.193 on 3×32×32 ones, unsaid; a new
    user's trial). Nothing once the normalization is removed."""
    chain = getattr(getattr(module, "parametrizations", None), name, None) if args else None
    norm = next((p for p in chain if isinstance(p, OperatorNorm)), None) if chain is not None else None
    if norm is None or norm.shape_warned or not isinstance(args[0], torch.Tensor):
        return
    shape = tuple(args[0].shape[-len(norm.input_shape) :])
    # other channels: torch's convolution raises, and a warning first said the layer is not
    # 1-Lipschitz on those inputs (a new user's trial)
    if shape != norm.input_shape and shape[:1] == norm.input_shape[:1]:
        norm.shape_warned = True
        warnings.warn(
            f"riemsvd.nn.spectral_norm normalized this convolution on inputs of shape "
            f"{norm.input_shape} (`input_shape`), and it is applied to inputs of shape {shape}, on which "
            "its norm differs: the layer is not 1-Lipschitz there. Pass `input_shape` of the inputs "
            "it sees.",
            UserWarning,
            stacklevel=callers_level(),  # the forward's caller (stacklevel 3 had pointed into torch)
        )
