"""The progress bar of a benchmark run: tqdm's on stderr, shown only on a terminal, so that stdout's tables
and a log file stay clean; no bar (and one line saying so) where tqdm is not installed.
"""

from __future__ import annotations

import sys
from typing import Protocol

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar(Protocol):
    """The part of tqdm's bar the benchmark uses."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def update(self, n: float = 1) -> bool | None: ...

    def close(self) -> None: ...


class _NoBar:
    """Stands in for the bar where there is none."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def update(self, n: float = 1) -> bool | None:
        return None

    def close(self) -> None:
        pass


def progress_bar(total: int, label: str, enabled: bool = True) -> ProgressBar:
    """A bar of ``total`` steps named ``label`` on stderr, cleared when closed; one that shows nothing
    where ``enabled`` is False, stderr is not a terminal, or tqdm is missing (the benchmark's extra,
    ``pip install 'riemsvd[bench]'``, brings it)."""
    if not (enabled and sys.stderr.isatty()):  # a log file would fill with carriage returns
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        print("tqdm is not installed (pip install 'riemsvd[bench]'): no progress bar", file=sys.stderr)
        return _NoBar()
    return tqdm(total=total, desc=label, unit="case", file=sys.stderr, leave=False, dynamic_ncols=True)
