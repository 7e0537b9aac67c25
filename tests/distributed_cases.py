"""What each process runs in tests/test_distributed.py: sharded solves, gradients, spectral norms and
bad inputs, each result saved for the parent process to check against one-process references.

Kept apart from the test module so that spawned processes import only this (and riemsvd).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from datetime import timedelta

import numpy as np
import torch
import torch._dynamo
import torch.distributed as dist

K = 3
KINDS = ("gaussian", "decay")


def problem(kind: str, m: int, n: int):
    """The matrix and the weights of a sign-invariant loss, the same on every process."""
    from tests.matrices import make_matrix

    gen = torch.Generator().manual_seed(7 + m + n)
    a = make_matrix(kind, m, n, gen)
    weights = (
        torch.randn(K, dtype=torch.float64, generator=gen),
        torch.randn(m, K, dtype=torch.float64, generator=gen),
        torch.randn(n, K, dtype=torch.float64, generator=gen),
    )
    return a, weights


def loss(weights, u, s, v):
    """Σ c_i σ_i + Σ c'_ri u_ri² + Σ c''_ri v_ri²: invariant under (u_i, v_i) → −(u_i, v_i), and a sum over
    rows, so each process's part of it is the loss of the rows it holds."""
    cs, cu, cv = weights
    return (cs * s).sum() + (cu * u**2).sum() + (cv * v**2).sum()


def split_sizes(length: int, world: int) -> list[int]:
    """Uneven parts with an empty one on 4 processes: [0, 5/12, 1/4, rest] of the length."""
    if world == 4:
        sizes = [0, 5 * length // 12, length // 4]
        return sizes + [length - sum(sizes)]
    first = 7 * length // 12
    return [first, length - first][:world] if world == 2 else [length]


class CollectiveSpy:
    """Records the numbers every torch.distributed collective sends from this process, patched in at
    the module riemsvd calls through: a count that does not rely on the library's own."""

    NAMES = ("all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_to_all", "send", "gather")

    def __enter__(self):
        self.payloads, self._saved = [], {}
        for name in self.NAMES:
            original = getattr(dist, name, None)
            if original is None:
                continue
            self._saved[name] = original

            def spy(*args, _original=original, _name=name, **kwargs):
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                tensors += [t for a in args if isinstance(a, list) for t in a if isinstance(t, torch.Tensor)]
                sent = args[1] if _name == "all_gather" else (tensors[0] if tensors else None)
                self.payloads.append(0 if sent is None else sent.numel())
                return _original(*args, **kwargs)

            setattr(dist, name, spy)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(dist, name, original)


def _sharded_cases(rank: int, world: int, out: dict) -> None:
    from riemsvd import ShardedMatrix, solve

    for kind in KINDS:
        for dim in (0, 1):
            m, n = 120, 80
            a, weights = problem(kind, m, n)
            sizes = split_sizes(a.shape[dim], world)
            lo = sum(sizes[:rank])
            rows = slice(lo, lo + sizes[rank])
            block = (a[rows] if dim == 0 else a[:, rows]).clone().requires_grad_(True)
            with CollectiveSpy() as spy:
                result = solve(ShardedMatrix(block, dim), K)
            u, s, v = result
            cs, cu, cv = weights
            local = (cs, cu[rows], cv) if dim == 0 else (cs, cu, cv[rows])
            loss(local, u, s, v).backward()
            out[("sharded", kind, dim)] = {
                "sizes": sizes,
                "u": u.detach(),
                "s": s.detach(),
                "v": v.detach(),
                "grad": block.grad,
                "residual": result.info.residual,
                "converged": result.info.converged,
                "tol": result.info.tol,
                "matvecs": result.info.matvecs,
                "iterations": result.info.iterations,
                "communicated": result.info.communicated,
                "spied": spy.payloads,
            }


def _warm_start_cases(rank: int, world: int, out: dict) -> None:
    """A solve of a slightly changed matrix, warm-started from the previous result's blocks."""
    from riemsvd import ShardedMatrix, solve

    a, _ = problem("gaussian", 120, 80)
    change = 1e-4 * torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(4))
    for dim in (0, 1):
        sizes = split_sizes(a.shape[dim], world)
        lo = sum(sizes[:rank])
        part = slice(lo, lo + sizes[rank])
        first = solve(ShardedMatrix(a[part] if dim == 0 else a[:, part], dim), K)
        b = a + change
        block = b[part] if dim == 0 else b[:, part]
        cold = solve(ShardedMatrix(block, dim), K)
        warm = solve(ShardedMatrix(block, dim), K, init=(first.U, first.V))
        out[("warm", dim)] = {"s": warm.S, "b": b, "cold": cold.info.matvecs, "warm": warm.info.matvecs}
    # inside a compiled function (without fullgraph) the sharded solve runs eagerly behind a graph
    # break: traced, its checks crashed Dynamo (InternalTorchDynamoError; a new user's trial)
    torch._dynamo.reset()
    sizes = split_sizes(a.shape[0], world)
    lo = sum(sizes[:rank])
    sharded = ShardedMatrix(a[lo : lo + sizes[rank]], 0)
    out["compiled"] = {"s": torch.compile(lambda x: solve(x, K).S, backend="eager")(sharded), "a": a}


def _forward_mode_cases(rank: int, world: int, out: dict) -> None:
    """dU, dS, dV along a direction dA by forward-mode AD, with A split both ways."""
    import torch.autograd.forward_ad as fwad

    from riemsvd import ShardedMatrix, solve

    a, _ = problem("decay", 120, 80)
    da = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(3))
    for dim in (0, 1):
        sizes = split_sizes(a.shape[dim], world)
        lo = sum(sizes[:rank])
        part = slice(lo, lo + sizes[rank])
        block, d_block = (a[part], da[part]) if dim == 0 else (a[:, part], da[:, part])
        with fwad.dual_level():
            u, s, v = solve(ShardedMatrix(fwad.make_dual(block, d_block), dim), K)
            tangents = [fwad.unpack_dual(x).tangent for x in (u, s, v)]
        out[("forward mode", dim)] = dict(zip(("du", "ds", "dv"), tangents), u=fwad.unpack_dual(u).primal)


def _dtensor_cases(rank: int, world: int, out: dict) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from riemsvd import solve

    mesh = init_device_mesh("cpu", (world,))
    for kind in KINDS:
        for dim in (0, 1):
            a, weights = problem(kind, 120, 80)
            da = distribute_tensor(a, mesh, [Shard(dim)]).requires_grad_(True)
            result = solve(da, K)
            u, s, v = result
            cs, cu, cv = weights
            placed = (
                distribute_tensor(cs, mesh, [Replicate()]),
                distribute_tensor(cu, mesh, [Shard(0)] if dim == 0 else [Replicate()]),
                distribute_tensor(cv, mesh, [Shard(0)] if dim == 1 else [Replicate()]),
            )
            loss(placed, u, s, v).backward()
            out[("dtensor", kind, dim)] = {
                "placements": (str(u.placements), str(s.placements), str(v.placements)),
                "u": u.full_tensor().detach(),
                "s": s.full_tensor().detach(),
                "v": v.full_tensor().detach(),
                "grad": da.grad.full_tensor(),
                "grad_placements": str(da.grad.placements),
                "residual": result.info.residual,
                "tol": result.info.tol,
            }
    # Fewer rows than processes: DTensor leaves the last ranks with empty shards.
    a, _ = problem("decay", 3, 40)
    u, s, v = solve(distribute_tensor(a, mesh, [Shard(0)]), 2)
    out[("dtensor", "few rows")] = {"s": s.full_tensor(), "local_rows": u.to_local().shape[0], "a": a}
    # bfloat16: solved in float32 and returned in bfloat16; it crashed after solving, mixing the
    # replicated S with info's plain tensors (a new user's trial)
    a, _ = problem("decay", 48, 64)
    try:
        half = solve(distribute_tensor(a.to(torch.bfloat16), mesh, [Shard(0)]), 2)
    except RuntimeError as err:  # recorded, so that the other cases still run
        out[("dtensor", "bfloat16")] = {"error": str(err)}
    else:
        out[("dtensor", "bfloat16")] = {
            "error": None,
            "s": half.S.full_tensor(),
            "placements": str(half.S.placements),
            "errors": half.info.errors,
            "converged": bool(half.info.converged),
            "a": a.to(torch.bfloat16),
        }
    out[("dtensor", "spectral_norm")] = _spectral_norm_cases(mesh)


def _spectral_norm_cases(mesh) -> dict:
    from torch.distributed.tensor import Shard, distribute_tensor

    import riemsvd.nn

    results = {}
    for dim in (0, 1):
        w0, (_, cu, cv) = problem("gaussian", 48, 32)
        upstream = cu @ cv.mT
        layer = torch.nn.Linear(32, 48, bias=False, dtype=torch.float64)
        layer.weight = torch.nn.Parameter(distribute_tensor(w0, mesh, [Shard(dim)]))
        riemsvd.nn.spectral_norm(layer)
        (layer.weight * distribute_tensor(upstream, mesh, [Shard(dim)])).sum().backward()
        original = layer.parametrizations.weight.original
        first = (layer.weight.full_tensor().detach(), original.grad.full_tensor())
        with torch.no_grad():  # a training step: the next forward warm starts from the stored pair
            original.add_(distribute_tensor(1e-3 * upstream, mesh, [Shard(dim)]))
        clipped = distribute_tensor(w0, mesh, [Shard(dim)])
        projection = riemsvd.nn.project_spectral_(clipped, 0.5)
        results[dim] = {
            "projected": clipped.full_tensor(),
            "projection_sigma": projection.sigma,
            "w0": w0,
            "upstream": upstream,
            "normalized": first[0],
            "grad": first[1],
            "stepped": original.full_tensor().detach(),
            "normalized_after_step": layer.weight.full_tensor().detach(),
            "buffer_types": type(layer.parametrizations.weight[0]._u).__name__,
        }
    return results


def _error_cases(rank: int, world: int, out: dict) -> None:
    """Inputs that are wrong on one process only: every process must raise, none may hang."""
    from riemsvd import ShardedMatrix, SolverOptions, norm_bounds, solve

    a, _ = problem("gaussian", 40, 30)
    blocks = list(torch.tensor_split(a, world, dim=0))
    bad_columns = blocks[rank][:, :-1] if rank == world - 1 else blocks[rank]
    poisoned = blocks[rank].clone()
    if rank == 0:
        poisoned[0, 0] = float("nan")
    cases = {
        "columns": lambda: solve(ShardedMatrix(bad_columns, 0), 2),
        "k": lambda: solve(ShardedMatrix(blocks[rank], 0), 2 + (rank == world - 1)),
        "nan": lambda: solve(ShardedMatrix(poisoned, 0), 2),
        "dtype": lambda: solve(ShardedMatrix(blocks[rank].float() if rank == 1 else blocks[rank], 0), 2),
        "k too large": lambda: solve(ShardedMatrix(blocks[rank], 0), 31),
        # not in the checked table before: one process hung the others, or was killed (a trial)
        "dim": lambda: solve(ShardedMatrix(blocks[rank], int(rank == world - 1)), 2),
        "options": lambda: solve(
            ShardedMatrix(blocks[rank], 0), 2, options=SolverOptions(block=2) if rank == 1 else None
        ),
        "method": lambda: solve(ShardedMatrix(blocks[rank], 0), 2, method="dense" if rank == 1 else "auto"),
        "same options": lambda: solve(
            ShardedMatrix(blocks[rank], 0), 2, options=SolverOptions() if rank == 1 else None
        ),
        "norm_bounds": lambda: norm_bounds(ShardedMatrix(blocks[rank], 0)),
        "init rows": lambda: solve(
            ShardedMatrix(blocks[rank], 0),
            2,
            init=(torch.ones(blocks[rank].shape[0] + (rank == 1), 2, dtype=a.dtype), torch.ones(30, 2)),
        ),
        # each silently wrong before: S off by 1.4% and 12.8% (a new user's trial)
        "init columns": lambda: solve(
            ShardedMatrix(blocks[rank], 0),
            2,
            init=(
                torch.ones(blocks[rank].shape[0], 1 + (rank == 1), dtype=a.dtype),
                torch.ones(30, 1 + (rank == 1)),
            ),
        ),
        "init whole side": lambda: solve(
            ShardedMatrix(blocks[rank], 0),
            2,
            init=(
                torch.ones(blocks[rank].shape[0], 2, dtype=a.dtype),
                torch.ones(30, 2, dtype=a.dtype) * (1 + 1e-15 * (rank == 1)),
            ),
        ),
        "init dtype": lambda: solve(
            ShardedMatrix(blocks[rank], 0),
            2,
            init=(
                torch.ones(blocks[rank].shape[0], 2),
                torch.ones(30, 2, dtype=torch.float32 if rank == 1 else a.dtype),
            ),
        ),
        "same k": lambda: solve(
            ShardedMatrix(blocks[rank], 0),
            np.int64(2) if rank == 1 else 2,
            tol=np.float64(1e-10) if rank else 1e-10,
        ),
        # a graph on one process only: its backward's collectives had found no partner (a trial)
        "requires grad": lambda: solve(ShardedMatrix(blocks[rank].clone().requires_grad_(rank == 0), 0), 2),
    }
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial

    mesh = init_device_mesh("cpu", (world,))
    cases["partial"] = lambda: solve(DTensor.from_local(blocks[0], mesh, [Partial()]), 2)

    def second_derivative():  # its rules record no graph across processes: refused (wrong before)
        block = blocks[rank].clone().requires_grad_()
        v = solve(ShardedMatrix(block, 0), 2, generator=torch.Generator().manual_seed(0)).V
        torch.autograd.grad((v[:3] ** 2).sum(), block, create_graph=True)

    cases["create graph"] = second_derivative
    for name, call in cases.items():
        try:
            call()
            out[("error", name)] = None
        except (TypeError, ValueError, NotImplementedError) as err:
            out[("error", name)] = (type(err).__name__, str(err))
    # A process outside the matrix's group: named before any collective (it had gathered an empty
    # table and failed with an IndexError; a new user's trial); the group's own process solves.
    alone = dist.new_group([0])  # made by every process, as torch requires
    try:
        solve(ShardedMatrix(blocks[rank], 0, alone), 2)
        out[("error", "not a member")] = None
    except ValueError as err:
        out[("error", "not a member")] = ("ValueError", str(err))
    # After all those, the group still works: a good solve goes through.
    out[("error", "after")] = solve(ShardedMatrix(blocks[rank], 0), 2).S


def worker(rank: int, world: int, store: str, out_dir: str) -> None:
    """One process: join the group through a file store, run every case, save what it found."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    # Every process is on this machine: gloo talks over loopback, not wherever the hostname resolves.
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    out: dict = {}
    try:
        started = time.perf_counter()
        _sharded_cases(rank, world, out)
        _forward_mode_cases(rank, world, out)
        _warm_start_cases(rank, world, out)
        _dtensor_cases(rank, world, out)
        _error_cases(rank, world, out)
        out["seconds"] = time.perf_counter() - started
    except BaseException:
        out["failure"] = traceback.format_exc()
        raise
    finally:
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
