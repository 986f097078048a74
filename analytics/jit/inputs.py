"""Measured inputs of the JIT what-if: per machine, what its own stops and its cycles look like.

Definitions (stated because the answer depends on them):

* OWN STOPS are stops in the ``unplanned_stop`` state whose reason is not planned (a reason with
  ``planned = true`` makes it a planned stop; no reason counts as unplanned). Starved and blocked time is
  caused by the neighbours and is never an own stop; idle (waiting, breaks), setups and planned stops
  are planned around and are left out of the what-if. An ongoing stop has no known duration and is left
  out. Only stops that start inside the window count.
* A stop cut by a break or the end of a shift (pieces with no running, starved or blocked time between
  them) is ONE stop whose length is the production time of its pieces: the repair went on after the
  break.
* Own stops shorter than the plant's small-stop threshold are MICRO-STOPS, the others BREAKDOWNS (the
  same split as the OEE ledger). They are kept apart because they behave differently (many and short
  versus few and long) and because the kaizen questions differ (halve the MTTR of breakdowns, halve the
  failures, halve the micro-stops).
* Times between stops are OPERATING (running) time from the end of one stop of a class to the start of
  the next stop of the same class (the running clock: a starved or blocked machine does not age). The
  running time before the first and after the last stop of the window is censored: it enters the rate
  (stops per running hour = stops / running time) but not the sample of complete times.
* CYCLE TIMES are the gaps between consecutive part completions that both fall inside one running spell
  (so neither waiting nor a stop is in the gap); the mean cycle is running time / parts made, which also
  counts the first part of each spell. Without part-level counts the ideal cycle time is used.
* SCRAP RATE is rejects / total parts (startup rejects included).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analytics.intervals import NS_PER_S, timestamp_ns, to_ns
from analytics.running_clock import RunningClock

OPERATING_STATES = ("running", "starved", "blocked", "unplanned_stop")


@dataclass(frozen=True, slots=True)
class StopSample:
    """One class of own stops of one machine: complete up times and the stop durations, in seconds."""

    up_s: np.ndarray  # complete running times between consecutive stops of the class
    down_s: np.ndarray  # durations of the stops (ended ones)
    running_s: float  # running time observed in the window (censored pieces included)

    @property
    def count(self) -> int:
        return int(self.down_s.size)

    @property
    def mean_up_s(self) -> float | None:
        """Mean running time between stops: running time / stops (censoring-aware exponential MLE)."""
        return self.running_s / self.count if self.count else None

    @property
    def rate_per_running_h(self) -> float:
        return self.count / self.running_s * 3600.0 if self.running_s > 0 else 0.0

    @property
    def mean_down_s(self) -> float | None:
        return float(self.down_s.mean()) if self.count else None

    def down_quantile_s(self, q: float) -> float | None:
        return float(np.quantile(self.down_s, q)) if self.count else None

    @property
    def cv_up(self) -> float | None:
        return _cv(self.up_s)

    @property
    def cv_down(self) -> float | None:
        return _cv(self.down_s)


@dataclass(frozen=True, slots=True)
class MachineInputs:
    machine: str
    ideal_cycle_s: float
    running_s: float
    operating_s: float  # running + starved + blocked + own stops: the time the line was producing
    own_stop_s: float
    breakdowns: StopSample
    micro_stops: StopSample
    cycle_gaps_s: np.ndarray  # measured part-to-part times inside running spells
    cycle_mean_s: float
    parts_total: int
    parts_reject: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def cycle_cv(self) -> float | None:
        return _cv(self.cycle_gaps_s)

    @property
    def scrap_rate(self) -> float:
        return self.parts_reject / self.parts_total if self.parts_total else 0.0

    @property
    def availability(self) -> float | None:
        """Own availability: running / (running + own stops); starved and blocked do not count against it."""
        total = self.running_s + self.own_stop_s
        return self.running_s / total if total > 0 else None

    def stops_per_shift(self, shift_s: float) -> float | None:
        if self.operating_s <= 0:
            return None
        return (self.breakdowns.count + self.micro_stops.count) / (self.operating_s / shift_s)

    def to_dict(self, shift_s: float) -> dict[str, Any]:
        b, m = self.breakdowns, self.micro_stops
        return {
            "machine": self.machine,
            "ideal_cycle_s": self.ideal_cycle_s,
            "running_h": self.running_s / 3600.0,
            "availability": self.availability,
            "stops_per_shift": self.stops_per_shift(shift_s),
            "breakdowns": {
                "count": b.count,
                "mtbf_h": None if b.mean_up_s is None else b.mean_up_s / 3600.0,
                "mttr_min": None if b.mean_down_s is None else b.mean_down_s / 60.0,
                "mttr_median_min": _div(b.down_quantile_s(0.5), 60.0),
                "mttr_p90_min": _div(b.down_quantile_s(0.9), 60.0),
                "cv_time_between": b.cv_up,
                "cv_repair": b.cv_down,
                "complete_times_between": int(b.up_s.size),
            },
            "micro_stops": {
                "count": m.count,
                "per_running_h": m.rate_per_running_h,
                "mean_s": m.mean_down_s,
                "cv_duration": m.cv_down,
            },
            "cycle": {
                "mean_s": self.cycle_mean_s,
                "cv": self.cycle_cv,
                "measured_gaps": int(self.cycle_gaps_s.size),
            },
            "scrap_rate": self.scrap_rate,
            "notes": list(self.notes),
        }


def _cv(x: np.ndarray) -> float | None:
    if x.size < 2 or x.mean() <= 0:
        return None
    return float(x.std(ddof=1) / x.mean())


def _div(x: float | None, d: float) -> float | None:
    return None if x is None else x / d


def _merge_across_breaks(start_ns: np.ndarray, end_ns: np.ndarray, busy: RunningClock
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One stop per repair: pieces of a stop cut by a break or shift end (no running, starved or blocked
    time between them) are one stop whose length is the sum of the pieces (production time only)."""
    order = np.argsort(start_ns, kind="stable")
    start_ns, end_ns = start_ns[order], end_ns[order]
    pieces = end_ns - start_ns
    if start_ns.size < 2:
        return start_ns, end_ns, pieces
    between = busy.at(start_ns[1:]) - busy.at(end_ns[:-1])
    new = np.concatenate([[True], between > 0])
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:], start_ns.size) - 1
    return start_ns[first], end_ns[last], np.bincount(group, weights=pieces).astype(np.int64)


def _stop_sample(clock: RunningClock, start_ns: np.ndarray, end_ns: np.ndarray, length_ns: np.ndarray
                 ) -> StopSample:
    order = np.argsort(start_ns, kind="stable")
    start_ns, end_ns = start_ns[order], end_ns[order]
    down = length_ns[order] / NS_PER_S
    up = clock.at(start_ns[1:]) - clock.at(end_ns[:-1]) if start_ns.size > 1 else np.zeros(0)
    return StopSample(up_s=up[up > 0], down_s=down, running_s=clock.total_s)


def measure_machines(
    machines: Sequence[str],
    ideal_cycle_s: Mapping[str, float],
    intervals: pd.DataFrame,
    stops: pd.DataFrame | None,
    counts: pd.DataFrame | None,
    window_start: dt.datetime,
    window_end: dt.datetime,
    small_stop_threshold_s: float = 120.0,
) -> list[MachineInputs]:
    """Measured inputs of each machine over [window_start, window_end).

    ``intervals``: machine, start, end, state (raw state intervals, storage's ``intervals``);
    ``stops``: storage's stop list (machine, start_ts, end_ts, state, planned, ...) or None to take the
    own stops straight from the ``unplanned_stop`` intervals; ``counts``: machine, ts, total, reject (one
    row per part for cycle times; batched counts still give the mean cycle and the scrap rate).
    """
    lo, hi = timestamp_ns(window_start), timestamp_ns(window_end)
    iv_machine = intervals["machine"].to_numpy()
    iv_start = np.clip(to_ns(intervals["start"]), lo, hi)
    iv_end = np.clip(to_ns(intervals["end"].fillna(pd.Timestamp(hi, tz="UTC"))), lo, hi)
    iv_state = intervals["state"].to_numpy()
    if stops is None:
        own = intervals[intervals["state"] == "unplanned_stop"]
        st_machine = own["machine"].to_numpy()
        st_start = to_ns(own["start"])
        st_end_raw = own["end"]
        st_ok = np.ones(len(own), dtype=bool)
    else:
        planned = stops["planned"] if "planned" in stops.columns else pd.Series(None, index=stops.index)
        planned_true = np.equal(planned.to_numpy(dtype=object), True)
        sel = (stops["state"] == "unplanned_stop").to_numpy() & ~planned_true
        own = stops[sel]
        st_machine = own["machine"].to_numpy()
        st_start = to_ns(own["start_ts"])
        st_end_raw = own["end_ts"]
        st_ok = np.ones(len(own), dtype=bool)
    ended = st_end_raw.notna().to_numpy()
    st_end = np.where(ended, to_ns(st_end_raw.fillna(pd.Timestamp(0, tz="UTC"))), 0)
    st_ok &= ended & (st_start >= lo) & (st_start < hi)
    threshold_ns = small_stop_threshold_s * NS_PER_S
    if counts is not None and len(counts):
        c_machine = counts["machine"].to_numpy()
        c_ts = to_ns(counts["ts"])
        c_total = counts["total"].to_numpy(dtype=np.int64)
        c_reject = counts["reject"].fillna(0).to_numpy(dtype=np.int64)
        c_in = (c_ts >= lo) & (c_ts < hi)
    else:
        c_machine = np.zeros(0, dtype=object)
        c_ts = c_total = c_reject = np.zeros(0, dtype=np.int64)
        c_in = np.zeros(0, dtype=bool)

    out = []
    for mid in machines:
        notes: list[str] = []
        mine = iv_machine == mid
        s, e, state = iv_start[mine], iv_end[mine], iv_state[mine]
        dur = (e - s) / NS_PER_S
        run = state == "running"
        clock = RunningClock(s[run], e[run])
        operating_s = float(dur[np.isin(state, OPERATING_STATES)].sum())
        sm = (st_machine == mid) & st_ok
        busy = np.isin(state, ("running", "starved", "blocked"))
        a, b, length = _merge_across_breaks(st_start[sm], st_end[sm], RunningClock(s[busy], e[busy]))
        long_stop = length >= threshold_ns
        breakdowns = _stop_sample(clock, a[long_stop], b[long_stop], length[long_stop])
        micro = _stop_sample(clock, a[~long_stop], b[~long_stop], length[~long_stop])
        own_stop_s = float(length.sum() / NS_PER_S)
        cm = (c_machine == mid) & c_in
        total = int(c_total[cm].sum())
        reject = int(c_reject[cm].sum())
        gaps = _cycle_gaps(c_ts[cm], c_total[cm], clock)
        ict = float(ideal_cycle_s[mid])
        if total > 0 and clock.total_s > 0:
            cycle_mean = clock.total_s / total
        else:
            cycle_mean = ict
            notes.append("no part counts in the window: the ideal cycle time stands in for the measured one")
        if total > 0 and gaps.size < 2:
            notes.append("counts are batched: cycle-time variation not measurable, mean cycle used")
        if clock.total_s <= 0:
            notes.append("no running time in the window")
        out.append(MachineInputs(
            machine=mid, ideal_cycle_s=ict, running_s=clock.total_s, operating_s=operating_s,
            own_stop_s=own_stop_s, breakdowns=breakdowns, micro_stops=micro, cycle_gaps_s=gaps,
            cycle_mean_s=cycle_mean, parts_total=total, parts_reject=reject, notes=tuple(notes),
        ))
    return out


def _cycle_gaps(ts: np.ndarray, total: np.ndarray, clock: RunningClock) -> np.ndarray:
    """Gaps between consecutive single-part completions inside one running spell, in seconds."""
    if ts.size < 2 or clock.start.size == 0:
        return np.zeros(0)
    order = np.argsort(ts, kind="stable")
    ts, total = ts[order], total[order]
    spell = np.searchsorted(clock.start, ts, side="left") - 1  # the spell that began before the completion
    inside = (spell >= 0) & (ts <= clock.end[np.maximum(spell, 0)])
    pair = inside[1:] & inside[:-1] & (spell[1:] == spell[:-1]) & (total[1:] == 1) & (total[:-1] == 1)
    return (np.diff(ts)[pair]) / NS_PER_S
