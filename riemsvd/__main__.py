"""``python -m riemsvd``: a demo on a built-in matrix, beside torch.linalg.svdvals.

Prints S, the residual, the products with A and the time of ``riemsvd.solve`` and of the full
set of singular values (``torch.linalg.svdvals``).
"""

from __future__ import annotations

import argparse
import time

import torch

import riemsvd


def demo_matrix(m: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A low-rank-plus-noise m×n matrix, the shape of a gradient or a data matrix."""
    g = torch.Generator().manual_seed(seed)
    r = 20
    left = torch.randn(m, r, generator=g, dtype=torch.float64)
    right = torch.randn(r, n, generator=g, dtype=torch.float64)
    scales = torch.logspace(0, -2, r, dtype=torch.float64)
    noise = torch.randn(m, n, generator=g, dtype=torch.float64) / (m * n) ** 0.5
    return ((left * scales) @ right / (m * n) ** 0.25 + noise).to(dtype)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m riemsvd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-m", type=int, default=3000, help="rows (default 3000)")
    p.add_argument("-n", type=int, default=1500, help="columns (default 1500)")
    p.add_argument("-k", "--k", type=int, default=4, help="singular triplets (default 4)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative residual (default: 1e-12 in float64, 1e-6 in float32, or 2·ε·√max(m, n), the "
        "products' rounding, where larger)",
    )
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.m < 1 or args.n < 1:
        p.error(f"-m and -n must be positive, got {args.m} and {args.n}")
    a = demo_matrix(args.m, args.n, dtype)
    # the first call of each pays one-time costs (lazy imports, thread pools, LAPACK's set-up): made
    # on a small matrix first, they had counted at small sizes (5×3: 8.4 ms against 0.1, "ratio 83";
    # a new user's trial)
    small = demo_matrix(8, 6, dtype)
    riemsvd.solve(small, 1, generator=torch.Generator().manual_seed(0))
    torch.linalg.svdvals(small)

    t0 = time.perf_counter()
    try:
        result = riemsvd.solve(a, args.k, tol=args.tol, generator=torch.Generator().manual_seed(0))
    except (TypeError, ValueError) as refused:  # an argument solve refuses (-k 0, --tol 0): its message
        # said in the command line's words: `--tol` and leaving it out, not `tol=` and `tol=None`
        p.error(str(refused).replace("pass `tol=None`", "leave `--tol` out").replace("`tol`", "`--tol`"))
    t_solve = time.perf_counter() - t0
    print(f"A: {args.m}×{args.n} {args.dtype}, low rank + noise; k = {args.k}")
    t0 = time.perf_counter()
    s_full = torch.linalg.svdvals(a)
    t_svd = time.perf_counter() - t0

    info = result.info
    assert info is not None  # solve always attaches one
    # the reference in float64: a float32 svdvals is off by more than the solve (1.6e-6 against
    # 3.7e-8 relative to σ₁ at 3000×1500), which the line below had charged to riemsvd (a new user's trial)
    exact = s_full.double() if dtype == torch.float64 else torch.linalg.svdvals(a.double())

    def error(s: torch.Tensor) -> float:
        return ((s.double()[: args.k] - exact[: args.k]).abs() / exact[0]).max().item()

    shown = min(args.k, 8)  # the leading values; the error below covers all k
    more = f" … ({args.k - shown} more)" if args.k > shown else ""
    print(f"riemsvd.solve        S = {[f'{x:.12g}' for x in result.S[:shown].tolist()]}{more}")
    print(f"torch.linalg.svdvals S = {[f'{x:.12g}' for x in s_full[:shown].tolist()]}{more}")
    if info.method == "dense":
        work = "method dense: a whole decomposition, A's products only for its check"
    else:
        work = (
            f"products with A and Aᵀ {info.matvecs} (a full bidiagonalization would take "
            f"{2 * min(args.m, args.n)}), iterations {info.iterations}, method {info.method}"
        )
    status = f"tol {info.tol:.2g}, converged {bool(info.converged)}"
    print(f"residual {float(info.residual):.2e} ({status}), {work}")
    if dtype == torch.float64:
        print(f"max |ΔS| / σ₁ against torch.linalg.svdvals: {error(result.S):.1e}")
    else:
        print(
            f"max |ΔS| / σ₁ against a float64 SVD of the same A: riemsvd.solve {error(result.S):.1e}, "
            f"torch.linalg.svdvals in {args.dtype} {error(s_full):.1e}"
        )
    print(
        f"time: riemsvd.solve {t_solve * 1e3:.1f} ms, torch.linalg.svdvals {t_svd * 1e3:.1f} ms "
        f"(ratio {t_solve / t_svd:.2f})"
    )


if __name__ == "__main__":
    main()
