"""Argument validation for the public functions, gathered in one place.

Each error names the argument in backticks, says what is wrong and how to fix it; the numerical code
below the public functions assumes valid input. Checks of what happens at run time (an operator that
returns NaN, a map found not linear, a closure's loss, what the processes of a sharded solve passed
against each other) stay with the code that runs.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from torch import nn

from riemsvd._backend import batch_elements, no_autocast, numpy_view, readable_any, readable_number
from riemsvd._operator import Operator, is_linear_operator_like, is_scipy_sparse, max_abs, stored_values
from riemsvd._tolerance import HALF

__all__ = [
    "NON_FINITE_A",
    "check_block",
    "check_bound_exists",
    "check_bounds_args",
    "check_closure",
    "check_compiled_args",
    "check_dim",
    "check_dtensor",
    "check_init_u",
    "check_input_shape",
    "check_layer_input",
    "check_local_init",
    "check_manifold",
    "check_map",
    "check_method",
    "check_mode",
    "check_module",
    "check_pair_input",
    "check_pair_shape",
    "check_param_groups",
    "check_positive",
    "check_projection_hook_args",
    "check_projection_init",
    "check_radius_rule",
    "check_sharded_matrix",
    "check_solve_args",
    "check_solve_shape_args",
    "check_spectral_norm_args",
    "check_tol",
    "check_trust_region_args",
    "check_weight",
    "probe_map",
]

_FLOATS = (torch.float32, torch.float64)
# what a solve of A with NaN or Inf entries raises; riemsvd.nn names the weight instead
NON_FINITE_A = "`A` has NaN or Inf entries; singular values of such a matrix are undefined."
_METHODS = ("auto", "iterative", "dense", "trust-region")


# ---------------------------------------------------------------------------------------------------
# The arguments of riemsvd.solve and riemsvd.norm_bounds


_QUANTIZED = (torch.qint8, torch.quint8, torch.qint32, torch.quint4x2, torch.quint2x4)
_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def _check_float_dtype(dtype, what: str) -> None:
    if dtype in _FLOATS:
        return
    if dtype in (torch.complex64, torch.complex128):
        raise TypeError(
            f"`{what}` is complex ({dtype}); riemsvd handles real matrices only. "
            "Split into real and imaginary parts, or use torch.linalg.svd."
        )
    if isinstance(dtype, torch.dtype) and dtype in _QUANTIZED:  # A.double() refuses a quantized tensor
        raise TypeError(f"`{what}` is a quantized tensor ({dtype}); pass `{what}.dequantize()`.")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):  # integers, bool
        raise TypeError(
            f"`{what}` has dtype {dtype}; riemsvd needs floating values (float32 or float64). Convert "
            f"it first, e.g. `{what}.double()`."
        )
    if dtype in HALF:
        raise TypeError(
            f"`{what}` has dtype {dtype}; riemsvd needs float32 or float64 here (solve itself takes a "
            f"bfloat16 or float16 tensor or DTensor A, in float32). Convert it first, e.g. `{what}.float()`."
        )
    raise TypeError(  # float8 (a new user's trial)
        f"`{what}` has dtype {dtype}, which riemsvd does not take: it solves float64 and float32 "
        f"matrices, and bfloat16 and float16 tensors in float32. Convert it first, e.g. `{what}.float()`."
    )


def _check_dense_layout(a: torch.Tensor) -> None:
    """A dense A's dimensions and dtype: what needs no value of it."""
    if a.is_nested:  # torch's own errors said "Internal error" or named aten::amax (a review)
        raise TypeError(
            "`A` is a nested tensor; riemsvd takes a dense tensor of shape (..., m, n). Solve each "
            "matrix on its own (`[riemsvd.solve(x, k) for x in A.unbind()]`), or pad them to one shape."
        )
    if a.dim() < 2:
        raise ValueError(
            f"`A` must have at least 2 dimensions (..., m, n), got shape {tuple(a.shape)}; "
            "for a vector use `A.reshape(1, -1)` or `A.reshape(-1, 1)`."
        )
    _check_float_dtype(a.dtype, "A")


def _check_dense(a: torch.Tensor, entries: bool = True) -> torch.Tensor | None:
    """Check a dense A; return max |a_ij| per matrix (shape (...)), which the operator reuses to
    rescale, so that A is read once for both. Without ``entries`` the entries are left unread (None):
    the solve's first pass over A reads their maximum (:meth:`DenseOperator.check_entries`)."""
    _check_dense_layout(a)
    if not a.numel() or not entries:
        return None
    magnitude = max_abs(a)  # NaN propagates through max and min, Inf stays Inf
    check_magnitude(magnitude)
    return magnitude


def check_magnitude(magnitude: torch.Tensor) -> None:
    """Raise where a dense A's max |a_ij| (per matrix, shape (...)) is not finite: A holds NaN or Inf."""
    if not _finite(magnitude):
        raise ValueError(NON_FINITE_A + batch_elements(~torch.isfinite(magnitude)))


def _finite(magnitude: torch.Tensor) -> bool:
    """Whether every max |a_ij| is finite (True where it cannot be read: inside a torch.func
    transform)."""
    value = readable_number(magnitude)
    if value is not None:
        return math.isfinite(value)
    return not readable_any(~torch.isfinite(magnitude), default=False)


def _check_sparse(a: torch.Tensor) -> None:
    if a.layout not in _SPARSE_LAYOUTS:  # an MKL-DNN tensor had been told to become CSR (a trial)
        raise ValueError(f"`A` has layout {a.layout}, which riemsvd does not take; pass `A.to_dense()`.")
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
    if a.dense_dim() != 0:  # a hybrid tensor: torch's own error named a CSR conversion, not `A`
        raise ValueError(
            f"a sparse `A` must have both dimensions sparse, got a hybrid tensor with sparse_dim="
            f"{a.sparse_dim()} and dense_dim={a.dense_dim()}; convert it with `A.to_dense().to_sparse()`."
        )
    _check_float_dtype(a.dtype, "A")
    values = a.coalesce().values() if a.layout == torch.sparse_coo else a.to_sparse_csr().values()
    if values.numel() and not bool(torch.isfinite(values).all()):
        raise ValueError(NON_FINITE_A)


def _numpy_dtype_fix(dtype, operator: bool = False) -> str:
    """What to say of a numpy dtype other than float32 and float64: the conversion that keeps the
    values, or, for complex ones, that there is none (``astype`` would drop the imaginary part)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (
            "riemsvd handles real matrices only (`astype(np.float64)` would drop the imaginary part). "
            "Split into real and imaginary parts, or use numpy.linalg.svd."
        )
    if operator:  # a LinearOperator has no astype
        return (
            "riemsvd needs float32 or float64: give the operator `dtype=np.float64` and float64 "
            "products, e.g. `scipy.sparse.linalg.aslinearoperator(M.astype(np.float64))`."
        )
    return "riemsvd needs float32 or float64: convert it first, e.g. `A.astype(np.float64)`."


def _check_scipy(a) -> None:
    shape = tuple(a.shape)
    if len(shape) != 2:
        raise ValueError(f"`A` must be 2-D, got shape {shape}.")
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        raise TypeError("`A` (a LinearOperator-like object) must have a `dtype` attribute.")
    if isinstance(dtype, torch.dtype):  # numpy's own message: "Cannot interpret 'torch.float64'"
        raise TypeError(
            f"`A` (a LinearOperator-like object) has dtype {dtype}, a torch dtype; its products are "
            "numpy's: give it a numpy dtype, e.g. `np.float64`, as scipy's LinearOperator has, or pass "
            "a torch operator through riemsvd.linear_operator."
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        # scipy's svds takes integer matrices: the fix, not only the refusal (a new user's trial)
        raise TypeError(f"`A` has dtype {dtype}; " + _numpy_dtype_fix(dtype, operator=not is_scipy_sparse(a)))
    if is_scipy_sparse(a):
        data = stored_values(a)
        if data.size and not np.isfinite(data).all():
            raise ValueError(NON_FINITE_A)


def check_positive_int(value, name: str, *, allow_none: bool = True) -> None:
    """A TypeError for a non-int (bool included), a ValueError below 1."""
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
    if not isinstance(options, SolverOptions):  # its fields are checked when it is made
        raise TypeError(f"`options` must be a riemsvd.SolverOptions, got {type(options).__name__}.")


def check_solve_args(
    a, k, tol, maxiter, init, generator, options=None, entries: bool = True
) -> torch.Tensor | None:
    """Validate the arguments of :func:`riemsvd.solve`; return max |a_ij| per matrix for a dense A
    (None without ``entries``: see :func:`_check_dense`)."""
    magnitude = None
    if isinstance(a, torch.Tensor):
        _check_has_values(a, "`A`")
        if a.layout == torch.strided:
            magnitude = _check_dense(a, entries)
        else:
            _check_sparse(a)
    elif isinstance(a, Operator):  # e.g. riemsvd.linear_operator(...): torch dtype, products in torch
        _check_float_dtype(a.dtype, "A")
    elif is_scipy_sparse(a) or is_linear_operator_like(a):
        _check_scipy(a)
    elif isinstance(a, np.ndarray):  # float32 and float64 arrays were wrapped by solve already
        raise TypeError(f"`A` is a numpy array of dtype {a.dtype}; " + _numpy_dtype_fix(a.dtype))
    elif hasattr(a, "shape") and len(getattr(a, "shape", ())) != 2 and hasattr(a, "dtype"):
        # a LinearOperator-like object but for its shape: the generic message named none of it
        raise ValueError(
            f"`A` must be 2-D, got shape {tuple(a.shape)}; a LinearOperator-like object has shape (m, n) "
            "(batches of dense matrices go as a torch.Tensor of shape (..., m, n))."
        )
    elif hasattr(a, "shape") and (hasattr(a, "matvec") or hasattr(a, "matmat")):
        # products with A alone: the generic message below named nothing missing (a new user's trial)
        raise TypeError(
            f"`A` ({type(a).__name__}) has `matvec` or `matmat` but not the matching product with Aᵀ: a "
            "LinearOperator-like object needs `rmatvec` beside `matvec` (or `rmatmat` beside `matmat`); "
            "riemsvd multiplies by A and by Aᵀ. Add it, or wrap both in scipy.sparse.linalg.LinearOperator("
            "shape, matvec=..., rmatvec=..., dtype=...)."
        )
    else:
        raise TypeError(
            "`A` must be a torch.Tensor, a float numpy array, a scipy sparse matrix or a LinearOperator-like "
            f"object (shape, dtype, matvec/rmatvec); got {type(a).__name__}."
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
    check_positive_int(k, "k", allow_none=False)
    if k > min(m, n):
        # the whole shape: a batch's matrices, (3, 5, 4), had been told "A of shape 5×4" (a new user's trial)
        whole = f"{tuple(batch) + (m, n)} (a batch of {m}×{n} matrices)" if batch else f"{m}×{n}"
        raise ValueError(f"`k` must be at most min(m, n) = {min(m, n)} for A of shape {whole}, got {k}.")
    if tol is not None:
        # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
        if isinstance(tol, torch.Tensor):  # solve reads a one-element float tensor, except under compile
            raise TypeError(
                f"`tol` must be a number in (0, 1), got a {tol.dtype} tensor of shape {tuple(tol.shape)} on "
                f"{tol.device}; pass `float(tol)` (a one-element float tensor with a value is read as one, "
                "except under torch.compile)."
            )
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (0 < tol < 1):  # type: ignore[operator]
            # scipy's svds reads tol=0 as machine precision: say what comes closest here
            hint = ""
            if isinstance(tol, numbers.Real) and tol == 0:
                hint = " For near machine precision pass `tol=None`: 1e-12 in float64, 1e-6 in float32."
            raise ValueError(f"`tol` must be a number in (0, 1), got {tol!r}.{hint}")
    check_positive_int(maxiter, "maxiter")
    check_generator(generator)
    _check_options(options)


def check_generator(generator) -> None:
    """``generator``: a torch.Generator or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}.")


def _check_init_pair(init) -> None:
    """``init`` as a pair (U0, V0) of tensors: what a solve of a whole A and every process of a
    sharded one check before the shapes."""
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise TypeError("`init` must be a pair (U0, V0) of tensors, e.g. a previous call's (U, V).")
    for name, x in zip(("U0", "V0"), init):
        if isinstance(x, np.ndarray):  # a float32/float64 one was taken as a tensor already
            raise TypeError(  # "must be a torch.Tensor, got ndarray" for float16 (a new user's trial)
                f"`init` {name} is a numpy array of dtype {x.dtype}; it must be float32 or float64 (or a "
                f"float torch.Tensor), e.g. `{name}.astype(np.float64)`."
            )
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"`init` {name} must be a torch.Tensor or a float numpy array, got {type(x).__name__}; "
                f"e.g. `torch.as_tensor({name}, dtype=torch.float64)`."
            )


def _check_has_values(x: torch.Tensor, name: str) -> None:
    """A ValueError for a tensor on the meta device (deferred initialization): it has a shape and a
    dtype but no values, and torch's own errors on it ("Cannot copy out of meta tensor") named no
    argument."""
    if x.is_meta:
        raise ValueError(
            f"{name} is on the meta device: it has no values yet. Materialize it first (e.g. "
            "`module.to_empty(device='cpu')` and initialize it, or create it on a real device)."
        )


def _check_finite_init(x: torch.Tensor, name: str) -> None:
    _check_has_values(x, f"`init` {name}")
    view = numpy_view(x)  # numpy's test on a CPU tensor: torch's took 30 µs a start, a spectral norm's
    bad = not np.isfinite(view).all() if view is not None else readable_any(~torch.isfinite(x), default=False)
    if bad:  # torch's not readable inside torch.func.vmap
        raise ValueError(f"`init` {name} has NaN or Inf entries.")


def _check_init(a, init, k, m, n) -> None:
    _check_init_pair(init)
    batch = tuple(a.shape[:-2]) if isinstance(a, torch.Tensor) else tuple(getattr(a, "batch_shape", ()))
    columns = []
    for name, x in zip(("U0", "V0"), init):
        if x.dim() == 0:
            raise ValueError(
                f"`init` {name} must be a vector or a matrix of shape (..., rows, j), got a scalar."
            )
    rows_of = [x.shape[-2] if x.dim() > 1 else x.shape[0] for x in init]
    # (V0, U0) for (U0, V0): scipy's svds returns (u, s, vh), torch.svd_lowrank (U, S, V)
    swapped = m != n and rows_of == [n, m]
    for name, x, rows in (("U0", init[0], m), ("V0", init[1], n)):
        # a matrix (..., j, rows) for (..., rows, j): scipy's svds returns vh = Vᵀ
        transposed = not swapped and x.dim() >= 2 and x.shape[-1] == rows and x.shape[-2] != rows
        # a vector per matrix, (..., rows), as U[..., 0] gives: .mT had been advised, which then
        # failed on the batch shape (a new user's trial)
        vectors = bool(batch) and tuple(x.shape) == batch + (rows,)
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.shape[-2] != rows or x.shape[-1] < 1:
            hint = ""
            if swapped:
                hint = " U0 and V0 look swapped: pass (U0, V0), U0 with A's rows."
            elif vectors:
                hint = f" {name} looks like one vector per matrix: pass {name}.unsqueeze(-1)."
            elif transposed:
                where = " (scipy's svds returns vh = Vᵀ)" if name == "V0" else ""
                hint = f" {name} looks transposed{where}: pass {name}.mT."
            raise ValueError(
                f"`init` {name} must have shape (..., {rows}, j) with j >= 1 (the first k columns are "
                f"used), got {tuple(x.shape)}.{hint}"
            )
        if not _broadcasts_to(tuple(x.shape[:-2]), batch):
            raise ValueError(
                f"`init` {name} has batch shape {tuple(x.shape[:-2])}, but A's is {batch}: give it A's "
                "batch shape, one that broadcasts to it (1 where one start serves a batch dimension), "
                f"or none, as {name}[0] (one start for every matrix)."
            )
        if not x.is_floating_point():  # any float dtype: the start is cast to A's
            raise TypeError(
                f"`init` {name} has dtype {x.dtype}; it must be a float tensor, e.g. `{name}.double()`."
            )
        _check_finite_init(x, name)
        columns.append(x.shape[-1])
    if columns[0] != columns[1]:
        raise ValueError(
            f"`init` U0 and V0 must have the same number of columns, got {columns[0]} and {columns[1]}."
        )


def _broadcasts_to(shape: tuple[int, ...], batch: tuple[int, ...]) -> bool:
    """Whether a warm start's batch shape broadcasts to A's without changing it (torch's rules:
    ``(1, 4)`` and ``(4,)`` to ``(3, 4)``; not ``(3, 4)`` to ``(4,)``)."""
    # in Python: torch.broadcast_shapes took 5 µs a call, twice a warm solve
    return len(shape) <= len(batch) and all(s in (1, b) for s, b in zip(shape[::-1], batch[::-1]))


def check_init_u(a, u0: torch.Tensor) -> None:
    """``init=U0`` alone: A a dense or sparse torch.Tensor or a scipy sparse matrix (V0 = Aᵀ U0 is
    computed from it), U0 a float tensor with A's rows."""
    dtensor = type(a).__name__ == "DTensor"
    if dtensor or not (
        isinstance(a, torch.Tensor)
        and a.layout in (torch.strided, torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)
        or is_scipy_sparse(a)
    ):
        raise TypeError(
            f"`init` as U0 alone needs A as a dense or sparse torch.Tensor or a scipy sparse matrix, got "
            f"{type(a).__name__}; pass the pair (U0, V0)."
        )
    if u0.dim() < 2 or u0.shape[-2] != a.shape[-2] or not u0.is_floating_point():
        raise ValueError(
            f"`init` as U0 alone must be a float tensor of shape (..., {a.shape[-2]}, j), got "
            f"{tuple(u0.shape)} {u0.dtype}; or pass the pair (U0, V0)."
        )
    if not _broadcasts_to(tuple(u0.shape[:-2]), tuple(a.shape[:-2])):
        raise ValueError(
            f"`init` as U0 alone has batch shape {tuple(u0.shape[:-2])}, but A's is {tuple(a.shape[:-2])}: "
            "give it A's batch shape, one that broadcasts to it, or none."
        )


def check_method(method, a, sharded: bool = False) -> None:
    """``method`` known, and applicable to A (``sharded``: A split across processes)."""
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {', '.join(map(repr, _METHODS))}, got {method!r}.")
    dense_tensor = isinstance(a, torch.Tensor) and a.layout == torch.strided and not sharded
    if method == "trust-region" and sharded:
        raise ValueError("`method='trust-region'` is not available for a sharded A; use method='iterative'.")
    if method == "dense" and not dense_tensor:
        # a sharded A was named NoneType (a new user's trial)
        got = f"a sharded A ({type(a).__name__})" if sharded else type(a).__name__
        raise ValueError(
            f"`method='dense'` needs A as a dense torch.Tensor or numpy array, got {got}"
            f"{'' if sharded or not isinstance(a, torch.Tensor) else f' with layout {a.layout}'}; use "
            "method='iterative' (or 'auto') for sparse, matrix-free and sharded A."
        )


def check_compiled_args(a, k, tol, maxiter, init, generator, options) -> None:
    """The checks of :func:`riemsvd.solve` while ``torch.compile`` traces a dense A: all that need no
    value of A or of ``init`` (the NaN/Inf checks run inside the custom operator, at run time), and
    what a compiled graph cannot take (a sharded A, a generator, a tensor k)."""
    if type(a).__name__ == "DTensor":
        raise TypeError(
            "under torch.compile, riemsvd.solve takes a dense torch.Tensor A, got a DTensor; call it "
            "outside the compiled function (torch.compiler.disable) for a sharded A."
        )
    if isinstance(k, torch.Tensor):
        raise TypeError("`k` must be a Python int under torch.compile, got a tensor; pass `int(k)` outside.")
    _check_dense_layout(a)
    check_solve_shape_args(tuple(a.shape[-2:]), tuple(a.shape[:-2]), k, tol, maxiter, generator, options)
    if generator is not None:
        raise ValueError(
            "`generator` cannot enter a compiled graph: without fullgraph=True the solve runs eagerly "
            "behind a graph break, from it; with fullgraph=True call riemsvd.solve outside the compiled "
            "function, or leave `generator` out (the random start then comes from torch's global "
            "generator, which torch.manual_seed makes reproducible)."
        )
    if init is not None and not isinstance(init, torch.Tensor):
        _check_init_pair(init)


def check_bounds_args(a, confidence) -> None:
    """The arguments :func:`riemsvd.norm_bounds` takes beyond :func:`riemsvd.solve`'s: ``confidence``,
    and an A held whole by this process."""
    from riemsvd._distributed import is_sharded  # imports torch.distributed

    # numbers.Real declares no comparison with int in typeshed (mypy issue 3186)
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1  # type: ignore[operator]
    ):
        raise ValueError(f"`confidence` must be a number in (0, 1) or None, got {confidence!r}.")
    if is_sharded(a):
        raise TypeError(
            "`A` is split across processes (a DTensor or ShardedMatrix); norm_bounds takes a matrix held "
            "whole by this process (for a Replicate() DTensor, pass `A.to_local()`). riemsvd.solve "
            "gives the leading triplets, with error bars in info.errors, of a sharded A."
        )


def check_bound_exists(frobenius_known: bool, size: int, full_space: int, confidence) -> None:
    """A deterministic upper bound needs ‖A‖_F or a search space of all min(m, n) = ``size``
    dimensions (at most ``full_space``); without either, ``confidence`` must be given."""
    if not frobenius_known and size > full_space and confidence is None:
        raise ValueError(
            f"no deterministic bound exists for this matrix-free operator (‖A‖_F is unknown and "
            f"min(m, n) = {size} > {full_space}); pass `confidence`, e.g. 0.999, for a probabilistic "
            "upper bound."
        )


# ---------------------------------------------------------------------------------------------------
# A sharded A: what each process checks of its own arguments (the comparison across processes, after
# the all-gather, is _distributed's)


def check_sharded_matrix(block, dim) -> None:
    """The arguments of :class:`riemsvd.ShardedMatrix`."""
    if not isinstance(block, torch.Tensor):
        raise TypeError(f"`block` must be a torch.Tensor, got {type(block).__name__}.")
    if block.layout != torch.strided:  # torch's own NotImplementedError had come from the solve's first pass
        raise TypeError(
            f"`block` must be a dense tensor, got a {str(block.layout).removeprefix('torch.')} one: "
            "ShardedMatrix's products are dense. Pass `block.to_dense()`."
        )
    if isinstance(dim, bool) or dim not in (0, 1):
        raise ValueError(f"`dim` must be 0 (split by rows) or 1 (split by columns), got {dim!r}.")
    if _mapped_by_vmap(block):  # torch's own ".item() under vmap" had come first
        raise ValueError(
            "`block` is mapped over by torch.func.vmap: a ShardedMatrix is one matrix, whose solve is a "
            "collective that reads values as it goes. Solve the matrices one after another."
        )


def _mapped_by_vmap(x: torch.Tensor) -> bool:
    """Whether a torch.func.vmap maps over ``x`` at any level of its transforms' wrappers: under
    vmap(grad(...)) the outermost is grad's, and a test of it alone let the solve fail inside (a
    review)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
    return False


def check_dtensor(a) -> int | None:
    """A DTensor on a 1-D mesh, 2-D and placed Shard(0), Shard(1) or Replicate(); return the dimension
    it is split along (None where replicated)."""
    from torch.distributed.tensor import Replicate, Shard

    mesh = a.device_mesh
    if mesh.ndim != 1:
        raise ValueError(
            f"`A` is a DTensor on a {mesh.ndim}-D device mesh; riemsvd.solve takes DTensors on a 1-D mesh "
            "(Shard(0), Shard(1) or Replicate()). Redistribute it, or pass "
            "riemsvd.ShardedMatrix(local_block, dim, group)."
        )
    placement = a.placements[0]
    if isinstance(placement, Shard) and placement.dim in (0, 1, -1, -2) and a.dim() == 2:
        return placement.dim % 2
    if isinstance(placement, Replicate):
        return None
    raise ValueError(
        f"`A` is a DTensor placed {placement!r}; riemsvd.solve takes a 2-D DTensor placed Shard(0), "
        "Shard(1) or Replicate(). Redistribute it first, e.g. `A.redistribute(mesh, [Shard(0)])`."
    )


def check_block(block: torch.Tensor) -> float:
    """This process's block of a sharded A: 2-D, as a dense A; return its max |a_ij| (0 if empty)."""
    if block.dim() != 2:
        raise ValueError(
            f"`A`: this process's block must be 2-D (m_r, n) or (m, n_r), got shape {tuple(block.shape)}."
        )
    magnitude = _check_dense(block.detach())
    return 0.0 if magnitude is None else float(magnitude)


def check_local_init(init) -> list[tuple[int, ...]]:
    """This process's ``init``: a pair of tensors with finite entries; return their shapes, which
    the processes check together (they depend on every process's block)."""
    _check_init_pair(init)
    for name, x in zip(("U0", "V0"), init):
        _check_finite_init(x, name)
    return [tuple(x.shape) for x in init]


# ---------------------------------------------------------------------------------------------------
# riemsvd.nn's arguments


def check_module(module, what: str) -> None:
    """``module`` (the argument called ``what``) an ``nn.Module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"`{what}` must be a torch.nn.Module, got {type(module).__name__}.")


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
    if weight.dtype not in _FLOATS + HALF:  # float8: torch's isfinite refused it
        raise TypeError(
            f"`{what}` has dtype {weight.dtype}; riemsvd takes float64, float32, bfloat16 and float16 "
            "weights (the last two solved in float32). Keep a float8 model's master weights in one of them."
        )
    if weight.numel() == 0:
        raise ValueError(f"`{what}` is empty (shape {tuple(weight.shape)}); it has no singular values.")


def check_dim(dim, ndim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"`dim` must be an int, got {type(dim).__name__}.")
    if not -ndim <= dim < ndim:  # type: ignore[operator]  # numbers.Integral: no int comparison in typeshed
        raise ValueError(f"`dim` must be in [-{ndim}, {ndim - 1}] for a {ndim}-D weight, got {dim}.")
    return int(dim) % ndim


def check_projection_init(init, weight: torch.Tensor, dim: int) -> None:
    """``project_spectral_``'s ``init``: None, or a pair (u, v) of vectors of the weight's matrix
    (d_dim,) and (∏ other dims,); swapped ones gave torch's "size mismatch" (a new user's trial)."""
    if init is None:
        return
    rows = weight.shape[dim]
    columns = weight.numel() // rows
    shapes = (
        [tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in init]
        if (isinstance(init, (tuple, list)) and len(init) == 2)
        else None
    )
    if shapes != [(rows,), (columns,)]:
        got = shapes if shapes is not None else type(init).__name__
        swapped = " (u and v look swapped)" if shapes == [(columns,), (rows,)] else ""
        raise ValueError(
            f"`init` must be a pair (u, v) of vectors of shapes ({rows},) and ({columns},), the weight "
            f"as a ({rows}, {columns}) matrix along dim={dim}, e.g. a previous call's (p.u, p.v); "
            f"got {got}{swapped}."
        )


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


def check_spectral_norm_args(
    module, name, dim, tol, eps, n_power_iterations, input_shape
) -> tuple[torch.Tensor, int, tuple[int, ...] | None]:
    """Validate the arguments of :func:`riemsvd.nn.spectral_norm` (``dim`` with its default filled
    in); return the weight, ``dim`` in [0, ndim) and ``input_shape`` as a tuple (or None).
    Every bad value of ``n_power_iterations`` is a ValueError, as in torch's spectral_norm."""
    from riemsvd._linear import conv_dim, is_conv

    check_module(module, "module")
    weight = getattr(module, name, None) if isinstance(name, str) else None
    if not isinstance(weight, torch.Tensor):
        # its own matrices by name: an LSTM has weight_ih_l0, weight_hh_l0, … and no `weight`, which
        # the message had not said (a new user's trial)
        own = [n for n, p in module.named_parameters(recurse=False) if p.dim() >= 2]
        named = (
            f" Its parameters of 2 or more dimensions: {', '.join(own)}; pass one as `name`." if own else ""
        )
        raise ValueError(
            f"`name`: {type(module).__name__} has no parameter or buffer called {name!r}.{named}"
        )
    from torch.nn.utils.spectral_norm import SpectralNorm as HookSpectralNorm

    if any(isinstance(h, HookSpectralNorm) and h.name == name for h in module._forward_pre_hooks.values()):
        # torch's parametrize then said the module had no `weight` (it is `weight_orig`), after a solve
        raise ValueError(
            f"`module.{name}` is normalized by torch.nn.utils.spectral_norm already (the older, hook-based "
            f"one: `{name}_orig` holds the weight). Remove it first with "
            f"`torch.nn.utils.remove_spectral_norm(module, {name!r})`."
        )
    check_weight(weight, f"module.{name}")
    dim = check_dim(dim, weight.dim())
    check_tol(tol)
    check_positive(eps, "eps")
    if (
        isinstance(n_power_iterations, bool)
        or not isinstance(n_power_iterations, numbers.Integral)
        or (n_power_iterations <= 0)
    ):
        raise ValueError(f"`n_power_iterations` must be a positive int, got {n_power_iterations!r}.")
    # a weight on the meta device (deferred initialization) has no values to check yet
    if not weight.is_meta and not bool(torch.isfinite(weight).all()):
        raise ValueError(f"`module.{name}` has NaN or Inf entries; its spectral norm is undefined.")
    if input_shape is not None:
        mode = getattr(module, "padding_mode", "zeros")
        if name == "weight" and mode != "zeros" and conv_dim(module) is not None:
            # a Conv2d with padding_mode="circular" read "got Conv2d.weight", which is what was passed
            raise ValueError(
                f"`input_shape` applies to zero-padded convolutions; this {type(module).__name__} has "
                f"padding_mode={mode!r}. Leave `input_shape` None for the reshaped kernel's norm, or "
                "measure the norm of its map with `riemsvd.nn.operator_norm(module, input_shape)`."
            )
        if not is_conv(module) or name != "weight":
            raise ValueError(
                "`input_shape` applies to the `weight` of a zero-padded Conv1d/2d/3d or "
                f"ConvTranspose1d/2d/3d, got {type(module).__name__}.{name}; leave it None for the "
                "reshaped kernel's norm."
            )
        input_shape = check_layer_input(module, input_shape)
    return weight, dim, input_shape


def check_projection_hook_args(optimizer, params, max_norm, mode, tol, dim) -> list[torch.Tensor]:
    """Validate the arguments of :func:`riemsvd.nn.register_projection_hook`; return ``params`` as a
    list."""
    if not callable(getattr(optimizer, "register_step_post_hook", None)):
        raise TypeError(
            f"`optimizer` must be a torch.optim.Optimizer (with register_step_post_hook), "
            f"got {type(optimizer).__name__}."
        )
    if isinstance(params, torch.nn.Module):  # "'Linear' object is not iterable" (a new user's trial)
        raise TypeError(
            f"`params` must be a tensor or an iterable of tensors (the weights to project), got the module "
            f"{type(params).__name__}; pass e.g. [layer.weight] (for a parametrized module, "
            "[layer.parametrizations.weight.original])."
        )
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params:
        raise ValueError("`params` is empty; pass the weights to project, e.g. [layer.weight].")
    for i, p in enumerate(params):
        check_weight(p, f"params[{i}]")
    check_positive(max_norm, "max_norm")
    check_mode(mode)
    check_tol(tol)
    for p in params:
        check_dim(dim, p.dim())
    stepped = {id(p) for group in getattr(optimizer, "param_groups", ()) for p in group.get("params", ())}
    for i, p in enumerate(params):
        if stepped and id(p) not in stepped:  # harmless, but most likely not what was meant (a trial)
            warnings.warn(
                f"`params[{i}]` is not among `optimizer`'s parameters: the hook projects it after each "
                "step, but the optimizer never changes it. Pass the tensors the optimizer updates (for a "
                "parametrized module, `module.parametrizations.weight.original`).",
                UserWarning,
                stacklevel=3,
            )
    return params


# ---------------------------------------------------------------------------------------------------
# SingularPair's and the optimizers' arguments


def check_pair_shape(m, n, k, dtype=None, generator=None) -> None:
    """The arguments of :class:`riemsvd.SingularPair`: positive ints with k <= min(m, n), a real
    floating ``dtype`` (or None) and a ``generator`` (or None; an int had raised AttributeError from
    the draw: a new user's trial)."""
    check_generator(generator)
    for name, value in (("m", m), ("n", n), ("k", k)):
        check_positive_int(value, name, allow_none=False)
    if k > min(m, n):
        raise ValueError(f"`k` must be at most min(m, n) = {min(m, n)}, got {k}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"`dtype` must be a real floating torch.dtype such as torch.float64, got {dtype!r}.")
    if dtype in HALF:  # QR, which draws and retracts the frames, has no kernel
        raise TypeError(
            f"`dtype` {dtype} has no QR, which the pair's frames need: keep the pair in torch.float32 "
            "and pass it `A.float()` (riemsvd.solve takes half-precision A and returns its dtype)."
        )


def check_pair_input(a, u: torch.Tensor, v: torch.Tensor, *, refine: bool = False) -> None:
    """A for the pair (U, V): a tensor of shape (*, m, n), of the parameters' dtype and device; for
    ``refine``, 2-D."""
    if not isinstance(a, torch.Tensor):
        # the fix named: a scipy matrix or an operator had only been told what it is not (a trial)
        raise TypeError(
            f"`A` must be a torch.Tensor (dense or torch sparse), got {type(a).__name__}. Convert a scipy "
            "sparse matrix with torch.sparse_csr_tensor (or `torch.from_numpy(A.toarray())`), or solve "
            "it, or an operator, from the pair: `riemsvd.solve(A, k, init=(pair.U, pair.V))`."
        )
    m, n = u.shape[0], v.shape[0]
    if a.dim() < 2 or tuple(a.shape[-2:]) != (m, n):
        # refine's shape without the batch it refuses (a new user's trial: the message invited one)
        shape = f"({m}, {n})" if refine else f"(*, {m}, {n})"
        raise ValueError(f"`A` must have shape {shape} for this pair, got {tuple(a.shape)}.")
    if a.dtype != u.dtype or a.device != u.device:
        raise TypeError(
            f"`A` is {a.dtype} on {a.device}, the pair's parameters {u.dtype} on {u.device}; "
            f"pass `A.to(pair.U)` or move the pair with `pair.to(A)`."
        )
    if refine and a.dim() != 2:
        raise ValueError(f"`A` must have shape ({m}, {n}) to refine, got {tuple(a.shape)}")


def as_number(value):
    """A one-element float tensor (not on the meta device) or numpy array as a Python float, as
    torch's own number arguments accept it; anything else as it is, for the checks to name. A tensor
    that requires grad is read detached: tol is not differentiated through (reading it whole drew
    torch's warning about converting such a tensor; a new user's trial)."""
    if (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.numel() == 1
        and not value.is_meta
    ):
        return float(value.detach())
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size == 1:
        return float(value.reshape(()))
    return value


def _check_real(value, name: str) -> None:
    """A real number (not a bool), before it is compared: the comparison's own TypeError names nothing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__} {value!r}.")


def check_radius_rule(accept, shrink, grow, kappa, theta) -> None:
    """The parameters of the trust-region acceptance and radius rule (``_trust.RadiusRule``)."""
    for name, value in (
        ("accept", accept),
        ("shrink", shrink),
        ("grow", grow),
        ("kappa", kappa),
        ("theta", theta),
    ):
        _check_real(value, name)
    if not 0 <= accept < 0.25:
        raise ValueError(f"`accept` (ρ′) must be in [0, 1/4), got {accept}.")
    if not 0 < shrink < 1:
        raise ValueError(f"`shrink` must be in (0, 1), got {shrink}.")
    if not grow > 1:
        raise ValueError(f"`grow` must be above 1, got {grow}.")
    if not 0 < kappa < 1:
        raise ValueError(f"`kappa` must be in (0, 1), got {kappa}.")
    if not 0 < theta <= 1:
        raise ValueError(f"`theta` must be in (0, 1], got {theta}.")


_LARGEST_RADIUS = 1e150


def check_trust_region_args(
    radius, max_radius, max_inner, gradient_tol, preconditioner, patience=None
) -> None:
    """The options of :class:`riemsvd.optim.RiemannianTrustRegion` beyond its radius rule's."""
    for name, value in (("radius", radius), ("max_radius", max_radius)):
        if value is not None:
            _check_real(value, name)
    if gradient_tol is not None:  # None: the gradient's rounding
        _check_real(gradient_tol, "gradient_tol")
    # finite, with a finite square (the model's boundary solves for Δ²): with inf every step was
    # rejected and the radius stayed inf, without end (a new user's trial)
    if max_radius is not None and not 0 < max_radius <= _LARGEST_RADIUS:
        raise ValueError(f"`max_radius` must be positive and at most {_LARGEST_RADIUS:g}, got {max_radius}.")
    if radius is not None and not 0 < radius <= _LARGEST_RADIUS:
        raise ValueError(f"`radius` must be positive and at most {_LARGEST_RADIUS:g}, got {radius}.")
    if radius is not None and max_radius is not None and radius > max_radius:
        raise ValueError(f"`radius` ({radius}) must not exceed `max_radius` ({max_radius}).")
    if max_inner is not None and (
        isinstance(max_inner, bool) or max_inner != int(max_inner) or max_inner < 1
    ):
        raise ValueError(f"`max_inner` must be a positive integer, got {max_inner!r}.")
    if gradient_tol is not None and not gradient_tol >= 0:
        raise ValueError(f"`gradient_tol` must be non-negative, got {gradient_tol}.")
    if preconditioner is not None and not callable(preconditioner):
        raise TypeError(f"`preconditioner` must be callable, got {type(preconditioner).__name__}.")
    check_positive_int(patience, "patience")


# The trust region's options that are not in its param groups' defaults: set in a group, they were
# accepted and ignored (a new user's trial), where the others raised.
_RULE_OPTIONS = ("accept", "shrink", "grow", "kappa", "theta", "preconditioner", "patience")


# First-order optimizers' options (torch's and geoopt's), which a trust region has none of: set in a
# parameter group, `lr` was kept and ignored, where `lr=` to the constructor raised (a new user's
# trial). A key of the caller's own (a group's "name") is left alone.
_FIRST_ORDER_OPTIONS = (
    "lr", "momentum", "dampening", "nesterov", "betas", "amsgrad", "weight_decay", "stabilize",
)  # fmt: skip


def check_param_groups(param_groups, defaults: dict) -> None:
    """No trust-region option set per parameter group: one trust region spans all parameters; and no
    first-order optimizer's option, which it would ignore."""
    for group in param_groups:
        if group.get("maximize"):  # torch's optimizers' option: kept and ignored, it minimized (a trial)
            raise ValueError(
                "`maximize` set for a parameter group: RiemannianTrustRegion minimizes; to maximize, "
                "return the negated loss from the closure."
            )
        foreign = [key for key in _FIRST_ORDER_OPTIONS if key in group]
        if foreign:
            raise ValueError(
                f"`{foreign[0]}` set for a parameter group: RiemannianTrustRegion has no such option (no "
                "learning rate: the trust region sizes each step); its options are the constructor's."
            )
        # .get: torch's __setstate__ adds defaults (differentiable) that loaded groups lack
        own = [key for key, value in defaults.items() if group.get(key, value) != value]
        own += [key for key in _RULE_OPTIONS if key in group]
        if own:
            raise ValueError(
                f"`{own[0]}` set for one parameter group: RiemannianTrustRegion has one trust region "
                "over all parameters; pass the options to the constructor."
            )


def check_trust_region_params(params) -> None:
    """The trust region's parameters: floating tensors that require grad (an integer one, or one
    without grad, was accepted and its first step blamed the closure; a new user's trial)."""
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        if id(p) in seen:  # [x, x]: 100 steps without converging where [x] took 9 (a new user's trial)
            raise ValueError(
                f"`params`: parameter {i} is parameter {seen[id(p)]} again; pass each tensor once."
            )
        seen[id(p)] = i
        if not (p.is_floating_point() and p.requires_grad):
            what = f"dtype {p.dtype}" if not p.is_floating_point() else "requires_grad=False"
            raise ValueError(
                f"`params`: parameter {i} has {what}; RiemannianTrustRegion optimizes floating tensors "
                "that require grad (an nn.Parameter or geoopt.ManifoldParameter of a float dtype)."
            )
        # half precision cannot hold a point on a sphere or Stiefel manifold to the manifold check's
        # 1e-5, nor resolve ρ: its own retractions' points were refused mid-run as "not on its
        # manifold" (13–15 of 20 runs on a sphere, every Stiefel start; a new user's trial)
        if p.dtype in HALF:
            raise TypeError(
                f"`params`: parameter {i} is {p.dtype}; RiemannianTrustRegion works in float32 or "
                "float64 (half precision holds a point on a manifold to about 1e-3, and no decrease "
                "below that). Optimize a float32 copy, e.g. geoopt.ManifoldParameter(x.float(), "
                "manifold=...), and cast the result back."
            )


def check_on_manifolds(params, manifolds) -> None:
    """Each parameter on its manifold (geoopt's check, at its default tolerance): from a point off
    it, every step was rejected and the radius shrank without a word (a new user's trial: a start of
    norm 11.5 on the sphere)."""
    for i, (p, manifold) in enumerate(zip(params, manifolds)):
        check = getattr(manifold, "check_point_on_manifold", None)
        if check is None:
            continue
        ok, why = check(p.detach(), explain=True)
        if not ok and not bool(torch.isfinite(p.detach()).all()):  # projx of NaN is NaN (a new user's trial)
            raise ValueError(
                f"`params`: parameter {i} has NaN or Inf entries, so it is on no manifold; start from "
                "finite values."
            )
        if not ok:
            raise ValueError(
                f"`params`: parameter {i} is not on its {type(manifold).__name__} manifold ({why}). "
                "Start from a point on it, e.g. `p.data = manifold.projx(p.data)`, or "
                "`geoopt.ManifoldParameter(manifold.projx(x), manifold=manifold)`."
            )


def check_manifold(manifold, index: int) -> None:
    """Parameter ``index``'s manifold has what the trust region calls."""
    missing = [name for name in ("egrad2rgrad", "proju", "retr", "inner") if not hasattr(manifold, name)]
    if missing:
        raise TypeError(
            f"`params`: parameter {index} lies on {type(manifold).__name__}, which lacks "
            f"{', '.join(missing)}; RiemannianTrustRegion needs a geoopt manifold."
        )


def check_closure(closure) -> None:
    """The trust-region step's ``closure``: a callable that returns the loss."""
    if closure is None or not callable(closure):
        raise TypeError(
            "`closure` is required: a function that returns the loss without calling backward "
            "(the optimizer differentiates it itself; unlike torch.optim.LBFGS's closure)."
        )


# ---------------------------------------------------------------------------------------------------
# Layers and linear maps: riemsvd.linear_operator's and riemsvd.nn.operator_norm's arguments


def check_input_shape(input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (an int n meaning (n,)), or a ValueError naming it."""
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        input_shape = (int(input_shape),)
    if not (
        isinstance(input_shape, (tuple, list, torch.Size))
        and len(input_shape) > 0
        # numbers.Integral declares no comparison with int in typeshed (mypy issue 3186)
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in input_shape)  # type: ignore[operator]
    ):
        raise ValueError(
            "`input_shape` must be a tuple of positive ints without the batch dimension (for a layer "
            f"(C, *spatial)), got {input_shape!r}."
        )
    return tuple(int(s) for s in input_shape)


def check_layer_input(layer, input_shape) -> tuple[int, ...]:
    """``input_shape`` checked against what a Conv/ConvTranspose or Linear layer takes (other modules:
    only the form), or a ValueError naming it and the layer's expectation."""
    from riemsvd._linear import conv_dim  # _linear imports this module

    shape = check_input_shape(input_shape)
    kind = type(layer).__name__
    d = conv_dim(layer)
    if d is not None:
        if len(shape) != d + 1 or shape[0] != layer.in_channels:
            spatial = ", ".join("*" * d)
            raise ValueError(
                f"`input_shape` must be (C, {spatial}) with C = in_channels = {layer.in_channels} for this "
                f"{kind}, got {shape}."
            )
    elif isinstance(layer, nn.Linear) and shape[-1] != layer.in_features:
        raise ValueError(
            f"`input_shape` must end in in_features = {layer.in_features} for this Linear, got {shape}; "
            f"e.g. ({layer.in_features},)."
        )
    return shape


def check_map(fn, adjoint) -> None:
    """``fn`` and ``adjoint`` of :func:`riemsvd.linear_operator` callable (``adjoint`` or None)."""
    if not callable(fn):
        raise TypeError(f"`fn` must be a torch.nn.Module or a callable, got {type(fn).__name__}.")
    if adjoint is not None and not callable(adjoint):
        raise TypeError(f"`adjoint` must be callable or None, got {type(adjoint).__name__}.")


def probe_map(fn, input_shape: tuple[int, ...], dtype, device, layer=None, name: str = "fn") -> torch.Tensor:
    """fn's image of one zero input of ``input_shape`` (shape (1, *output_shape)), or a ValueError
    where it fails on that input or returns no batch of one. The error names ``input_shape`` where
    ``layer`` (the Conv or Linear that fn applies) cannot take it (e.g. spatial sizes smaller than the
    kernel), and ``fn`` otherwise."""
    try:  # without autocast, as the solver applies it: under it a float32 probe came back in bfloat16
        with torch.no_grad(), no_autocast(device):
            probe = fn(torch.zeros((1,) + input_shape, dtype=dtype, device=device))
    except Exception as err:  # the message of fn's own failure is what the user needs
        if layer is not None:
            kind = type(layer).__name__
            raise ValueError(f"`input_shape` {input_shape} does not fit this {kind}: {err}") from err
        raise ValueError(  # a float64 closure met the default float32 input (a new user's trial)
            f"`{name}` failed on a zero input of shape (1, *input_shape) = {(1,) + input_shape}, {dtype} on "
            f"{device}: {err}. Where it needs inputs of another dtype or device, pass `dtype=` or `device=`."
        ) from err
    if not isinstance(probe, torch.Tensor) or probe.dim() < 1 or probe.shape[0] != 1:
        raise ValueError(
            f"`{name}` must return a tensor of shape (b, *output_shape) for an input (b, *input_shape)."
        )
    if not probe.dtype.is_floating_point:  # complex dtypes are not floating point to torch either
        raise ValueError(f"`{name}` returned {probe.dtype}: riemsvd takes real linear maps (float dtypes).")
    if probe.dtype != dtype:
        # float32 products of an operator declared float64 got float64's rounding margins: norm_bounds
        # certified an upper bound below ‖A‖₂ (a new user's trial: a float32 Linear behind x.float())
        raise ValueError(
            f"`{name}` returned {probe.dtype} for a {dtype} input: the operator's products must be in its "
            f"dtype. Pass dtype={probe.dtype} (the map computes in it), or make `{name}` compute in {dtype}."
        )
    return probe
