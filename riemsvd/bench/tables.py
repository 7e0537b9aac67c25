"""The text the benchmark prints on stdout: the solver table, the summary, and the warm-start, batched and
forward + backward experiments' tables.
"""

from __future__ import annotations

from riemsvd.bench.backward import BACKWARD_GRAD_TARGET, BACKWARD_RATIO_TARGET
from riemsvd.bench.harness import threads_text
from riemsvd.bench.records import BackwardRecord, BatchedRecord, Record, WarmRecord
from riemsvd.bench.summary import RATIO_PEERS, by_size_and_k, geomean, summarize_backward

__all__ = ["format_backward", "format_batched", "format_summary", "format_table", "format_warm"]


def _fmt(x, spec: str, none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def _mem(rec: Record) -> str:
    if rec.mem_bytes is None:
        return "n/a"
    return f"{rec.mem_bytes / 2**20:.1f}" + ("*" if rec.mem_note == "estimate" else "")


def format_table(records: list[Record]) -> str:
    """The terminal table: one block per (size, k), one line per class and solver."""
    head = (
        f"{'class':<9} {'solver':<13} {'setting':<12} {'thr':>3} {'time ms':>9} {'ours/it':>7} "
        f"{'products':>8} {'residual':>9} {'σ err':>8} {'MB':>6}  status"
    )
    lines = []
    for (m, n, k), rs in by_size_and_k(records).items():
        r0 = rs[0]
        counts = sorted({c for r in rs for c in r.time_by_threads} or {r0.threads})
        timed = threads_text(counts[0])
        if len(counts) > 1:
            timed = f"timed at {counts[0]} and {threads_text(counts[-1])}"
        where = f"{r0.dtype}, tol {r0.tol:.0e}, {r0.device}, {timed}"
        lines.append(f"\n{m}×{n}, k = {k}, {where}")
        lines.append(head)
        lines.append("-" * len(head))
        for r in rs:
            if r.time_s is None:
                setting = r.setting or "-"
                lines.append(f"{r.cls:<9} {r.solver:<13} {setting:<12} {r.status}")
                continue
            # riemsvd without products took the dense path, which a reader could not tell (a new user's trial)
            ratio = _fmt(r.riemsvd_over, "7.2f", "-")
            products = _fmt(r.products, "d", "dense" if r.solver == "riemsvd" else "n/a")
            lines.append(
                f"{r.cls:<9} {r.solver:<13} {r.setting:<12} {r.threads:>3} {r.time_s * 1e3:>9.1f} {ratio:>7} "
                f"{products:>8} {r.residual:>9.1e} {r.sigma_err:>8.1e} {_mem(r):>6}  {r.status}"
            )
    lines.append(
        "\nsetting: the loosest that reached tol (or, where none did, the tightest tried); "
        "ours/it: riemsvd's time / its, where both are ok; thr: the thread count of the time shown, "
        "each solver's faster"
    )
    if any(r.mem_note == "estimate" for r in records):
        lines.append("MB: * riemsvd's search bases, estimated (not measured on the CPU)")
    if any(r.solver == "riemsvd" and r.time_s is not None and r.products is None for r in records):
        lines.append(
            "products 'dense': riemsvd's method='auto' took its dense path (a whole decomposition, where "
            "its cost model expects that to be faster), which makes no products to count"
        )
    lines.append("residual, σ err: relative to σ₁")
    return "\n".join(lines)


def _ratio_line(what: str, stats: dict | None, listed: bool) -> str:
    if stats is None:
        return ""
    line = f"{what} = {_fmt(stats['geomean'], '.2f')} over {stats['n']} case{'s' * (stats['n'] != 1)}"
    if listed and stats["cases"]:
        line += " (" + ", ".join(f"{c} {v:.2f}" for c, v in stats["cases"].items()) + ")"
    if stats["excluded"]:
        line += f"; {len(stats['excluded'])} left out" + (
            ": " + ", ".join(f"{c} ({why})" for c, why in stats["excluded"].items()) if listed else ""
        )
    return line


def _ratio_lines(prefix: str, ratios: dict, skipped: dict, listed: bool) -> list[str]:
    lines = []
    for peer, name in RATIO_PEERS.items():
        if peer in skipped:
            lines.append(f"{prefix}time riemsvd / {name}: {skipped[peer]}")
        elif peer in ratios["time"]:
            lines.append(prefix + _ratio_line(f"time riemsvd / {name}", ratios["time"][peer], listed))
    if ratios["products_propack"] is not None:
        lines.append(prefix + _ratio_line("products riemsvd / PROPACK", ratios["products_propack"], listed))
    return lines


def format_summary(summary: dict) -> str:
    """The summary of ``summarize``: the ratios per (size, k) with their cases, the fastest peer of
    each case, and the ratios over all cases."""
    lines = [
        "",
        "Summary: riemsvd's time (or products) ÷ the peer's, geometric means over the cases where both "
        "reached tol with the right triplets (> 1: riemsvd slower)",
    ]
    skipped = summary.get("skipped", {})
    if all(f["solver"] is None for s in summary["by_size_k"].values() for f in s["fastest_peer"].values()):
        # riemsvd alone (or beside peers that solved nothing): "fastest peer: gaussian none" and an empty
        # "all cases:" block read as a broken run (a new user's trial); where peers ran and riemsvd
        # missed tol too, the advice to add peers misled (another trial)
        peers = summary.get("peers_ran", [])
        if not peers:
            why = f"skipped: {', '.join(sorted(skipped))}" if skipped else "add peers with --solvers"
            lines.append(f"  no peer ran beside riemsvd: no ratios ({why})")
        else:
            lines.append(f"  no peer ({', '.join(peers)}) solved a case: no ratios")
        if summary.get("riemsvd_missed"):
            lines.append(
                f"  riemsvd did not solve {summary['riemsvd_missed']} of its {summary['riemsvd_cases']} "
                f"case(s){' either' if peers else ''} (see the status column: a tol below the rounding of "
                "the dtype, for one, is reached by none)"
            )
        return "\n".join(lines + _ratio_lines("  ", summary["all"], skipped, listed=True))
    for key, s in summary["by_size_k"].items():
        lines += _ratio_lines(f"  {key}: ", s, skipped, listed=True)
        per = []
        for c, f in s["fastest_peer"].items():
            if f["solver"] is None:
                per.append(f"{c} none")
            else:
                ours = (
                    f"riemsvd ×{f['riemsvd_over']:.2f}"
                    if f["riemsvd_over"] is not None
                    else f"riemsvd {f['riemsvd_status']}"
                )
                per.append(f"{c} {f['solver']} {f['setting']} {f['time_s'] * 1e3:.1f} ms ({ours})")
        lines.append(f"  {key}: fastest peer: " + ", ".join(per))
    lines.append("  all cases:")
    lines += _ratio_lines("    ", summary["all"], skipped, listed=False)
    return "\n".join(lines)


def format_warm(records: list[WarmRecord]) -> str:
    """The warm-start table: products and times from a random start and from the previous (U, V)."""
    lines = [
        "",
        "Warm start: riemsvd on A + E, ‖E‖₂ = 1e-3‖A‖₂, from A's (U, V) against a random start",
        f"{'size':<10} {'k':>3} {'class':<9} {'products cold':>13} {'warm':>6} {'ratio':>6} "
        f"{'ms cold':>8} {'ms warm':>8}",
    ]
    for r in records:
        lines.append(
            f"{r.m}x{r.n:<5} {r.k:>3} {r.cls:<9} {r.products_cold:>13} "
            f"{r.products_warm:>6} {r.products_ratio:>6.2f} "
            f"{r.time_cold_s * 1e3:>8.1f} {r.time_warm_s * 1e3:>8.1f}"
            + ("" if r.converged_cold and r.converged_warm else "  (missed tol)")
        )
    g = geomean([r.products_ratio for r in records])
    lines.append(f"  products warm / cold, geometric mean: {_fmt(g, '.2f')}")
    return "\n".join(lines)


def format_batched(records: list[BatchedRecord]) -> str:
    """The batched lines: riemsvd's and svdvals' times, riemsvd's products and residual, both σ errors."""
    lines = [f"\nBatched: {records[0].shape} float32, k = 1, {records[0].device}"]
    for r in records:
        extra = (
            f", products {r.products}, residual {r.residual:.1e} (tol {r.tol:.1e}), σ err {r.sigma_err:.1e}"
            if r.solver == "riemsvd"
            else f", σ err {r.sigma_err:.1e}"
        )
        lines.append(f"  {r.solver:<8} {r.time_s * 1e3:9.1f} ms{extra}")
    t = {r.solver: r.time_s for r in records}
    lines.append(f"  time riemsvd / svdvals = {t['riemsvd'] / t['svdvals']:.2f}")
    return "\n".join(lines)


def format_backward(records: list[BackwardRecord], summary: dict | None = None) -> str:
    """The fwd+bwd table (times in ms) and one summary line per (size, k)."""
    summary = summarize_backward(records) if summary is None else summary
    lines = [
        "",
        "Forward + backward of Σ wᵢ(cᵀuᵢ)(dᵀvᵢ) + Σ wᵢσᵢ: riemsvd.solve against torch.linalg.svd "
        f"(median times in ms; targets: ratio ≤ {BACKWARD_RATIO_TARGET}, "
        f"grad err ≤ {BACKWARD_GRAD_TARGET:.0e})",
        f"{'size':<10} {'k':>2} {'class':<9} {'ours fwd':>9} {'ours bwd':>9} {'torch fwd':>9} "
        f"{'torch bwd':>9} {'ratio':>6} {'grad err':>8} {'gap':>7} {'residual':>8}  status",
    ]
    for r in records:
        lines.append(
            f"{r.m}x{r.n:<5} {r.k:>2} {r.cls:<9} {r.riemsvd_fwd_s * 1e3:>9.1f} "
            f"{r.riemsvd_bwd_s * 1e3:>9.1f} {r.torch_fwd_s * 1e3:>9.1f} {r.torch_bwd_s * 1e3:>9.1f} "
            f"{r.ratio:>6.3f} {r.grad_rel_err:>8.1e} {_fmt(r.gap_rel, '7.1e')} "
            f"{r.residual:>8.1e}  {r.status}"
        )
    for key, s in summary.items():
        n_cls, graded = len(s["ratio"]), len(s["graded"])  # graded: those with a finite torch gradient
        unreferenced = f" (no finite torch reference: {n_cls - graded})" if graded < n_cls else ""
        lines.append(
            f"  {key}: (riemsvd fwd+bwd) / (torch fwd+bwd) = {_fmt(s['ratio_geomean'], '.3f')} geomean, "
            f"max grad err {s['grad_rel_err_max']:.1e}; ratio ≤ {BACKWARD_RATIO_TARGET} on "
            f"{len(s['meet_ratio'])}/{n_cls}, grad err ≤ {BACKWARD_GRAD_TARGET:.0e} on "
            f"{len(s['meet_grad'])}/{graded}{unreferenced}"
        )
    return "\n".join(lines)
