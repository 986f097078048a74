"""Shift report: target from takt or demand versus actual output, OEE factors and top stops."""

from __future__ import annotations

import datetime as dt

import pytest

from analytics.ledger import OeePolicy
from analytics.line import LineSpec
from analytics.oee import compute_oee
from analytics.shift_report import shift_report, shift_report_frame
from andon.plant import Break, Calendar, Shift
from tests.test_analytics_support import at, build, counts_frame, intervals_frame, sequence, set_reason

CAL = Calendar(
    shifts=[
        Shift(name="early", start=dt.time(6), end=dt.time(14), breaks=[Break(start=dt.time(10), end=dt.time(10, 30))]),
        Shift(name="late", start=dt.time(14), end=dt.time(22)),
    ]
)
START, END = at("2024-03-04 06:00"), at("2024-03-04 22:00")


def line_data():
    cut = sequence("cut", START, [(100, "running"), (20, "unplanned_stop"), (840, "running")])
    press = sequence(
        "press",
        START,
        [
            (60, "running"),
            (15, "setup"),
            (45, "running"),
            (20, "starved"),
            (400, "running"),
            (25, "unplanned_stop"),
            (5, "running"),
            (5, "unplanned_stop"),
            (385, "running"),
        ],
    )
    counts = counts_frame(
        [
            ("cut", at("2024-03-04 08:00"), 400, 0, 50.0),
            ("cut", at("2024-03-04 16:00"), 460, 0, 50.0),
            ("press", at("2024-03-04 08:00"), 390, 10, 55.0),
            ("press", at("2024-03-04 16:00"), 450, 5, 55.0),
        ]
    )
    periods, stops = build(intervals_frame(cut + press), counts, CAL, START, END, machines=["cut", "press"])
    stops = set_reason(stops, (stops["machine"] == "cut") & (stops["state"] == "unplanned_stop"), "blade", failure=True)
    return periods, stops


def test_target_versus_actual_per_shift_with_takt() -> None:
    periods, stops = line_data()
    spec = LineSpec("L1", ("cut", "press"), {"cut": 50.0, "press": 55.0}, takt_s=60.0)
    rows = shift_report(periods, stops, OeePolicy(), spec)
    assert [r.shift_key for r in rows] == ["2024-03-04/early", "2024-03-04/late"]
    early, late = rows
    # Early: 8 h minus a 30 min break = 450 min of production time -> 450 takt cycles of 60 s.
    assert early.production_time_s == 450 * 60
    assert (early.target_count, early.target_basis) == (450, "takt")
    assert late.target_count == 480
    assert (early.actual_total, early.actual_good) == (390, 380)
    assert early.attainment == pytest.approx(380 / 450)
    # OEE is the output station's time model with the line's ideal cycle time (bottleneck press, 55 s).
    press_early = compute_oee(
        periods[(periods["machine"] == "press") & (periods["shift_key"] == early.shift_key)], stops, OeePolicy()
    )
    assert early.oee.availability == press_early.availability
    assert early.oee.oee == pytest.approx(380 * 55.0 / press_early.planned_production_time_s)
    # Top stops of the early shift across the line: cut's blade (20 min), press starved isn't a stop,
    # press setup (15 min).
    assert [(s.reason_code, s.machine, s.duration_s) for s in early.top_stops][:2] == [
        ("blade", "cut", 20 * 60),
        ("(unassigned)", "press", 15 * 60),
    ]
    # Late shift: the press's two faults, 25 and 5 min, under one unassigned reason.
    late_top = {(s.reason_code, s.machine): s for s in late.top_stops}
    assert late_top[("(unassigned)", "press")].count == 2
    assert late_top[("(unassigned)", "press")].duration_s == 30 * 60


def test_target_from_demand_and_csv_frame() -> None:
    periods, stops = line_data()
    spec = LineSpec("L1", ("cut", "press"), {"cut": 50.0, "press": 55.0}, demand_per_shift=420)
    rows = shift_report(periods, stops, OeePolicy(), spec, top_n=2)
    assert all(r.target_basis == "demand_per_shift" and r.target_count == 420 for r in rows)
    table = shift_report_frame(rows, top_n=2)
    assert list(table["shift_key"]) == ["2024-03-04/early", "2024-03-04/late"]
    assert {"target_count", "actual_good", "oee", "top1_reason", "top2_duration_s"} <= set(table.columns)
    assert rows[0].to_dict()["top_stops"][0]["reason_code"] == "blade"
