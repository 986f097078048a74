"""Reference construction of the ``periods`` input from raw state intervals, counts and calendar segments.

Storage produces the same frame from its rollups; this pure version defines what those rollups mean,
and lets tests, the simulator's ground truth and benchmarks compute OEE straight from raw events.

A period is one machine during a local hour cut at every calendar boundary and at the window edges.
Time in no state interval (a gap in the data) is ``offline``. A count belongs to the period holding its
timestamp (start inclusive, end exclusive). Rejects counted less than ``startup_window_s`` after the end
of a setup or planned stop are startup rejects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analytics.intervals import NS_PER_S, overlaps_with_periods, timestamp_ns, to_ns
from analytics.ledger import PLANNED_STOP_STATES, STATE_SECONDS_COLUMNS, STATES
from andon.calendar import Segment


def local_hour_boundaries_ns(start_ns: int, end_ns: int, tz: str) -> np.ndarray:
    """Instants strictly inside (start, end) where the local clock shows a full hour.

    Candidates every 15 minutes in UTC cover every offset in use (whole, half and quarter hours).
    """
    quarter = 15 * 60 * NS_PER_S
    first = (start_ns // quarter + 1) * quarter
    if first >= end_ns:
        return np.zeros(0, dtype=np.int64)
    candidates = pd.DatetimeIndex(np.arange(first, end_ns, quarter, dtype=np.int64).astype("datetime64[ns]"))
    local = candidates.tz_localize("UTC").tz_convert(tz)
    return candidates.asi8[(local.minute == 0) & (local.second == 0)]


def period_cuts_ns(
    segments: Sequence[Segment], window_start: dt.datetime, window_end: dt.datetime, tz: str
) -> np.ndarray:
    start_ns, end_ns = timestamp_ns(window_start), timestamp_ns(window_end)
    cuts = {start_ns, end_ns}
    cuts.update(int(x) for x in local_hour_boundaries_ns(start_ns, end_ns, tz))
    for seg in segments:
        for edge in (timestamp_ns(seg.start), timestamp_ns(seg.end)):
            if start_ns < edge < end_ns:
                cuts.add(edge)
    return np.array(sorted(cuts), dtype=np.int64)


def periods_from_events(
    intervals: pd.DataFrame,
    counts: pd.DataFrame | None,
    segments: Sequence[Segment],
    window_start: dt.datetime,
    window_end: dt.datetime,
    tz: str,
    machines: Sequence[str] | None = None,
    startup_window_s: float = 300.0,
) -> pd.DataFrame:
    """The ``periods`` frame for [window_start, window_end).

    ``intervals``: machine, start, end, state (may extend past the window; they are clipped).
    ``counts``: machine, ts, total, reject, ideal_cycle_s (ideal cycle time of the product counted).
    ``segments``: calendar segments covering the window (``andon.calendar.expand``).
    """
    cuts = period_cuts_ns(segments, window_start, window_end, tz)
    if machines is None:
        machines = sorted(set(intervals["machine"]) | (set(counts["machine"]) if counts is not None else set()))
    n_cut = len(cuts) - 1
    machine_list = list(machines)
    n = len(machine_list) * n_cut
    starts = np.tile(cuts[:-1], len(machine_list))
    ends = np.tile(cuts[1:], len(machine_list))
    machine_col = np.repeat(np.array(machine_list, dtype=object), n_cut)

    seg_start = np.array([timestamp_ns(s.start) for s in segments], dtype=np.int64)
    seg_index = np.searchsorted(seg_start, cuts[:-1], side="right") - 1
    if len(segments) == 0 or np.any(seg_index < 0):
        raise ValueError("calendar segments must cover the window")
    kinds = np.array([segments[i].kind for i in seg_index], dtype=object)
    shift_keys = np.array([segments[i].shift_key for i in seg_index], dtype=object)

    seconds = np.zeros((n, len(STATES)))
    if len(intervals):
        pairs = overlaps_with_periods(
            intervals["machine"].to_numpy(),
            to_ns(intervals["start"]),
            to_ns(intervals["end"]),
            machine_col,
            starts,
            ends,
        )
        state_idx = pd.Categorical(intervals["state"], categories=STATES).codes
        if np.any(state_idx < 0):
            raise ValueError(f"unknown states {sorted(set(intervals['state']) - set(STATES))}")
        np.add.at(seconds, (pairs.period_index, state_idx[pairs.interval_index]), pairs.seconds)
    length = (ends - starts) / NS_PER_S
    gap = np.maximum(length - seconds.sum(axis=1), 0.0)
    seconds[:, STATES.index("offline")] += gap

    total = np.zeros(n)
    reject = np.zeros(n)
    startup = np.zeros(n)
    ideal = np.zeros(n)
    if counts is not None and len(counts):
        ts = to_ns(counts["ts"])
        machine_pos = {m: i for i, m in enumerate(machine_list)}
        m_idx = np.array([machine_pos.get(m, -1) for m in counts["machine"]])
        inside = (ts >= cuts[0]) & (ts < cuts[-1]) & (m_idx >= 0)
        row = m_idx * n_cut + np.searchsorted(cuts, ts, side="right") - 1
        c_total = counts["total"].to_numpy(dtype=float)
        c_reject = counts["reject"].to_numpy(dtype=float)
        c_ideal = c_total * counts["ideal_cycle_s"].to_numpy(dtype=float)
        c_startup = c_reject * _in_startup_window(intervals, counts, startup_window_s)
        for target, values in ((total, c_total), (reject, c_reject), (startup, c_startup), (ideal, c_ideal)):
            np.add.at(target, row[inside], values[inside])

    frame = pd.DataFrame(
        {
            "machine": machine_col,
            "period_start": pd.to_datetime(starts, utc=True),
            "period_end": pd.to_datetime(ends, utc=True),
            "calendar_kind": np.tile(kinds, len(machine_list)),
            "shift_key": np.tile(shift_keys, len(machine_list)),
        }
    )
    for k, name in enumerate(STATE_SECONDS_COLUMNS):
        frame[name] = seconds[:, k]
    frame["total_count"] = total
    frame["reject_count"] = reject
    frame["startup_rejects"] = startup
    frame["ideal_time_s"] = ideal
    return frame


def _in_startup_window(intervals: pd.DataFrame, counts: pd.DataFrame, startup_window_s: float) -> np.ndarray:
    """1.0 for counts less than the startup window after the last setup/planned stop ended, else 0.0."""
    flag = np.zeros(len(counts))
    if startup_window_s <= 0 or not len(intervals):
        return flag
    planned = intervals[intervals["state"].isin(PLANNED_STOP_STATES)]
    count_ts = to_ns(counts["ts"])
    count_machine = counts["machine"].to_numpy()
    for machine, group in planned.groupby("machine"):
        ends = np.sort(to_ns(group["end"]))
        pos = np.flatnonzero(count_machine == machine)
        last = np.searchsorted(ends, count_ts[pos], side="right") - 1
        has = last >= 0
        since = np.where(has, count_ts[pos] - ends[np.maximum(last, 0)], np.iinfo(np.int64).max)
        flag[pos] = (has & (since < startup_window_s * NS_PER_S)).astype(float)
    return flag


def stops_from_intervals(intervals: pd.DataFrame) -> pd.DataFrame:
    """The ``stops`` frame from raw state intervals: one row per contiguous run of one stop state.

    Reasons are left empty (None); an interval with ``end`` NaT gives an ongoing stop.
    """
    stop_states = ("idle", "planned_stop", "setup", "unplanned_stop")
    rows: list[dict[str, object]] = []
    ordered = intervals.sort_values(["machine", "start"], kind="stable")
    for machine, group in ordered.groupby("machine", sort=True):
        current: dict[str, object] | None = None
        for start, end, state in zip(group["start"], group["end"], group["state"], strict=True):
            if current is not None and state == current["state"] and start == current["end_ts"]:
                current["end_ts"] = end
                continue
            if current is not None:
                rows.append(current)
                current = None
            if state in stop_states:
                current = {"machine": machine, "start_ts": start, "end_ts": end, "state": state}
        if current is not None:
            rows.append(current)
    frame = pd.DataFrame(rows, columns=["machine", "start_ts", "end_ts", "state"])
    frame["start_ts"] = pd.to_datetime(frame["start_ts"], utc=True)
    frame["end_ts"] = pd.to_datetime(frame["end_ts"], utc=True)
    frame.insert(1, "stop_id", np.arange(1, len(frame) + 1))
    for name in ("reason_code", "category", "planned", "failure", "loss", "fault_code", "comment", "shift_key"):
        frame[name] = pd.Series([None] * len(frame), dtype=object)
    return frame
