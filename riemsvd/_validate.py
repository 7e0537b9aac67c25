"""Argument validation for the public functions, gathered in one place.

Each error names the argument in backticks, says what is wrong and how to fix it; the numerical code
below the public functions assumes valid input.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from riemsvd._backend import readable_any
from riemsvd._operator import Operator, is_linear_operator_like, is_scipy_sparse, max_abs

__all__ = ["check_solve_args", "check_solve_shape_args"]

_FLOATS = (torch.float32, torch.float64)


def _check_float_dtype(dtype, what: str) -> None:
    if dtype in _FLOATS:
        return
    if dtype in (torch.complex64, torch.complex128):
        raise TypeError(
            f"`{what}` is complex ({dtype}); riemsvd handles real matrices only. "
            "Split into real and imaginary parts, or use torch.linalg.svd."
        )
    raise TypeError(
        f"`{what}` has dtype {dtype}; riemsvd needs float32 or float64 (bfloat16 and float16 tensors "
        f"are solved in float32). Convert it first, e.g. `{what}.double()`."
    )


def _check_dense(a: torch.Tensor) -> torch.Tensor | None:
    """Check a dense A; return max |a_ij| per matrix (shape (...)), which the operator reuses to
    rescale, so that A is read once for both."""
    if a.dim() < 2:
        raise ValueError(
            f"`A` must have at least 2 dimensions (..., m, n), got shape {tuple(a.shape)}; "
            "for a vector use `A.reshape(1, -1)` or `A.reshape(-1, 1)`."
        )
    _check_float_dtype(a.dtype, "A")
    if not a.numel():
        return None
    magnitude = max_abs(a)  # NaN propagates through max and min, Inf stays Inf
    if readable_any(~torch.isfinite(magnitude), default=False):
        raise ValueError("`A` has NaN or Inf entries; singular values of such a matrix are undefined.")
    return magnitude


def _check_sparse(a: torch.Tensor) -> None:
    if a.layout not in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc):
        raise ValueError(
            f"a sparse `A` must be COO, CSR or CSC, got {a.layout}; convert it with `A.to_sparse_csr()`."
        )
    if a.requires_grad:
        raise ValueError(
            "`A` is a sparse tensor that requires grad; riemsvd differentiates dense tensors only. "
            "Pass `A.detach()`, or a dense `A.to_dense()` to get gradients."
        )
    if a.dim() != 2:
        raise ValueError(
            f"a sparse `A` must be 2-D, got shape {tuple(a.shape)}; batch sparse matrices one by one."
        )
    _check_float_dtype(a.dtype, "A")
    values = a.coalesce().values() if a.layout == torch.sparse_coo else a.to_sparse_csr().values()
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise ValueError("`A` has NaN or Inf entries; singular values of such a matrix are undefined.")


def _check_scipy(a) -> None:
    shape = tuple(a.shape)
    if len(shape) != 2:
        raise ValueError(f"`A` must be 2-D, got shape {shape}.")
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        raise TypeError("`A` (a LinearOperator-like object) must have a `dtype` attribute.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        kind = "complex" if dtype.kind == "c" else str(dtype)
        raise TypeError(f"`A` has dtype {kind}; riemsvd needs float32 or float64.")
    if is_scipy_sparse(a):
        data = a.tocoo().data
        if data.size and not np.isfinite(data).all():
            raise ValueError("`A` has NaN or Inf entries; singular values of such a matrix are undefined.")


def _check_positive_int(value, name: str, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}.")


def _check_options(options) -> None:
    from riemsvd._subspace import SolverOptions

    if options is None:
        return
    if not isinstance(options, SolverOptions):
        raise TypeError(f"`options` must be a riemsvd.SolverOptions, got {type(options).__name__}.")
    for name in ("block", "max_basis"):
        _check_positive_int(getattr(options, name), f"options.{name}")
    for name in ("patience", "start_block"):
        _check_positive_int(getattr(options, name), f"options.{name}", allow_none=False)


def check_solve_args(a, k, tol, maxiter, init, generator, options=None) -> torch.Tensor | None:
    """Validate the arguments of :func:`riemsvd.solve`; return max |a_ij| per matrix for a dense A."""
    magnitude = None
    if isinstance(a, torch.Tensor):
        if a.layout == torch.strided:
            magnitude = _check_dense(a)
        else:
            _check_sparse(a)
    elif isinstance(a, Operator):  # e.g. riemsvd.linear_operator(...): torch dtype, products in torch
        _check_float_dtype(a.dtype, "A")
    elif is_scipy_sparse(a) or is_linear_operator_like(a):
        _check_scipy(a)
    elif isinstance(a, np.ndarray):  # float32 and float64 arrays were wrapped by solve already
        raise TypeError(
            f"`A` is a numpy array of dtype {a.dtype}; riemsvd needs float32 or float64, e.g. "
            "`A.astype(np.float64)`."
        )
    else:
        raise TypeError(
            f"`A` must be a torch.Tensor, a scipy sparse matrix or a LinearOperator-like object "
            f"(shape, dtype, matvec/rmatvec); got {type(a).__name__}."
        )
    m, n = int(a.shape[-2]), int(a.shape[-1])
    check_solve_shape_args((m, n), tuple(a.shape[:-2]), k, tol, maxiter, generator, options)
    if init is not None:
        _check_init(a, init, k, m, n)
    return magnitude


def check_solve_shape_args(shape, batch, k, tol, maxiter, generator, options) -> None:
    """The checks of :func:`riemsvd.solve` that need only A's shape (m, n): also run, on the whole
    shape, by every process of a sharded solve."""
    m, n = shape
    if m == 0 or n == 0:
        raise ValueError(f"`A` is empty (shape {tuple(batch) + (m, n)}); it has no singular values.")
    _check_positive_int(k, "k", allow_none=False)
    if k > min(m, n):
        raise ValueError(f"`k` must be at most min(m, n) = {min(m, n)} for A of shape {m}×{n}, got {k}.")
    if tol is not None:
        # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (0 < tol < 1):  # type: ignore[operator]
            raise ValueError(f"`tol` must be a number in (0, 1), got {tol!r}.")
    _check_positive_int(maxiter, "maxiter")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}.")
    _check_options(options)


def _check_init(a, init, k, m, n) -> None:
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise TypeError("`init` must be a pair (U0, V0) of tensors, e.g. a previous call's (U, V).")
    batch = tuple(a.shape[:-2]) if isinstance(a, torch.Tensor) else tuple(getattr(a, "batch_shape", ()))
    columns = []
    for name, x, rows in (("U0", init[0], m), ("V0", init[1], n)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`init` {name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[-2] != rows or x.shape[-1] < 1:
            raise ValueError(
                f"`init` {name} must have shape (..., {rows}, j) with j >= 1 (the first k columns are "
                f"used), got {tuple(x.shape)}."
            )
        if tuple(x.shape[:-2]) not in ((), batch):
            raise ValueError(f"`init` {name} has batch shape {tuple(x.shape[:-2])}, but A's is {batch}.")
        _check_float_dtype(x.dtype, f"init {name}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"`init` {name} has NaN or Inf entries.")
        columns.append(x.shape[-1])
    if columns[0] != columns[1]:
        raise ValueError(
            f"`init` U0 and V0 must have the same number of columns, got {columns[0]} and {columns[1]}."
        )


# ---------------------------------------------------------------------------------------------------
# riemsvd.nn's arguments


def check_weight(weight, what: str) -> None:
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


def check_dim(dim, ndim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"`dim` must be an int, got {type(dim).__name__}.")
    if not -ndim <= dim < ndim:  # type: ignore[operator]  # numbers.Integral: no int comparison in typeshed
        raise ValueError(f"`dim` must be in [-{ndim}, {ndim - 1}] for a {ndim}-D weight, got {dim}.")
    return int(dim) % ndim


def check_tol(tol) -> None:
    # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1):  # type: ignore[operator]
        raise ValueError(f"`tol` must be a number in (0, 1) or None, got {tol!r}.")


def check_positive(value, name: str) -> None:
    # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):  # type: ignore[operator]
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def check_mode(mode) -> None:
    if mode not in ("ball", "sphere"):
        raise ValueError(
            f"`mode` must be 'ball' (clip σ at max_norm) or 'sphere' (set σ = max_norm), got {mode!r}."
        )
