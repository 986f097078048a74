"""Time windows for API queries: explicit ISO 8601 bounds with a zone, or a named window in the site's
local time (today, yesterday, this week, last N hours/days), with limits on how far a list may reach."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

UTC = dt.UTC
MAX_ANALYTICS_DAYS = 400
MAX_LIST_DAYS = 93


def parse_instant(value: str, name: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an ISO 8601 time: {value!r}") from None
    if t.tzinfo is None:
        raise ValueError(f"{name}: give a time zone (Z or an offset such as +01:00)")
    return t.astimezone(UTC)


def resolve(start: str | None, end: str | None, window: str | None, tz: ZoneInfo, now: dt.datetime,
            max_days: int = MAX_ANALYTICS_DAYS) -> tuple[dt.datetime, dt.datetime]:
    if window and (start or end):
        raise ValueError("give either window or start/end, not both")
    if window:
        local_now = now.astimezone(tz)
        midnight = dt.datetime.combine(local_now.date(), dt.time(), tzinfo=tz)
        if window == "today":
            a, b = midnight, now
        elif window == "yesterday":
            a, b = dt.datetime.combine(local_now.date() - dt.timedelta(days=1), dt.time(), tzinfo=tz), midnight
        elif window == "week":
            a, b = midnight - dt.timedelta(days=local_now.weekday()), now
        elif m := re.fullmatch(r"(\d{1,4})([hd])", window):
            n = int(m.group(1))
            a, b = now - (dt.timedelta(hours=n) if m.group(2) == "h" else dt.timedelta(days=n)), now
        else:
            raise ValueError(f"unknown window {window!r}: use today, yesterday, week, <N>h or <N>d")
        a, b = a.astimezone(UTC), b.astimezone(UTC)
    else:
        if not start:
            raise ValueError("give start (and end) or a window")
        a = parse_instant(start, "start")
        b = parse_instant(end, "end") if end else now
    if b <= a:
        raise ValueError("end must be after start")
    if (b - a) > dt.timedelta(days=max_days):
        raise ValueError(f"the window may span at most {max_days} days")
    return a, b
