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
    days = local_naive.dt.normalize()
    if bucket == "day":
        out["bucket_key"] = days.to_numpy()
        for key in pd.unique(out["bucket_key"]):
            day = pd.Timestamp(key).date()
            buckets[key] = Bucket(
                "day", day.isoformat(), local_midnight(day, zone), local_midnight(day + dt.timedelta(days=1), zone)
            )
        return out, buckets
    if bucket == "week":
        mondays = days - pd.to_timedelta(days.dt.day_of_week, unit="D")
        out["bucket_key"] = mondays.to_numpy()
        for key in pd.unique(out["bucket_key"]):
            monday = pd.Timestamp(key).date()
            iso_year, iso_week, _ = monday.isocalendar()
            buckets[key] = Bucket(
                "week",
                f"{iso_year}-W{iso_week:02d}",
                local_midnight(monday, zone),
                local_midnight(monday + dt.timedelta(days=7), zone),
            )
        return out, buckets
    raise ValueError(f"bucket must be one of {BUCKETS}, got {bucket!r}")
