"""Matrices sharded across processes: the solver's spaces, operator and layouts over torch.distributed.

A is split by rows (dim 0) or by columns (dim 1) into one block per process: a DTensor placed
``Shard(0)``/``Shard(1)`` on a 1-D device mesh, or a :class:`ShardedMatrix` (a local block and a process
group). Vectors of the split side are split like A; those of the other side are replicated. Every
reduction over the split side is one all-reduce (QR: one all-gather of the small R factors), so a
solver iteration communicates O((m + n)·block) numbers and A is never gathered.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from riemsvd._autograd import Layout
from riemsvd._backend import mm
from riemsvd._operator import DenseOperator, Operator
from riemsvd._space import Space, randn
from riemsvd._subspace import DEFAULT_OPTIONS
from riemsvd._validate import (
    NON_FINITE_A,
    check_block,
    check_dtensor,
    check_local_init,
    check_method,
    check_sharded_matrix,
    check_solve_shape_args,
)

__all__ = ["ShardedMatrix", "is_sharded", "prepare"]


class ShardedMatrix:
    """An m×n matrix split by rows or columns across the processes of a group, one block each.

    For users without DTensor: each process passes the block it holds. Blocks follow the ranks of
    ``group`` in order (rank 0 holds the first rows, or columns) and may have any sizes, zero
    included; the other dimension must be the same on every process. ``riemsvd.solve`` is then a
    collective: every process of the group must call it, with the same arguments.

    Parameters
    ----------
    block : torch.Tensor
        This process's block, float32 or float64, shape ``(m_r, n)`` for ``dim=0`` or ``(m, n_r)`` for
        ``dim=1``. It may require grad: the gradient of a loss of the solve's results is then this
        block's part of Ā.
    dim : {0, 1}
        0: A is split by rows (``Shard(0)``), 1: by columns (``Shard(1)``).
    group : torch.distributed.ProcessGroup, optional
        The processes sharing A; the default (world) group when None.

    Notes
    -----
    ``solve`` returns plain tensors: for ``dim=0`` U is this process's rows of U (``(m_r, k)``, split
    like A) and V (``(n, k)``) and S are whole on every process; for ``dim=1`` U is whole and V holds
    this process's rows (``(n_r, k)``).

    Examples
    --------
    In each process of a group (``torchrun --nproc-per-node 4 script.py``; not run as a doctest)::

        dist.init_process_group("gloo")
        rows = torch.tensor_split(A, dist.get_world_size())[dist.get_rank()]  # or loaded from disk
        U_mine, S, V = riemsvd.solve(riemsvd.ShardedMatrix(rows, dim=0), k=4)
    """

    def __init__(self, block: torch.Tensor, dim: int = 0, group=None) -> None:
        check_sharded_matrix(block, dim)
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "ShardedMatrix needs torch.distributed: call torch.distributed.init_process_group first."
            )
        self.block = block
        self.dim = int(dim)
        self.group = group

    @property
    def dtype(self) -> torch.dtype:
        return self.block.dtype

    def __repr__(self) -> str:
        return f"ShardedMatrix(block of shape {tuple(self.block.shape)}, dim={self.dim})"


def _dtensor_type():
    """DTensor's class where ``torch.distributed.tensor`` has been imported, else None: an A that is a
    DTensor implies the import, and importing it here would cost every solve's first call 0.4 s
    (it pulls in sympy)."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def is_sharded(a) -> bool:
    """Whether ``a`` is spread over processes: a :class:`ShardedMatrix` or a DTensor."""
    if isinstance(a, ShardedMatrix):
        return True
    dtensor = _dtensor_type() if dist.is_available() else None
    return dtensor is not None and isinstance(a, dtensor)


# --------------------------------------------------------------------------------------------------
# The split side's space and the operator


class ShardedSpace(Space):
    """Vectors of ``sum(sizes)`` entries split by rows: process ``rank`` of ``group`` holds ``sizes[rank]``
    of them, after those of the lower ranks.

    Reductions are all-reduces over the group; QR is TSQR (a local QR, an all-gather of the small R
    factors, the QR of their stack); random vectors are drawn whole from the shared generator and cut,
    so every process consumes the same random numbers and the start does not depend on how A is split.
    """

    distributed = True

    def __init__(self, sizes: list[int], rank: int, group) -> None:
        super().__init__(sum(sizes))
        self.sizes, self.rank, self.group = list(sizes), rank, group
        self.local_rows = sizes[rank]
        self.offset = sum(sizes[:rank])

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        # In place: every caller passes a fresh partial result (a product or a sum) it does not keep.
        t = t.contiguous()
        dist.all_reduce(t, group=self.group)
        self.communicated += t.numel()
        return t

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        # The operator's power-of-two scaling keeps these squares in range.
        return self.reduce((x * x).sum(-2)).sqrt()

    def qr(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[-1]
        q, r = torch.linalg.qr(x)  # (..., m_r, h), (..., h, c) with h = min(m_r, c)
        h = r.shape[-2]
        r = torch.nn.functional.pad(r, (0, 0, 0, c - h)).contiguous()
        parts = [torch.empty_like(r) for _ in self.sizes]
        dist.all_gather(parts, r, group=self.group)
        self.communicated += r.numel()
        q2, r = torch.linalg.qr(torch.cat(parts, dim=-2))  # the same on every process
        return mm(q, q2[..., self.rank * c : self.rank * c + h, :]), r

    def randn(self, batch, cols: int, dtype, device, generator) -> torch.Tensor:
        whole = randn(tuple(batch) + (self.rows, cols), dtype, device, generator)
        return whole[..., self.offset : self.offset + self.local_rows, :].contiguous()


class ShardedOperator(Operator):
    """A split by rows (``dim=0``: this process holds rows ``offset : offset + m_r``) or columns.

    Split by rows, A x needs no communication (x is whole, A x is split like A) and Aᵀ y is the sum
    over processes of block_rᵀ y_r: one all-reduce of n·b numbers. Split by columns, the other way
    round. Products count in ``matvecs`` as on one process.
    """

    def __init__(self, block: torch.Tensor, dim: int, sizes: list[int], rank: int, group, other: int):
        split = ShardedSpace(sizes, rank, group)
        whole = Space(other)
        m, n = (split.rows, other) if dim == 0 else (other, split.rows)
        left, right = (split, whole) if dim == 0 else (whole, split)
        super().__init__((m, n), (), block.dtype, block.device, left, right)
        self.block, self.dim, self.split = block, dim, split

    def _matmat(self, x):
        y = mm(self.block, x)
        return y if self.dim == 0 else self.split.reduce(y)

    def _rmatmat(self, y):
        x = mm(self.block.mT, y)
        return self.split.reduce(x) if self.dim == 0 else x


# --------------------------------------------------------------------------------------------------
# Layouts: what the autograd rules and the public solve need to know about the split


class ShardedLayout(Layout):
    """A held as one block per process (a ShardedMatrix); results are this process's blocks."""

    def __init__(self, dim: int | None, sizes: list[int], rank: int, group, other: int) -> None:
        self.dim, self.sizes, self.rank, self.group, self.other = dim, sizes, rank, group, other

    def operator(self, a: torch.Tensor) -> Operator:
        assert self.dim is not None  # None only for a replicated DTensor, whose layout overrides this
        return ShardedOperator(a, self.dim, self.sizes, self.rank, self.group, self.other)


class DTensorLayout(ShardedLayout):
    """A held as a DTensor on a 1-D mesh, split (Shard(0)/Shard(1)) or whole on every process
    (Replicate()); inputs, outputs and their (co)tangents are DTensors, the rules see their blocks."""

    def __init__(self, a, dim: int | None, sizes, rank: int, group) -> None:
        m, n = a.shape
        super().__init__(dim, sizes, rank, group, n if dim == 0 else m)
        self.mesh, self.shape = a.device_mesh, (m, n)

    def operator(self, a: torch.Tensor) -> Operator:
        if self.dim is None:
            return DenseOperator(a)
        return super().operator(a)

    def local(self, x, like=None):
        dtensor = _dtensor_type()
        if not isinstance(x, dtensor):
            return x
        if like is not None and tuple(x.placements) != tuple(like.placements):
            x = x.redistribute(like.device_mesh, like.placements)
        return x.to_local()

    def wrap(self, x, like):
        dtensor = _dtensor_type()
        return dtensor.from_local(
            x, like.device_mesh, like.placements, run_check=False, shape=like.shape, stride=like.stride()
        )

    def outputs(self, u, s, v):
        from torch.distributed.tensor import Replicate, Shard

        dtensor = _dtensor_type()
        m, n = self.shape
        k = s.shape[-1]

        def make(x, rows, split):
            placement = Shard(0) if split else Replicate()
            shape = (rows, k) if x.dim() == 2 else (k,)
            stride = (k, 1) if x.dim() == 2 else (1,)
            return dtensor.from_local(x, self.mesh, [placement], run_check=False, shape=shape, stride=stride)

        return make(u, m, self.dim == 0), make(s, k, False), make(v, n, self.dim == 1)


# --------------------------------------------------------------------------------------------------
# Collective validation: every process learns every process's problem, and all raise alike


@dataclass
class Prepared:
    """A sharded problem, checked on every process: what ``riemsvd.solve`` runs."""

    tensor: torch.Tensor  # what the autograd Function takes: the DTensor, or the local block
    layout: ShardedLayout
    magnitude: torch.Tensor  # max |a_ij| over all processes
    init: tuple[torch.Tensor, torch.Tensor] | None  # local blocks
    generator: torch.Generator  # seeded alike on every process


def _describe(a):
    """(block, dim, group, rank, world, what) of a sharded A, before any collective."""
    if isinstance(a, ShardedMatrix):
        group = a.group
        if group is not None and dist.get_rank() not in dist.get_process_group_ranks(group):
            # before any collective: a process outside the group had gathered an empty table and
            # failed with an IndexError (a new user's trial)
            raise ValueError(
                f"this process (global rank {dist.get_rank()}) is not in the ShardedMatrix's `group` "
                f"(ranks {dist.get_process_group_ranks(group)}): solve it on the group's processes only."
            )
        return a.block, a.dim, group, dist.get_rank(group), dist.get_world_size(group), "ShardedMatrix"
    dim = check_dtensor(a)
    mesh = a.device_mesh
    group = mesh.get_group()
    return a.to_local(), dim, group, mesh.get_local_rank(), mesh.size(), "DTensor"


def _local_problem(a, block, dim, init, k, tol, maxiter, options, method):
    """What this process knows of the problem, for the others to check; local errors are recorded.
    ``dim``, ``options`` and ``method`` too: one process with another split, block size or method
    left the others in a collective until its timeout, or killed them (gloo: "Received data size
    doesn't match expected size"; a new user's trial)."""
    meta = {"shape": tuple(block.shape) if isinstance(block, torch.Tensor) else None, "error": None}
    meta.update(
        k=_plain(k), tol=_plain(tol), maxiter=_plain(maxiter), dtype=str(getattr(block, "dtype", None))
    )
    options = DEFAULT_OPTIONS if options is None else options  # None is the default options
    meta.update(dim=repr(dim), options=repr(options), method=repr(method))
    # a graph on some processes only: their backward's collectives find no partner (gloo: "Connection
    # closed by peer" where the others had gone on; a new user's trial)
    graph = getattr(a if not isinstance(a, ShardedMatrix) else block, "requires_grad", False)
    meta["graph"] = repr(bool(graph) and torch.is_grad_enabled())
    meta["max_abs"] = 0.0
    meta["init"] = meta["init_whole"] = None
    try:
        check_method(method, a, sharded=True)
        meta["max_abs"] = check_block(block)
        if init is not None:
            meta["init"] = check_local_init(init)
            meta["init_whole"] = _whole_digest(init, dim)
    except (TypeError, ValueError) as err:
        meta["error"] = (type(err).__name__, str(err))
    return meta


def _plain(x) -> str:
    """repr of a number as Python's own type, so that equal values agree whatever their type (k as
    np.int64(2) on one process and 2 on another was refused as different; a new user's trial)."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return repr(int(x))
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return repr(float(x))
    return repr(x)


def _whole_digest(init, dim: int | None) -> str:
    """A digest of the sides of ``init`` that every process holds whole (V0 for a split by rows, U0 by
    columns, both for a replicated A), with their dtypes: they must be the same on every process, as
    a previous result's are, bit for bit. V0 1e-15 off on one process of a row split had the
    processes' bases part: σ₁ 12.8% above ‖A‖₂ with a residual of 1, S different on each, or a crash
    in gloo (a new user's trial)."""
    sides = (0, 1) if dim is None else (1 - dim,)
    digest = hashlib.sha256()
    for side in sides:
        x = init[side].detach().to("cpu").contiguous()
        digest.update(f"{x.dtype}{tuple(x.shape)}".encode())
        digest.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _agree(metas, key, what):
    values = [meta[key] for meta in metas]
    if any(value != values[0] for value in values):
        listing = ", ".join(f"rank {r}: {value}" for r, value in enumerate(values))
        raise ValueError(f"{what} must be the same on every process, got {listing}.")


def _check_all(metas, dim, kind):
    """The checks every process runs on the same gathered table, so that all raise the same error."""
    for rank, meta in enumerate(metas):
        if meta["error"] is not None:
            name, message = meta["error"]
            raise (TypeError if name == "TypeError" else ValueError)(f"on rank {rank}: {message}")
    _agree(metas, "dtype", "`A`'s dtype")
    _agree(metas, "dim", "`dim` (the dimension `A` is split along, or a DTensor's placement)")
    for key in ("k", "tol", "maxiter", "options", "method"):
        _agree(metas, key, f"`{key}`")
    _agree(metas, "graph", "whether `A` requires grad (with grad mode on)")
    shapes = [meta["shape"] for meta in metas]
    if dim is None:
        _agree(metas, "shape", "`A` (replicated)")
        m, n = shapes[0]
        sizes = [m] * len(metas)
    else:
        other = 1 - dim
        if any(shape[other] != shapes[0][other] for shape in shapes):
            side = "columns" if dim == 0 else "rows"
            listing = ", ".join(f"rank {r}: {tuple(shape)}" for r, shape in enumerate(shapes))
            raise ValueError(
                f"`A` ({kind}) is split by {'rows' if dim == 0 else 'columns'}, so every process's block "
                f"must have the same number of {side}; got blocks {listing}."
            )
        sizes = [shape[dim] for shape in shapes]
        m, n = (sum(sizes), shapes[0][1]) if dim == 0 else (shapes[0][0], sum(sizes))
    inits = [meta["init"] for meta in metas]
    if any((x is None) != (inits[0] is None) for x in inits):
        raise ValueError("`init` must be given on every process or on none.")
    if inits[0] is not None:
        for rank, (u_shape, v_shape) in enumerate(inits):
            rows_u = sizes[rank] if dim == 0 else m
            rows_v = sizes[rank] if dim == 1 else n
            for name, shape, rows in (("U0", u_shape, rows_u), ("V0", v_shape, rows_v)):
                if len(shape) not in (1, 2) or shape[0] != rows or (len(shape) == 2 and shape[1] < 1):
                    raise ValueError(
                        f"`init` {name} on rank {rank} must have shape ({rows}, j) (this process's part, "
                        f"laid out like the result), got {shape}."
                    )
            if len(u_shape) != len(v_shape) or (len(u_shape) == 2 and u_shape[1] != v_shape[1]):
                raise ValueError(f"`init` U0 and V0 on rank {rank} must have the same number of columns.")
        columns = [u_shape[1] if len(u_shape) == 2 else 1 for u_shape, _ in inits]
        if any(j != columns[0] for j in columns):
            listing = ", ".join(f"rank {r}: {j}" for r, j in enumerate(columns))
            raise ValueError(f"`init` must have the same number of columns on every process, got {listing}.")
        differ = [r for r, meta in enumerate(metas) if meta["init_whole"] != metas[0]["init_whole"]]
        if differ:
            side = "U0 and V0" if dim is None else "V0" if dim == 0 else "U0"
            raise ValueError(
                f"`init` {side} (held whole by every process{'' if dim is None else ', A being split by '}"
                f"{'' if dim is None else 'rows' if dim == 0 else 'columns'}) must be the same on every "
                f"process, bit for bit, dtype included; it differs from rank 0's on rank"
                f"{'s' if len(differ) > 1 else ''} {', '.join(map(str, differ))}. Pass a previous "
                "result's (the same on every process), or broadcast it first: "
                "`torch.distributed.broadcast(x, src=0)`."
            )
    return m, n, sizes


def prepare(a, k, tol, maxiter, init, generator, options, method="auto") -> Prepared:
    """Check a sharded problem on every process at once (one all-gather of a small description) and
    set up its layout; every process raises the same error for a problem that is wrong anywhere."""
    block, dim, group, rank, world, kind = _describe(a)
    if init is not None and _dtensor_type() is not None:
        dtensor = _dtensor_type()
        init = tuple(x.to_local() if isinstance(x, dtensor) else x for x in init)
    meta = _local_problem(a, block, dim, init, k, tol, maxiter, options, method)
    metas: list[Any] = [None] * world  # each process's description, filled by the all-gather
    dist.all_gather_object(metas, meta, group=group)
    m, n, sizes = _check_all(metas, dim, kind)
    check_solve_shape_args((m, n), (), k, tol, maxiter, generator, options)
    if isinstance(a, ShardedMatrix):
        layout = ShardedLayout(dim, sizes, rank, group, n if dim == 0 else m)
        tensor = block
    else:
        layout = DTensorLayout(a, dim, sizes, rank, group)
        tensor = a
    # One seed for all: the replicated side's random vectors must agree bit for bit, and the split
    # side's are cut from the same whole draws.
    gen_device = generator.device if generator is not None else "cpu"
    seed = torch.randint(0, 2**62, (1,), generator=generator, dtype=torch.int64, device=gen_device)
    seed = seed.to(block.device)
    dist.broadcast(seed, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    shared = torch.Generator().manual_seed(int(seed))
    magnitude = torch.tensor(max(meta["max_abs"] for meta in metas), dtype=torch.float64)
    if not math.isfinite(float(magnitude)):
        raise ValueError(NON_FINITE_A)
    return Prepared(tensor, layout, magnitude, init, shared)
