"""The headline figures of a run: riemsvd's time (and products) over each peer's as geometric means over the
cases both solved, the fastest peer of each case, and the forward + backward experiment's summary.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from riemsvd.bench.matrices import CLASSES
from riemsvd.bench.records import BackwardRecord, CaseRecord, Record

__all__ = [
    "RATIO_PEERS",
    "by_size_and_k",
    "fastest_peers",
    "geomean",
    "riemsvd_ratio",
    "summarize",
    "summarize_backward",
]

R = TypeVar("R", bound=CaseRecord)

# The peers of the summary's ratios, with their names there.
RATIO_PEERS = {
    "arpack": "ARPACK",
    "propack": "PROPACK",
    "lowrank": "svd_lowrank",
    "primme": "PRIMME",
    "svd": "full SVD",
}


def geomean(xs: list[float | None]) -> float | None:
    """The geometric mean of the positive finite values of ``xs``; None where there are none."""
    ok = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, ok)) / len(ok)) if ok else None


def _case_label(case: tuple, short: bool) -> str:
    m, n, k, cls = case
    return cls if short else f"{cls} {m}x{n} k={k}"


def _cases(records: list[Record]) -> list[tuple]:
    order = {c: i for i, c in enumerate(CLASSES)}
    return sorted({r.case for r in records}, key=lambda c: (c[0], c[1], c[2], order.get(c[3], 99)))


def riemsvd_ratio(records: list[Record], peer: str, key: str = "time_s", short: bool = False) -> dict:
    """riemsvd's ``key`` (time_s or products) over ``peer``'s, on the cases where both solved them.

    Returns {"geomean", "n" (cases included), "cases" {case: ratio}, "excluded" {case: why}}; a case
    without both records is neither.
    """
    by = {(r.case, r.solver): r for r in records}
    ratios, excluded = {}, {}
    for case in _cases(records):
        ours, theirs = by.get((case, "riemsvd")), by.get((case, peer))
        if ours is None or theirs is None:
            continue
        label = _case_label(case, short)
        why = [f"{r.solver} {r.status or 'not run'}" for r in (ours, theirs) if not r.solved]
        if not why and (getattr(ours, key) is None or getattr(theirs, key) is None):
            why = [f"{key} n/a"]
        if why:
            excluded[label] = "; ".join(why)
        else:
            ratios[label] = getattr(ours, key) / getattr(theirs, key)
    return dict(geomean=geomean(list(ratios.values())), n=len(ratios), cases=ratios, excluded=excluded)


def fastest_peers(records: list[Record], short: bool = False) -> dict:
    """Per case: the fastest peer that solved it (the full SVD included, riemsvd not) and riemsvd's
    time over its (None where riemsvd did not solve the case); {"solver": None} where no peer did."""
    out: dict[str, dict[str, Any]] = {}
    for case in _cases(records):
        rs = [r for r in records if r.case == case]
        ours = next((r for r in rs if r.solver == "riemsvd"), None)
        peers = [r for r in rs if r.solver != "riemsvd" and r.solved]
        label = _case_label(case, short)
        if not peers:
            out[label] = dict(solver=None)
            continue
        best = min(peers, key=lambda r: r.time_s or 0.0)
        assert best.time_s  # solved: timed
        rel = ours.time_s / best.time_s if ours is not None and ours.solved and ours.time_s else None
        out[label] = dict(
            solver=best.solver,
            setting=best.setting,
            time_s=best.time_s,
            riemsvd_over=rel,
            riemsvd_status=ours.status if ours else "not run",
        )
    return out


def _ratios(records: list[Record], short: bool) -> dict:
    present = {r.solver for r in records}
    by_peer = {
        peer: riemsvd_ratio(records, peer, "time_s", short)
        for peer in RATIO_PEERS
        if peer in present and "riemsvd" in present
    }
    products = riemsvd_ratio(records, "propack", "products", short) if "propack" in by_peer else None
    return dict(time=by_peer, products_propack=products)


def by_size_and_k(records: list[R]) -> dict[tuple[int, int, int], list[R]]:
    """The records of each (m, n, k), in that order."""
    keys = sorted({(r.m, r.n, r.k) for r in records})
    return {key: [r for r in records if (r.m, r.n, r.k) == key] for key in keys}


def summarize(records: list[Record]) -> dict:
    """The headline figures: riemsvd's time over ARPACK's, PROPACK's, svd_lowrank's, PRIMME's and the
    full SVD's, and its products over PROPACK's, as geometric means over the cases both solved (with
    the count and the cases left out), per (size, k) and over all cases; the fastest peer on each
    case; the peers skipped (not installed) and those that ran; and how many of its cases riemsvd
    did not solve."""
    groups = {
        f"{m}x{n} k={k}": dict(**_ratios(rs, short=True), fastest_peer=fastest_peers(rs, short=True))
        for (m, n, k), rs in by_size_and_k(records).items()
    }
    skipped = {r.solver: r.status for r in records if r.status.startswith("skipped")}
    ran = {r.solver for r in records if not r.status.startswith("skipped")}
    ours = [r for r in records if r.solver == "riemsvd"]
    return dict(
        by_size_k=groups,
        all=_ratios(records, short=False),
        skipped=skipped,
        peers_ran=sorted(ran - {"riemsvd"}),
        riemsvd_missed=sum(not r.solved for r in ours),
        riemsvd_cases=len(ours),
    )


def summarize_backward(records: list[BackwardRecord]) -> dict:
    """Per (size, k): geometric mean of the time ratio, worst gradient error, classes meeting targets."""
    return {
        f"{m}x{n} k={k}": {
            "ratio": {r.cls: r.ratio for r in rs},
            "ratio_geomean": geomean([r.ratio for r in rs]),
            "grad_rel_err_max": max((e for r in rs if math.isfinite(e := r.grad_rel_err)), default=math.nan),
            "meet_ratio": [r.cls for r in rs if r.meets_ratio],
            "meet_grad": [r.cls for r in rs if r.meets_grad],
            "graded": [r.cls for r in rs if math.isfinite(r.grad_rel_err)],  # torch's reference finite
        }
        for (m, n, k), rs in by_size_and_k(records).items()
    }
