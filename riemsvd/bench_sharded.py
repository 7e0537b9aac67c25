"""Sharded solves against one process: ``python -m riemsvd.bench_sharded``.

The same matrices (``riemsvd.bench.make_matrix``) are solved whole in this process and split by rows
and by columns over P processes (gloo on this machine, one thread each); the table reports the time
ratio to the one-process solve measured in the same run, the products, and what each process
communicated: numbers in all, per product column, and as a fraction of A's m·n.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any

import torch

__all__ = ["main"]


def _matrix(kind: str, m: int, n: int, seed: int) -> torch.Tensor:
    from riemsvd.bench import make_matrix

    return make_matrix(kind, m, n, torch.float64, torch.Generator().manual_seed(seed))


def _weights(m: int, n: int, k: int):
    gen = torch.Generator().manual_seed(99)
    return tuple(torch.randn(shape, dtype=torch.float64, generator=gen) for shape in ((k,), (m, k), (n, k)))


def _loss(weights, u, s, v):
    cs, cu, cv = weights
    return (cs * s).sum() + (cu * u**2).sum() + (cv * v**2).sum()


def _timed(call, reps: int, barrier=None) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(reps):
        if barrier:
            barrier()
        start = time.perf_counter()
        out = call()
        if barrier:
            barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _cases(args):
    for kind in args.classes:
        for k in args.k:
            yield kind, k


def _warm_up() -> None:
    """One small solve and backward first, by the iteration (which every solve here takes): the first
    call pays one-time set-up (thread pools, imports). The dense path's alone left the iteration's
    first call in the first case's time (a 200×100 baseline took 197 ms with --reps 1, 2 ms after;
    a new user's trial)."""
    import riemsvd

    leaf = torch.randn(64, 32, dtype=torch.float64).requires_grad_(True)
    riemsvd.solve(leaf, 2, method="iterative").S.sum().backward()


def _single(args) -> dict:
    import riemsvd

    _warm_up()
    results = {}
    for kind, k in _cases(args):
        a = _matrix(kind, args.m, args.n, args.seed)

        # the iteration, as the sharded solves run it: at small sizes "auto" took the dense path,
        # whose products (the check's) and time compared nothing alike (a new user's trial)
        def one(a=a, k=k):
            return riemsvd.solve(a, k, tol=args.tol, method="iterative")

        seconds, out = _timed(one, args.reps)
        record = {"seconds": seconds, "matvecs": out.info.matvecs, "iterations": out.info.iterations}
        record["s"] = out.S.tolist()
        if args.backward:
            weights = _weights(args.m, args.n, k)

            def fwd_bwd(a=a, k=k, weights=weights):
                leaf = a.clone().requires_grad_(True)
                _loss(weights, *riemsvd.solve(leaf, k, tol=args.tol, method="iterative")).backward()

            record["backward_seconds"] = _timed(fwd_bwd, args.reps)[0]
        results[(kind, k)] = record
    return results


def _worker(rank: int, world: int, store: str, args, out_path: str) -> None:
    torch.set_num_threads(1)
    # Every process is on this machine: gloo talks over loopback, not wherever the hostname resolves.
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(minutes=10)
    )
    import riemsvd

    barrier = dist.barrier
    _warm_up()
    results = {}
    for kind, k in _cases(args):
        a = _matrix(kind, args.m, args.n, args.seed)
        weights = _weights(args.m, args.n, k)
        for dim in (0, 1):
            block = torch.tensor_split(a, world, dim=dim)[rank].contiguous()
            sharded = riemsvd.ShardedMatrix(block, dim)
            seconds, out = _timed(
                lambda s=sharded, k=k: riemsvd.solve(s, k, tol=args.tol), args.reps, barrier
            )
            record = {
                "seconds": seconds,
                "matvecs": out.info.matvecs,
                "iterations": out.info.iterations,
                "communicated": out.info.communicated,
                "residual": float(out.info.residual),
                "s": out.S.tolist(),
            }
            if args.backward:
                cs, cu, cv = weights
                rows = torch.tensor_split(torch.arange(a.shape[dim]), world)[rank]
                local = (cs, cu[rows], cv) if dim == 0 else (cs, cu, cv[rows])

                def fwd_bwd(block=block, dim=dim, k=k, local=local):
                    leaf = block.clone().requires_grad_(True)
                    _loss(local, *riemsvd.solve(riemsvd.ShardedMatrix(leaf, dim), k, tol=args.tol)).backward()

                record["backward_seconds"] = _timed(fwd_bwd, args.reps, barrier)[0]
            results[(kind, k, dim)] = record
    if rank == 0:
        torch.save(results, out_path)
    dist.destroy_process_group()


def _sharded(args, world: int) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "results.pt")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "store"), args, out_path), nprocs=world)
        return torch.load(out_path, weights_only=False)


def _table(args, single: dict, sharded: dict[int, dict]) -> tuple[str, list[dict]]:
    rows, lines = [], []
    head = "| class | k | processes | split | time / 1 process | products | communicated per process |"
    head += " per product column | / (m·n) | max Δσ / σ₁ |"
    if args.backward:
        head += " fwd+bwd / 1 process |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    mn = args.m * args.n
    for world, results in sharded.items():
        for (kind, k, dim), rec in results.items():
            ref = single[(kind, k)]
            ds = max(abs(a - b) for a, b in zip(rec["s"], ref["s"])) / ref["s"][0]
            row = {
                "class": kind,
                "k": k,
                "processes": world,
                "split": "rows" if dim == 0 else "columns",
                "time_ratio": rec["seconds"] / ref["seconds"],
                "seconds": rec["seconds"],
                "single_seconds": ref["seconds"],
                "matvecs": rec["matvecs"],
                "single_matvecs": ref["matvecs"],
                "communicated": rec["communicated"],
                "per_product": rec["communicated"] / rec["matvecs"],
                "fraction_of_mn": rec["communicated"] / mn,
                "sigma_difference": ds,
            }
            line = (
                f"| {kind} | {k} | {world} | {row['split']} | {row['time_ratio']:.2f} "
                f"({1e3 * rec['seconds']:.0f} / {1e3 * ref['seconds']:.0f} ms) | {rec['matvecs']} "
                f"({ref['matvecs']}) | {rec['communicated']:,} ({8e-6 * rec['communicated']:.1f} MB) | "
                f"{row['per_product']:.0f} | {row['fraction_of_mn']:.3f} | {ds:.1e} |"
            )
            if args.backward:
                row["backward_ratio"] = rec["backward_seconds"] / ref["backward_seconds"]
                line += f" {row['backward_ratio']:.2f} |"
            rows.append(row)
            lines.append(line)
    return "\n".join(lines), rows


def parse_args(argv=None):
    from riemsvd.bench import HelpFormatter, positive_int, shape_arg
    from riemsvd.bench.matrices import CLASSES

    parser = argparse.ArgumentParser(
        prog="python -m riemsvd.bench_sharded",
        description=__doc__.split("\n")[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--size", type=shape_arg, default="4000x2000", help="m x n")
    parser.add_argument(
        "--processes", type=positive_int, nargs="+", default=[2, 4], help="process counts to compare"
    )
    parser.add_argument("--k", type=positive_int, nargs="+", default=[1, 8], help="numbers of triplets")
    # the dense classes (a sharded A is dense blocks): an unknown one, or `sparse`, had ended in a
    # traceback after the processes started (a new user's trial)
    dense = [kind for kind in CLASSES if kind != "sparse"]
    parser.add_argument(
        "--classes", nargs="+", default=["gaussian", "decay"], choices=dense, help="matrix classes"
    )
    parser.add_argument("--tol", type=float, default=1e-10, help="relative residual")
    parser.add_argument("--reps", type=positive_int, default=3, help="median of this many runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the matrices")
    parser.add_argument("--backward", action="store_true", help="also time forward + backward")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    args.m, args.n = args.size
    if max(args.k) > min(args.size):
        parser.error(f"--k: {max(args.k)} triplets of a {args.m}x{args.n} matrix; at most {min(args.size)}")
    return args


def main(argv=None) -> int:
    from riemsvd.bench import threads_text

    args = parse_args(argv)
    print(
        f"{args.m}×{args.n} float64, tol {args.tol:g}, torch {torch.__version__}, {os.cpu_count()} cores; "
        f"one process uses {threads_text(torch.get_num_threads())}, each of P processes one.",
        file=sys.stderr,
    )
    single = _single(args)
    sharded = {world: _sharded(args, world) for world in args.processes}
    table, rows = _table(args, single, sharded)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
