"""Production time <-> wall-clock time, from the shift calendar.

The line engine runs on *production time* (tau): the production segments of the calendar laid end to
end. Outside them the whole line is frozen -- a part in process, a repair or a setup pauses at the end
of a shift and resumes at the start of the next one (the crew works with the shift). Wall-clock times
are float seconds since the simulation start (``t0``, UTC); they become timestamps only on export.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from andon.calendar import Segment, expand
from andon.plant import Calendar

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class WallSegment:
    start_s: float
    end_s: float
    kind: str  # calendar segment kind
    label: str


class ProductionClock:
    """Calendar segments from t0 on, extended on demand in windows (real-time runs have no end)."""

    def __init__(self, calendar: Calendar, tz: str, t0: dt.datetime, window: dt.timedelta = dt.timedelta(days=7)):
        if t0.tzinfo is None:
            raise ValueError("start time must carry a time zone")
        self.calendar = calendar
        self.tz = tz
        self.t0 = t0.astimezone(UTC)
        self.window = window
        self.covered_s = 0.0  # wall seconds covered by segments
        self.segments: list[WallSegment] = []
        # Production runs (adjacent production segments merged, shift changes do not stop the line).
        self._run_start: list[float] = []  # wall
        self._run_end: list[float] = []
        self._run_tau: list[float] = []  # production time at the run's start
        self.total_tau = 0.0

    # --- extension --------------------------------------------------------------------------------
    def extend_to_wall(self, wall_s: float) -> None:
        while self.covered_s < wall_s:
            self._extend_once()

    def extend_to_tau(self, tau: float, max_years: float = 20.0) -> None:
        while self.total_tau < tau:
            if self.covered_s > max_years * 365.25 * 86400:
                raise ValueError("the calendar has no production time; cannot simulate")
            self._extend_once()

    def _extend_once(self) -> None:
        a = self.t0 + dt.timedelta(seconds=self.covered_s)
        b = a + self.window
        segs: list[Segment] = expand(self.calendar, self.tz, a, b)
        for seg in segs:
            s = (seg.start - self.t0).total_seconds()
            e = (seg.end - self.t0).total_seconds()
            prev = self.segments[-1] if self.segments else None
            if prev is not None and prev.kind == seg.kind and prev.label == seg.label and prev.end_s == s:
                self.segments[-1] = WallSegment(prev.start_s, e, seg.kind, seg.label)
            else:
                self.segments.append(WallSegment(s, e, seg.kind, seg.label))
            if seg.kind == "production":
                if self._run_end and self._run_end[-1] == s:
                    self._run_end[-1] = e
                else:
                    self._run_start.append(s)
                    self._run_end.append(e)
                    self._run_tau.append(self.total_tau)
                self.total_tau += e - s
        self.covered_s = (b - self.t0).total_seconds()

    # --- mapping ----------------------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        start = np.asarray(self._run_start)
        end = np.asarray(self._run_end)
        tau0 = np.asarray(self._run_tau)
        return start, end, tau0, tau0 + (end - start)

    def to_wall(self, tau: np.ndarray, *, at_end: bool) -> np.ndarray:
        """Wall seconds of production instants. A tau on a run boundary maps to the end of the earlier
        run when `at_end` (finishing instants), else to the start of the later run."""
        tau = np.asarray(tau, dtype=np.float64)
        if tau.size and tau.max() > self.total_tau:
            self.extend_to_tau(float(tau.max()))
        start, _, tau0, tau1 = self._arrays()
        j = np.searchsorted(tau1, tau, side="left" if at_end else "right")
        j = np.clip(j, 0, len(tau0) - 1)
        return start[j] + (tau - tau0[j])

    def to_tau(self, wall_s: float) -> float:
        """Production time elapsed at a wall instant."""
        self.extend_to_wall(wall_s)
        start, end, tau0, _ = self._arrays()
        j = int(np.searchsorted(start, wall_s, side="right")) - 1
        if j < 0:
            return 0.0
        return float(tau0[j] + min(max(wall_s - start[j], 0.0), end[j] - start[j]))

    def to_tau_array(self, wall_s: np.ndarray) -> np.ndarray:
        """Production time elapsed at each wall instant (constant outside production)."""
        wall_s = np.asarray(wall_s, dtype=np.float64)
        if wall_s.size:
            self.extend_to_wall(float(wall_s.max()))
        start, end, tau0, _ = self._arrays()
        j = np.searchsorted(start, wall_s, side="right") - 1
        jc = np.clip(j, 0, len(start) - 1)
        tau = tau0[jc] + np.clip(wall_s - start[jc], 0.0, end[jc] - start[jc])
        return np.where(j < 0, 0.0, tau)

    def split(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Production intervals [a, b) -> wall pieces (index of the interval, wall start, wall end)."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        self.extend_to_tau(float(b.max()))
        start, _, tau0, tau1 = self._arrays()
        ja = np.clip(np.searchsorted(tau1, a, side="right"), 0, len(tau0) - 1)
        jb = np.clip(np.searchsorted(tau1, b, side="left"), 0, len(tau0) - 1)
        jb = np.maximum(jb, ja)
        pieces = jb - ja + 1
        owner = np.repeat(np.arange(a.size), pieces)
        offset = np.arange(owner.size) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        run = ja[owner] + offset
        pa = np.maximum(a[owner], tau0[run])
        pb = np.minimum(b[owner], tau1[run])
        keep = pb > pa
        run, owner, pa, pb = run[keep], owner[keep], pa[keep], pb[keep]
        return owner, start[run] + (pa - tau0[run]), start[run] + (pb - tau0[run])

    def resume_points(self) -> list[float]:
        """Production times at which the line restarts after a non-production gap (and tau = 0)."""
        return list(self._run_tau)

    def run_start_before(self, tau: float) -> float:
        """Production time at which the run containing the instant `tau` (a finishing instant) began."""
        i = bisect_left(self._run_tau, tau) - 1
        return self._run_tau[max(i, 0)]
