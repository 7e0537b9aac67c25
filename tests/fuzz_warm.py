"""Warm starts through crossings of singular values: ``python tests/fuzz_warm.py [--cases N] [--seed S]``.

Each case tracks the top k (2–6) of an m×n matrix with a random spectrum: it is solved, then one of its
top k values drops below the next 1–3 values (a crossing, as along a path of matrices) and the new
matrix is solved warm-started from the first result (the iteration: the dense path has no race). A
silent miss is a result reported converged whose values are not within their error bars of the true
top k. Prints the cases, the silent misses and the products; exits 1 where more than 2% of the cases
miss. Before the warm probe's rounds 100 of 650 cases missed (seeds 0, 1, 2 with 200, 150 and 300
cases, drawn in sequence then), after them 2, where the value missed stood 4e-4 and 5e-4 above the
one returned at tol 1e-6 (docs/algorithm.md, "Warm starts"): the rounds judge the Krylov space's top
below σ_k, which can converge to another value while a vector the start lacked is still small. Each
case is drawn from (seed, case) now, so that one is replayed alone (``crossing_case``): seeds 0, 1
and 2 miss 2, 1 and 1 of 200.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import riemsvd  # noqa: E402
from tests.matrices import orthonormal  # noqa: E402


def crossing_case(seed: int, case: int):
    """(the first matrix, the crossed one, k, tol) of one case, drawn from (seed, case) alone (a case
    is replayed without the ones before it)."""
    rng = np.random.default_rng((seed, case))
    m, n = sorted((int(rng.integers(60, 400)), int(rng.integers(40, 300))), reverse=True)
    k = int(rng.integers(2, 7))
    s = np.sort(rng.uniform(0.1, 1.0, n))[::-1].copy()
    g = torch.Generator().manual_seed(case)
    u, v = orthonormal(m, n, g), orthonormal(n, n, g)
    crossed = s.copy()
    j, below = int(rng.integers(0, k)), int(rng.integers(1, 4))
    crossed[j] = s[min(k - 1 + below, n - 1)] - rng.uniform(0, 1) * 1e-3  # under the next 1–3 values
    first = (u * torch.from_numpy(s)) @ v.mT
    noise = 1e-10 * torch.randn(m, n, generator=g, dtype=torch.float64)
    second = (u * torch.from_numpy(crossed)) @ v.mT + noise
    return first, second, k, float(rng.choice([1e-6, 1e-8, 1e-10]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/fuzz_warm.py", description=__doc__)
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    misses, products, t0 = [], 0, time.perf_counter()
    for case in range(args.cases):
        first, second, k, tol = crossing_case(args.seed, case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a flagged result is not a silent one
            previous = riemsvd.solve(first, k, tol=1e-10, generator=torch.Generator().manual_seed(case))
            seed = torch.Generator().manual_seed(case)
            out = riemsvd.solve(second, k, tol=tol, init=previous, generator=seed, method="iterative")
        true = torch.linalg.svdvals(second)[:k]
        if bool(out.info.converged.all()) and bool(((out.S - true).abs() > out.info.errors + 1e-12).any()):
            misses.append(case)
        products += int(out.info.matvecs)
    print(
        f"{args.cases} crossing cases (seed {args.seed}) in {time.perf_counter() - t0:.0f} s: "
        f"{len(misses)} silent misses{' ' + str(misses) if misses else ''}, {products} products"
    )
    return 1 if len(misses) > 0.02 * args.cases else 0


if __name__ == "__main__":
    sys.exit(main())
