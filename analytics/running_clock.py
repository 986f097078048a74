"""The running clock of one machine: cumulative running (or any chosen states') time at any instant.

Reliability (times between failures) and the JIT inputs (times between own stops) both measure time on
this clock rather than on the wall clock, because a machine that is starved, blocked or on a break does
not age.
"""

from __future__ import annotations

from typing import overload

import numpy as np

from analytics.intervals import NS_PER_S


class RunningClock:
    """Cumulative seconds inside a set of non-overlapping spells, readable at many instants at once.

    ``start_ns``/``end_ns``: the spells (int64 ns since the epoch, in any order); empty spells are ignored.
    """

    def __init__(self, start_ns: np.ndarray, end_ns: np.ndarray) -> None:
        start_ns = np.asarray(start_ns, dtype=np.int64)
        end_ns = np.asarray(end_ns, dtype=np.int64)
        keep = end_ns > start_ns
        order = np.argsort(start_ns[keep], kind="stable")
        self.start = start_ns[keep][order]
        self.end = end_ns[keep][order]
        self.cum = np.concatenate([[0], np.cumsum(self.end - self.start)]).astype(np.int64)

    @overload
    def at(self, t_ns: int) -> float: ...
    @overload
    def at(self, t_ns: np.ndarray) -> np.ndarray: ...

    def at(self, t_ns: int | np.ndarray) -> float | np.ndarray:
        """Seconds on the clock from its first spell up to instant(s) ``t_ns``."""
        t = np.asarray(t_ns, dtype=np.int64)
        if self.start.size == 0:
            out = np.zeros(t.shape)
        else:
            k = np.searchsorted(self.start, t, side="right")  # spells starting at or before t
            prev = np.maximum(k - 1, 0)
            partial = np.clip(t - self.start[prev], 0, (self.end - self.start)[prev])
            out = np.where(k > 0, self.cum[prev] + partial, 0) / NS_PER_S
        return float(out) if out.ndim == 0 else out

    @property
    def total_s(self) -> float:
        return float(self.cum[-1]) / NS_PER_S
