"""OEE, waterfall, six big losses and the ISO 22400-2 view against published examples and the rules."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from analytics.ledger import PERIOD_COLUMNS, OeePolicy, OeeTotals, build_ledger
from analytics.oee import (
    FLAG_NO_DATA,
    FLAG_NO_PPT,
    FLAG_PERFORMANCE_CAPPED,
    FLAG_UNSCHEDULED_PRODUCTION,
    compute_oee,
    oee_by,
    rollup,
)
from andon.plant import Break, Calendar, CalendarException, PlantSettings, Shift
from tests.test_analytics_support import at, build, counts_frame, intervals_frame, sequence, set_reason

TOL = 1e-4  # field reference: published factors are rounded to 0.01 %


def _row(machine, start, end, kind, shift_key="2024-03-04/early", **states_and_counts):
    row = dict.fromkeys(PERIOD_COLUMNS, 0.0)
    row.update(machine=machine, period_start=start, period_end=end, calendar_kind=kind, shift_key=shift_key)
    row.update(states_and_counts)
    return row


def oee_com_periods_and_stops() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The OEE.com / Vorne example as storage would hand it over: 480 min shift, breaks 15 + 30 + 15 min,
    one 47 min stop, ideal cycle 1.0 s, 19,271 parts of which 423 rejects."""
    t = lambda hhmm: at(f"2024-03-04 {hhmm}")  # noqa: E731
    rows = [
        _row(
            "m1",
            t("06:00"),
            t("08:00"),
            "production",
            s_running=7200,
            total_count=6000,
            reject_count=100,
            ideal_time_s=6000,
        ),
        _row("m1", t("08:00"), t("08:15"), "break", s_idle=900),
        _row(
            "m1",
            t("08:15"),
            t("10:00"),
            "production",
            s_running=6300 - 2820,
            s_unplanned_stop=2820,
            total_count=3000,
            reject_count=123,
            ideal_time_s=3000,
        ),
        _row("m1", t("10:00"), t("10:30"), "break", s_idle=1800),
        _row(
            "m1",
            t("10:30"),
            t("12:00"),
            "production",
            s_running=5400,
            total_count=4271,
            reject_count=100,
            ideal_time_s=4271,
        ),
        _row("m1", t("12:00"), t("12:15"), "break", s_idle=900),
        _row(
            "m1",
            t("12:15"),
            t("14:00"),
            "production",
            s_running=6300,
            total_count=6000,
            reject_count=100,
            ideal_time_s=6000,
        ),
    ]
    periods = pd.DataFrame(rows)
    stops = pd.DataFrame(
        [
            ("m1", 1, t("08:00"), t("08:15"), "idle", None, None, None, None),
            ("m1", 2, t("09:00"), t("09:47"), "unplanned_stop", "jam", False, True, "breakdowns"),
            ("m1", 3, t("10:00"), t("10:30"), "idle", None, None, None, None),
            ("m1", 4, t("12:00"), t("12:15"), "idle", None, None, None, None),
        ],
        columns=["machine", "stop_id", "start_ts", "end_ts", "state", "reason_code", "planned", "failure", "loss"],
    )
    return periods, stops


def test_oee_com_published_example() -> None:
    periods, stops = oee_com_periods_and_stops()
    result = compute_oee(periods, stops, OeePolicy.from_settings(PlantSettings()))
    # Published: A 88.81 %, P 86.11 %, Q 97.80 %, OEE 74.79 % (oee.com/teep, Vorne worksheet).
    assert result.availability == pytest.approx(0.8881, abs=TOL)
    assert result.performance == pytest.approx(0.8611, abs=TOL)
    assert result.quality == pytest.approx(0.9780, abs=TOL)
    assert result.oee == pytest.approx(0.7479, abs=TOL)
    assert round(100 * result.availability, 2) == 88.81
    assert round(100 * result.performance, 2) == 86.11
    assert round(100 * result.quality, 2) == 97.80
    assert round(100 * result.oee, 2) == 74.79
    # Published intermediate figures: PPT 420 min, operating time 373 min, 18,848 good pieces.
    assert result.planned_production_time_s == 420 * 60
    assert result.run_time_s == 373 * 60
    assert result.good_count == 18_848
    # OEE.com "simple" OEE: good count x ideal cycle time / PPT gives the same number.
    assert result.oee == pytest.approx(18_848 * 1.0 / (420 * 60), rel=1e-12)
    levels = {s.name: s.seconds for s in result.waterfall if s.kind == "level"}
    assert levels["all_time"] == 480 * 60
    assert levels["net_run_time"] == pytest.approx(19_271)
    assert levels["fully_productive_time"] == pytest.approx(18_848)
    six = result.six_big_losses
    assert six.breakdowns_s == 47 * 60
    assert six.slow_cycles_s == pytest.approx(373 * 60 - 19_271)
    assert six.production_rejects_s == pytest.approx(423)
    assert result.flags == ()


def test_oee_com_example_from_raw_events_matches() -> None:
    """The same example driven through raw state intervals and counts -> periods (hour cut)."""
    cal = Calendar(
        shifts=[
            Shift(
                name="early",
                start=dt.time(6),
                end=dt.time(14),
                breaks=[
                    Break(start=dt.time(8), end=dt.time(8, 15)),
                    Break(start=dt.time(10), end=dt.time(10, 30)),
                    Break(start=dt.time(12), end=dt.time(12, 15)),
                ],
            )
        ]
    )
    start = at("2024-03-04 06:00")
    rows = sequence(
        "m1",
        start,
        [
            (120, "running"),
            (15, "idle"),
            (45, "running"),
            (47, "unplanned_stop"),
            (13, "running"),
            (30, "idle"),
            (90, "running"),
            (15, "idle"),
            (105, "running"),
        ],
    )
    counts = counts_frame(
        [("m1", at("2024-03-04 07:00"), 10_000, 200, 1.0), ("m1", at("2024-03-04 13:00"), 9_271, 223, 1.0)]
    )
    periods, stops = build(intervals_frame(rows), counts, cal, start, at("2024-03-04 14:00"))
    result = compute_oee(periods, stops, OeePolicy())
    assert round(100 * result.availability, 2) == 88.81
    assert round(100 * result.performance, 2) == 86.11
    assert round(100 * result.quality, 2) == 97.80
    assert round(100 * result.oee, 2) == 74.79
    # Periods are cut at local hours and calendar boundaries: 8 hours + 3 breaks cut 3 more times.
    assert len(periods) == 11


def test_iso22400_view_of_the_oee_com_example() -> None:
    """Field reference §2.4 [DER]: PBT 420 min, APT 373 min, E 0.861081, Q 0.978050, OEE index 0.747937."""
    periods, stops = oee_com_periods_and_stops()
    iso = compute_oee(periods, stops, OeePolicy()).iso22400
    assert iso.label.startswith("ISO 22400-2")
    assert iso.pbt_s == 420 * 60
    assert iso.apt_s == 373 * 60
    assert iso.availability == pytest.approx(373 / 420, abs=1e-6)
    assert iso.effectiveness == pytest.approx(0.861081, abs=1e-6)
    assert iso.quality_ratio == pytest.approx(0.978050, abs=1e-6)
    assert iso.oee_index == pytest.approx(0.747937, abs=1e-6)
    # Technical efficiency APT / (APT + ADET): the 47 minutes are delay time.
    assert iso.technical_efficiency == pytest.approx(373 / 420, abs=1e-9)


def test_packml_fed_example() -> None:
    """Field reference §3.7 [DER]: 480 min shift, 30 min break; Execute 400, Held 20, Suspended 15,
    Idle 15 min; design speed 60 ppm; 22,000 processed, 440 defective."""
    cal = Calendar(
        shifts=[
            Shift(name="a", start=dt.time(6), end=dt.time(14), breaks=[Break(start=dt.time(10), end=dt.time(10, 30))])
        ]
    )
    start = at("2024-03-04 06:00")
    rows = sequence(
        "filler",
        start,
        [
            (100, "running"),
            (20, "unplanned_stop"),
            (100, "running"),
            (15, "starved"),
            (5, "running"),
            (30, "idle"),
            (100, "running"),
            (15, "idle"),
            (95, "running"),
        ],
    )
    # The 30 idle minutes at 10:00 are the break (schedule loss); the other 15 idle minutes count.
    counts = counts_frame(
        [("filler", at("2024-03-04 09:00"), 11_000, 220, 1.0), ("filler", at("2024-03-04 13:00"), 11_000, 220, 1.0)]
    )
    periods, stops = build(intervals_frame(rows), counts, cal, start, at("2024-03-04 14:00"))
    result = compute_oee(periods, stops, OeePolicy())
    assert result.availability == pytest.approx(0.888889, abs=1e-6)
    assert result.performance == pytest.approx(0.916667, abs=1e-6)
    assert result.quality == pytest.approx(0.98, abs=1e-9)
    assert result.oee == pytest.approx(0.798519, abs=1e-6)
    assert result.six_big_losses.starved_s == 15 * 60


def _week_of_shifts(hours_per_day: list[tuple[int, int]], days: list[str], oee_target: float):
    """One machine over a full week (168 h) with shifts; runs all scheduled time at oee_target speed."""
    shifts = [
        Shift(name=f"s{i}", start=dt.time(a), end=dt.time(b % 24), days=days) for i, (a, b) in enumerate(hours_per_day)
    ]
    return Calendar(shifts=shifts)


@pytest.mark.parametrize(
    ("shifts", "days", "oee", "utilization", "teep"),
    [
        # OEE.com TEEP page: 8 h x 2 shifts x 5 days = 80 h of 168 h; OEE 65 % -> U 47.62 %, TEEP 30.95 %.
        ([(6, 14), (14, 22)], ["mon", "tue", "wed", "thu", "fri"], 0.65, 0.4762, 0.3095),
        # LeanWorx ex. 1: 24 h/day, 6 days, OEE 60 % -> U 85.7 %, TEEP 51.4 %.
        ([(0, 24)], ["mon", "tue", "wed", "thu", "fri", "sat"], 0.60, 0.857, 0.514),
    ],
)
def test_teep_published_examples(shifts, days, oee, utilization, teep) -> None:
    cal = _week_of_shifts(shifts, days, oee)
    start, end = at("2024-03-04 00:00"), at("2024-03-11 00:00")  # Monday to Monday
    # Running all the time; counts at the OEE's pace (A = Q = 1, so P = OEE).
    rows = [("m1", start, end, "running")]
    periods, stops = build(intervals_frame(rows), None, cal, start, end)
    periods["ideal_time_s"] = periods["s_running"] * oee
    periods["total_count"] = periods["ideal_time_s"]  # ideal cycle 1 s
    periods.loc[periods["calendar_kind"] != "production", ["ideal_time_s", "total_count"]] = 0.0
    # The machine "runs" outside the schedule too in this synthetic set-up; stop it there.
    off = periods["calendar_kind"] != "production"
    periods.loc[off, "s_idle"] = periods.loc[off, "s_running"]
    periods.loc[off, "s_running"] = 0.0
    result = compute_oee(periods, stops, OeePolicy())
    assert result.oee == pytest.approx(oee, abs=1e-9)
    assert round(result.utilization, len(str(utilization)) - 2) == utilization
    assert round(result.teep, len(str(teep)) - 2) == teep
    assert result.teep == pytest.approx(result.oee * result.utilization, rel=1e-12)


def test_teep_leanworx_example_two_breaks_are_schedule_loss() -> None:
    """LeanWorx ex. 2: 12 h/day with 1 h of breaks, 6 days, OEE 60 % -> U 39.3 %, TEEP 23.6 %."""
    days = ["mon", "tue", "wed", "thu", "fri", "sat"]
    cal = Calendar(
        shifts=[
            Shift(
                name="day",
                start=dt.time(6),
                end=dt.time(18),
                days=days,
                breaks=[Break(start=dt.time(12), end=dt.time(13))],
            )
        ]
    )
    start, end = at("2024-03-04 00:00"), at("2024-03-11 00:00")
    periods, stops = build(intervals_frame([("m1", start, end, "idle")]), None, cal, start, end)
    prod = periods["calendar_kind"] == "production"
    periods.loc[prod, "s_running"] = periods.loc[prod, "s_idle"]
    periods.loc[prod, "s_idle"] = 0.0
    periods.loc[prod, "ideal_time_s"] = periods.loc[prod, "s_running"] * 0.6
    periods.loc[prod, "total_count"] = periods.loc[prod, "ideal_time_s"]
    stops = stops.iloc[0:0]
    result = compute_oee(periods, stops, OeePolicy())
    assert result.utilization == pytest.approx(66 / 168, abs=1e-12)
    assert round(100 * result.utilization, 1) == 39.3
    assert round(100 * result.teep, 1) == 23.6


# --- rules -------------------------------------------------------------------------------------------


def _one_hour(spans, counts=None, kind_calendar=None):
    start = at("2024-03-04 08:00")
    cal = kind_calendar or Calendar()  # no shifts: production all the time
    rows = sequence("m1", start, spans)
    end = rows[-1][2]
    return build(intervals_frame(rows), counts, cal, start, end)


def test_small_stop_threshold_uses_full_duration() -> None:
    # A 119 s stop is a small stop (run time); a 120 s stop is a breakdown (availability).
    periods, stops = _one_hour(
        [(10, "running"), (119 / 60, "unplanned_stop"), (10, "running"), (2, "unplanned_stop"), (10, "running")]
    )
    result = compute_oee(periods, stops, OeePolicy(small_stop_threshold_s=120))
    assert result.totals.small_stop_s == pytest.approx(119)
    assert result.totals.breakdown_s == pytest.approx(120)
    assert result.run_time_s == pytest.approx(30 * 60 + 119)
    # Raising the threshold turns the 120 s stop into a small stop.
    wider = compute_oee(periods, stops, OeePolicy(small_stop_threshold_s=300))
    assert wider.totals.breakdown_s == 0
    assert wider.totals.small_stop_s == pytest.approx(239)


def test_stop_straddling_the_window_is_classified_by_full_duration() -> None:
    # A 200 s stop starting 60 s before the window end: only 60 s are inside, still a breakdown.
    start = at("2024-03-04 08:00")
    rows = [
        ("m1", start, start + dt.timedelta(seconds=3540), "running"),
        ("m1", start + dt.timedelta(seconds=3540), start + dt.timedelta(seconds=3740), "unplanned_stop"),
    ]
    intervals = intervals_frame(rows)
    periods, stops = build(intervals, None, Calendar(), start, start + dt.timedelta(hours=1))
    result = compute_oee(periods, stops, OeePolicy(small_stop_threshold_s=120))
    assert result.totals.breakdown_s == pytest.approx(60)
    assert result.totals.small_stop_s == 0


def test_ongoing_stop_ends_at_now() -> None:
    start = at("2024-03-04 08:00")
    rows = [
        ("m1", start, start + dt.timedelta(minutes=50), "running"),
        ("m1", start + dt.timedelta(minutes=50), None, "unplanned_stop"),
    ]
    intervals = intervals_frame(rows)
    now = start + dt.timedelta(minutes=60)
    periods, _ = build(intervals.fillna({"end": pd.Timestamp(now)}), None, Calendar(), start, now)
    stops = pd.DataFrame(
        [("m1", 1, rows[1][1], pd.NaT, "unplanned_stop", None, None, None, None)],
        columns=["machine", "stop_id", "start_ts", "end_ts", "state", "reason_code", "planned", "failure", "loss"],
    )
    stops["end_ts"] = pd.to_datetime(stops["end_ts"], utc=True)
    result = compute_oee(periods, stops, OeePolicy(), now=now)
    assert result.totals.breakdown_s == pytest.approx(600)
    # Ten minutes of an ongoing stop with a 20-minute threshold is (provisionally) a small stop.
    provisional = compute_oee(periods, stops, OeePolicy(small_stop_threshold_s=1200), now=now)
    assert provisional.totals.small_stop_s == pytest.approx(600)


def test_planned_stop_setting() -> None:
    """Default (OEE.com): calendar planned stops and setup count against availability. Off: both leave PPT."""
    cal = Calendar(
        shifts=[Shift(name="a", start=dt.time(6), end=dt.time(14))],
        exceptions=[
            CalendarException(
                kind="planned_stop", start=dt.datetime(2024, 3, 4, 7), end=dt.datetime(2024, 3, 4, 8), name="PM"
            )
        ],
    )
    start = at("2024-03-04 06:00")
    rows = sequence("m1", start, [(60, "running"), (60, "planned_stop"), (30, "setup"), (330, "running")])
    periods, stops = build(intervals_frame(rows), None, cal, start, at("2024-03-04 14:00"))
    counted = compute_oee(periods, stops, OeePolicy(planned_stops_count_against_availability=True))
    assert counted.planned_production_time_s == 8 * 3600
    assert counted.six_big_losses.setup_adjustments_s == 90 * 60
    assert counted.availability == pytest.approx(390 / 480)
    excluded = compute_oee(periods, stops, OeePolicy(planned_stops_count_against_availability=False))
    assert excluded.planned_production_time_s == 390 * 60
    assert excluded.availability == 1.0
    schedule = next(s for s in excluded.waterfall if s.name == "schedule_loss")
    assert schedule.details["planned_stops_excluded_s"] == 30 * 60  # the setup state inside production
    assert schedule.details["not_scheduled_s"] == 60 * 60  # the calendar planned stop
    # ISO 22400 keeps setup inside PBT and planned down time outside, whatever the OEE.com setting.
    assert counted.iso22400 == excluded.iso22400
    assert counted.iso22400.pdot_s == 60 * 60
    assert counted.iso22400.asut_s == 30 * 60


def test_reason_overrides_state_for_planned() -> None:
    # An idle stop whose reason is planned (e.g. a team meeting) is a planned stop, not a breakdown.
    periods, stops = _one_hour([(30, "running"), (20, "idle"), (10, "running")])
    stops = set_reason(stops, stops["state"] == "idle", "meeting", planned=True, failure=False)
    result = compute_oee(periods, stops, OeePolicy())
    assert result.totals.setup_s == pytest.approx(1200)
    assert result.totals.breakdown_s == 0


def test_offline_is_neither_run_nor_stop_and_is_reported() -> None:
    periods, stops = _one_hour([(30, "running"), (15, "offline"), (15, "unplanned_stop")])
    result = compute_oee(periods, stops, OeePolicy())
    assert result.planned_production_time_s == 45 * 60
    assert result.availability == pytest.approx(30 / 45)
    assert result.totals.no_data_s == 15 * 60
    assert result.data_coverage == pytest.approx(45 / 60)
    assert result.observed_time_s == 45 * 60
    assert FLAG_NO_DATA in result.flags
    # A gap in the raw intervals is no data as well.
    start = at("2024-03-04 08:00")
    gap = intervals_frame([("m1", start, start + dt.timedelta(minutes=30), "running")])
    periods2, stops2 = build(gap, None, Calendar(), start, start + dt.timedelta(hours=1))
    assert compute_oee(periods2, stops2, OeePolicy()).totals.no_data_s == 30 * 60


def test_ppt_zero_convention() -> None:
    """No planned production time: every ratio is None (undefined), never 0 or 1; sums still roll up."""
    cal = Calendar(shifts=[Shift(name="a", start=dt.time(6), end=dt.time(14), days=["mon"])])
    start = at("2024-03-05 08:00")  # a Tuesday: no shift
    periods, stops = build(
        intervals_frame(sequence("m1", start, [(60, "idle")])), None, cal, start, start + dt.timedelta(hours=1)
    )
    idle = compute_oee(periods, stops, OeePolicy())
    assert idle.planned_production_time_s == 0
    for value in (idle.availability, idle.performance, idle.quality, idle.oee, idle.iso22400.availability):
        assert value is None
    # Utilization and TEEP are over observed time, which is not zero: nothing was scheduled in it.
    assert (idle.utilization, idle.teep) == (0.0, 0.0)
    assert FLAG_NO_PPT in idle.flags
    assert idle.to_dict()["oee"] is None
    # Rolled up with a scheduled machine, the unscheduled one adds nothing and changes nothing.
    busy_periods, busy_stops = _one_hour([(45, "running"), (15, "unplanned_stop")])
    busy = compute_oee(busy_periods, busy_stops, OeePolicy())
    both = rollup([idle, busy])
    assert both.availability == busy.availability
    assert both.utilization == pytest.approx(0.5)  # 1 h of PPT in 2 h observed
    # Scheduled but never ran: availability 0, OEE 0, performance undefined.
    down_periods, down_stops = _one_hour([(60, "unplanned_stop")])
    down = compute_oee(down_periods, down_stops, OeePolicy())
    assert (down.availability, down.oee, down.performance) == (0.0, 0.0, None)


def test_performance_above_one_is_capped_and_flagged() -> None:
    counts = counts_frame([("m1", at("2024-03-04 08:30"), 4000, 0, 1.0)])  # 4000 s of ideal time in 3600 s
    periods, stops = _one_hour([(60, "running")], counts)
    result = compute_oee(periods, stops, OeePolicy())
    assert result.performance == 1.0
    assert result.performance_uncapped == pytest.approx(4000 / 3600)
    assert FLAG_PERFORMANCE_CAPPED in result.flags
    assert result.iso22400.effectiveness == pytest.approx(4000 / 3600)  # ISO: unclipped
    assert result.oee <= 1.0


def test_mixed_products_performance_uses_summed_ideal_time() -> None:
    counts = counts_frame(
        [
            ("m1", at("2024-03-04 08:10"), 600, 0, 2.0),  # product A, 2 s
            ("m1", at("2024-03-04 08:40"), 900, 0, 1.5),
        ]
    )  # product B, 1.5 s
    periods, stops = _one_hour([(60, "running")], counts)
    result = compute_oee(periods, stops, OeePolicy())
    assert result.performance == pytest.approx((600 * 2.0 + 900 * 1.5) / 3600)


def test_startup_rejects_are_split_from_production_rejects() -> None:
    start = at("2024-03-04 08:00")
    rows = sequence("m1", start, [(20, "setup"), (40, "running")])
    counts = counts_frame(
        [
            ("m1", start + dt.timedelta(minutes=22), 100, 10, 1.0),  # 2 min after setup
            ("m1", start + dt.timedelta(minutes=50), 1000, 5, 1.0),
        ]
    )
    periods, stops = build(
        intervals_frame(rows), counts, Calendar(), start, start + dt.timedelta(hours=1), startup_window_s=300
    )
    six = compute_oee(periods, stops, OeePolicy()).six_big_losses
    assert six.startup_reject_count == 10
    assert six.production_reject_count == 5
    assert six.startup_rejects_s == pytest.approx(10.0)
    assert six.production_rejects_s == pytest.approx(5.0)


def test_unscheduled_running_is_added_to_ppt() -> None:
    cal = Calendar(
        shifts=[
            Shift(name="a", start=dt.time(6), end=dt.time(14), breaks=[Break(start=dt.time(10), end=dt.time(10, 30))])
        ]
    )
    start = at("2024-03-04 09:00")
    rows = sequence("m1", start, [(120, "running")])  # runs through the break
    counts = counts_frame([("m1", at("2024-03-04 10:15"), 7200, 0, 1.0)])
    periods, stops = build(intervals_frame(rows), counts, cal, start, at("2024-03-04 11:00"))
    result = compute_oee(periods, stops, OeePolicy())
    assert result.planned_production_time_s == 7200
    assert result.performance == 1.0 and FLAG_PERFORMANCE_CAPPED not in result.flags
    assert FLAG_UNSCHEDULED_PRODUCTION in result.flags


def test_starved_and_blocked_are_line_losses_not_breakdowns() -> None:
    periods, stops = _one_hour([(40, "running"), (10, "starved"), (5, "blocked"), (5, "unplanned_stop")])
    result = compute_oee(periods, stops, OeePolicy())
    six = result.six_big_losses
    assert (six.starved_s, six.blocked_s, six.breakdowns_s) == (600, 300, 300)
    assert result.availability == pytest.approx(40 / 60)
    assert result.availability_excluding_line_losses == pytest.approx(40 / 45)


def test_rollup_sums_times_where_averaging_is_wrong() -> None:
    """Two machines: one with 8 h scheduled at OEE 0.9, one with 1 h at OEE 0.1. The mean of the OEEs
    (0.5) is wrong; the time-weighted roll-up is (0.9 x 8 + 0.1 x 1) / 9."""
    a = counts_frame([("a", at("2024-03-04 09:00"), int(0.9 * 8 * 3600), 0, 1.0)])
    pa, sa = build(
        intervals_frame(sequence("a", at("2024-03-04 06:00"), [(480, "running")])),
        a,
        Calendar(),
        at("2024-03-04 06:00"),
        at("2024-03-04 14:00"),
    )
    b = counts_frame([("b", at("2024-03-04 06:30"), 360, 0, 1.0)])
    pb, sb = build(
        intervals_frame(sequence("b", at("2024-03-04 06:00"), [(60, "running")])),
        b,
        Calendar(),
        at("2024-03-04 06:00"),
        at("2024-03-04 07:00"),
    )
    ra, rb = compute_oee(pa, sa, OeePolicy()), compute_oee(pb, sb, OeePolicy())
    assert (ra.oee, rb.oee) == (pytest.approx(0.9), pytest.approx(0.1))
    combined = rollup([ra, rb])
    assert combined.oee == pytest.approx((0.9 * 8 + 0.1 * 1) / 9)
    assert combined.oee != pytest.approx((ra.oee + rb.oee) / 2)
    # The same through one call over both machines' periods, and grouped by machine.
    together = compute_oee(pd.concat([pa, pb]), pd.concat([sa, sb]), OeePolicy())
    assert together.totals == combined.totals
    grouped = oee_by(pd.concat([pa, pb]), pd.concat([sa, sb]), OeePolicy(), "machine")
    assert grouped["a"].oee == ra.oee and grouped["b"].oee == rb.oee
    assert sum((r.totals for r in grouped.values()), OeeTotals()) == together.totals


def test_inconsistent_stop_rows_never_double_count() -> None:
    """Two stop rows claim the same minutes (a manual and an automatic entry): state time wins."""
    periods, stops = _one_hour([(40, "running"), (20, "unplanned_stop")])
    duplicate = pd.concat([stops, stops.assign(stop_id=99)], ignore_index=True)
    result = compute_oee(periods, duplicate, OeePolicy())
    assert result.planned_production_time_s == 3600
    assert result.totals.breakdown_s == pytest.approx(1200)


def test_ledger_rejects_unknown_calendar_kind() -> None:
    periods, stops = _one_hour([(60, "running")])
    periods.loc[0, "calendar_kind"] = "holiday"
    with pytest.raises(ValueError, match="calendar_kind"):
        build_ledger(periods, stops, OeePolicy())
