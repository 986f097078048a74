"""Serial line: starved/blocked attribution through cascades, line OEE against the bottleneck rate."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from analytics.ledger import OeePolicy
from analytics.line import DOWNSTREAM_OF_LINE, UPSTREAM_OF_LINE, LineSpec, attribute_starved_blocked, line_oee
from analytics.oee import compute_oee
from andon.plant import Calendar, Line
from tests.test_analytics_support import at, build, counts_frame, intervals_frame

ORDER = ("A", "B", "C", "D")
T0 = at("2024-03-04 10:00")


def m(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _timeline(machine: str, spans: list[tuple[float, float, str]], end: float = 60) -> list[tuple]:
    """Running except for the (from, to, state) spans given, minutes after T0."""
    rows, t = [], 0.0
    for a, b, state in sorted(spans):
        if a > t:
            rows.append((machine, m(t), m(a), "running"))
        rows.append((machine, m(a), m(b), state))
        t = b
    if t < end:
        rows.append((machine, m(t), m(end), "running"))
    return rows


def cascade_intervals() -> pd.DataFrame:
    rows = (
        _timeline("A", [(10, 20, "unplanned_stop"), (40, 45, "starved")])
        + _timeline("B", [(5, 8, "setup"), (12, 20, "starved"), (30, 33, "starved"), (52, 55, "blocked")])
        + _timeline("C", [(14, 20, "starved"), (50, 55, "blocked")])
        + _timeline("D", [(15, 20, "starved"), (48, 55, "unplanned_stop"), (57, 60, "blocked")])
    )
    return intervals_frame(rows)


def _seconds(frame: pd.DataFrame, affected: str, kind: str, cause: str) -> float:
    sel = frame[(frame["affected"] == affected) & (frame["kind"] == kind) & (frame["cause"] == cause)]
    return float(sel["seconds"].sum())


def test_starved_cascade_is_attributed_to_the_root_cause_upstream() -> None:
    attribution = attribute_starved_blocked(cascade_intervals(), ORDER, T0, m(60))
    # D starved 15-20 while C and B were starved too: the cause is A (down 10-20).
    assert _seconds(attribution, "D", "starved", "A") == 5 * 60
    assert _seconds(attribution, "C", "starved", "A") == 6 * 60
    assert _seconds(attribution, "B", "starved", "A") == (8 + 3) * 60  # 12-20 and 30-33
    root = attribution[(attribution["affected"] == "D") & (attribution["cause"] == "A")]
    assert set(root["cause_state"]) == {"unplanned_stop"}
    # B starved 30-33 while A was running (slow supply): still A, with the state it was in.
    slow = attribution[(attribution["affected"] == "B") & (attribution["cause_state"] == "running")]
    assert float(slow["seconds"].sum()) == 3 * 60
    # The first machine starved: the supply outside the line.
    assert _seconds(attribution, "A", "starved", UPSTREAM_OF_LINE) == 5 * 60


def test_blocked_cascade_is_attributed_downstream() -> None:
    attribution = attribute_starved_blocked(cascade_intervals(), ORDER, T0, m(60))
    # C blocked 50-55: D down from 48. B blocked 52-55 while C was blocked too: cause D.
    assert _seconds(attribution, "C", "blocked", "D") == 5 * 60
    assert _seconds(attribution, "B", "blocked", "D") == 3 * 60
    assert _seconds(attribution, "D", "blocked", DOWNSTREAM_OF_LINE) == 3 * 60
    # Every starved/blocked second is attributed exactly once.
    intervals = cascade_intervals()
    sb = intervals[intervals["state"].isin(["starved", "blocked"])]
    assert attribution["seconds"].sum() == pytest.approx(((sb["end"] - sb["start"]).dt.total_seconds()).sum())


def test_attribution_limited_to_scheduled_spans_and_window() -> None:
    within = pd.DataFrame({"start": [m(0)], "end": [m(17)]})
    attribution = attribute_starved_blocked(cascade_intervals(), ORDER, T0, m(60), within=within)
    assert _seconds(attribution, "D", "starved", "A") == 2 * 60  # 15-17 only
    clipped = attribute_starved_blocked(cascade_intervals(), ORDER, m(16), m(18))
    assert _seconds(clipped, "D", "starved", "A") == 2 * 60


def _line_inputs():
    spec = LineSpec("L1", ORDER, {"A": 1.0, "B": 1.5, "C": 1.2, "D": 1.0}, takt_s=2.0)
    intervals = cascade_intervals()
    counts = counts_frame([(mach, m(30), 1500, 30 if mach == "D" else 0, spec.ideal_cycle_s[mach]) for mach in ORDER])
    periods, stops = build(intervals, counts, Calendar(), T0, m(60), machines=list(ORDER))
    return spec, intervals, periods, stops


def test_line_oee_uses_last_station_output_and_bottleneck_rate() -> None:
    spec, intervals, periods, stops = _line_inputs()
    result = line_oee(periods, stops, OeePolicy(), spec, intervals=intervals)
    assert result.bottleneck == "B" and result.basis == "bottleneck"
    assert result.line_ideal_cycle_s == 1.5
    last = compute_oee(periods[periods["machine"] == "D"], stops, OeePolicy())
    # Good parts out of D x the bottleneck's ideal cycle / D's planned production time.
    assert result.oee.oee == pytest.approx((1500 - 30) * 1.5 / last.planned_production_time_s)
    assert result.oee.availability == last.availability
    assert result.oee.performance == pytest.approx(min(1500 * 1.5 / last.run_time_s, 1.0))
    by_machine = {c.machine: c for c in result.contributions}
    assert by_machine["B"].is_bottleneck and not by_machine["A"].is_bottleneck
    # D's starved 15-20 is A's doing: all of the output station's starved time.
    assert by_machine["A"].caused_output_starved_s == 5 * 60
    assert by_machine["A"].share_of_output_starved == 1.0
    assert by_machine["D"].caused_blocked_s == (5 + 3) * 60
    assert by_machine["A"].own_stop_s == 10 * 60
    takt = line_oee(periods, stops, OeePolicy(), spec, basis="takt")
    assert takt.line_ideal_cycle_s == 2.0
    assert takt.oee.performance_uncapped == pytest.approx(1500 * 2.0 / last.run_time_s)


def test_linespec_from_plant_line() -> None:
    line = Line(
        id="L1",
        takt_time_s=30,
        machines=[
            {"id": "press", "position": 2, "ideal_cycle_time_s": 20},
            {"id": "cut", "position": 1, "ideal_rate_per_min": 2},  # 30 s
        ],
    )
    spec = LineSpec.from_line(line)
    assert spec.machines == ("cut", "press")
    assert spec.bottleneck == "cut"
    assert spec.line_ideal_cycle_s("takt") == 30


def test_results_serialise_to_json() -> None:
    import json

    from analytics.machine_reliability import FailurePolicy, machine_reliability
    from analytics.oee import oee_series

    spec, intervals, periods, stops = _line_inputs()
    line = line_oee(periods, stops, OeePolicy(), spec, intervals=intervals)
    series = oee_series(periods, stops, OeePolicy(), "hour", "Europe/Berlin")
    rel = machine_reliability("A", intervals, stops, FailurePolicy(), T0, m(60), fit=False)
    text = json.dumps({"line": line.to_dict(), "series": [b.to_dict() for b in series], "rel": rel.to_dict()})
    decoded = json.loads(text)
    assert decoded["line"]["bottleneck"] == "B"
    assert decoded["series"][0]["label"] == "2024-03-04T11:00+01:00"
    assert decoded["rel"]["failure_count"] == 1
