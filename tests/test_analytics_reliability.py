"""Failures, MTBF/MTTR (both divisors), inherent availability and the Weibull fit with censoring."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analytics.machine_reliability import FailurePolicy, machine_reliability, select_failures
from andon.plant import PlantSettings
from tests.reference_periods import stops_from_intervals
from tests.test_analytics_support import at, intervals_frame, sequence, set_reason

T0 = at("2024-01-01 00:00")
H = 3600.0


def getagility_machine() -> tuple[pd.DataFrame, pd.DataFrame, dt.datetime]:
    """getagility.pl: 300 h, one 10 h inspection, 4 failures of 2, 4, 2, 4 h (field reference §2.3)."""
    spans = [
        (50 * 60, "running"),
        (2 * 60, "unplanned_stop"),
        (60 * 60, "running"),
        (10 * 60, "planned_stop"),
        (40 * 60, "running"),
        (4 * 60, "unplanned_stop"),
        (70 * 60, "running"),
        (2 * 60, "unplanned_stop"),
        (30 * 60, "running"),
        (4 * 60, "unplanned_stop"),
        (28 * 60, "running"),
    ]
    intervals = intervals_frame(sequence("m1", T0, spans))
    stops = stops_from_intervals(intervals)
    end = T0 + dt.timedelta(hours=300)
    assert (intervals["end"].max() - intervals["start"].min()) == dt.timedelta(hours=300)
    return intervals, stops, end


def test_getagility_published_example_fe_plus_one() -> None:
    intervals, stops, end = getagility_machine()
    policy = FailurePolicy(mtbf_divisor="failures_plus_one")
    result = machine_reliability("m1", intervals, stops, policy, T0, end, fit=False)
    assert result.failure_count == 4
    assert result.mttr_s / H == pytest.approx(3.0)  # published: MTTR 3 h
    assert result.operating_time_s / H == pytest.approx(278.0)
    assert result.mtbf_s / H == pytest.approx(55.6)  # published: 278 / (4 + 1) = 55.6 h
    assert result.inherent_availability == pytest.approx(55.6 / (55.6 + 3.0))
    assert "+ 1" in result.mtbf_definition


def test_fe_divisor_and_no_failure_case() -> None:
    intervals, stops, end = getagility_machine()
    result = machine_reliability("m1", intervals, stops, FailurePolicy(mtbf_divisor="failures"), T0, end, fit=False)
    assert result.mtbf_s / H == pytest.approx(278 / 4)
    quiet = intervals_frame([("m2", T0, end, "running")])
    none = machine_reliability("m2", quiet, stops_from_intervals(quiet), FailurePolicy(), T0, end, fit=False)
    assert none.failure_count == 0 and none.mtbf_s is None and none.mttr_s is None
    assert none.censored_time_s == pytest.approx(300 * H)
    plus_one = machine_reliability(
        "m2", quiet, stops_from_intervals(quiet), FailurePolicy(mtbf_divisor="failures_plus_one"), T0, end, fit=False
    )
    assert plus_one.mtbf_s == pytest.approx(300 * H)


def test_policy_from_plant_settings() -> None:
    policy = FailurePolicy.from_settings(PlantSettings(mtbf_divisor="failures_plus_one", min_failure_duration_s=600))
    assert (policy.mtbf_divisor, policy.min_failure_duration_s) == ("failures_plus_one", 600)


def test_failure_selection_rules() -> None:
    spans = [
        (60, "running"),
        (10, "unplanned_stop"),
        (60, "running"),
        (10, "unplanned_stop"),
        (60, "running"),
        (10, "idle"),
        (60, "running"),
        (1, "unplanned_stop"),
        (60, "running"),
        (10, "unplanned_stop"),
        (60, "running"),
        (10, "unplanned_stop"),
        (60, "running"),
    ]
    intervals = intervals_frame(sequence("m1", T0, spans))
    stops = stops_from_intervals(intervals)
    starts = stops["start_ts"].tolist()
    stops = set_reason(stops, stops["start_ts"] == starts[0], "bearing", failure=True, planned=False)
    stops = set_reason(stops, stops["start_ts"] == starts[1], "no_material", failure=False, planned=False)
    stops = set_reason(stops, stops["start_ts"] == starts[5], "tool_change", failure=False, planned=True)
    end = T0 + dt.timedelta(hours=12)
    default = select_failures(stops, FailurePolicy(min_failure_duration_s=120), T0, end)
    # bearing (failure reason) + the unexplained 10 min fault; not: no_material (reason says no failure),
    # idle (waiting), the 1 min fault (too short), tool_change (planned).
    assert list(default["start_ts"]) == [starts[0], starts[4]]
    strict = select_failures(
        stops, FailurePolicy(min_failure_duration_s=120, unclassified_unplanned_are_failures=False), T0, end
    )
    assert list(strict["start_ts"]) == [starts[0]]
    lenient = select_failures(stops, FailurePolicy(min_failure_duration_s=30), T0, end)
    assert list(lenient["start_ts"]) == [starts[0], starts[3], starts[4]]


def test_ongoing_failure_counts_but_not_in_mttr() -> None:
    rows = sequence("m1", T0, [(120, "running"), (30, "unplanned_stop"), (120, "running")])
    rows.append(("m1", rows[-1][2], None, "unplanned_stop"))
    intervals = intervals_frame(rows)
    stops = stops_from_intervals(intervals)
    now = rows[-1][1] + dt.timedelta(minutes=20)
    result = machine_reliability("m1", intervals, stops, FailurePolicy(), T0, now, now=now, fit=False)
    assert result.failure_count == 2
    assert result.mttr_s == 30 * 60
    assert result.times_between_failures_s == (120 * 60,)
    assert result.censored_time_s is None  # the machine is down at the window end


def weibull_history(shape: float, scale_h: float, n: int, seed: int, repair_h: float = 1.0):
    """A machine that fails after Weibull operating times, each repair taking repair_h hours.

    Starts with a failure (so the first time between failures is a complete observation) and ends
    running, with the last survival time censored at the window end.
    """
    rng = np.random.default_rng(seed)
    tbf_h = scale_h * rng.weibull(shape, size=n)
    censored_h = 0.5 * scale_h
    spans = [(repair_h * 60, "unplanned_stop")]
    for x in tbf_h:
        spans += [(x * 60, "running"), (repair_h * 60, "unplanned_stop")]
    spans.append((censored_h * 60, "running"))
    intervals = intervals_frame(sequence("m1", T0, spans))
    end = intervals["end"].max().to_pydatetime()
    return intervals, stops_from_intervals(intervals), end, tbf_h, censored_h


@pytest.mark.parametrize(("shape", "scale_h", "reading"), [(2.5, 100.0, "wear_out"), (0.6, 40.0, "early_life")])
def test_weibull_fit_recovers_known_shape_and_scale(shape: float, scale_h: float, reading: str) -> None:
    intervals, stops, end, tbf_h, censored_h = weibull_history(shape, scale_h, n=80, seed=7)
    result = machine_reliability("m1", intervals, stops, FailurePolicy(min_failure_duration_s=60), T0, end)
    fit = result.weibull
    assert fit is not None
    assert result.times_between_failures_s == pytest.approx(tuple(tbf_h * H), abs=1e-5)  # datetimes hold microseconds
    assert result.censored_time_s == pytest.approx(censored_h * H)
    assert (fit.n_failures, fit.n_censored) == (80, 1)
    assert fit.shape_lower <= shape <= fit.shape_upper
    assert fit.scale_lower_s <= scale_h * H <= fit.scale_upper_s
    assert fit.reading == reading
    # Cross-check the censored MLE with scipy's independent implementation.
    data = stats.CensoredData(uncensored=tbf_h, right=[censored_h])
    c, _, scale = stats.weibull_min.fit(data, floc=0)
    assert fit.shape == pytest.approx(c, rel=2e-3)
    assert fit.scale_s / H == pytest.approx(scale, rel=2e-3)


def test_weibull_random_reading_and_too_few_failures() -> None:
    intervals, stops, end, *_ = weibull_history(1.0, 50.0, n=60, seed=11)
    fit = machine_reliability("m1", intervals, stops, FailurePolicy(min_failure_duration_s=60), T0, end).weibull
    assert fit is not None and fit.shape_lower < 1.0 < fit.shape_upper and fit.reading == "random"
    few_intervals, few_stops, few_end, *_ = weibull_history(2.0, 50.0, n=2, seed=3)
    few = machine_reliability("m1", few_intervals, few_stops, FailurePolicy(min_failure_duration_s=60), T0, few_end)
    assert few.weibull is None and any("not fitted" in n for n in few.notes)
