"""Window independence, buckets across DST, and property tests (hypothesis) of the OEE arithmetic."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.ledger import STATES, OeePolicy, OeeTotals
from analytics.oee import FLAG_PERFORMANCE_CAPPED, OeeResult, compute_oee, oee_series, rollup
from andon.plant import Break, Calendar, CalendarException, Shift
from tests.test_analytics_support import at, build, counts_frame, intervals_frame

BERLIN = "Europe/Berlin"


def _always_running(start: dt.datetime, end: dt.datetime, tz: str, cal: Calendar | None = None):
    return build(intervals_frame([("m1", start, end, "running")]), None, cal or Calendar(), start, end, tz=tz)


@pytest.mark.parametrize(("day", "hours"), [("2024-03-31", 23), ("2024-10-27", 25), ("2024-06-15", 24)])
def test_dst_day_buckets(day: str, hours: int) -> None:
    start = at(f"{day} 00:00", BERLIN) - dt.timedelta(days=1)
    end = at(f"{day} 00:00", BERLIN) + dt.timedelta(days=2)
    periods, stops = _always_running(start, end, BERLIN)
    days = {b.bucket.label: b for b in oee_series(periods, stops, OeePolicy(), "day", BERLIN)}
    target = days[day]
    assert target.result.totals.all_time_s == hours * 3600
    assert (target.bucket.end - target.bucket.start) == dt.timedelta(hours=hours)
    hour_buckets = [
        b
        for b in oee_series(periods, stops, OeePolicy(), "hour", BERLIN)
        if target.bucket.start <= b.bucket.start < target.bucket.end
    ]
    assert len(hour_buckets) == hours
    assert sum((b.result.totals for b in hour_buckets), OeeTotals()) == target.result.totals
    labels = [b.bucket.label for b in hour_buckets]
    assert len(set(labels)) == hours  # the repeated hour of the fall-back has two offsets
    if hours == 25:
        assert f"{day}T02:00+02:00" in labels and f"{day}T02:00+01:00" in labels
    if hours == 23:
        assert not any(label.startswith(f"{day}T02:") for label in labels)


def test_dst_night_shift_and_week_bucket() -> None:
    cal = Calendar(
        shifts=[
            Shift(
                name="night", start=dt.time(22), end=dt.time(6), days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            )
        ]
    )
    start, end = at("2024-03-25 00:00", BERLIN), at("2024-04-01 00:00", BERLIN)  # Mon..Mon, DST on Sun 31st
    periods, stops = _always_running(start, end, BERLIN, cal)
    shifts = {b.bucket.label: b.result for b in oee_series(periods, stops, OeePolicy(), "shift", BERLIN)}
    # The night from Saturday 30th to Sunday 31st loses an hour to the clock change.
    assert shifts["2024-03-30/night"].planned_production_time_s == 7 * 3600
    assert shifts["2024-03-29/night"].planned_production_time_s == 8 * 3600
    weeks = oee_series(periods, stops, OeePolicy(), "week", BERLIN)
    assert [w.bucket.label for w in weeks] == ["2024-W13"]
    assert weeks[0].result.totals.all_time_s == 167 * 3600


@pytest.mark.parametrize("tz", ["Asia/Kolkata", "Pacific/Auckland", "America/St_Johns"])
def test_hour_buckets_follow_local_hours(tz: str) -> None:
    start = at("2024-05-01 00:00", tz)
    periods, stops = _always_running(start, start + dt.timedelta(hours=6), tz)
    buckets = oee_series(periods, stops, OeePolicy(), "hour", tz)
    assert len(buckets) == 6
    for b in buckets:
        local = b.bucket.start.astimezone(pd.Timestamp(start).tz)
        assert (local.minute, local.second) == (0, 0)
        assert b.result.totals.all_time_s == 3600


# --- property tests ----------------------------------------------------------------------------------

WINDOW_START = at("2024-10-26 00:00", BERLIN)  # spans the fall-back night
WINDOW_HOURS = 48


@st.composite
def scenarios(draw):
    total_s = WINDOW_HOURS * 3600
    cuts = sorted(set(draw(st.lists(st.integers(1, total_s - 1), max_size=40))))
    edges = [0, *cuts, total_s]
    rows = []
    for a, b in itertools.pairwise(edges):
        state = draw(st.sampled_from(STATES) | st.none())  # None: a gap, no data
        if state is not None:
            rows.append(("m1", WINDOW_START + dt.timedelta(seconds=a), WINDOW_START + dt.timedelta(seconds=b), state))
    counts = []
    for _ in range(draw(st.integers(0, 30))):
        offset = draw(st.integers(0, total_s - 1))
        total = draw(st.integers(0, 3000))
        counts.append(
            (
                "m1",
                WINDOW_START + dt.timedelta(seconds=offset),
                total,
                draw(st.integers(0, total)),
                draw(st.sampled_from([0.5, 1.0, 2.0, 7.5])),
            )
        )
    shifts = []
    if draw(st.booleans()):
        breaks = [Break(start=dt.time(10), end=dt.time(10, 30))] if draw(st.booleans()) else []
        shifts.append(
            Shift(
                name="early",
                start=dt.time(6),
                end=dt.time(14),
                breaks=breaks,
                days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            )
        )
        shifts.append(
            Shift(
                name="night", start=dt.time(22), end=dt.time(6), days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            )
        )
    exceptions = []
    if shifts and draw(st.booleans()):
        exceptions.append(
            CalendarException(kind="planned_stop", start=dt.datetime(2024, 10, 26, 7), end=dt.datetime(2024, 10, 26, 9))
        )
    policy = OeePolicy(
        planned_stops_count_against_availability=draw(st.booleans()),
        small_stop_threshold_s=draw(st.sampled_from([30.0, 120.0, 600.0])),
    )
    split = draw(st.integers(1, total_s - 1))
    return intervals_frame(rows), counts_frame(counts), Calendar(shifts=shifts, exceptions=exceptions), policy, split


def _check_factors(result: OeeResult) -> None:
    for name in (
        "availability",
        "quality",
        "oee",
        "utilization",
        "teep",
        "data_coverage",
        "availability_excluding_line_losses",
        "performance",
    ):
        value = getattr(result, name)
        assert value is None or -1e-12 <= value <= 1 + 1e-12, (name, value)
    if result.performance_uncapped is not None and result.performance_uncapped > 1 + 1e-9:
        assert FLAG_PERFORMANCE_CAPPED in result.flags
    else:
        assert FLAG_PERFORMANCE_CAPPED not in result.flags
    if None not in (result.availability, result.performance, result.quality):
        assert result.oee == pytest.approx(result.availability * result.performance * result.quality, abs=1e-12)


def _check_waterfall(result: OeeResult) -> None:
    steps = result.waterfall
    assert [s.kind for s in steps] == ["level", "loss"] * 5 + ["level"]
    for i in range(0, len(steps) - 1, 2):
        level, loss, following = steps[i], steps[i + 1], steps[i + 2]
        assert level.seconds - loss.seconds == pytest.approx(following.seconds, abs=1e-6)
        assert loss.seconds >= -1e-9
        if loss.details:
            assert sum(loss.details.values()) == pytest.approx(loss.seconds, abs=1e-6)
    assert steps[-1].seconds == pytest.approx(result.fully_productive_time_s)


def _close(a: OeeTotals, b: OeeTotals) -> None:
    for name, value in a.to_dict().items():
        assert value == pytest.approx(getattr(b, name), abs=1e-6), name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_properties_factors_waterfall_and_window_split(scenario) -> None:
    intervals, counts, cal, policy, split_s = scenario
    end = WINDOW_START + dt.timedelta(hours=WINDOW_HOURS)
    middle = WINDOW_START + dt.timedelta(seconds=split_s)
    periods, stops = build(intervals, counts, cal, WINDOW_START, end, tz=BERLIN)
    whole = compute_oee(periods, stops, policy, now=end)
    _check_factors(whole)
    _check_waterfall(whole)
    assert math.isclose(
        whole.totals.all_time_s,
        whole.totals.unscheduled_s
        + whole.totals.planned_stop_excluded_s
        + whole.totals.no_data_s
        + whole.planned_production_time_s,
        abs_tol=1e-6,
    )

    first_p, _ = build(intervals, counts, cal, WINDOW_START, middle, tz=BERLIN)
    second_p, _ = build(intervals, counts, cal, middle, end, tz=BERLIN)
    first = compute_oee(first_p, stops, policy, now=end)
    second = compute_oee(second_p, stops, policy, now=end)
    combined = rollup([first, second])
    _close(combined.totals, whole.totals)
    for name in ("availability", "performance", "quality", "oee", "teep"):
        a, b = getattr(combined, name), getattr(whole, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert a == pytest.approx(b, abs=1e-9)

    # A day is the sum of its hours, and the sum of its shifts' share of it.
    days = oee_series(periods, stops, policy, "day", BERLIN, now=end)
    hours = oee_series(periods, stops, policy, "hour", BERLIN, now=end)
    for d in days:
        inside = [h.result.totals for h in hours if d.bucket.start <= h.bucket.start < d.bucket.end]
        _close(sum(inside, OeeTotals()), d.result.totals)
    _close(sum((d.result.totals for d in days), OeeTotals()), whole.totals)
