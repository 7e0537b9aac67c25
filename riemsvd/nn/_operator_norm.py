"""The norm of a layer as a linear map on inputs of a given shape: ``riemsvd.nn.operator_norm``, and the
parametrization that normalizes a convolution by it."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from riemsvd._backend import no_autocast
from riemsvd._linear import check_steady, conv_apply, conv_operator, is_conv, map_operator
from riemsvd._solve import solve
from riemsvd._subspace import NON_FINITE_PRODUCTS
from riemsvd._tolerance import solver_dtype
from riemsvd._validate import check_layer_input, check_module
from riemsvd.nn._leading import (
    NON_FINITE_WEIGHT,
    PairNormalization,
    PairTracker,
    operator_products,
    pair_sigma,
    warm_pair,
)


@torch.no_grad()
def _leading_pair_op(op, init, tol: float | None, tracker: PairTracker | None = None):
    """(u (m,), v (n,), σ) of an operator, warm-started from init = (u0, v0) as ``leading_pair``."""
    return warm_pair(op, operator_products(op), init, tol, tracker)


class OperatorNorm(PairNormalization):
    """W ↦ W / σ(W) with σ the norm of the convolution by W as a linear map on inputs of ``input_shape``.

    σ = ⟨u, conv(v; W)⟩ with (u, v) the operator's leading singular pair in buffers ``_u`` (output
    flattened) and ``_v`` (input flattened), held constant in the graph: at a singular pair that is the
    exact derivative of the operator norm, dσ = ⟨u, conv(v; dW)⟩.
    """

    def __init__(
        self, module: nn.Module, weight: torch.Tensor, input_shape, tol, eps: float, power_steps: int = 2
    ):
        # a grouped convolution is block-diagonal, a block a group (see PairTracker.complement_top)
        groups = module.groups if isinstance(module, nn.modules.conv._ConvNd) else 1
        super().__init__(power_steps, groups)
        self.layer = [module]  # a list: not registered as a submodule (no cycle, no state_dict keys)
        self.input_shape = tuple(input_shape)
        self.tol = tol
        self.eps = eps
        self._output_shape: torch.Size | None = None
        self.shape_warned = False  # a forward on inputs of another shape was warned of (spectral_norm)
        op = self._operator(weight.detach())
        if weight.is_meta:  # deferred initialization: the values, and the pair, come later (_unset)
            u, v = weight.new_empty(math.prod(op.output_shape)), weight.new_empty(math.prod(self.input_shape))
        else:
            u, v, _ = _leading_pair_op(op, None, tol, self._tracker)  # two triplets, as in SpectralNorm
        # in the weight's dtype, as SpectralNorm's and torch's (a bfloat16 convolution's had been
        # float32: its state_dict's alone; a new user's trial)
        self._store_pair(u.to(weight.dtype), v.to(weight.dtype), weight)

    def _operator(self, w: torch.Tensor, cast: torch.Tensor | None = None):
        w = w.to(solver_dtype(w.dtype)) if cast is None else cast
        op = conv_operator(self.layer[0], w, self.input_shape, self._output_shape)
        self._output_shape = op.output_shape  # checked and found by the first call
        return op

    @torch.no_grad()
    def update_pair(
        self,
        w: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        warm: bool = True,
        cast: torch.Tensor | None = None,
    ) -> None:
        """The operator's leading pair for the weight w, warm-started from (u, v) (or not:
        ``warm=False``), written into them; ``cast``: w in the solver's dtype, where the caller has it."""
        if w.is_meta:
            return
        op = self._operator(w, cast)
        init = (u.to(op.dtype), v.to(op.dtype)) if warm else None
        self._tracker.watch(w, math.sqrt(math.prod(w.shape[2:])))  # Weyl's bound: see PairTracker.watch
        with no_autocast(w.device):
            try:
                u_new, v_new, _ = _leading_pair_op(op, init, self.tol, self._tracker)
            except ValueError as err:  # the solve's "the operator returned NaN or Inf" named `A`
                if bool(torch.isfinite(w).all()):
                    raise
                raise ValueError(NON_FINITE_WEIGHT) from err  # as a matrix's (a new user's trial)
        u.copy_(u_new)
        v.copy_(v_new)

    def _pair_input(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dt = torch.promote_types(weight.dtype, torch.float32)  # as in SpectralNorm.forward
        wd = weight.to(dt)  # one cast, whose gradient is rounded once, and which the refresh solves with
        self._refresh(weight, wd.detach() if weight.dtype != dt else None)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        with no_autocast(weight.device):
            u, v = u.to(dt), v.to(dt)
            image = conv_apply(self.layer[0], wd, v.reshape((1,) + self.input_shape))
            sigma = pair_sigma(u, image.reshape(-1), v).clamp_min(self.eps)
            return (wd / sigma).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, tol={self.tol} ({self.effective_tol:.2g}), eps={self.eps}"


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
        (to first order; the error is quadratic in the residual) before its rounding to that dtype:
        a bfloat16 or float16 layer's norm is found in float32 and then rounded, by up to 3.9e-3 and
        4.9e-4 of itself, half each dtype's ε (a bfloat16 convolution's came out 3.0e-3 off its
        float64 norm: 1.109375 for 1.1060071; a new user's trial). Runs eagerly under
        ``torch.compile``, behind a graph break; ``fullgraph=True`` refuses it: call it outside the
        compiled function.

    Raises
    ------
    TypeError, ValueError
        If ``layer`` is not an ``nn.Module`` or ``input_shape`` is not a tuple or list of positive
        ints (an int n: (n,)).

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
    check_module(layer, "layer")
    input_shape = check_layer_input(layer, input_shape)
    with torch.no_grad():
        if is_conv(layer) or isinstance(layer, nn.Linear):  # the weight read once (a parametrized
            check_steady(layer, "layer")  # (map_operator checks the other modules)
            weight = cast(torch.Tensor, layer.weight).detach()  # one is computed once)
            dtype = weight.dtype
            weight = weight.to(solver_dtype(dtype))
            op = conv_operator(layer, weight, input_shape) if is_conv(layer) else weight
        else:
            dtype = next((p.dtype for p in layer.parameters()), torch.get_default_dtype())
            op = map_operator(layer, input_shape, name="layer")  # a half layer as a float32 copy
        try:
            return solve(op, 1, tol=tol, generator=generator).S[0].to(dtype)  # solve runs outside autocast
        except ValueError as err:  # "the operator returned NaN or Inf": `A`, which the user never passed
            if str(err) != NON_FINITE_PRODUCTS:
                raise
            raise ValueError(
                "`layer` returned NaN or Inf for a finite input (a parameter with NaN or Inf entries, or "
                "an overflow?); its norm is undefined."
            ) from err
