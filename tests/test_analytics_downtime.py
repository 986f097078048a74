"""Stop list, stops needing a reason, Pareto tables."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.downtime import NO_SHIFT, UNASSIGNED, pareto, stop_list, unassigned_stops
from analytics.ledger import OeePolicy
from tests.test_analytics_support import at

T0 = at("2024-03-04 06:00")
COLUMNS = [
    "machine",
    "stop_id",
    "start_ts",
    "end_ts",
    "state",
    "reason_code",
    "category",
    "planned",
    "failure",
    "loss",
    "fault_code",
    "comment",
    "shift_key",
]


def stop(
    machine,
    sid,
    start_min,
    minutes,
    state="unplanned_stop",
    reason=None,
    category=None,
    planned=None,
    shift="2024-03-04/early",
):
    end = None if minutes is None else T0 + dt.timedelta(minutes=start_min + minutes)
    return (
        machine,
        sid,
        T0 + dt.timedelta(minutes=start_min),
        end,
        state,
        reason,
        category,
        planned,
        None,
        None,
        None,
        None,
        shift,
    )


def frame(rows) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["start_ts"] = pd.to_datetime(out["start_ts"], utc=True)
    out["end_ts"] = pd.to_datetime(out["end_ts"], utc=True)
    return out


def sample_stops() -> pd.DataFrame:
    return frame(
        [
            stop("m1", 1, 10, 30, reason="jam", category="mechanical", planned=False),
            stop("m1", 2, 60, 3),  # no reason, above threshold
            stop("m1", 3, 80, 1),  # small stop
            stop("m2", 4, 20, 2),  # exactly the threshold: not small, needs a reason
            stop("m2", 5, 100, 45, state="setup"),  # planned by its state
            stop("m2", 6, 200, 20, reason="jam", category="mechanical", planned=False),
            stop("m1", 7, 470, 40, reason="no_material", category="logistics", planned=False, shift=None),
        ]
    )


def test_stop_list_durations_clipping_and_classes() -> None:
    window_end = T0 + dt.timedelta(hours=8)
    stops = stop_list(sample_stops(), OeePolicy(), T0, window_end)
    by_id = stops.set_index("stop_id")
    assert by_id.loc[7, "duration_s"] == 40 * 60  # full duration
    assert by_id.loc[7, "window_s"] == 10 * 60  # inside the window
    assert by_id.loc[3, "stop_class"] == "small_stop"
    assert by_id.loc[4, "stop_class"] == "breakdown"
    assert by_id.loc[5, "stop_class"] == "planned"
    # A stop entirely outside the window is not listed.
    early = stop_list(sample_stops(), OeePolicy(), T0, T0 + dt.timedelta(minutes=50))
    assert set(early["stop_id"]) == {1, 4}


def test_unassigned_stops_are_unplanned_and_at_least_the_threshold() -> None:
    stops = stop_list(sample_stops(), OeePolicy(small_stop_threshold_s=120), T0, T0 + dt.timedelta(hours=9))
    need = unassigned_stops(stops)
    assert list(need["stop_id"]) == [2, 4]  # longest first: 3 min, then 2 min
    assert not need["reason_code"].notna().any()


def test_ongoing_stop_uses_now() -> None:
    stops = frame([stop("m1", 1, 10, None)])
    now = T0 + dt.timedelta(minutes=25)
    listed = stop_list(stops, OeePolicy(), T0, T0 + dt.timedelta(hours=1), now=now)
    assert bool(listed.loc[0, "ongoing"]) and listed.loc[0, "duration_s"] == 15 * 60
    assert listed.loc[0, "window_s"] == 15 * 60


def test_pareto_by_reason_category_machine_and_shift() -> None:
    stops = stop_list(sample_stops(), OeePolicy(), T0, T0 + dt.timedelta(hours=9))
    by_reason = pareto(stops, "reason")
    rows = {r.key: r for r in by_reason.itertuples()}
    assert rows["jam"].count == 2 and rows["jam"].duration_s == 50 * 60
    assert rows[UNASSIGNED].count == 4  # stops 2, 3, 4, 5
    assert rows[UNASSIGNED].duration_s == (3 + 1 + 2 + 45) * 60
    assert list(by_reason["key"]) == [UNASSIGNED, "jam", "no_material"]  # by duration: 51, 50, 40 min
    by_category = pareto(stops, "category")
    assert dict(zip(by_category["key"], by_category["duration_s"], strict=True)) == {
        UNASSIGNED: 51 * 60,
        "mechanical": 50 * 60,
        "logistics": 40 * 60,
    }
    by_machine = pareto(stops, "machine")
    assert dict(zip(by_machine["key"], by_machine["count"], strict=True)) == {"m2": 3, "m1": 4}
    by_shift = pareto(stops, "shift")
    assert set(by_shift["key"]) == {"2024-03-04/early", NO_SHIFT}
    for table in (by_reason, by_category, by_machine, by_shift):
        assert table["share"].sum() == pytest.approx(1.0)
        assert table["cumulative_share"].iloc[-1] == pytest.approx(1.0)
        assert table["duration_s"].is_monotonic_decreasing
        assert table["cumulative_share"].is_monotonic_increasing
        assert table["duration_s"].sum() == pytest.approx(stops["window_s"].sum())
    without_small = pareto(stops, "reason", stop_classes=("breakdown",))
    assert without_small["count"].sum() == 5


def test_pareto_of_empty_and_zero_time() -> None:
    empty = stop_list(frame([]), OeePolicy(), T0, T0 + dt.timedelta(hours=1))
    assert pareto(empty, "reason").empty


def test_scheduled_seconds_from_periods() -> None:
    from andon.calendar import expand
    from andon.plant import Break, Calendar, Shift
    from tests.reference_periods import periods_from_events

    cal = Calendar(
        shifts=[
            Shift(name="early", start=dt.time(6), end=dt.time(14), breaks=[Break(start=dt.time(6, 40), end=dt.time(7))])
        ]
    )
    end = T0 + dt.timedelta(hours=8)
    intervals = pd.DataFrame({"machine": ["m1"], "start": [T0], "end": [end], "state": ["idle"]})
    periods = periods_from_events(intervals, None, expand(cal, "UTC", T0, end), T0, end, "UTC")
    listed = stop_list(sample_stops(), OeePolicy(), T0, end, periods=periods[periods["machine"] == "m1"])
    by_id = listed.set_index("stop_id")
    assert by_id.loc[1, "scheduled_s"] == 30 * 60  # 06:10-06:40, before the break
    assert by_id.loc[4, "scheduled_s"] == 0  # m2 has no periods given


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2", "m3"]),
            st.integers(0, 600),
            st.integers(1, 120),
            st.sampled_from([None, "jam", "no_material", "tool"]),
            st.sampled_from(["idle", "unplanned_stop"]),
        ),
        max_size=25,
    ),
    st.integers(1, 719),
)
def test_pareto_sums_and_window_additivity(raw, split_min) -> None:
    stops = frame(
        [stop(mach, i, s, d, state=state, reason=reason) for i, (mach, s, d, reason, state) in enumerate(raw)]
    )
    end = T0 + dt.timedelta(minutes=720)
    middle = T0 + dt.timedelta(minutes=split_min)
    whole = stop_list(stops, OeePolicy(), T0, end)
    first = stop_list(stops, OeePolicy(), T0, middle)
    second = stop_list(stops, OeePolicy(), middle, end)
    for by in ("reason", "machine", "shift", "state"):
        table = pareto(whole, by)
        if table.empty:
            assert whole.empty
            continue
        assert table["count"].sum() == len(whole)
        assert table["duration_s"].sum() == pytest.approx(whole["window_s"].sum())
        assert table["cumulative_share"].iloc[-1] == pytest.approx(1.0)
        parts = pd.concat([pareto(first, by), pareto(second, by)]).groupby("key")["duration_s"].sum()
        assert parts.to_dict() == pytest.approx(table.set_index("key")["duration_s"].to_dict())
