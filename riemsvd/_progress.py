"""Progress of a long solve, reported through the standard ``logging`` module: the logger
``"riemsvd"`` at INFO level (``logging.basicConfig(level=logging.INFO)`` shows it). A matrix-free
solve can run for minutes with nothing to show for it until it returns; scipy's ``svds`` is as
silent, PRIMME prints at its ``printLevel``. Reports come from the looks at the small matrices,
which read the residual estimates anyway, at most one every ``EVERY`` seconds and none before a solve
has run that long, so that the many short solves of a training loop log nothing."""

from __future__ import annotations

import logging
import time

LOG = logging.getLogger("riemsvd")
EVERY = 1.0  # seconds between two reports of one solve, and before its first


class Progress:
    """One solve's reports: :meth:`look` at each look, :meth:`end` when it stops. Where the logger
    is not enabled for INFO at the start, each call is one attribute test."""

    __slots__ = ("_on", "_start", "_last", "_what")

    def __init__(self, shape: tuple, k: int) -> None:
        self._on = LOG.isEnabledFor(logging.INFO)
        self._start = self._last = time.perf_counter() if self._on else 0.0
        self._what = f"{'×'.join(str(d) for d in shape)}, k = {k}" if self._on else ""

    def look(self, products: int, restarts: int, worst: float, target: float) -> None:
        if not self._on:
            return
        now = time.perf_counter()
        if now - self._last < EVERY:
            return
        self._last = now
        LOG.info(
            "riemsvd.solve (%s): %.1f s, %d products, %d restarts, residual estimate %.3g (target %.3g)",
            self._what, now - self._start, products, restarts, worst, target,
        )  # fmt: skip

    def end(self, reason: str, products: int, residual: float) -> None:
        """The stop, where a report came before it."""
        if self._on and self._last > self._start:
            LOG.info(
                "riemsvd.solve (%s): stopped (%s) after %.1f s and %d products, residual %.3g",
                self._what, reason, time.perf_counter() - self._start, products, residual,
            )  # fmt: skip
