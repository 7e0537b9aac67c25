"""The public entry point ``riemsvd.solve``: validation, the solve, an honest final residual.

Everything numerical lives in ``_subspace`` (the solver) and ``_newton`` (its Newton operator).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from riemsvd._autograd import Layout, SolveCall, SolveFunction, needs_graph
from riemsvd._backend import (
    batch_elements,
    dense_threads,
    eager_under_compile,
    mm,
    mm_t,
    no_autocast,
    readable_any,
    solver_threads,
)
from riemsvd._dense import dense_svd, prefer_dense, prefer_dense_to_copy
from riemsvd._distributed import is_sharded
from riemsvd._distributed import prepare as prepare_sharded
from riemsvd._operator import (
    DenseOperator,
    Operator,
    Rescaled,
    as_operator,
    blas_ready,
    probe_scale,
    product_fault,
    reads_entries_in_pass,
)
from riemsvd._ops import compiled_solve
from riemsvd._result import ConvergenceWarning, ResolutionWarning, SolveInfo, SVDResult, callers_level
from riemsvd._subspace import (
    DEFAULT_OPTIONS,
    Outcome,
    SolverOptions,
    _default_block,
    default_basis,
    empty_outcome,
    least_basis,
    subspace_svd,
)
from riemsvd._tolerance import (
    FLOAT32_CAST_LEAST,
    FLOAT32_COPY_BELOW,
    HALF,
    default_tol,
    product_floor,
    rounded_outward,
)
from riemsvd._validate import as_number, check_init_u, check_method, check_solve_args

__all__ = ["Problem", "execute", "prepare", "solve"]

DEFAULT_MAXITER = 2000


def solve(
    A,
    k: int = 1,
    *,
    tol: float | None = None,
    maxiter: int | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    options: SolverOptions | None = None,
    method: str = "auto",
) -> SVDResult:
    r"""The k leading singular triplets of A, without a full SVD.

    Finds U, S, V with A vᵢ = σᵢ uᵢ, Aᵀ uᵢ = σᵢ vᵢ for the k largest σᵢ by maximizing uᵀAv on the
    product of spheres (Brockett's cost on St(m, k) × St(n, k) for k > 1) over a search space of
    Riemannian gradients, by Rayleigh–Ritz with thick restarts: a Golub–Kahan–Lanczos process whose
    residuals are read off small projected matrices (docs/algorithm.md). A is touched only through
    products A X and Aᵀ Y.

    Parameters
    ----------
    A : torch.Tensor, DTensor, ShardedMatrix, numpy array, scipy sparse matrix or LinearOperator-like
        A real float32 or float64 tensor of shape ``(*, m, n)`` on any device (batched over ``*``); a
        bfloat16 or float16 one, solved in float32 (which holds its values exactly; the default tol is
        float32's and ``info.residual`` and ``converged`` those of the float32 triplets: the ones
        returned carry the half dtype's rounding on top, a residual of about 3e-3 in bfloat16, which
        ``info.errors`` include for S) and returned in its dtype, with gradients flowing back in it;
        a 2-D torch sparse tensor (COO, CSR, CSC); a float16/32/64 numpy array (a view, results as
        CPU tensors); a scipy sparse matrix; or any object with ``shape``
        (m, n), ``dtype`` and ``matvec``/``rmatvec`` or ``matmat``/``rmatmat`` taking numpy arrays,
        such as ``scipy.sparse.linalg.LinearOperator``. A matrix split across processes: a 2-D
        ``torch.distributed.tensor.DTensor`` on a 1-D mesh placed ``Shard(0)``, ``Shard(1)`` or
        ``Replicate()``, or a :class:`riemsvd.ShardedMatrix` (a local block and a process group). Then
        ``solve`` is a collective that every process of the group calls with the same arguments; A is
        never gathered (see Returns for where the results live).
    k : int
        Number of triplets, ``1 <= k <= min(m, n)`` (an integer tensor is read as one, but not under
        ``torch.compile``, which needs a Python int).
    tol : float, or one-element float tensor or numpy array, optional
        Relative residual to reach: max over i ≤ k of max(‖A vᵢ − σᵢ uᵢ‖, ‖Aᵀ uᵢ − σᵢ vᵢ‖) / σ₁.
        Under ``torch.compile`` a Python number: a tensor's value is data the graph cannot branch on
        (``fullgraph=True`` raises, and the default breaks the graph around an eager solve).
        Default 1e-12 in float64 and 1e-6 in float32, or 2·ε·√max(m, n) if larger (the rounding
        floor of the products themselves: 1.1e-5 for a 2000×1000 float32 matrix). Below that floor,
        a float32 A on the CPU, dense or scipy sparse, has its result checked with float64 products
        (no float64 copy of A is kept, but where the iteration runs in one: ``method``), so that the
        residual reported, and ``converged``, hold for the float32 triplets returned; elsewhere such
        a tol is checked as rounding allows. The error in each σᵢ is at most about tol·σ₁ (usually
        far less: it is quadratic in the residual when σᵢ is well separated) once the k returned are
        the leading ones, which a residual test cannot prove: where σ_k lies within a few tol·σ₁ of
        σ_{k+1}, σ_{k+1} can come back for σ_k, converged, on a few random starts in a hundred
        (README, "Guarantees"); ask for k + 1 or a smaller tol there.
    maxiter : int, optional
        Iterations at most (default 2000; raised to the ⌈k/b⌉ that k triplets need); each applies A
        and Aᵀ to one column on the CPU, to a block of b columns on a GPU (``options.block``).
    init : (U0, V0), U0 or SVDResult, optional
        Warm start, e.g. the previous call's ``(U, V)`` (or its result itself): shapes ``(*, m, j)``
        and ``(*, n, j)`` (the first k columns are used; with fewer, the search space finds the
        rest), with batch dimensions that broadcast to A's (``(1, m, j)`` for a batch of 4), or
        without them, to share one start over the batch; tensors, or float
        numpy arrays as A may be. U0 alone (what a GaLore projector keeps) stands for (U0, Aᵀ U0),
        for dense and sparse tensors and scipy sparse matrices.
        The solve starts from the sum of V0's columns plus a random part of relative size 10·tol;
        with a block start (``options.start_block`` or ``options.block`` above 1) from V0 and random
        columns.
        Where V0 spans a singular subspace already (to 20·tol), a fresh random direction is
        explored for 16 steps before the result is accepted (at k > 1 as for k = 1), so that a V0
        of singular vectors other than the leading ones is left, and on in rounds of 16, up to 128
        steps, while the top value below the accepted ones may still stand above σ_k: where it lies
        close (σ₂/σ₁ above 0.99, as in large Gaussian matrices) a start that is the answer already
        costs about a cold solve (2000×2000 float32 Gaussians, k = 1: 72–104 products from its own
        result, 84–134 cold; a new user's trial and a rerun), and the saving is from starts further
        off; a V0 a little
        further off a lower singular vector can still converge to it where the gap above is small
        (docs/algorithm.md, "Warm starts"). U0 is checked but not otherwise needed. Not used where
        the dense path runs (``method="dense"``, or ``"auto"`` choosing it, as it does for float32
        A of 1536×384 and 384×1536 from k = 31 and of 4096×1024 from k = 112 at the default tol, from
        k = 25 and 89 at tol 1e-6: ``prefer_dense`` of the 2026-12-05 refit): where it was chosen,
        warm iterations took 1.2–3.1 times its time on 21 of 22 small cases measured (k = 1 to 8,
        32×32 to 256×192); pass ``method="iterative"`` to use the start anyway. It saves products
        at small k, not at large: after a 1e-3 change of a 4096×1024 gradient, 74 against 142 cold
        at k = 4, 0.97–1.01 of the cold ones at k = 32 and 128 (and at 1536×384, k = 128, where
        such a refresh took 5–7× the dense path's time; a new user's trial).
    generator : torch.Generator, optional
        Source of the random start, for reproducible results. None: torch's global generator, which
        the iteration then advances (as ``torch.randn`` would; the dense path draws nothing).
    options : SolverOptions, optional
        The solver's knobs (columns per iteration, basis size, start columns, patience); the
        defaults were chosen by measurement and rarely need changing. One exception: a matrix whose
        symmetry repeats singular values exactly (a graph's Laplacian, incidence or adjacency
        matrix: a cycle, a grid). A one-column start holds one vector of each value, and the probe
        for the others finds a copy only where it stands more than about 1% above the next value:
        the 500-cycle's Laplacian (its values in pairs) and adjacency matrix (in fours) came back at
        k = 3 and 5 with a lower value for a copy, converged, on 3 of 3 seeds each.
        ``SolverOptions(block=m)``, m columns an iteration, m at least the largest repetition among
        the top k + 1, found every copy there, for 4–12 times the products (``block=4``: 2838–3330
        on the Laplacian against 688–746; 5286–5918 on the adjacency matrix against 484–1316); a
        wider start alone (``start_block=4``) ran to maxiter (README, "Guarantees").
    method : {"auto", "iterative", "dense", "trust-region"}
        ``"iterative"``: the Lanczos process above. ``"dense"``: a whole decomposition by LAPACK — in
        float32 the eigendecomposition of the smaller Gram matrix formed in float64, checked, with a
        float32 SVD where the check fails; in float64 on the CPU that of the Gram matrix in float64,
        its triplets by Rayleigh–Ritz in span(A V), checked, and elsewhere or where the check fails
        an SVD — then the same fresh-product residuals
        (dense tensors only; ``init``, ``maxiter`` and ``options`` are not used). ``"auto"`` (default)
        takes the dense path on the CPU and on a CUDA GPU where its cost model, calibrated by
        measurement, expects it to be faster: small matrices and k a sizeable fraction of min(m, n);
        on a GPU, where both are bound by their launches, also float32 matrices up to about 512 wide
        at any k, 1000 wide from k = 2 and 2000 wide from k = 8, and batches of matrices at most 32
        wide (docs/algorithm.md). On the CPU a float32 A asked for a ``tol`` below 4.8e-7 (4·ε of
        float32), which float32 Ritz vectors do not reach, is iterated in a float64 copy of A (up to
        2²⁷ entries; float32 triplets returned, ``info`` describing them as returned), against which
        the model weighs the dense path.
        ``"trust-region"``: Riemannian trust-region (Absil, Baker, Gallivan 2007) on the Brockett cost
        on St(m, k) × St(n, k), its Hessian the Newton operator, the model solved by truncated CG
        (docs/optim.md); quadratically convergent but slower than ``"iterative"`` from a cold start
        (docs/algorithm.md). ``maxiter`` then counts outer iterations (default 500) and ``options`` is
        not used; not for sharded A. A warm start that holds singular triplets already (its first
        residual within 20·tol) is solved by the iteration instead, whose probe checks that they are
        the leading ones. The results, ``info`` and gradients have the same meaning either way;
        ``info.method`` says which path ran (``"iterative"`` for such a warm start, its
        ``iterations`` the iteration's).

    Returns
    -------
    SVDResult
        Named tuple ``(U, S, V)``: U ``(*, m, k)`` and V ``(*, n, k)`` with orthonormal columns, S
        ``(*, k)`` in descending order, of A's dtype and on A's device. For scipy inputs they are CPU
        torch tensors (``.numpy()`` gives arrays). ``.info`` is a :class:`SolveInfo` (``converged``,
        ``iterations``, ``matvecs``, ``residual``; ``communicated`` for a split A). For A split by rows,
        U is split like A's rows and S, V are whole on every process; split by columns, V is split
        like A's columns and U, S are whole. A DTensor A gives DTensors (``Shard(0)`` for the split
        factor, ``Replicate()`` otherwise); a ShardedMatrix gives this process's blocks as tensors.

    Notes
    -----
    Differentiable for dense tensors: backward (``.backward()``, ``torch.autograd.grad``) and forward
    mode (``torch.func.jvp``, ``torch.func.jacfwd``) give the exact derivatives of the returned
    triplets, at a cost of a few products with A per column (linear solves with the same
    tangent-space operator as the solver's Newton step), never a full SVD; when only S is used
    there is no solve at all. Singular vectors are defined up to a joint sign (uᵢ, vᵢ) → (−uᵢ, −vᵢ):
    only losses that do not change under it have well-defined gradients (for example anything of
    S, of uᵢuᵢᵀ, of uᵢvᵢᵀ); other losses are ill-posed. Gradients of U and V need σᵢ ≠ σⱼ within
    the k and σ_k > σ_{k+1}. Where two of the k coincide, a common rotation of their pairs changes no
    triplet: its part is left out, with a :class:`DegenerateSpectrumWarning`; gradients of span(U),
    span(V) and U Vᵀ stay exact, those of U S Vᵀ do not (write it A V Vᵀ). Where σ_k = σ_{k+1},
    the subspace of the k is itself not defined: the gradient of the vectors grows like
    1/(σ_k − σ_{k+1}) and is meaningless there (1e14–1e16 in float64 at an exact tie, more where
    both are 0), which a :class:`DegenerateSpectrumWarning` (an ill-conditioned adjoint solve)
    reports. Gradients of S are exact but at ties (inside the k, or σ_k = σ_{k+1}): there one of the
    tied values alone has no derivative, only symmetric functions of them (their sum) have, and the
    gradient given, uᵢvᵢᵀ, is a limit of gradients from nearby matrices (S alone draws no warning). The
    derivatives are those of the returned triplets taken as exact, so their error follows the
    triplets': a 200×100 solve at tol 1e-3 gave a span loss's gradient 1.5e-2 off and Σσᵢ's 7e-4 (a
    new user's trial); ask for the tol the gradient needs. Sparse and scipy inputs are not
    differentiable. A split A
    is differentiable in reverse mode, Ā split like A; each process's cotangents must be its blocks
    of the gradient of one global loss (the convention of DTensor and tensor parallelism: a whole
    output's gradient is the same full gradient on every process); its second derivatives
    (``create_graph=True``) are refused. A whole A's second derivatives (double backward,
    ``torch.autograd.functional.hvp``/``vhp``/``hessian``, ``torch.func.hessian``, forward over
    reverse) are exact; under torch.func transforms the adjoint's linear solve is differentiated
    through its own iterations, exact but where the cotangent is zero (the jvp of a ``vjp`` in its
    cotangent, at 0).

    Under ``torch.compile`` (``fullgraph=True`` too), a dense tensor's solve is one custom operator,
    ``riemsvd::solve``: no graph break, no recompilation as A's values change, the same results and
    reverse-mode gradients; a ``generator`` takes the solve out of it, behind a graph break (which
    ``fullgraph=True`` refuses), ``info``'s counts are 0-dim tensors and its ``stop_reason`` and
    ``method`` None (docs/spectral_norm.md, "Under torch.compile"). Under ``fullgraph=True`` an
    argument the graph cannot take (a ``generator``, a tensor ``k`` or ``tol``) shows as Dynamo's
    "Observed exception", without riemsvd's message: pass ``k`` and ``tol`` as Python numbers, and a
    ``generator`` outside the compiled function.
    Under forward mode (``torch.func.jvp``, ``jacfwd``, a ``forward_ad`` dual level) the solve runs
    eagerly behind a graph break, whose rule carries the tangents (custom operators have none:
    there they had come back zero); so too under ``torch.func.grad``, ``vjp`` and ``jacrev`` (and
    under more than one ``vmap``), where PyTorch refuses a custom operator's autograd rule
    (pytorch/pytorch#170834); ``fullgraph=True`` refuses that break. Those transforms under
    ``torch.compile`` work with the ``"aot_eager"`` and ``"inductor"`` backends; with ``"eager"``
    (Dynamo's debugging backend) ``grad`` fails inside Dynamo's fake tensors and ``jvp`` at the
    argument checks' read of A (torch 2.13). ``torch.func.vmap`` maps the
    warm start with A and ``info``'s ``converged``, ``residual`` and ``errors`` are the mapped
    matrix's; its counts and ``history`` are the whole batch's.

    Warns
    -----
    DegenerateSpectrumWarning
        In the backward, when the requested vector gradients are not defined (see Notes).
    ConvergenceWarning
        If some batch element did not reach ``tol``: within ``maxiter``, or the residual stopped
        falling (at the rounding floor, or in a wide cluster of close values: raise
        ``SolverOptions(patience=...)``), or σ lies beyond the range of A's dtype; the best triplets
        found are returned with ``info.converged`` False. Where a ``LinearOperator``'s rmatvec (or
        ``linear_operator``'s ``adjoint``) does not match its products with A, the warning says so.

    Raises
    ------
    TypeError
        For an integer, bool or complex dtype, or an unsupported type of ``A``.
    ValueError
        For NaN/Inf entries, fewer than 2 dimensions, ``k`` out of range, ``init`` of the wrong shape,
        or an operator that returns NaN/Inf. For a split A, on every process whenever the problem is
        wrong on any: blocks whose other dimension differs, different dtypes or arguments.

    Examples
    --------
    >>> import torch, riemsvd
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(300, 200, dtype=torch.float64, generator=g)
    >>> U, S, V = riemsvd.solve(A, k=3, generator=g)
    >>> U.shape, S.shape, V.shape
    (torch.Size([300, 3]), torch.Size([3]), torch.Size([200, 3]))
    >>> torch.allclose(S, torch.linalg.svdvals(A)[:3], rtol=1e-10)
    True
    """
    from_numpy = isinstance(A, np.ndarray)
    A = _from_numpy(A, half=True)  # a float16 array as the float16 tensor (a new user's trial)
    if isinstance(A, torch.Tensor) and A.dtype in HALF:
        return _solve_in_float32(A, k, tol, maxiter, init, generator, options, method)
    if _iterates_in_float64(A, k, tol, method):
        return _solve_in_float64(A, k, tol, maxiter, init, generator, options, method)
    if torch.compiler.is_compiling() and (
        is_sharded(A) or torch.autograd.forward_ad._current_level >= 0 or _under_func_grad()
    ):
        # the whole solve eagerly behind a graph break, as for sparse inputs: traced, its checks' host
        # reads of a sharded A crashed Dynamo (InternalTorchDynamoError; a new user's trial). So too
        # under forward mode (torch.func.jvp, jacfwd, forward_ad), whose rule the custom operator
        # lacks: its tangents came back zero without an error (another trial); eagerly the
        # autograd.Function's rule serves. And under torch.func.grad, vjp or jacrev, where PyTorch
        # refuses the custom operator's autograd rule (pytorch/pytorch#170834: "it must override the
        # setup_context staticmethod"; a third trial)
        return eager_under_compile(_EAGER_SOLVE, solve)(
            A, k, tol=tol, maxiter=maxiter, init=init, generator=generator, options=options, method=method
        )
    if torch.compiler.is_compiling() and isinstance(A, torch.Tensor) and A.layout == torch.strided:
        # a previous call's SVDResult as its (U, V), as in eager mode (fullgraph=True had refused it)
        return compiled_solve(A, k, tol, maxiter, _init_pair(init), generator, options, method)
    problem = prepare(A, k, tol=tol, maxiter=maxiter, init=init, generator=generator, options=options,
                      method=method, from_numpy=from_numpy, read_in_pass=True)  # fmt: skip

    ops = []  # the operator of the last run, asked about its adjoint where the solve fails

    def run(a, init=None):
        out, info, op = execute(problem if init is None else replace(problem, init=init), a)
        ops.append(op)
        s = out.s
        if op.scale is not None:  # the operator's units to A's
            s, info.errors = s / op.scale[..., 0], out.errors / op.scale[..., 0]
            _charge_unscaling(out.s, s, op.scale[..., 0], info)
        return (*problem.layout.outputs(out.u, s, out.v), info)

    target = problem.target
    shown = None  # the info returned where it differs from the whole batch's (under vmap)
    if isinstance(target, torch.Tensor) and target.layout == torch.strided and needs_graph(target):
        call = SolveCall(run, problem.layout)
        # a whole A's warm start goes through as inputs, which vmap maps with A (a sharded A's
        # stays with the problem: its blocks are no batch)
        whole = isinstance(problem.init, tuple) and type(problem.layout) is Layout
        # detached: the start has no derivative, and a previous result's graph, kept as an input's,
        # made the next backward fail ("backward through the graph a second time"; a review)
        start = tuple(x.detach() for x in problem.init) if whole else (None, None)
        u, s, v, converged, residual, errors = SolveFunction.apply(target, *start, call)
        info = call.info  # plain tensors, the warnings' (under vmap the whole batch's)
        shown = replace(info, converged=converged, residual=residual, errors=errors)
    else:
        u, s, v, info = run(target)
    if not bool(info.converged.all()):
        op = ops[-1]
        made = op.matvecs
        fault = _product_fault(op, info)
        # the diagnosis's products are A's too: info.matvecs counts every product the call made (a
        # caller's operator that counted its calls found six more than info said; a new user's trial)
        info.matvecs += op.matvecs - made  # (a caller's operator takes no autograd path: no ``shown``)
        message = fault or _not_converged(
            info, u.dtype, getattr(target, "shape", None), s, problem.options, problem.maxiter
        )
        message += batch_elements(~info.converged)
        warnings.warn(message, ConvergenceWarning, stacklevel=2)
    _check_resolution(s, info, getattr(target, "shape", None))
    return SVDResult(u, s, v, info if shown is None else shown)


def _under_func_grad() -> bool:
    """Whether a torch.func transform other than one vmap is active (read while Dynamo traces, which
    sees the innermost transform and its level only): grad, vjp or jacrev, perhaps outside a vmap
    (jvp's forward mode shows as a forward-AD level too)."""
    if not torch._C._are_functorch_transforms_active():
        return False
    from torch._functorch.pyfunctorch import TransformType, retrieve_current_functorch_interpreter

    innermost = retrieve_current_functorch_interpreter()
    return innermost.key() != TransformType.Vmap or innermost.level() > 1


@dataclass
class Problem:
    """A solve validated and standardized by :func:`prepare`: what :func:`execute` runs."""

    target: Any  # what the operator is made of: a tensor (a sharded A's local block), scipy, operator
    layout: Layout  # how A and its results are held (whole, or sharded)
    operator: Callable[[Any], Operator]  # target (or a tensor autograd hands in for it) → its operator
    k: int
    tol: float | None
    maxiter: int | None
    init: Any
    generator: torch.Generator | None
    options: SolverOptions
    method: str


def prepare(A, k: int = 1, *, tol=None, maxiter=None, init=None, generator=None, options=None,
            method: str = "auto", from_numpy: bool = False,
            read_in_pass: bool = False) -> Problem:  # fmt: skip
    """The checks and conversions of every input :func:`solve` takes, in one place: an integer-tensor k,
    a float numpy array (a tensor view, whose products prefer numpy's BLAS, as do those of the tensor
    view :func:`solve` made of one: ``from_numpy``), ``init=U0`` alone (U0, AᵀU0), a sharded A (a
    collective that checks the problem on every process), and the argument checks of ``_validate``.
    With ``read_in_pass`` a dense A's entries are left to the solve's first pass over A where it
    makes one (:func:`riemsvd._operator.reads_entries_in_pass`): :func:`execute` and the iteration
    then check them. Half-precision tensors and traced calls are :func:`solve`'s own (they re-enter
    it)."""
    if isinstance(k, torch.Tensor) and not k.is_floating_point() and k.dtype != torch.bool and k.numel() == 1:
        k = int(k)  # an integer tensor, as torch's own k arguments accept
    tol = as_number(tol)  # a one-element float tensor, as k's integer tensor
    from_numpy = from_numpy or isinstance(A, np.ndarray)  # products prefer numpy's BLAS: torch_products
    A = blas_ready(_from_numpy(A))
    init = _init_pair(init)
    if isinstance(init, tuple):  # (U0, V0) as numpy arrays too, e.g. scipy's svds output
        init = tuple(_from_numpy(x, half=True, name="`init`") for x in init)  # any float dtype: cast to A's
    init = _from_numpy(init, half=True, name="`init`")
    # V0 = AᵀU0 from U0 alone: A's NaN would be reported as V0's, so A's entries are read first
    read_in_pass = read_in_pass and not isinstance(init, torch.Tensor)
    if isinstance(init, torch.Tensor):
        init = _init_from_u(A, init)
    if is_sharded(A):
        # a collective: every process checks every process's arguments, method included
        sharded = prepare_sharded(A, k, tol, maxiter, init, generator, options, method)
        layout = sharded.layout

        def operator(a):
            return layout.operator(layout.local(a)).rescale(sharded.magnitude)

        return Problem(sharded.tensor, layout, operator, k, tol, maxiter, sharded.init,
                       sharded.generator, options or DEFAULT_OPTIONS, method)  # fmt: skip
    unchecked = read_in_pass and reads_entries_in_pass(A, method)
    magnitude = check_solve_args(A, k, tol, maxiter, init, generator, options, entries=not unchecked)
    check_method(method, A)
    if init is not None:
        batch = A.shape[:-2] if isinstance(A, torch.Tensor) else getattr(A, "batch_shape", ())
        init = _broadcast_init(init, tuple(batch))
    operator = functools.partial(as_operator, magnitude=magnitude, from_numpy=from_numpy, unchecked=unchecked)
    options = options or DEFAULT_OPTIONS  # after the check: a falsy wrong value is named, not replaced
    return Problem(A, Layout(), operator, k, tol, maxiter, init, generator, options, method)


_EAGER_SOLVE: list = []  # solve behind a graph break, for a sharded A under torch.compile


def _init_pair(init):
    """``init`` with a previous call's SVDResult standing for its (U, V), and any other tuple or list
    as a plain tuple (a namedtuple's own constructor wants its fields: rebuilt as its own type, a
    half-precision A's init crashed in it; a new user's trial); anything else as it is."""
    if isinstance(init, SVDResult):
        return (init.U, init.V)
    return tuple(init) if isinstance(init, (tuple, list)) else init


def _from_numpy(x, half: bool = False, name: str = "`A`"):
    """A float32 or float64 numpy array (float16 too, where ``half``: what solve and warm starts take)
    as a CPU tensor, a view where numpy's strides allow (big-endian data, a file's, as a native copy);
    anything else as it is (and named by the checks in numpy's terms). A masked array with masked
    entries is refused, by ``name``: its data would be taken whole, the mask ignored (a new user's
    trial)."""
    masked = int(np.ma.getmaskarray(x).sum()) if isinstance(x, np.ma.MaskedArray) else 0
    if masked:
        raise TypeError(
            f"{name} is a numpy masked array with {masked} masked entr{'y' if masked == 1 else 'ies'}, "
            f"which riemsvd would read as they are stored: pass `{name.strip('`')}.filled(value)` (or "
            "`.data`) to use a value there, or fill the missing entries first."
        )
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    if isinstance(x, np.ndarray) and x.dtype in ((np.float16,) if half else ()) + (np.float32, np.float64):
        x = x if all(s >= 0 for s in x.strides) else np.ascontiguousarray(x)
        if not x.flags.writeable:
            # torch warns that writing to the tensor is undefined; riemsvd only reads A, and a read-only
            # array (a memory map, a broadcast) is no mistake of the caller's (a new user's trial)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(x)
        return torch.from_numpy(x)
    return x


_EAGER_EXECUTE: list = []  # execute, as compiled code calls it


def execute(problem: Problem, a=None) -> tuple[Outcome, SolveInfo, Operator]:
    """Run a prepared solve on ``a`` (default ``problem.target``; autograd hands in its own tensor):
    the operator, the tolerance, the method (the dense path where its cost model or ``method`` says),
    thread limits and autocast off, the products counted. Returns the solver's outcome and ``info`` in
    the units of the operator (divide σ and the error bars by its ``scale`` for A's), and the operator.

    Traced by torch.compile, it runs eagerly behind a graph break (:func:`eager_under_compile`):
    traced, its numpy and scipy code crashed dynamo on a sparse A."""
    if torch.compiler.is_compiling():
        return eager_under_compile(_EAGER_EXECUTE, execute)(problem, a)
    op = problem.operator(problem.target if a is None else a)
    k, method, init, generator = problem.k, problem.method, problem.init, problem.generator
    tol = float(problem.tol) if problem.tol is not None else default_tol(op.dtype, *op.shape)
    entries = op.shape[0] * op.shape[1] * op.batch_shape.numel()
    start = op.matvecs  # an Operator passed in may have been used before
    op = probe_scale(op)  # a LinearOperator's size, from one product (counted)
    dense = isinstance(op, DenseOperator) and (
        method == "dense"
        or method == "auto"
        and prefer_dense(op.shape, op.batch_shape.numel(), k, op.dtype, op.device, tol)
    )
    if op.batch_shape.numel() == 0:
        out = empty_outcome(op, k, "iterative" if method == "auto" else method)
    elif dense:
        assert isinstance(op, DenseOperator)  # dense is only chosen for one
        op.check_entries()  # where prepare left them to the one pass, which this path does not make
        with dense_threads(op.device), no_autocast(op.device):
            out = dense_svd(op, k, tol)
    else:
        each = method != "trust-region" and one_at_a_time(op, k)
        # the steps' products in one pass over A, on its own threads (claimed before they are limited)
        iterative = not each and method != "trust-region"
        fused = iterative and isinstance(op, DenseOperator) and op.claim_fused_pass()
        if isinstance(op, DenseOperator) and not fused:
            op.check_entries()  # as above
        limits = dict(distributed=op.distributed, on_torch=op.torch_products(), own_pass=fused)
        threads = (
            contextlib.nullcontext()  # each matrix's own, in _each_matrix
            if each
            else solver_threads(op.device, entries, **limits)
        )
        # NaN or Inf from the products is the iteration's to name (a ValueError at its next look):
        # numpy's RuntimeWarning from the step's Gram-Schmidt came first, pointing into riemsvd (a
        # convolution with an Inf weight under operator_norm; a new user's trial)
        with threads, no_autocast(op.device), np.errstate(invalid="ignore", over="ignore"):
            if method == "trust-region":
                from riemsvd._trust import trust_region_svd  # 2.3 ms at import, for a method off by default

                maxiter = problem.maxiter
                out = trust_region_svd(op, k, tol=tol, maxiter=maxiter, init=init, generator=generator)
            elif each:
                assert isinstance(op, DenseOperator)  # one_at_a_time's condition
                out = _each_matrix(op, k, tol, problem)
            else:
                maxiter = problem.maxiter or DEFAULT_MAXITER
                iterate = functools.partial(subspace_svd, op, k, tol=tol, maxiter=maxiter, init=init,
                                            generator=generator, options=problem.options)  # fmt: skip
                try:
                    out = iterate()
                except Rescaled:  # the first pass found A's entries beyond its products' range
                    out = iterate()
    info = SolveInfo(
        out.converged,
        out.iterations,
        op.matvecs - start,
        out.residual,
        tol,
        out.history,
        errors=out.errors,
        communicated=op.communicated,
        stop_reason=out.reason,
        restarts=out.restarts,
        method=out.method,
    )
    return out, info, op


def _each_matrix(op: DenseOperator, k: int, tol: float, problem: Problem) -> Outcome:
    """:func:`subspace_svd` of each matrix of a CPU batch in turn (:func:`one_at_a_time`), each under
    the threads a solve of that one matrix takes, merged into one outcome: the triplets, residuals
    and bars stacked; the most iterations and restarts of any matrix (and its products, counted on
    ``op``), the looks of the matrix that took the most products, and the stop reason of the first
    matrix that did not converge ("converged" where all did, "whole space" where each did by
    exhausting its space). Each start is drawn from ``generator`` in turn; a warm start with the
    batch's shape gives each matrix its own, one without (a vector or a matrix) serves them all, as
    it does a batch (:func:`riemsvd._subspace._start`)."""
    m, n = op.shape
    outs, counts = [], []
    for index in np.ndindex(*op.batch_shape):
        one = op.one_matrix(index)
        init = problem.init and tuple(x[index] if x.dim() > 2 else x for x in problem.init)
        fused = one.claim_fused_pass()
        with solver_threads(op.device, m * n, on_torch=one.torch_products(), own_pass=fused):
            outs.append(subspace_svd(one, k, tol=tol, maxiter=problem.maxiter or DEFAULT_MAXITER, init=init,
                                     generator=problem.generator, options=problem.options))  # fmt: skip
        counts.append(one.matvecs)
    op.matvecs += max(counts)
    batch = tuple(op.batch_shape)
    u, s, v, converged, residual, errors = (
        torch.stack([getattr(o, name) for o in outs]).reshape(batch + getattr(outs[0], name).shape)
        for name in ("u", "s", "v", "converged", "residual", "errors")
    )
    reasons = [o.reason for o, ok in zip(outs, converged.reshape(-1).tolist()) if not ok]
    if not reasons:
        reasons = ["whole space" if all(o.reason == "whole space" for o in outs) else "converged"]
    slowest = outs[counts.index(max(counts))]
    return Outcome(u, s, v, converged, residual, max(o.iterations for o in outs), slowest.history, errors,
                   reasons[0], max(o.restarts for o in outs))  # fmt: skip


# A batch on the CPU whose matrices have at least this many entries is solved one matrix at a time
# (:func:`one_at_a_time`).
_EACH_MATRIX_FROM = 60_000


def one_at_a_time(op: Operator, k: int) -> bool:
    """Whether the iteration takes a dense CPU batch one matrix at a time (:func:`_each_matrix`): from
    60,000 entries a matrix, whatever k. One matrix's products read its A from a core's
    cache, where the batch's stream every matrix (a quarter to a third of the product time, timed
    inside the solves), and its steps run in riemsvd._steps where the batch's are numpy calls over
    every matrix; the batch's steps share their calls among its matrices, which pays for small
    matrices and few steps. Measured (docs/
    algorithm.md, "Batches on the CPU"; batches of 4 to 32): one at a time took 0.40–0.95 of the
    batch's time at k = 8 from 256×256 to 1536×384, and at k = 1 0.34–0.74 on Gaussian matrices
    (58–156 products each) and 0.50–0.94 on most decaying ones (18–30), 1.17–1.45 on the rest
    (256×256 float32, 1536×384 float64 in one of two runs); below, 192×192, the batch was faster at
    k = 1 (loop 0.99–2.03). Above 600,000 entries the batch had been kept, faster at k = 2–8 from
    1024×1024 in one run on a Xeon (1.08–1.20); on a 2-core AMD EPYC one at a time took 0.34–0.74 of
    its time in all 16 cases of (8, 1024, 1024) and (4, 2048, 512), Gaussian and decaying, float32 and
    float64, k = 1 and 8, two threads (a new user's trial found 2.4–3.5× on one thread)."""
    if not (isinstance(op, DenseOperator) and op.batch_shape.numel() > 1 and op.on_host() is not None):
        return False
    return op.shape[0] * op.shape[1] >= _EACH_MATRIX_FROM


def _solve_in_float32(A, k, tol, maxiter, init, generator, options, method) -> SVDResult:
    """A bfloat16 or float16 A solved in float32, which holds its values exactly; U, S, V are returned
    in A's dtype, and gradients flow back through the casts (autograd's). ``info`` describes the
    float32 triplets, except ``errors``, which also carry the cast of S, so that each bar holds for
    the S returned (a 384×384 bfloat16 Gaussian: S off by up to 0.076 where the float32 bars were
    1e-5 to 1e-4; a new user's trial), and σ beyond the dtype's range, which is not converged."""
    init = _init_pair(init)
    if isinstance(init, tuple):
        init = tuple(x.float() if isinstance(x, torch.Tensor) and x.dtype in HALF else x for x in init)
    elif isinstance(init, torch.Tensor) and init.dtype in HALF:
        init = init.float()

    def in_float32():
        return solve(A.float(), k, tol=tol, maxiter=maxiter, init=init, generator=generator,
                     options=options, method=method)  # fmt: skip

    if torch.compiler.is_compiling():  # dynamo traces no warning filters
        out = in_float32()
    else:  # its warnings, passed on as raised by the caller's line (they named this one)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = in_float32()
        for warning in caught:
            warnings.warn(warning.message, stacklevel=3)
    s, info = out.S.to(A.dtype), out.info
    assert info is not None  # solve's own result always carries one
    # a DTensor A's S is a replicated DTensor, whose whole value each process holds; info's are plain
    # tensors, which DTensor operations refuse to mix with (a bfloat16 DTensor's solve crashed after
    # solving: "aten.add.Tensor got mixed torch.Tensor and DTensor"; a new user's trial)
    exact, returned = (x.to_local() if is_sharded(x) else x for x in (out.S, s))
    # σ beyond the half dtype's normal range (float16 tops out at 65504): inf or a few bits, which the
    # residual then counts (a 300×300 float16 A of entries near 3000, σ ≈ 1e5, came back inf with
    # converged True and no warning)
    if not torch.compiler.is_compiling():  # host decisions on values; a traced graph has none to read
        converged = info.converged
        _charge_rounding(exact, returned, info, _beyond_range(returned))  # these values only
        if readable_any(converged & ~info.converged, default=False):
            message = _not_converged(info, A.dtype, A.shape, returned) + batch_elements(~info.converged)
            warnings.warn(message, ConvergenceWarning, stacklevel=3)
    return SVDResult(out.U.to(A.dtype), s, out.V.to(A.dtype), info)


# A float32 A on the CPU asked for a tol below FLOAT32_COPY_BELOW is iterated in a float64 copy of at most
# _COPY_MOST entries (2²⁷: 1 GiB), solved to _COPY_SHARE of tol, the rest left to the cast
# (:func:`_iterates_in_float64`). Below 4·ε the float32 iteration stalled at 2.2–5.3e-7 on 60 of
# 90 solves of 1500×1100 matrices at tol 1e-7 to 5e-7 (five classes, k = 1 and 4); above it, it
# converged where the copy took 2.0–2.4× its time (2000×1030 to 4000×2000 at 5e-7 and 6e-7; a
# review). Solved to tol itself, the copy's triplets of 1200×1100 Gaussians (k = 3, tol 1e-7) came
# to 1.03–1.05e-7 once rounded. Below ε/2 it had kept the float32 iteration, which stalled 12× above
# what the copy reached: a 4000×2000 Gaussian at k = 20, tol 5e-8, stalled at 5.4e-7, where tol 6e-8
# went to the copy and came to 4.5e-8 (a new user's trial). Float32 triplets seldom reach below
# FLOAT32_CAST_LEAST, so the copy is solved to no less than _COPY_SHARE of it.
_COPY_MOST = 1 << 27
_COPY_SHARE = 0.25


def _iterates_in_float64(A, k, tol, method: str) -> bool:
    """Whether a float32 A is iterated in a float64 copy (:func:`_solve_in_float64`): one plain CPU
    tensor of at most ``_COPY_MOST`` entries, a ``tol`` (a number, or one read as one) below
    ``FLOAT32_COPY_BELOW``, where the iteration runs (``method="iterative"``, or "auto" where the model
    prices the copy below the dense path: ``prefer_dense_to_copy``), outside torch.compile and torch.func's
    transforms (which the copy's casts would take through the solve; those stall in float32 and
    warn, as before). Arguments it cannot read go the usual way, to be checked there."""
    tol = as_number(tol)
    if not (
        isinstance(A, torch.Tensor)
        and A.dtype == torch.float32
        and A.layout == torch.strided
        and A.device.type == "cpu"
        and A.dim() >= 2
        and 0 < A.numel() <= _COPY_MOST
        and method in ("auto", "iterative")
        and isinstance(tol, numbers.Real)  # np.float32's too (not a float; a review)
        and not isinstance(tol, bool)
        and 0 < float(tol) < FLOAT32_COPY_BELOW
        and isinstance(k, int | np.integer)
        and not isinstance(k, bool)
        and 1 <= k <= min(A.shape[-2:])
    ):
        return False
    if is_sharded(A) or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    batch = int(np.prod(A.shape[:-2]))
    return method == "iterative" or not prefer_dense_to_copy(A.shape[-2:], batch, int(k), float(tol))


def _solve_in_float64(A, k, tol, maxiter, init, generator, options, method) -> SVDResult:
    """A float32 A solved in a float64 copy (:func:`_iterates_in_float64`) to ``_COPY_SHARE`` of tol
    (of ``FLOAT32_CAST_LEAST`` where tol lies below it), U, S, V returned in float32; gradients flow
    back through the casts (autograd's). ``info`` describes the float32 triplets as returned: their
    residual from float64 products of the copy (2k more, counted; relative to σ₁ as solved), each bar
    widened by its σ's cast and rounded up, ``converged`` by tol itself and by the copy's own (a
    ``maxiter`` that stopped it short leaves them unproven), a σ beyond float32's range by the
    rounding it carries (inf: not converged); the ConvergenceWarning and ResolutionWarning judge them
    so, at the caller's line (the copy's spoke of its own tol). Its other warnings are passed on."""
    tol = float(as_number(tol))
    init = _init_pair(init)

    def widen(x):
        return x.double() if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x

    init = tuple(widen(x) for x in init) if isinstance(init, tuple) else widen(init)
    wide = A.double()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = solve(wide, k, tol=_COPY_SHARE * max(tol, FLOAT32_CAST_LEAST), maxiter=maxiter, init=init,
                    generator=generator, options=options, method=method)  # fmt: skip
    for warning in caught:
        if not issubclass(warning.category, (ConvergenceWarning, ResolutionWarning)):
            warnings.warn(warning.message, stacklevel=callers_level())
    info = out.info
    assert info is not None  # solve's own result always carries one
    u, s, v = out.U.float(), out.S.float(), out.V.float()
    beyond = _beyond_range(s.detach())  # inf, or subnormal with few bits (entries near 1e37, 1e-43)
    with torch.no_grad():  # detached: forward mode's tangents had reached the residual (a review)
        u64, s64, v64 = u.detach().double(), s.detach().double().unsqueeze(-2), v.detach().double()
        a = wide.detach()
        # the project's products (torch's of A's transposed view with a few columns had taken 75 ms
        # against mm_t's 12 at 4000×2000, k = 8)
        left = torch.linalg.vector_norm(mm(a, v64) - u64 * s64, dim=-2)
        right = torch.linalg.vector_norm(mm_t(a, u64) - v64 * s64, dim=-2)
        # σ₁ as solved, not as returned: a subnormal float32 σ₁ 8e-8 above the truth had made the
        # residual that much smaller than the one relative to ‖A‖₂
        top = out.S.detach()[..., :1].clamp_min(torch.finfo(torch.float64).tiny)
        floor = 0.5 * product_floor(torch.float64, *A.shape[-2:])  # the products' own rounding
        residual = (torch.maximum(left, right) / top).amax(-1) + floor
        residual = torch.where(torch.isfinite(s).all(-1), residual, math.inf)  # σ = inf: no residual
    info.matvecs += 2 * s.shape[-1]
    # a bar for σ as solved holds for σ as returned, widened by the cast (the residual, fresh, has it)
    _charge_rounding(out.S, s, info, False)
    if info.errors is not None:  # rounded up: to nearest, bars of 1e-46 (subnormal σ) had come back 0
        info.errors = rounded_outward(info.errors.double(), torch.float32, up=True)
    # the residual rounded up (to nearest, 1.6212837e-7 had come back 1.6212834e-7, below the truth).
    # A subnormal σ's few bits are in it, and it decides (as _charge_rounding's does: 3.7e-39 converges
    # at tol 1e-6, 4e-41 does not). And the copy's own failure: a maxiter that stopped it before its
    # tol, or before its probe for a larger value, leaves the k returned unproven, whatever their
    # residual (read as converged, a warm start's and cold k = 2 solves at maxiter 71–78 had passed
    # unprobed; a review), which the ConvergenceWarning says
    info.residual = rounded_outward(residual, torch.float32, up=True)
    info.converged = (residual <= tol) & info.converged
    info.tol = tol
    if readable_any(beyond.any(-1) & ~info.converged, default=False):
        info.stop_reason = "out of range"
    elif info.stop_reason in ("converged", "whole space") and readable_any(~info.converged, default=False):
        info.stop_reason = "stalled"  # the cast's rounding alone is above tol
    if readable_any(~info.converged, default=False):
        message = _not_converged(info, torch.float32, A.shape, s, options, maxiter, copy=True)
        message += batch_elements(~info.converged)
        warnings.warn(message, ConvergenceWarning, stacklevel=callers_level())
    _check_resolution(s, info)  # at tol: the products were float64 (float32's floor was 83× it; a review)
    return SVDResult(u, s, v, info)


def _broadcast_init(init: tuple, batch: tuple[int, ...]) -> tuple:
    """A checked warm start with each batched tensor expanded to A's batch shape (a view), as every
    path indexes it by A's: (1, n, j) for a batch of 4 had been refused (a new user's trial). A
    vector or a matrix stays as it is, one start for every matrix."""
    return tuple(x.expand(batch + x.shape[-2:]) if x.dim() > 2 else x for x in init)


def _init_from_u(A, u0: torch.Tensor):
    """``init=U0`` alone (what a GaLore projector keeps): V0 = Aᵀ U0, which the solver normalizes; a
    dense A's by :func:`~riemsvd._backend.mm_t` (``init=U0`` had taken 1.4× a cold solve's time, float32
    4096×1024 and k = 8, a new user's trial)."""
    check_init_u(A, u0)
    if not isinstance(A, torch.Tensor):  # a scipy sparse matrix (a new user's trial had met a TypeError)
        u0 = u0.detach().to(torch.float64 if A.dtype == np.float64 else torch.float32)
        return u0, torch.from_numpy(np.asarray(A.T @ u0.cpu().numpy())).to(u0.device)
    with torch.no_grad():
        u0 = u0.to(A.dtype)
        return u0, mm_t(A.detach(), u0) if A.layout == torch.strided else A.detach().t() @ u0


def _charge_unscaling(scaled: torch.Tensor, s: torch.Tensor, scale: torch.Tensor, info: SolveInfo) -> None:
    """Count in ``info`` what σ lost on its way back to A's units, s = scaled / scale.

    The power-of-two scale is exact while σ stays a normal number of A's dtype. A float32 A whose σ
    lies beyond its range does not: with entries near 1e-43, σ₁ ≈ 4e-41 came back subnormal, with
    ~10 bits, and the triplets' true residual was 1.6e-4 where the scaled ones had reached 4.7e-8;
    with entries near 1e37, σ₁ ≈ 3.9e38 came back inf, and both were reported converged. Nor does a
    float64 one (a new user's trial): entries near 1e307 gave σ₁ = inf, and near 1e-321 values 6.3e-5·σ₁
    off, both converged, with error bars of 0. That rounding, relative to σ₁, is added to the residual
    (and to each error bar in A's units), so that ``converged`` holds for the values returned. It is
    measured in the solver's units, s·scale against the scaled σ, where every number is a normal one
    and the product by a power of two exact (in A's units the exact σ need not be a float64 number)."""
    _charge_rounding(scaled, s, info, True, scale)


def _charge_rounding(exact: torch.Tensor, s: torch.Tensor, info: SolveInfo, residual, scale=None) -> None:
    """Add |s − exact| (σ as returned against σ as solved) to each error bar in ``info``, and, for
    the values where ``residual`` (a bool, or one per value), relative to σ₁ to the residual, with
    ``converged`` to match. With ``scale`` (a power of two), ``exact`` is in units of scale·A and s
    is compared as s·scale; the bars, in A's units, grow by at least the dtype's least subnormal."""
    returned = s.detach().double()
    if scale is not None:
        returned = returned * scale.detach().double()
    lost = (returned - exact.detach().double()).abs()  # inf where σ overflowed
    if not readable_any(lost > 0, default=False):
        return  # the usual case: exact
    # only where a value lost digits: 0/0 had made a zero matrix's residual NaN, and it not converged,
    # beside a batch element whose values rounded (a float32 zero and a rank-deficient 3×3 at 1e-25)
    counted = torch.as_tensor(residual) & (lost > 0)
    relative = torch.where(counted, lost / exact.detach().double()[..., :1], 0.0).amax(-1)
    if info.errors is not None:
        if scale is not None:  # A's units, where a subnormal's rounding may itself round to 0
            finfo = torch.finfo(info.errors.dtype)
            least = finfo.tiny * finfo.eps  # the least subnormal
            lost = torch.where(lost > 0, (lost / scale.detach().double()).clamp_min(least), 0.0)
        info.errors = (info.errors.double() + lost).to(info.errors.dtype)
    info.residual = (info.residual.double() + relative).to(info.residual.dtype)
    converged = info.converged & (info.residual <= info.tol)
    if info.stop_reason in ("converged", "whole space") and readable_any(
        counted.any(-1) & ~converged, default=False
    ):
        # the iteration's success, beside converged False, read as a contradiction (σ = inf from a
        # float32 A of entries near 1e38; a new user's trial), and so did the dense path's "whole
        # space" (the result is exact) where a tol below float32's rounding had left it unconverged
        # before σ overflowed (another new user's trial)
        info.stop_reason = "out of range"
    info.converged = converged


def _beyond_range(s: torch.Tensor) -> torch.Tensor:
    """Per value: inf or NaN, or subnormal (not 0): outside the normal range of s's dtype."""
    return ~torch.isfinite(s) | ((s.abs() < torch.finfo(s.dtype).tiny) & (s != 0))


def _product_fault(op: Operator, info: SolveInfo) -> str | None:
    """The ConvergenceWarning's text where a caller's products are at fault (:func:`product_fault`):
    no triplet has a small residual then, and the warning had blamed a cluster of close values
    (``rmatvec`` returning 1.1·Aᵀy stalled at residual 0.1; a new user's trial)."""
    fault = product_fault(op)
    if fault is None:
        return None
    return (
        f"riemsvd.solve ended with relative residual {float(info.residual.max()):.3g} > tol = "
        f"{info.tol:.3g} because {fault}"
    )


def _not_converged(
    info: SolveInfo,
    dtype,
    shape,
    s: torch.Tensor | None = None,
    options: SolverOptions | None = None,
    maxiter: int | None = None,
    copy: bool = False,
) -> str:
    """The ConvergenceWarning's text: what happened, and the remedy that fits why (``options``: the
    solve's, whose ``max_basis``, where given, is the first suspect of a stall; ``maxiter``: the one
    asked for, which the solve raises to the iterations k triplets need; ``copy``: a float32 A's
    triplets from the iteration in its float64 copy, :func:`_solve_in_float64`). Its callers add the batch
    elements it is about (:func:`batch_elements`: a count alone, "on 1 of 8 matrices", named none; a
    new user's trial)."""
    s = None if s is None else s.detach()  # under torch.func.grad: torch's "requires_grad ... to a scalar"
    beyond = _beyond_range(s) if s is not None and s.dtype.is_floating_point else None
    if s is not None and beyond is not None and readable_any(beyond, default=False):
        finfo = torch.finfo(s.dtype)
        if s.dtype == torch.float64:
            remedy = "Scale A by a power of two (σ scales with it) to bring σ into that range."
        elif s.dtype == torch.float16:  # float32 holds what float16 cannot, to 3.4e38 (a new user's trial)
            remedy = "Solve A in float32 (`A.float()`), or in float64 (`A.double()`) beyond 3.4e38."
        else:
            remedy = "Solve A in float64 (`A.double()`)."
        # the σ₁ of a matrix beyond it: a batch's largest had been quoted (10.1 for a float32 batch
        # whose third matrix's σ₁ was 1e-41; a new user's trial)
        s1 = float(s.reshape(-1, s.shape[-1])[beyond.reshape(-1, s.shape[-1]).any(-1)][0, 0])
        return (
            f"riemsvd.solve: a singular value lies outside the range of {s.dtype} (the returned "
            f"σ₁ is {s1:.3g}; {s.dtype} holds {finfo.tiny:.3g} to {finfo.max:.3g} as normal "
            f"numbers): the values returned carry its rounding, which the residual "
            f"{float(info.residual.max()):.3g} includes. {remedy}"
        )
    where = (
        f"relative residual {float(info.residual.max()):.3g} > tol = {info.tol:.3g} on "
        f"{int((~info.converged).sum())} of {info.converged.numel()} matrices"
    )
    stopped = f"{info.iterations} iterations (maxiter"
    if maxiter is not None and isinstance(info.iterations, int) and info.iterations > maxiter:
        # raised to ⌈k/b⌉: the count differed from the maxiter given, unexplained (a new user's trial)
        stopped += f" = {maxiter}, raised to the {info.iterations} that k triplets need at least"
    stopped += ")"
    if info.stop_reason == "maxiter" and bool((info.residual <= info.tol).all()):
        return (
            f"riemsvd.solve stopped after {stopped} before it could tell "
            "whether the warm start lacked a singular value above the k returned (the residuals pass "
            "tol; the values may still be the wrong ones where values crossed): raise `maxiter`."
        )
    if info.stop_reason == "maxiter":
        return (
            f"riemsvd.solve stopped after {stopped} with {where}; raise "
            "`maxiter`, loosen `tol`, or pass a warm start `init`."
        )
    floor, level = "", None
    if dtype in (torch.float32, torch.float64) and shape is not None and len(shape) >= 2:
        level = product_floor(dtype, *shape[-2:])
        # a scale of the rounding, not a bound: quoted beside a residual below it, it read as wrong
        # (float32 1536×384: "about 9e-06" where the iteration had stopped at 3.2e-7; a new user's trial)
        if float(info.residual.max()) >= level:
            floor = f" (about {level:.1g} in {dtype} at this size)"
    if info.method == "trust-region" and info.stop_reason == "stalled":
        # its own stop (20 steps without a new best residual); `options` are not its: with k inside a
        # repeated value (σ₅ = … = σ₅₀, k = 8) it stalled near 1e-9 on 4 of 10 seeds, where the
        # iteration converged on all 10 (a new user's trial)
        return (
            f"riemsvd.solve: the trust-region method stopped making progress with {where}: 20 "
            "steps without a smaller residual, as where k splits a repeated or tightly clustered "
            "singular value. The default method='iterative' resolves such values; or loosen `tol`."
        )
    if info.stop_reason == "stalled" and s is not None and options is not None and options.max_basis:
        k, given = s.shape[-1], options.max_basis
        b = options.block or _default_block(k, s.device)
        least = least_basis(k, max(options.start_block, b), b)
        columns = shape[-1] if shape is not None and len(shape) >= 2 else max(given, least)
        default, used = default_basis(k, b), min(columns, max(given, least))
        if given < default:
            # a basis the user narrowed: SolverOptions(max_basis=1), k = 4, stalled at 3.7e-3 on 1 of 6
            # seeds of a 300×200 Gaussian where the default converged in 184 products, and the message
            # blamed a cluster (a new user's trial)
            return (
                f"riemsvd.solve: the iteration stopped making progress with {where}, in the search space "
                f"of `SolverOptions(max_basis={given})` ({used} columns, the least it can use with these "
                f"options being {least}); the default for k = {k} with these options is {default}. Raise "
                "`max_basis`, or leave it unset; or raise `patience` (default 60) and `maxiter`, or "
                "loosen `tol`."
            )
    if info.stop_reason == "stalled" and level is not None and float(info.residual.max()) > 1e3 * level:
        # far above rounding: the residual stopped falling, as in a wide cluster of close values
        # (177 values within 1e-6 of each other, k = 18: stalled at 4.8e-7, 1e8 above the floor)
        return (
            f"riemsvd.solve: the iteration stopped making progress with {where}, far above what rounding "
            f"allows{floor}: the residual did not fall for `SolverOptions.patience` looks, as happens in "
            "a wide cluster of close singular values. A wider search space often resolves one: "
            "`options=riemsvd.SolverOptions(max_basis=...)` (the default, max(24, 2k + 16) on the CPU, "
            "is doubled at a stall up to 4 times itself; 100 took a path graph's 2000×2000 Laplacian at "
            "k = 4 from 1e-4 to 1e-12). Or raise `patience` (default 60) and `maxiter`, loosen `tol`, or, "
            "for a dense matrix small enough, use method='dense'."
        )
    how = "the dense path" if info.method == "dense" else f"the iteration ({info.stop_reason})"
    if dtype != torch.float64 and info.method == "dense":
        remedy = "Loosen `tol`, or solve in float64."
    elif dtype == torch.float32 and info.method == "iterative" and not copy and info.tol < FLOAT32_CAST_LEAST:
        # the float32 iteration itself (a sparse A, a GPU's, one under torch.compile or beyond the
        # copy's size): its vectors stall near 4·ε, so the triplets' own 3e-8 was advised in vain (a
        # scipy sparse 3000×1500 A at tol 1e-8 to 2e-7 stalled at 2.65e-7 each time; a new user's
        # trial); the dense path, below, does not reach a tol that low either
        remedy = (
            f"Loosen `tol` to {FLOAT32_COPY_BELOW:.1g} or more (the float32 iteration's vectors stall "
            "near it), or solve A in float64 (`A.double()`, or `A.astype(np.float64)` for scipy's), "
            "as a dense float32 A on the CPU is for such a tol, in a copy."
        )
    elif dtype != torch.float64 and info.tol < FLOAT32_CAST_LEAST:
        # float32 triplets, the dense path's too, seldom come below their own rounding (a 3000×1500
        # float32 Gaussian at tol 1e-12, k = 5: the iteration 4.9e-8, the dense path 5.6e-8 at 600×300,
        # where the message had advised method='dense')
        remedy = (
            f"Loosen `tol` to {FLOAT32_CAST_LEAST:.1g} or more (float32 triplets are seldom closer), or "
            "solve in float64."
        )
    elif dtype != torch.float64:  # the dense path's float64 Gram matrix resolves more (a 2000×1000
        # float32 Gaussian at tol 1e-7, k = 4: the iteration stalled at 6.6e-7, the dense path 5.7e-8)
        remedy = "Loosen `tol`, solve in float64, or, for a dense matrix small enough, use method='dense'."
    elif info.method == "dense":
        remedy = "Loosen `tol`."
    else:  # already float64: a whole decomposition resolves more, where A is small enough for one
        remedy = "Loosen `tol`, or, for a dense matrix small enough, use method='dense'."
    # "near" where tol lies above the rounding's scale: LAPACK's SVD of a 20×12 float64 Gaussian
    # left residuals up to 3× it (6.3e-15 at a scale of 2e-15), and "below" read as wrong at tol 4e-15
    # (a new user's trial)
    relation = "near" if level is not None and info.tol >= level else "below"
    return (
        f"riemsvd.solve: {how} ended with {where}: tol is {relation} what rounding lets it resolve"
        f"{floor}. " + remedy
    )


def _check_resolution(s, info: SolveInfo, shape=None) -> None:
    """A ResolutionWarning where the iteration returned values σ_k below 10·tol·σ₁: a residual of
    tol·σ₁ leaves them uncertain by a sizeable fraction of themselves (the dense path's float64 Gram
    matrix or SVD resolves them), and one returned below tol·σ₁ may stand in for a σ_k above it.
    Values at or below ε·σ₁ (ε of their dtype) are numerically zero, k beyond the rank: a rank-4
    2048×512 matrix's come back 2e-9·σ₁ in float32 and 3e-18·σ₁ in float64, and are not flagged.

    For a tol below the rounding of A's products (``product_floor``, for the (m, n) of ``shape``),
    that rounding, which the iteration's own small matrices carry: float32 at tol 1e-6 (4096×1024,
    a rank-20 signal over noise, k = 32) returned the trailing values 15% low, 3.8 bars off and not
    the leading ones, unflagged at σ₃₂/σ₁ = 1.24e-5 where the floor is 1.5e-5 (a new user's trial)."""
    if info.method == "dense" or s.shape[-1] < 2:
        return
    try:
        # numpy on a plain CPU tensor: the same tests in torch took 40–100 µs right after a solve
        # (384×384, k = 8), 8 µs alone; inside torch.func.grad a CPU tensor has no numpy view
        x = s.detach()
        if type(s) is torch.Tensor and s.device.type == "cpu":
            with contextlib.suppress(RuntimeError):
                x = x.numpy()
        # Not only above tol·σ₁: a float32 solve at its default tol returned a noise value 0.46·tol·σ₁
        # for σ₈ = 4.6·tol·σ₁ (2048×512, 3 of 8 seeds; a new user's trial), silently where values
        # below tol·σ₁ had been taken as numerically zero. A zero matrix (σ₁ = 0) flags nothing
        # Every value, not σ_k alone: a float32 solve (k = 96) returned σ₉₃–σ₉₅ 1e-5 to 4e-6·σ₁ below
        # their true values by more than their bars, unflagged behind a σ₉₆ returned under ε·σ₁
        # (full rank, true σ₉₆ = 3.9·ε·σ₁; a new user's trial)
        first = x[..., :1]
        limit = info.tol if shape is None else max(info.tol, product_floor(s.dtype, *shape[-2:]))
        low = (x < 10 * limit * first) & (x > float(torch.finfo(s.dtype).eps) * first)
        flagged = bool(low.any()) if isinstance(low, np.ndarray) else readable_any(low, default=False)
    except (RuntimeError, TypeError):  # a DTensor or a transform's tensor: nothing to read cheaply
        return
    if flagged:
        ratios = x / first  # σ₁ > 0 wherever a value is flagged
        flagged_ratios: Any
        if isinstance(ratios, np.ndarray):
            flagged_ratios = np.where(low, ratios, np.inf)
        else:  # a tensor (on a device, or inside torch.func's grad, which float() and int() read)
            flagged_ratios = torch.where(low, ratios, torch.inf)
        ratio = float(flagged_ratios.min())
        # σ_k itself, or a value above a σ_k returned at or below ε·σ₁, named by its place ("σⱼ (j <
        # k)" had not said which; a new user's trial): the least flagged one's
        if bool((low[..., -1] == low.any(-1)).all()):
            which = "σ_k"
        else:
            which = f"σ_{int(flagged_ratios.argmin()) % x.shape[-1] + 1} (of k = {x.shape[-1]})"
        if limit == info.tol:
            bound, known, wider = "tol", "tol·σ₁", ", "
            remedy = "with a smaller `tol` or with method='dense' (a dense A)"
        else:  # below the products' rounding a smaller tol changes nothing
            bound, known = "that", f"{limit:.2g}·σ₁, the rounding of its {str(s.dtype)[6:]} products,"
            remedy, wider = "with method='dense' (a dense A)", " or "
        if s.dtype != torch.float64:
            remedy = "in float64" + wider + remedy
        warnings.warn(
            f"riemsvd.solve: {which}/σ₁ = {ratio:.2g} is below 10·{bound} = {10 * limit:.2g}: "
            f"the trailing triplets are only known to about {known} and need not be the largest ones "
            f"there. Solve {remedy}.",
            ResolutionWarning,
            stacklevel=callers_level(),  # the user's line, from solve or from _solve_in_float64
        )
