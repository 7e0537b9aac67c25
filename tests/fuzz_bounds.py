"""A fuzz run of riemsvd.norm_bounds' default call on dense matrices: ``python tests/fuzz_bounds.py``.

Counts the cases whose bracket misses ‖A‖₂ (torch.linalg.svdvals in float64, allowed its own error
of 4·ε·max(m, n)·‖A‖₂) — there must be none — and those certified but looser than 1e-6 (float64).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import riemsvd  # noqa: E402
from tests.fuzz_solve import draw_dtype_and_scale, picker  # noqa: E402
from tests.test_bounds import _REF, KINDS  # noqa: E402
from tests.test_certificate import _matrix  # noqa: E402


def draw_case(rng: torch.Generator):
    pick = picker(rng)
    dtype, scale = draw_dtype_and_scale(rng)
    shapes = [(1 + pick(40), 1 + pick(40)), (2 + pick(300), 2 + pick(300)), (1 + pick(3), 2 + pick(500))]
    m, n = shapes[pick(3)]
    kinds = KINDS + ("flat",)
    return dtype, scale, m, n, [kinds[pick(len(kinds))] for _ in range(1 + pick(2))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="the cases are drawn from it (same seed, same cases)")
    args = p.parse_args(argv)
    rng = torch.Generator().manual_seed(args.seed)
    missed, loose, worst, methods = 0, 0, 0.0, {}
    start = time.perf_counter()
    for case in range(args.cases):
        dtype, scale, m, n, kinds = draw_case(rng)
        gen = torch.Generator().manual_seed(case)
        a = torch.stack([_matrix(kind, m, n, gen, dtype, scale) for kind in kinds]).squeeze(0)
        bounds = riemsvd.norm_bounds(a, generator=gen)
        true = torch.linalg.svdvals(a.double())[..., 0]
        slack = _REF * max(m, n) * true
        lower, upper = bounds.lower.double(), bounds.upper.double()
        if not (bool((upper >= true - slack).all()) and bool((lower <= true + slack).all())):
            missed += 1
            print(f"case {case}: MISSED {dtype} scale {scale:.1e} {m}x{n} {kinds}: {lower} {true} {upper}")
        excess = torch.where(true > 0, upper / true - 1, torch.zeros_like(true))
        if dtype == torch.float64:
            worst = max(worst, float(excess.max()))
            loose += int((excess > 1e-6).sum())
            if bool((excess > 1e-6).any()):
                print(f"case {case}: loose {float(excess.max()):.1e} {m}x{n} {kinds} scale {scale:.1e}")
        for method in (bounds.method,) if isinstance(bounds.method, str) else bounds.method:
            methods[method] = methods.get(method, 0) + 1
    print(
        f"{args.cases} cases (seed {args.seed}) in {time.perf_counter() - start:.0f} s: "
        f"{missed} missed ‖A‖₂, "
        f"{loose} float64 matrices looser than 1e-6 (largest upper/‖A‖₂ − 1: {worst:.1e}); methods {methods}"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
