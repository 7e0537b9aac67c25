"""riemsvd's trust-region methods against pymanopt's ``TrustRegions``, to the same gradient norm.

``python -m riemsvd.bench_optim`` times, as medians over interleaved repetitions (every solver once
per repetition, in turn), from the same random start and to the same stopping rule — a Riemannian
gradient norm ‖grad f‖ ≤ gtol·σ₁ —

- ``solve``: ``riemsvd.solve(A, k, method="trust-region")`` (the Newton operator's products, no
  autograd), stopped at max(‖A v − σu‖, ‖Aᵀu − σv‖) ≤ gtol·σ₁/√2, which implies the rule;
- ``optim``: ``riemsvd.optim.RiemannianTrustRegion`` on geoopt parameters (autograd Hessians);
- ``pymanopt``: pymanopt's ``TrustRegions`` with its PyTorch backend (left out where pymanopt is not
  installed: ``pip install pymanopt``);
- ``default``: ``riemsvd.solve(A, k)``, the Lanczos method, for scale;

on two problems: ``pair``, the leading pair of an m×n float64 matrix (Gaussian and σᵢ = 1/i), the
cost −uᵀAv on S^{m−1} × S^{n−1}; and ``brockett``, the top p eigenvectors of a symmetric n×n matrix
(λ = linspace(1, 0.01)²), −tr(XᵀAXN) on St(n, p) (``optim`` and ``pymanopt`` only). The gradient norm
each reached is recomputed here from the returned point, in float64.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import riemsvd
from riemsvd.bench import HelpFormatter, make_matrix, positive_int, shape_arg, thread_limits, threads_text

__all__ = ["Result", "main", "run_brockett", "run_pair"]


@dataclass
class Result:
    """One solver on one problem: the median time and what the last run reached."""

    case: str
    solver: str
    seconds: float
    iterations: int
    gradient_norm: float  # recomputed, relative to σ₁ (λ₁)
    value_error: float  # |σ − σ₁| / σ₁ (Σ|λ − λᵢ| / λ₁)
    products: int | None = None  # products with A and Aᵀ, where the solver counts them


def _interleaved(calls: dict[str, Callable[[], tuple]], reps: int) -> dict[str, tuple[float, tuple]]:
    """Median seconds per call of each of ``calls`` (name → zero-argument function), run in turn, with
    the last call's return value."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    last = {name: call() for name, call in calls.items()}  # warm-up: first-call costs
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            last[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), last[name]) for name, t in times.items()}


def _pymanopt():
    """pymanopt, or None where it is not installed (an optional peer)."""
    try:
        import pymanopt
    except ImportError:
        return None
    return pymanopt


# ---------------------------------------------------------------------------------------------------
# The leading pair


def _pair_gradient(a: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """‖grad(−uᵀAv)‖ on the product of spheres at the normalized (u, v), in float64."""
    u, v = (x.double().reshape(-1) for x in (u, v))
    u, v = u / u.norm(), v / v.norm()
    s = u @ a @ v
    return float(torch.cat([a @ v - s * u, a.mT @ u - s * v]).norm())


def run_pair(
    kind: str, shape: tuple[int, int] = (2000, 1000), gtol: float = 1e-10, reps: int = 5, seed: int = 0
) -> list[Result]:
    """The leading pair of an m×n float64 matrix of ``riemsvd.bench.make_matrix``'s class ``kind``."""
    import geoopt

    gen = torch.Generator().manual_seed(seed)
    a = make_matrix(kind, *shape, torch.float64, gen)
    s1 = float(torch.linalg.svdvals(a)[0])
    v0 = torch.randn(shape[1], dtype=torch.float64, generator=gen)
    v0 = v0 / v0.norm()
    u0 = a @ v0
    u0 = u0 / u0.norm()  # every solver starts from (A v₀/‖A v₀‖, v₀): solve's own first step
    sphere = riemsvd.manifolds.Sphere()

    def solve(method: str):
        def call():
            r = riemsvd.solve(a, 1, tol=gtol / math.sqrt(2), init=(u0[:, None], v0[:, None]), method=method)
            return r.U, r.V, r.info.iterations, r.info.matvecs

        return call

    def optim():
        u = geoopt.ManifoldParameter(u0.clone(), manifold=sphere)
        v = geoopt.ManifoldParameter(v0.clone(), manifold=sphere)
        opt = riemsvd.optim.RiemannianTrustRegion([u, v], gradient_tol=gtol * s1)
        while not (opt.info and opt.info.converged):
            opt.step(lambda: -(u @ a @ v))
        return u.detach(), v.detach(), opt.info.step - 1, None

    calls = {"solve": solve("trust-region"), "optim": optim}
    pm = _pymanopt()
    if pm is not None:
        from pymanopt.manifolds import Product, Sphere
        from pymanopt.optimizers import TrustRegions

        manifold = Product([Sphere(shape[0]), Sphere(shape[1])])

        @pm.function.pytorch(manifold)
        def cost(u, v):
            return -(u @ a @ v)

        problem = pm.Problem(manifold, cost)
        start = [u0.numpy().copy(), v0.numpy().copy()]

        def pymanopt_call():
            out = TrustRegions(min_gradient_norm=gtol * s1, max_iterations=1000, verbosity=0).run(
                problem, initial_point=start
            )
            u, v = (torch.from_numpy(np.asarray(x)) for x in out.point)
            return u, v, out.iterations, None

        calls["pymanopt"] = pymanopt_call
    calls["default"] = solve("auto")
    rows = []
    for name, (seconds, (u, v, iterations, products)) in _interleaved(calls, reps).items():
        u, v = u.reshape(-1), v.reshape(-1)
        sigma = float(u @ a @ v) / float(u.norm() * v.norm())
        rows.append(
            Result(
                f"pair {kind} {shape[0]}×{shape[1]}",
                name,
                seconds,
                iterations,
                _pair_gradient(a, u, v) / s1,
                abs(abs(sigma) - s1) / s1,
                products,
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Brockett's cost on Stiefel


def run_brockett(
    n: int = 1000, p: int = 4, gtol: float = 1e-10, reps: int = 3, seed: int = 0
) -> list[Result]:
    """The top p eigenvectors of A = Q diag(λ) Qᵀ with Haar-random Q, λ = linspace(1, 0.01, n)²."""
    import geoopt

    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))[0]
    lam = torch.linspace(1, 0.01, n, dtype=torch.float64) ** 2
    a = (q * lam) @ q.mT
    a = 0.5 * (a + a.mT)
    weights = torch.arange(p, 0, -1, dtype=torch.float64)
    x0 = torch.linalg.qr(torch.randn(n, p, dtype=torch.float64, generator=gen))[0]
    stiefel = riemsvd.manifolds.Stiefel()

    def optim():
        x = geoopt.ManifoldParameter(x0.clone(), manifold=stiefel)
        opt = riemsvd.optim.RiemannianTrustRegion([x], gradient_tol=gtol)
        while not (opt.info and opt.info.converged):
            opt.step(lambda: -((x.mT @ a @ x).diagonal() * weights).sum())
        return x.detach(), opt.info.step - 1

    calls = {"optim": optim}
    pm = _pymanopt()
    if pm is not None:
        from pymanopt.manifolds import Stiefel
        from pymanopt.optimizers import TrustRegions

        manifold = Stiefel(n, p)

        @pm.function.pytorch(manifold)
        def cost(x):
            return -((x.mT @ a @ x).diagonal() * weights).sum()

        problem = pm.Problem(manifold, cost)

        def pymanopt_call():
            out = TrustRegions(min_gradient_norm=gtol, max_iterations=1000, verbosity=0).run(
                problem, initial_point=x0.numpy().copy()
            )
            return torch.from_numpy(np.asarray(out.point)), out.iterations

        calls["pymanopt"] = pymanopt_call
    rows = []
    for name, (seconds, (x, iterations)) in _interleaved(calls, reps).items():
        egrad = -2 * (a @ x) * weights
        grad = egrad - x @ (0.5 * (x.mT @ egrad + egrad.mT @ x))
        values = (x.mT @ a @ x).diagonal()
        rows.append(
            Result(
                f"brockett St({n}, {p})",
                name,
                seconds,
                iterations,
                float(grad.norm()),
                float((values - lam[:p]).abs().sum()),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Reporting


def table(rows: list[Result]) -> str:
    """A markdown table, each time also as a multiple of pymanopt's on the same case."""
    peer = {r.case: r.seconds for r in rows if r.solver == "pymanopt"}
    lines = [
        "| case | solver | time | ÷ pymanopt | iterations | products | ‖g‖/σ₁ | value error |",
        "|" + " --- |" * 8,
    ]
    for r in rows:
        ratio = f"{r.seconds / peer[r.case]:.2f}×" if r.case in peer else "–"
        products = "–" if r.products is None else str(r.products)
        lines.append(
            f"| {r.case} | {r.solver} | {r.seconds * 1e3:.1f} ms | {ratio} | {r.iterations} | {products} "
            f"| {r.gradient_norm:.1e} | {r.value_error:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    about = __doc__.split("\n\n")[0]
    ap = argparse.ArgumentParser(
        prog="python -m riemsvd.bench_optim", description=about, formatter_class=HelpFormatter
    )
    ap.add_argument("--shape", type=shape_arg, default="2000x1000", help="MxN of the leading-pair matrices")
    ap.add_argument(
        "--kinds", nargs="+", default=["gaussian", "decay"], help="matrix classes (riemsvd.bench)"
    )
    ap.add_argument(
        "--brockett",
        type=lambda text: None if text == "none" else shape_arg(text),
        default="1000x4",
        help="NxP of the Brockett problem ('none' to skip)",
    )
    ap.add_argument("--gtol", type=float, default=1e-10, help="stop at ‖grad f‖ ≤ gtol·σ₁")
    ap.add_argument("--reps", type=positive_int, default=5, help="interleaved repetitions")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch and BLAS threads")
    args = ap.parse_args(argv)
    shape = args.shape
    pm = _pymanopt()
    print(
        f"riemsvd {riemsvd.__version__}, torch {torch.__version__}, "
        f"pymanopt {pm.__version__ if pm else 'not installed'}, {threads_text(args.threads)}, "
        f"gtol {args.gtol:g}"
    )
    rows = []
    with thread_limits(args.threads):
        for kind in args.kinds:
            rows += run_pair(kind, shape, args.gtol, args.reps)
        if args.brockett is not None:
            n, p = args.brockett
            rows += run_brockett(n, p, args.gtol, max(1, args.reps // 2))
    print(table(rows))
    # the rows' names were explained only in the module docstring (a new user's trial)
    print(
        "solve: riemsvd.solve(method='trust-region'); optim: riemsvd.optim.RiemannianTrustRegion on geoopt "
        "parameters; pymanopt: its TrustRegions; default: riemsvd.solve (Lanczos), for scale"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
