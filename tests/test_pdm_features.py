"""PdM features: binning (the SQL twin's reference), sensor faults as data quality, regimes, drivers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.pdm.data import FleetHistory, bin_telemetry, history_from_truth
from analytics.pdm.features import FeatureConfig, fleet_features
from analytics.pdm.risk import drivers
from bench.pdm import simulate_fleet

T0 = pd.Timestamp("2026-03-02T00:00:00Z")


def test_bin_statistics_exclude_faulty_samples():
    ts = T0 + pd.to_timedelta(np.arange(12) * 50, unit="s")
    values = [1.0, 2.0, 3.0, 4.0, 0.0, 32767.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    raw = pd.DataFrame({"machine": "M", "ts": ts, "metric": "vibration_rms", "value": values})
    out = bin_telemetry(raw, T0, 600.0).iloc[0]
    clean = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    assert (out["n"], out["n_zero"], out["n_out_of_range"], out["n_clean"]) == (12, 1, 1, 10)
    assert out["median"] == pytest.approx(np.median(clean))
    assert out["q60"] == pytest.approx(np.quantile(clean, 0.6))
    assert out["std"] == pytest.approx(np.std(clean))
    assert out["rms"] == pytest.approx(np.sqrt(np.mean(clean**2)))
    m4 = np.mean((clean - clean.mean()) ** 4)
    assert out["kurtosis"] == pytest.approx(m4 / np.var(clean) ** 2)
    assert (out["vmin"], out["vmax"]) == (1.0, 10.0)


@pytest.fixture(scope="module")
def small_fleet():
    truth, history = simulate_fleet("FT", 5, "train", seed=5, days=14, telemetry_every_s=30.0)
    return truth, history


def _inject(truth, machine: str, channel: str, kind: str, start: pd.Timestamp, hours: float) -> pd.DataFrame:
    tele = truth.telemetry.copy()
    sel = ((tele["machine_id"] == machine) & (tele["metric"] == channel) & (tele["ts"] >= start)
           & (tele["ts"] < start + pd.Timedelta(hours=hours))).to_numpy()
    values = tele["value"].to_numpy(copy=True)
    if kind == "flat_line":
        values[sel] = 0.0
    elif kind == "stuck":
        values[sel] = values[np.flatnonzero(sel)[0]]
    elif kind == "out_of_range":
        values[sel] = 32767.0
    elif kind == "dropout":
        return tele[~sel].reset_index(drop=True)
    tele["value"] = values
    return tele


@pytest.mark.parametrize("kind", ["flat_line", "stuck", "out_of_range", "dropout"])
def test_sensor_faults_are_data_quality_not_wear(small_fleet, kind):
    truth, history = small_fleet
    machine = "FT-M05"  # never fails: any excursion would be a false signal
    start = pd.Timestamp("2026-03-10T08:00:00Z")  # a Tuesday morning shift
    cfg = FeatureConfig()
    clean, _, _ = fleet_features(history, cfg)
    faulty_hist = history_from_truth(truth, telemetry=_inject(truth, machine, "vibration_rms", kind, start, 3.0))
    faulty, dq, _ = fleet_features(faulty_hist, cfg)
    mine = dq[(dq["machine"] == machine) & (dq["channel"] == "vibration_rms") & (dq["kind"] == kind)]
    overlapping = mine[(mine["start"] < start + pd.Timedelta(hours=3)) & (mine["end"] > start)]
    assert overlapping["bins"].sum() >= 12, f"{kind} over 3 h not reported as a data-quality issue"
    a = clean[clean["machine"] == machine]["vibration_rms_level"].to_numpy()
    b = faulty[faulty["machine"] == machine]["vibration_rms_level"].to_numpy()
    both = np.isfinite(a) & np.isfinite(b)
    assert np.nanmax(np.abs(a[both] - b[both])) < 0.02


def test_product_change_does_not_read_as_wear(small_fleet):
    _truth, history = small_fleet
    samples, _, baselines = fleet_features(history, FeatureConfig())
    healthy = samples[samples["machine"] == "FT-M05"].dropna(subset=["motor_current_level"])
    base = baselines["FT-M05"].levels["motor_current"]
    assert base["B"] / base["A"] == pytest.approx(1.15, abs=0.03)  # the simulator's product factor
    by_product = healthy.groupby("product")["motor_current_level"].median()
    assert set(by_product.index) == {"A", "B"}
    assert by_product.abs().max() < 0.02  # both regimes sit on their own baseline


def test_drivers_in_words():
    row = {"vibration_rms_level": 0.54, "vibration_rms_trend72": 0.44, "vibration_rms_span72_h": 72.0,
           "motor_current_level": 0.01, "micro_ratio": 2.1, "warn_rate_h": 0.0}
    assert drivers(row) == ["vibration RMS up 40 % over 3 days", "micro-stops doubled"]
    quiet = {"vibration_rms_level": 0.02, "micro_ratio": 1.1}
    assert drivers(quiet) == []


def test_windows_run_on_running_time_over_weekend(small_fleet):
    _truth, history = small_fleet
    samples, _, _ = fleet_features(history, FeatureConfig())
    m = samples[samples["machine"] == "FT-M05"].set_index("ts")
    # Saturday: nothing runs, so the level holds and nothing about the weekend is new evidence.
    fri = m.loc[pd.Timestamp("2026-03-06T21:00:00Z"), "motor_current_level"]
    sun = m.loc[pd.Timestamp("2026-03-08T12:00:00Z"), "motor_current_level"]
    assert m.loc[pd.Timestamp("2026-03-08T12:00:00Z"), "prod_ahead_h"] < 24
    assert sun == pytest.approx(fri, abs=0.005)


def _daily_swing(samples: pd.DataFrame, machine: str) -> float:
    """Range of the hour-of-day medians of a machine's bearing temperature level."""
    m = samples[samples["machine"] == machine].dropna(subset=["bearing_temp_level"])
    by_hour = m.groupby(m["ts"].dt.hour)["bearing_temp_level"].median()
    return float(by_hour.max() - by_hour.min())


def test_the_halls_daily_temperature_cycle_is_not_read_as_wear(small_fleet):
    # The simulator's ambient swings +-4 degC a day around 22 degC for every machine of the site, about
    # +-10 % of a running bearing's temperature: a machine that never wears must not show it as a level.
    _truth, history = small_fleet
    cfg = FeatureConfig()
    samples, _dq, _b = fleet_features(history, cfg)
    alone = FleetHistory(history.start, history.end, history.bin_s, ["FT-M05"],
                         history.bins[history.bins["machine"] == "FT-M05"],
                         history.activity[history.activity["machine"] == "FT-M05"], history.failures.iloc[0:0],
                         history.production)
    raw, _dq, _b = fleet_features(alone, cfg)  # one machine: no fleet to take a common mode from
    assert _daily_swing(raw, "FT-M05") > 0.1
    assert _daily_swing(samples, "FT-M05") < 0.03


def test_common_mode_keeps_one_machines_own_rise(small_fleet):
    _truth, history = small_fleet
    bins = history.bins.copy()
    sel = ((bins["machine"] == "FT-M05") & (bins["metric"] == "bearing_temp")
           & (bins["bin_start"] >= T0 + pd.Timedelta(days=9)))
    for col in ("median", "q60", "q70", "mean", "vmin", "vmax"):
        bins.loc[sel, col] += 8.0  # one machine 8 degC warmer from day 9: wear, not weather
    warm = FleetHistory(history.start, history.end, history.bin_s, history.machines, bins, history.activity,
                        history.failures, history.production)
    cfg = FeatureConfig()
    base, _dq, _b = fleet_features(history, cfg)
    hot, _dq, _b = fleet_features(warm, cfg)
    late = (base["machine"] == "FT-M05") & (base["ts"] >= T0 + pd.Timedelta(days=10))
    rise = (hot.loc[late, "bearing_temp_level"] - base.loc[late, "bearing_temp_level"]).median()
    # Relative to a running bearing of about 40 degC: ~0.2; the other machines are not moved.
    assert rise > 0.15
    others = (base["machine"] != "FT-M05") & (base["ts"] >= T0 + pd.Timedelta(days=10))
    moved = (hot.loc[others, "bearing_temp_level"] - base.loc[others, "bearing_temp_level"]).abs().median()
    assert moved < 0.01
