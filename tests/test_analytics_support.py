"""Builders shared by the analytics tests (no tests here): raw events -> periods/stops frames."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import pandas as pd

from andon.calendar import expand
from andon.plant import Calendar
from tests.reference_periods import periods_from_events, stops_from_intervals

UTC = dt.UTC


def at(text: str, tz: str = "UTC") -> dt.datetime:
    """'2024-03-04 06:00' in zone tz, as an aware datetime."""
    return pd.Timestamp(text, tz=tz).to_pydatetime()


def intervals_frame(rows: Iterable[tuple[str, dt.datetime, dt.datetime | None, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["machine", "start", "end", "state"])
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    frame["end"] = pd.to_datetime(frame["end"], utc=True)
    return frame


def sequence(machine: str, start: dt.datetime, spans: Sequence[tuple[float, str]]) -> list[tuple]:
    """Back-to-back intervals from (minutes, state) pairs."""
    rows = []
    t = start
    for minutes, state in spans:
        end = t + dt.timedelta(minutes=minutes)
        rows.append((machine, t, end, state))
        t = end
    return rows


def counts_frame(rows: Iterable[tuple[str, dt.datetime, int, int, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["machine", "ts", "total", "reject", "ideal_cycle_s"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def build(
    intervals: pd.DataFrame,
    counts: pd.DataFrame | None,
    calendar: Calendar,
    start: dt.datetime,
    end: dt.datetime,
    tz: str = "UTC",
    machines: Sequence[str] | None = None,
    startup_window_s: float = 300.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(periods, stops) for the window, as storage would hand them to the analytics."""
    segments = expand(calendar, tz, start, end)
    periods = periods_from_events(
        intervals, counts, segments, start, end, tz, machines=machines, startup_window_s=startup_window_s
    )
    return periods, stops_from_intervals(intervals)


def set_reason(
    stops: pd.DataFrame,
    mask: pd.Series,
    reason_code: str,
    *,
    category: str = "",
    planned: bool | None = False,
    failure: bool | None = False,
    loss: str | None = None,
) -> pd.DataFrame:
    out = stops.copy()
    for name, value in (
        ("reason_code", reason_code),
        ("category", category),
        ("planned", planned),
        ("failure", failure),
        ("loss", loss),
    ):
        out[name] = out[name].astype(object)
        out.loc[mask, name] = value
    return out
