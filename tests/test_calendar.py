"""Shift calendars in local time, expanded to UTC across DST changes."""

from __future__ import annotations

import datetime as dt
import itertools

from andon.calendar import expand
from andon.plant import Calendar

UTC = dt.UTC


def _cal(**kw) -> Calendar:
    return Calendar.model_validate(kw)


NIGHT = _cal(shifts=[{"name": "night", "start": "22:00", "end": "06:00", "days": ["sat"],
                      "breaks": [{"name": "meal", "start": "02:00", "end": "02:30"}]}])


def _production_hours(cal: Calendar, tz: str, a: dt.datetime, b: dt.datetime) -> float:
    return sum(s.seconds for s in expand(cal, tz, a, b) if s.kind == "production") / 3600


def test_night_shift_across_fall_back_lasts_nine_hours():
    # Europe/Berlin falls back on Sunday 2026-10-25 at 03:00 CEST -> 02:00 CET.
    a, b = dt.datetime(2026, 10, 24, tzinfo=UTC), dt.datetime(2026, 10, 26, tzinfo=UTC)
    segs = [s for s in expand(NIGHT, "Europe/Berlin", a, b) if s.shift == "night"]
    assert segs[0].start == dt.datetime(2026, 10, 24, 20, 0, tzinfo=UTC)  # 22:00 CEST
    assert segs[-1].end == dt.datetime(2026, 10, 25, 5, 0, tzinfo=UTC)  # 06:00 CET
    assert _production_hours(NIGHT, "Europe/Berlin", a, b) == 9.0 - 0.5
    assert {s.shift_key for s in segs} == {"2026-10-24/night"}


def test_night_shift_across_spring_forward_lasts_seven_hours():
    # Berlin springs forward on Sunday 2026-03-29 at 02:00 CET -> 03:00 CEST; the 02:00 break start
    # does not exist that night, so the break maps to the instant the clock jumped over.
    a, b = dt.datetime(2026, 3, 28, tzinfo=UTC), dt.datetime(2026, 3, 30, tzinfo=UTC)
    total = sum(s.seconds for s in expand(NIGHT, "Europe/Berlin", a, b) if s.shift) / 3600
    assert total == 7.0


def test_segments_are_contiguous_and_cover_window():
    cal = _cal(
        shifts=[{"name": "early", "start": "06:00", "end": "14:00", "breaks": [{"start": "09:00", "end": "09:15"}]}],
        exceptions=[{"kind": "planned_stop", "start": "2026-11-25T10:00", "end": "2026-11-25T11:00"},
                    {"kind": "no_order", "start": "2026-11-26T00:00", "end": "2026-11-27T00:00"}],
    )
    a, b = dt.datetime(2026, 11, 23, 3, 17, tzinfo=UTC), dt.datetime(2026, 11, 30, tzinfo=UTC)
    segs = expand(cal, "America/New_York", a, b)
    assert segs[0].start == a and segs[-1].end == b
    assert all(x.end == y.start for x, y in itertools.pairwise(segs))
    kinds = {s.kind for s in segs}
    assert kinds == {"production", "break", "planned_stop", "no_order", "no_shift"}
    # Mon-Fri 8 h shifts minus 15 min breaks; Wed has a 1 h planned stop; Thu has no order (whole shift).
    prod = sum(s.seconds for s in segs if s.kind == "production") / 3600
    assert prod == 4 * 7.75 - 1.0
    planned = sum(s.seconds for s in segs if s.kind == "planned_stop") / 3600
    assert planned == 1.0


def test_no_shifts_means_always_producing():
    a, b = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 2, tzinfo=UTC)
    segs = expand(_cal(), "UTC", a, b)
    assert [(s.kind, s.seconds) for s in segs] == [("production", 86400.0)]
