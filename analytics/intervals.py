"""Interval arithmetic shared by the analytics: overlaps of one set of intervals with a tiling of periods.

Times are handled as int64 nanoseconds since the epoch (UTC) so that overlaps are exact and sums over
any split of a window are the same as over the whole window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

NS_PER_S = 1_000_000_000


def to_ns(values: pd.Series | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Tz-aware timestamps (NaT allowed only where the caller replaced it) as int64 ns since the epoch."""
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def timestamp_ns(ts: dt.datetime | pd.Timestamp) -> int:
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (UTC offset)")
    return int(stamp.tz_convert("UTC").value)


@dataclass(frozen=True, slots=True)
class Overlaps:
    """Pairs (interval i, period j) that overlap, with the overlap in seconds."""

    interval_index: np.ndarray  # positions into the intervals given
    period_index: np.ndarray  # positions into the periods given
    seconds: np.ndarray


def overlaps_with_periods(
    interval_machine: np.ndarray,
    interval_start_ns: np.ndarray,
    interval_end_ns: np.ndarray,
    period_machine: np.ndarray,
    period_start_ns: np.ndarray,
    period_end_ns: np.ndarray,
) -> Overlaps:
    """Every (interval, period) pair of the same machine that overlaps by more than zero time.

    The periods of one machine must not overlap each other (they tile the window); the intervals may
    overlap freely. Cost is proportional to the number of overlapping pairs.
    """
    out_i: list[np.ndarray] = []
    out_p: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    n_intervals = len(interval_start_ns)
    # One integer code per machine for both sides, then contiguous slices per machine.
    codes, _ = pd.factorize(
        np.concatenate([np.asarray(interval_machine, dtype=object), np.asarray(period_machine, dtype=object)])
    )
    interval_code, period_code = codes[:n_intervals], codes[n_intervals:]
    p_sorted = np.lexsort((period_start_ns, period_code))
    i_sorted = np.argsort(interval_code, kind="stable")
    p_codes_sorted = period_code[p_sorted]
    i_codes_sorted = interval_code[i_sorted]
    for code in np.unique(interval_code):
        p_lo, p_hi = np.searchsorted(p_codes_sorted, [code, code + 1])
        i_lo, i_hi = np.searchsorted(i_codes_sorted, [code, code + 1])
        if p_lo == p_hi or i_lo == i_hi:
            continue
        p_pos = p_sorted[p_lo:p_hi]
        i_pos = i_sorted[i_lo:i_hi]
        p_start = period_start_ns[p_pos]
        p_end = period_end_ns[p_pos]
        if np.any(p_start[1:] < p_end[:-1]):
            raise ValueError("periods of one machine overlap; they must tile the window")
        i_start = interval_start_ns[i_pos]
        i_end = interval_end_ns[i_pos]
        first = np.searchsorted(p_end, i_start, side="right")
        stop = np.searchsorted(p_start, i_end, side="left")
        counts = np.maximum(stop - first, 0)
        total = int(counts.sum())
        if total == 0:
            continue
        which = np.repeat(np.arange(i_pos.size), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        local_period = first[which] + offsets
        overlap_ns = np.minimum(i_end[which], p_end[local_period]) - np.maximum(i_start[which], p_start[local_period])
        keep = overlap_ns > 0
        out_i.append(i_pos[which[keep]])
        out_p.append(p_pos[local_period[keep]])
        out_s.append(overlap_ns[keep] / NS_PER_S)
    if not out_i:
        empty_int = np.zeros(0, dtype=np.int64)
        return Overlaps(empty_int, empty_int, np.zeros(0))
    return Overlaps(np.concatenate(out_i), np.concatenate(out_p), np.concatenate(out_s))
