"""Time buckets for OEE series: hour, shift, day, week; day and week in the site's local time zone.

A period never crosses a local hour (storage cuts periods at local hours and calendar boundaries), so
every period falls into exactly one bucket of each kind and a bucket is the plain sum of its periods.
Local days are 23 h or 25 h long on DST change days; hour buckets are real hours, so the repeated
hour of a fall-back change gives two buckets with the same wall-clock hour and different UTC offsets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

BUCKETS = ("hour", "shift", "day", "week")
UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class Bucket:
    kind: str
    label: str  # hour: local ISO time with offset; day: YYYY-MM-DD; week: YYYY-Www; shift: shift key
    start: dt.datetime  # UTC
    end: dt.datetime  # UTC

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.kind,
            "label": self.label,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """Start of a local day in UTC (zoneinfo's fold=0 reading, as in andon.calendar)."""
    return dt.datetime.combine(day, dt.time()).replace(tzinfo=tz).astimezone(UTC)


def assign_buckets(frame: pd.DataFrame, bucket: str, tz: str) -> tuple[pd.DataFrame, dict[Any, Bucket]]:
    """The frame with a ``bucket_key`` column, and the buckets by key, for the rows' ``period_start``."""
    zone = ZoneInfo(tz)
    period_start = frame["period_start"].dt.tz_convert("UTC")
    out = frame.copy()
    buckets: dict[Any, Bucket] = {}
    if bucket == "shift":
        out = out[out["shift_key"].notna()].copy()
        out["bucket_key"] = out["shift_key"]
        spans = out.groupby("bucket_key").agg(start=("period_start", "min"), end=("period_end", "max"))
        for key, row in spans.iterrows():
            buckets[key] = Bucket("shift", str(key), row["start"].to_pydatetime(), row["end"].to_pydatetime())
        return out, buckets
    local_naive = period_start.dt.tz_convert(zone).dt.tz_localize(None)
    if bucket == "hour":
        # Floor to the local hour by subtracting the minutes and seconds past it: exact in UTC and
        # unambiguous in the repeated hour of a fall-back change.
        start = period_start - (local_naive - local_naive.dt.floor("h"))
        # Keys are UTC instants as int64 nanoseconds: they sort in time order, whatever pandas
        # does with tz-aware values in numpy.
        out["bucket_key"] = start.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").astype("int64")
        for key in pd.unique(out["bucket_key"]):
            s = pd.Timestamp(int(key), tz="UTC").to_pydatetime()
            label = s.astimezone(zone).isoformat(timespec="minutes")
            buckets[key] = Bucket("hour", label, s, s + dt.timedelta(hours=1))
        return out, buckets
    # Local calendar days as numpy days (floor of the local time): one pass, no Timestamp per row; each
    # bucket's bounds are computed once per distinct day, each local midnight once.
    local_days = local_naive.to_numpy().astype("datetime64[D]")
    midnights: dict[dt.date, dt.datetime] = {}

    def midnight(day: dt.date) -> dt.datetime:
        if day not in midnights:
            midnights[day] = local_midnight(day, zone)
        return midnights[day]

    if bucket == "day":
        keys = local_days
        step = dt.timedelta(days=1)
    elif bucket == "week":
        # numpy day 0 (1970-01-01) was a Thursday: Monday-based weekday = (day + 3) mod 7.
        keys = local_days - (local_days.astype(np.int64) + 3) % 7
        step = dt.timedelta(days=7)
    else:
        raise ValueError(f"bucket must be one of {BUCKETS}, got {bucket!r}")
    out["bucket_key"] = keys.astype("datetime64[ns]")
    for key in np.unique(out["bucket_key"].to_numpy()):
        first = key.astype("datetime64[D]").item()
        if bucket == "day":
            label = first.isoformat()
        else:
            iso_year, iso_week, _ = first.isocalendar()
            label = f"{iso_year}-W{iso_week:02d}"
        buckets[key] = Bucket(bucket, label, midnight(first), midnight(first + step))
    return out, buckets
