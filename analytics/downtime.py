"""Downtime: the stop list, stops that need a reason, and Pareto tables.

Durations: ``duration_s`` is a stop's full duration (end - start, an ongoing stop up to ``now``); it
decides small stop versus breakdown and never depends on the window. ``window_s`` is the part inside
the query window; Pareto tables sum ``window_s`` so that a window's Pareto adds up to its stop time and
two adjacent windows add up to the whole. A stop needs a reason when it has none and is an unplanned
stop at or above the small-stop threshold (OEE.com: downtime longer than the threshold gets a reason).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
import pandas as pd

from analytics.intervals import overlaps_with_periods, timestamp_ns, to_ns
from analytics.ledger import BREAKDOWN, OeePolicy, classify_stops

UNASSIGNED = "(unassigned)"
NO_SHIFT = "(no shift)"
PARETO_KEYS = {
    "reason": "reason_code",
    "category": "category",
    "machine": "machine",
    "shift": "shift_key",
    "state": "state",
    "stop_class": "stop_class",
}
ParetoBy = Literal["reason", "category", "machine", "shift", "state", "stop_class"]
PARETO_COLUMNS = ["key", "count", "duration_s", "share", "cumulative_share"]


def stop_list(
    stops: pd.DataFrame,
    policy: OeePolicy,
    window_start: dt.datetime | None = None,
    window_end: dt.datetime | None = None,
    now: dt.datetime | None = None,
    periods: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Stops overlapping the window, with duration, clipped duration, class and ``needs_reason``.

    ``now`` ends ongoing stops (default: ``window_end``). With ``periods`` (the same window) the column
    ``scheduled_s`` gives each stop's seconds inside scheduled time (production, and calendar planned
    stops when they count against availability): the part that is an OEE loss.
    """
    if now is None:
        now = window_end
    out = classify_stops(stops, policy, now)
    if out.empty:
        for name in ("window_s", "needs_reason", "scheduled_s"):
            out[name] = pd.Series(dtype=float if name != "needs_reason" else bool)
        return out
    start = to_ns(out["start_ts"])
    end = to_ns(out["end_effective"])
    lo = timestamp_ns(window_start) if window_start is not None else np.iinfo(np.int64).min
    hi = timestamp_ns(window_end) if window_end is not None else np.iinfo(np.int64).max
    clipped = np.minimum(end, hi) - np.maximum(start, lo)
    out["window_s"] = np.maximum(clipped, 0) / 1e9
    has_reason = out["reason_code"].notna() if "reason_code" in out.columns else pd.Series(False, index=out.index)
    out["needs_reason"] = (~has_reason) & (out["stop_class"] == BREAKDOWN)
    if periods is not None:
        kinds = {"production"} | ({"planned_stop"} if policy.planned_stops_count_against_availability else set())
        scheduled = periods[periods["calendar_kind"].isin(kinds)]
        pairs = overlaps_with_periods(
            out["machine"].to_numpy(),
            np.maximum(start, lo),
            np.minimum(end, hi),
            scheduled["machine"].to_numpy(),
            to_ns(scheduled["period_start"]),
            to_ns(scheduled["period_end"]),
        )
        seconds = np.zeros(len(out))
        np.add.at(seconds, pairs.interval_index, pairs.seconds)
        out["scheduled_s"] = seconds
        # A stop entirely outside scheduled time (idle through a break, a weekend) is no loss and needs
        # no reason.
        out["needs_reason"] &= seconds > 0
    keep = out["window_s"] > 0
    return out[keep].sort_values(["start_ts", "machine"], kind="stable").reset_index(drop=True)


def unassigned_stops(stop_frame: pd.DataFrame) -> pd.DataFrame:
    """The stops of a ``stop_list`` that need a reason, longest first."""
    need = stop_frame[stop_frame["needs_reason"]]
    return need.sort_values(["duration_s", "start_ts"], ascending=[False, True], kind="stable").reset_index(drop=True)


def pareto(
    stop_frame: pd.DataFrame,
    by: ParetoBy,
    measure: str = "window_s",
    stop_classes: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Pareto of a ``stop_list`` by reason, category, machine or shift (also state, stop_class).

    Columns: key, count (stops), duration_s (sum of ``measure``), share, cumulative_share. Sorted by
    duration, then count, then key, so equal inputs give equal tables. Stops without a reason/category
    are one row ``(unassigned)``; without a shift ``(no shift)``. Share is None when there is no time.
    """
    if by not in PARETO_KEYS:
        raise ValueError(f"by must be one of {sorted(PARETO_KEYS)}, got {by!r}")
    frame = stop_frame
    if stop_classes is not None:
        frame = frame[frame["stop_class"].isin(stop_classes)]
    column = PARETO_KEYS[by]
    if frame.empty:
        return pd.DataFrame(columns=PARETO_COLUMNS)
    keys = frame[column] if column in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    keys = keys.astype(object).where(keys.notna(), NO_SHIFT if by == "shift" else UNASSIGNED).astype(str)
    grouped = (
        pd.DataFrame({"key": keys, "duration_s": frame[measure].astype(float)})
        .groupby("key", sort=False)
        .agg(count=("duration_s", "size"), duration_s=("duration_s", "sum"))
        .reset_index()
    )
    grouped = grouped.sort_values(
        ["duration_s", "count", "key"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)
    total = float(grouped["duration_s"].sum())
    if total > 0:
        grouped["share"] = grouped["duration_s"] / total
        grouped["cumulative_share"] = grouped["duration_s"].cumsum() / total
    else:
        grouped["share"] = None
        grouped["cumulative_share"] = None
    grouped["count"] = grouped["count"].astype(int)
    return grouped[PARETO_COLUMNS]
