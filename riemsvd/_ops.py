"""``riemsvd.solve`` and the normalizations' refresh as PyTorch custom operators, for ``torch.compile``.

Under ``torch.compile`` a dense solve is one opaque operator, ``riemsvd::solve``, with a fake
implementation (the shapes of its results), an autograd rule whose backward is a second opaque
operator, ``riemsvd::solve_backward``, and a vmap rule: the compiled graph has no break at the solve
and its guards do not depend on A's values, so a changing weight does not recompile. At run time both
operators run the eager code (:func:`riemsvd.solve` and its backward in ``_autograd``), warnings
included. Eager calls do not go through them: the autograd.Function there also has the forward-mode
rule (``torch.func.jvp``), which custom operators lack; so a compiled function under forward mode
calls the eager solve behind a graph break (``riemsvd._solve.solve``).

``riemsvd::refresh_pair`` is the training-mode update of ``riemsvd.nn``'s stored singular pair (power
steps tested on the host, a solve where they fail), returned for the caller to copy into its buffers.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch

from riemsvd._autograd import Layout, cotangent
from riemsvd._result import SolveInfo
from riemsvd._subspace import DEFAULT_OPTIONS, SolverOptions
from riemsvd._tolerance import default_tol
from riemsvd._validate import check_compiled_args

__all__ = ["compiled_solve", "pair_owner_key", "refresh_pair"]

# Where SolveInfo's counts travel: one int64 tensor, on the host.
_COUNTS = ("iterations", "matvecs", "restarts")


@torch.library.custom_op("riemsvd::solve", mutates_args=())
def _solve_op(
    a: torch.Tensor,
    k: int,
    tol: float | None,
    maxiter: int | None,
    u0: torch.Tensor | None,
    v0: torch.Tensor | None,
    method: str,
    block: int | None,
    max_basis: int | None,
    start_block: int,
    patience: int,
    gap_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, V, converged, residual, errors, counts) of the eager solve; counts = (iterations,
    matvecs, restarts) as int64 on the host."""
    from riemsvd._solve import solve  # _solve imports this module

    init = None if u0 is None else u0 if v0 is None else (u0, v0)
    options = SolverOptions(block, max_basis, start_block, patience, gap_last)
    out = solve(a, k, tol=tol, maxiter=maxiter, init=init, options=options, method=method)
    info = out.info
    assert info is not None and info.errors is not None  # solve always fills both
    counts = torch.tensor([getattr(info, name) for name in _COUNTS], dtype=torch.int64)
    return out.U, out.S, out.V, info.converged, info.residual, info.errors, counts


@_solve_op.register_fake
def _solve_shapes(
    a, k, tol, maxiter, u0, v0, method, block, max_basis, start_block, patience, gap_last=False
):
    batch, (m, n) = a.shape[:-2], a.shape[-2:]
    return (
        a.new_empty(batch + (m, k)),
        a.new_empty(batch + (k,)),
        a.new_empty(batch + (n, k)),
        a.new_empty(batch, dtype=torch.bool),
        a.new_empty(batch),
        a.new_empty(batch + (k,)),
        torch.empty(len(_COUNTS), dtype=torch.int64),
    )


def _save(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], *output[:3])
    ctx.mark_non_differentiable(*output[3:])


def _backward(ctx, gu, gs, gv, *_):
    a, u, s, v = ctx.saved_tensors
    return (torch.ops.riemsvd.solve_backward(a, u, s, v, gu, gs, gv),) + (None,) * 11


_solve_op.register_autograd(_backward, setup_context=_save)


def _solve_vmap(info, in_dims, a, k, tol, maxiter, u0, v0, *rest):
    # The solve is batched over A's leading dimensions already: the mapped one goes first.
    def first(x, dim):
        if x is None:
            return None
        return x.movedim(dim, 0) if dim is not None else x.expand(info.batch_size, *x.shape)

    a_dim, u_dim, v_dim = in_dims[0], in_dims[4], in_dims[5]
    out = _solve_op(first(a, a_dim), k, tol, maxiter, first(u0, u_dim), first(v0, v_dim), *rest)
    return out, (0, 0, 0, 0, 0, 0, None)


_solve_op.register_vmap(_solve_vmap)


@torch.library.custom_op("riemsvd::solve_backward", mutates_args=())
def _solve_backward_op(
    a: torch.Tensor,
    u: torch.Tensor,
    s: torch.Tensor,
    v: torch.Tensor,
    gu: torch.Tensor | None,
    gs: torch.Tensor | None,
    gv: torch.Tensor | None,
) -> torch.Tensor:
    """Ā for the cotangents (Ū, S̄, V̄) of the solve's (U, S, V): ``_autograd.cotangent``. The
    compiled graph hands zeros where eager autograd hands None (a loss of S alone); zeros are read
    as None here, which spares the linear solves."""
    gu, gv = (None if g is None or not bool(g.any()) else g for g in (gu, gv))
    return cotangent(Layout(), a, u, s, v, gu, gs, gv)


@_solve_backward_op.register_fake
def _solve_backward_shape(a, u, s, v, gu, gs, gv):
    return torch.empty_like(a)


def compiled_solve(A, k, tol, maxiter, init, generator, options, method: str):
    """:func:`riemsvd.solve` as the custom operator, for a dense float32/float64 tensor A while
    ``torch.compile`` traces. ``info``'s counts are 0-dim int64 tensors there (reading one is a host
    sync), its ``history`` is empty and ``stop_reason`` None; ``converged``, ``residual`` and
    ``errors`` are as in eager mode. The checks that read A's values (NaN, Inf) run inside the operator."""
    from riemsvd._result import SVDResult

    check_compiled_args(A, k, tol, maxiter, init, generator, options)
    u0, v0 = (init, None) if isinstance(init, torch.Tensor) else (None, None) if init is None else init
    options = options or DEFAULT_OPTIONS
    out = torch.ops.riemsvd.solve(
        A, k, tol, maxiter, u0, v0, method, options.block, options.max_basis, options.start_block,
        options.patience, options.gap_last,
    )  # fmt: skip
    u, s, v, converged, residual, errors, counts = out
    tol_ = float(tol) if tol is not None else default_tol(A.dtype, A.shape[-2], A.shape[-1])
    counts_ = dict(zip(_COUNTS, counts.unbind()))
    info = SolveInfo(converged, residual=residual, tol=tol_, errors=errors, stop_reason=None, method=None,
                     **counts_)  # type: ignore[arg-type]  # fmt: skip
    return SVDResult(u, s, v, info)


# ---------------------------------------------------------------------------------------------------
# The training-mode refresh of a normalization's stored singular pair


_OWNERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def pair_owner_key(owner) -> int:
    """A key under which ``refresh_pair`` finds ``owner`` (a module with an ``update_pair(w, u, v)``
    method) from inside a compiled graph; held weakly. A copy (``copy.deepcopy``, unpickling) must
    take a key of its own."""
    key = next(_KEYS)
    _OWNERS[key] = owner
    return key


@torch.library.custom_op("riemsvd::refresh_pair", mutates_args=())
def _refresh_pair_op(
    w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, owner: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The owner's ``update_pair(w, u, v)`` on copies of u and v, returned: the leading pair of w,
    warm-started from (u, v). ``owner`` is the key of :func:`pair_owner_key` as a 0-dim int64
    tensor: a graph input, which the compiled graph does not guard on (an int attribute made every
    deep copy of a model recompile the forward, and the ninth fail under ``fullgraph=True``).

    New tensors, not u and v updated in place: updated in place, inductor's graph read the pair from
    the buffers themselves, without the forward's copies, and a layer called twice before one
    backward (a tied or shared layer) failed its backward ("modified by an inplace operation": the
    second call's refresh had rewritten the pair the first one's gradient read; a new user's
    trial)."""
    u, v = u.clone(), v.clone()
    _OWNERS[int(owner)].update_pair(w, u, v)
    return u, v


@_refresh_pair_op.register_fake
def _refresh_pair_shapes(w, u, v, owner) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(u), torch.empty_like(v)


def refresh_pair(
    owner,
    key: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    cast: torch.Tensor | None = None,
) -> None:
    """``owner.update_pair(w, u, v)``; under ``torch.compile`` one custom operator that returns the new
    pair, copied into u and v (the warm start's power steps, its tests and the solve read values on
    the host). ``cast``: w in the solver's dtype where the caller made it already (eager only)."""
    if torch.compiler.is_compiling():
        new_u, new_v = torch.ops.riemsvd.refresh_pair(w, u, v, key)
        with torch.no_grad():
            u.copy_(new_u)
            v.copy_(new_v)
    else:
        owner.update_pair(w, u, v, cast=cast)
