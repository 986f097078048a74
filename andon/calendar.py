"""Shift calendar expansion: local shift definitions -> contiguous UTC segments, DST correct.

Shifts, breaks and exceptions are written in the site's local wall-clock time. They are turned into
aware datetimes with zoneinfo, so a night shift across a DST change lasts 7 or 9 real hours, as it
does on the shop floor. Every instant of a window falls into exactly one segment:

- ``production``: inside a shift, not in a break or exception (planned production time);
- ``break``: a break inside a shift (schedule loss, outside planned production time);
- ``planned_stop``: a planned stop from the calendar inside a shift (whether it counts against
  availability is the plant's setting);
- ``no_order``: a calendar exception without production (holiday, no order) inside a shift;
- ``no_shift``: outside every shift (plant not open / production not scheduled).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from andon.plant import WEEKDAYS, Calendar

UTC = dt.UTC
SEGMENT_KINDS = ("production", "break", "planned_stop", "no_order", "no_shift")
# Higher wins where calendar entries overlap.
_PRIORITY = {"no_shift": 0, "production": 1, "break": 2, "planned_stop": 3, "no_order": 4}


@dataclass(frozen=True, slots=True)
class Segment:
    start: dt.datetime  # UTC, inclusive
    end: dt.datetime  # UTC, exclusive
    kind: str
    shift: str | None = None  # shift name
    shift_date: dt.date | None = None  # local date on which the shift started
    label: str = ""

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def shift_key(self) -> str | None:
        if self.shift is None or self.shift_date is None:
            return None
        return f"{self.shift_date.isoformat()}/{self.shift}"


def _local(day: dt.date, t: dt.time, tz: ZoneInfo) -> dt.datetime:
    # fold=0: in the repeated hour of a fall-back the first occurrence; a time skipped by a spring-forward
    # maps to the instant the clock jumped over, as zoneinfo does.
    return dt.datetime.combine(day, t).replace(tzinfo=tz).astimezone(UTC)


def _span(day: dt.date, start: dt.time, end: dt.time, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    end_day = day if end > start else day + dt.timedelta(days=1)
    return _local(day, start, tz), _local(end_day, end, tz)


def expand(calendar: Calendar, tz: ZoneInfo | str, start: dt.datetime, end: dt.datetime) -> list[Segment]:
    """Contiguous segments covering [start, end) in UTC. A site without shifts produces all the time."""
    if isinstance(tz, str):
        tz = ZoneInfo(tz)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        return []
    # Elementary intervals with a kind and priority; the highest priority covering an instant wins.
    marks: list[tuple[dt.datetime, dt.datetime, str, str | None, dt.date | None, str]] = []
    if not calendar.shifts:
        marks.append((start, end, "production", None, None, ""))
    first_day = start.astimezone(tz).date() - dt.timedelta(days=2)
    last_day = end.astimezone(tz).date() + dt.timedelta(days=1)
    day = first_day
    while day <= last_day:
        weekday = WEEKDAYS[day.weekday()]
        for shift in calendar.shifts:
            if weekday not in shift.days:
                continue
            s0, s1 = _span(day, shift.start, shift.end, tz)
            if s1 <= start or s0 >= end or s1 <= s0:
                continue
            marks.append((s0, s1, "production", shift.name, day, ""))
            for br in shift.breaks:
                # A break belongs to the shift: it starts on the shift's day, or the next one if its
                # clock time is before the shift start (night shift breaks after midnight).
                bday = day if br.start >= shift.start else day + dt.timedelta(days=1)
                b0, b1 = _span(bday, br.start, br.end, tz)
                b0, b1 = max(b0, s0), min(b1, s1)
                if b1 > b0:
                    marks.append((b0, b1, "break", shift.name, day, br.name))
        day += dt.timedelta(days=1)
    shift_marks = [m for m in marks if m[2] == "production"]
    for exc in calendar.exceptions:
        e0 = exc.start.replace(tzinfo=tz).astimezone(UTC)
        e1 = exc.end.replace(tzinfo=tz).astimezone(UTC)
        # Exceptions only matter inside shifts; outside them the time is already unscheduled.
        for s0, s1, _, name, sday, _ in shift_marks:
            a, b = max(e0, s0), min(e1, s1)
            if b > a:
                marks.append((a, b, exc.kind, name, sday, exc.name or exc.reason or exc.kind))

    # Sweep over the cut points keeping the set of marks that cover the current elementary interval.
    cuts = {start, end}
    for m in marks:
        for t in (m[0], m[1]):
            if start < t < end:
                cuts.add(t)
    points = sorted(cuts)
    by_start = sorted(marks, key=lambda m: m[0])
    active: list[tuple[dt.datetime, dt.datetime, str, str | None, dt.date | None, str]] = []
    nxt = 0
    out: list[Segment] = []
    for a, b in itertools.pairwise(points):
        while nxt < len(by_start) and by_start[nxt][0] <= a:
            active.append(by_start[nxt])
            nxt += 1
        active = [m for m in active if m[1] > a]
        best = None
        for m in active:
            if m[0] <= a and m[1] >= b and (best is None or _PRIORITY[m[2]] > _PRIORITY[best[2]]):
                best = m
        seg = Segment(a, b, "no_shift") if best is None else Segment(a, b, best[2], best[3], best[4], best[5])
        if out and out[-1].end == seg.start and (out[-1].kind, out[-1].shift_key, out[-1].label) == (
            seg.kind,
            seg.shift_key,
            seg.label,
        ):
            out[-1] = Segment(out[-1].start, seg.end, seg.kind, seg.shift, seg.shift_date, seg.label)
        else:
            out.append(seg)
    return out

