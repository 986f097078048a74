"""PdM building blocks with exact answers: time to the failure level, evaluations of several fleets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.pdm.data import CHANNELS
from analytics.pdm.evaluation import combine, evaluate
from analytics.pdm.models import TimeToFailureLevel

T0 = pd.Timestamp("2026-03-02T00:00:00Z")


def _samples(levels: np.ndarray, trend12: np.ndarray, rul: np.ndarray | None = None) -> pd.DataFrame:
    cols: dict[str, object] = {}
    for ch in CHANNELS:
        cols[f"{ch}_level"] = levels
        cols[f"{ch}_trend12"] = trend12
    if rul is not None:
        cols["rul_h"] = rul
    return pd.DataFrame(cols)


def test_time_to_failure_level_extrapolates_the_recent_rate():
    # Training: the level was 0.6 in the last running hours before failures (and 0.1 far from them).
    fit = _samples(np.array([0.6, 0.6, 0.6, 0.6, 0.1]), np.zeros(5), np.array([0.5, 1.0, 1.5, 2.0, 50.0]))
    ttf = TimeToFailureLevel().fit(fit)
    assert ttf.failure_levels_["vibration_rms"] == pytest.approx(0.6)
    # Level 0.3 rising 0.12 per 12 running hours (0.01 / h): 30 h to 0.6.  Faster wear: 10 h. At or past
    # the failure level: 0. Not rising: the cap. No level: NaN.
    x = _samples(np.array([0.3, 0.3, 0.7, 0.3, np.nan]), np.array([0.12, 0.36, 0.1, -0.05, 0.1]))
    out = ttf.transform(x)["cycle_time_ttf_h"].to_numpy()
    assert out[:4] == pytest.approx([30.0, 10.0, 0.0, 240.0])
    assert np.isnan(out[4])


def test_time_to_failure_level_falls_as_wear_grows():
    ttf = TimeToFailureLevel().fit(_samples(np.full(4, 0.5), np.zeros(4), np.full(4, 1.0)))
    amount = np.linspace(0.01, 1.0, 30)
    # Injected wear scales both the level and its trend: the extrapolated time never rises with it.
    out = ttf.transform(_samples(0.4 * amount, 0.2 * amount))["motor_current_ttf_h"].to_numpy()
    assert np.all(np.diff(out) <= 1e-12)


def _fleet(machine: str, fail_h: float, alarm_h: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = T0 + pd.to_timedelta(np.arange(0, 24 * 14, 0.5), unit="h")
    p = np.zeros(ts.size)
    level = np.full(ts.size, "ok", dtype=object)
    fail = T0 + pd.Timedelta(hours=fail_h)
    if alarm_h is not None:
        on = (ts >= T0 + pd.Timedelta(hours=alarm_h)) & (ts < fail)
        p[on] = 0.9
        level[on] = "act"
    scored = pd.DataFrame({"machine": machine, "ts": ts, "probability": p, "level": level})
    failures = pd.DataFrame({"machine": [machine], "ts": [fail], "repair_end": [fail + pd.Timedelta(hours=2)],
                             "in_scope": [True]})
    return scored, failures


def test_several_fleets_are_judged_each_over_its_own_period_and_added_up():
    end = T0 + pd.Timedelta(days=14)
    evs = []
    # Fleet A: alarm 10 h ahead (warned). Fleet B: 30 h ahead (premature). Fleet C: none (missed).
    for machine, alarm in (("A-M1", 100.0 - 10.0), ("B-M1", 200.0 - 30.0), ("C-M1", None)):
        fail_h = 100.0 if machine == "A-M1" else 200.0
        scored, failures = _fleet(machine, fail_h, alarm)
        evs.append(evaluate(scored, failures, release_p=0.5, start=T0, end=end))
    ev = combine(evs)
    assert (ev.failures, ev.warned, ev.premature, ev.missed) == (3, 1, 1, 1)
    assert ev.warned_share == pytest.approx(1 / 3)
    assert ev.premature_share == pytest.approx(1 / 2)
    assert ev.machine_weeks == pytest.approx(3 * 2.0)
    assert sorted(ev.leads_h) == pytest.approx([10.0, 30.0])
    assert ev.premature_alarms_per_machine_week == pytest.approx(1 / 6)
