"""PdM models on small simulated fleets: grouped validation, an unseen fleet, confounders, monotonicity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.pdm.data import FleetHistory
from analytics.pdm.engine import TrainConfig, fit_model
from analytics.pdm.models import grouped_oof
from bench.pdm import confounder_report, simulate_fleet

LEVEL_ORDER = {"ok": 0, "watch": 1, "act": 2}


@pytest.fixture(scope="module")
def trained():
    _truth, history = simulate_fleet("CA", 10, "train", seed=3, days=42, telemetry_every_s=30.0)
    return fit_model(history, TrainConfig(folds=5)), history


@pytest.fixture(scope="module")
def unseen():
    return simulate_fleet("CB", 10, "test", seed=4, days=35, telemetry_every_s=30.0)


def test_grouped_validation_keeps_each_machine_out_of_its_own_training(trained):
    model, history = trained
    assert model.classifier is not None and model.metrics["cv_folds"] == 5
    assert model.metrics["cv_auc"] > 0.85
    samples, _ = model.features(history)
    samples = samples.assign(label=samples["machine"] == "CA-M01")
    # A label that only says "this is machine M01" cannot be learned when M01 is never in its own training
    # folds: its out-of-fold predictions must come from models that never saw a positive.
    cv = grouped_oof(samples.assign(health=0.0, hazard=np.nan), samples["label"].to_numpy(int), 3)
    mine = cv.probability[samples["machine"].to_numpy() == "CA-M01"]
    assert np.all(mine == 0.0)


def test_unseen_fleet_warns_early_and_ranks_well(trained, unseen):
    model, _ = trained
    truth, history = unseen
    ev, scored = model.evaluate(history)
    assert ev.failures >= 15
    assert ev.warned_share >= 0.6, ev.to_dict()
    assert ev.premature_share <= 0.3, ev.to_dict()
    assert ev.precision_at_k is not None and ev.precision_at_k >= 0.7
    assert ev.false_alarms_per_machine_week <= 0.2
    conf = confounder_report(model, scored, truth)
    assert conf["act_on_never_failing_machines"] == 0
    assert conf["act_during_planned_stops"] == 0
    assert conf["act_during_sensor_faults"] == 0
    assert conf["act_after_product_change"] == 0


def test_without_failure_history_only_the_health_score_speaks(unseen):
    _truth, history = unseen
    healthy = [m for m in history.machines if m.endswith(("M05", "M10"))]  # never_fails machines
    quiet = FleetHistory(history.start, history.end, history.bin_s, healthy,
                         history.bins[history.bins["machine"].isin(healthy)],
                         history.activity[history.activity["machine"].isin(healthy)],
                         history.failures.iloc[0:0], history.production)
    model = fit_model(quiet, TrainConfig())
    assert model.classifier is None and model.weibull is None
    scored = model.score(quiet)
    assert (scored["level"] == "act").sum() == 0


def _with_wear(history: FleetHistory, machine: str, amount: float, end: pd.Timestamp, hours: float) -> FleetHistory:
    """Injects wear into the binned signals of one machine: vibration, current, temperature and cycle time
    rise along a ramp over the last `hours` before `end`, by `amount` at the end (0: unchanged). Cycle
    time drifts as in the simulator (up to +15 % at failure): wear slows the machine, not only its sensors."""
    bins = history.bins.copy()
    ramp = ((bins["bin_start"] - (end - pd.Timedelta(hours=hours))) / pd.Timedelta(hours=hours)).clip(0, 1)
    gain = {"vibration_rms": 3.0, "motor_current": 0.3, "bearing_temp": 0.5, "cycle_time": 0.15}
    for ch, g in gain.items():
        sel = (bins["machine"] == machine) & (bins["metric"] == ch)
        factor = 1.0 + g * amount * ramp[sel] ** 2
        for col in ("median", "q60", "q70", "mean", "rms", "vmin", "vmax"):
            bins.loc[sel, col] = bins.loc[sel, col] * factor
    return FleetHistory(history.start, history.end, history.bin_s, history.machines, bins, history.activity,
                        history.failures, history.production)


@pytest.fixture(scope="module")
def quiet_window(unseen):
    _truth, history = unseen
    machine = next(m for m in history.machines if m.endswith("M05"))
    end = pd.Timestamp("2026-03-26T12:00:00Z")  # a Thursday in the fourth week
    sub = [machine]
    return FleetHistory(history.start, end, history.bin_s, sub, history.bins[history.bins["machine"].isin(sub)
                                                                            & (history.bins["bin_start"] < end)],
                        history.activity[history.activity["machine"].isin(sub) & (history.activity["bin_start"] < end)],
                        history.failures.iloc[0:0], history.production), machine, end


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_more_injected_degradation_never_lowers_risk(trained, quiet_window, a, b):
    model, _ = trained
    history, machine, end = quiet_window
    lo, hi = sorted((a, b))
    r_lo = model.score(_with_wear(history, machine, lo, end, 48.0)).iloc[-1]
    r_hi = model.score(_with_wear(history, machine, hi, end, 48.0)).iloc[-1]
    assert r_hi["probability"] >= r_lo["probability"] - 1e-12
    assert r_hi["act_probability"] >= r_lo["act_probability"] - 1e-12
    assert r_hi["health"] >= r_lo["health"] - 1e-12
    assert LEVEL_ORDER[r_hi["level"]] >= LEVEL_ORDER[r_lo["level"]]


def test_injected_wear_is_seen(trained, quiet_window):
    model, _ = trained
    history, machine, end = quiet_window
    calm = model.score(_with_wear(history, machine, 0.0, end, 48.0)).iloc[-1]
    worn = model.score(_with_wear(history, machine, 1.0, end, 48.0)).iloc[-1]
    assert calm["level"] == "ok"
    assert worn["probability"] > calm["probability"] + 0.3
