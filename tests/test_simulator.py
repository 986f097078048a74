"""Line simulator: reproducibility, ground truth consistency, true OEE, degradation, telemetry, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from andon.plant import PlantModel, load_plant_model
from simulator import cli
from simulator.config import SimulationConfig, SimulationConfigError, load_simulation_config, parse_simulation_config
from simulator.simulation import LineSimulation, parse_duration, simulate
from simulator.telemetry import OUT_OF_RANGE_VALUE, first_order_lag
from simulator.truth import GroundTruth, true_oee, truth_to_events

REPO = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday


@pytest.fixture(scope="module")
def plant() -> PlantModel:
    return load_plant_model(REPO / "config" / "plant.yaml")


@pytest.fixture(scope="module")
def sim_config() -> SimulationConfig:
    return load_simulation_config(REPO / "config" / "simulation.yaml")


@pytest.fixture(scope="module")
def truth(plant: PlantModel, sim_config: SimulationConfig) -> GroundTruth:
    return simulate(plant, sim_config, seed=42, start=START, duration=dt.timedelta(days=4))


def _wear_config(clock: str = "running") -> SimulationConfig:
    """Fast wear on L1-M3 so a few days show several degradation failures; L1-M6 never fails."""
    return SimulationConfig.model_validate({
        "line": {"product_mix": {"A": 0.5, "B": 0.5}},
        "defaults": {"failures": {"clock": clock}, "telemetry": {"product_factors": {"B": 1.2}}},
        "machines": {
            "L1-M3": {"failures": {"enabled": False}, "degradation": {
                "enabled": True, "onset": {"dist": "weibull", "shape": 2, "scale": 6, "unit": "h"},
                "duration": {"dist": "lognormal", "median": 10, "sigma": 0.2, "unit": "h"}}},
            "L1-M6": {"never_fails": True},
        },
    })


# --- configuration -----------------------------------------------------------------------------------


def test_config_overrides_merge_and_fail_with_the_machine_named(sim_config: SimulationConfig) -> None:
    m4 = sim_config.for_machine("L1-M4")
    assert m4.degradation.enabled and m4.degradation.form == "gamma"
    assert m4.failures.repair.dist == "empirical"
    # Unnamed fields keep their defaults.
    assert m4.failures.time_between == sim_config.defaults.failures.time_between
    assert sim_config.for_machine("L1-M6").never_fails
    with pytest.raises(SimulationConfigError, match="L1-M1"):
        parse_simulation_config("machines:\n  L1-M1:\n    quality: {scrap_probability: 2}\n")
    with pytest.raises(SimulationConfigError, match="dist"):
        parse_simulation_config("defaults:\n  failures:\n    repair: {dist: pareto, mean: 3}\n")


def test_parse_duration() -> None:
    assert parse_duration("90m") == dt.timedelta(minutes=90)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("30d") == dt.timedelta(days=30)
    for bad in ("", "3x", "-2h", "0d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --- reproducibility ---------------------------------------------------------------------------------


def test_same_seed_same_truth_and_different_seed_differs(plant: PlantModel, sim_config: SimulationConfig,
                                                         truth: GroundTruth) -> None:
    again = simulate(plant, sim_config, seed=42, start=START, duration=dt.timedelta(days=4))
    for name in ("states", "parts", "failures", "health", "warnings", "telemetry", "sensor_faults"):
        pd.testing.assert_frame_equal(getattr(truth, name), getattr(again, name), check_exact=True)
    other = simulate(plant, sim_config, seed=43, start=START, duration=dt.timedelta(days=4))
    assert not other.parts["ts"].reset_index(drop=True).equals(truth.parts["ts"].reset_index(drop=True))
    assert not np.array_equal(other.telemetry["value"].to_numpy()[:1000], truth.telemetry["value"].to_numpy()[:1000])


def test_stepping_gives_the_fast_mode_records(plant: PlantModel, sim_config: SimulationConfig,
                                              truth: GroundTruth) -> None:
    sim = LineSimulation(plant, sim_config, seed=42, start=START)
    end = START + dt.timedelta(days=4)
    parts, states, failures = [], [], []
    t = START
    while t < end:
        t = min(t + dt.timedelta(minutes=53), end)
        s, p, f = sim.advance_to(t)
        parts.append(p)
        states.append(s)
        failures.append(f)
        now = sim.current_states(t - dt.timedelta(seconds=1))
        assert set(now) == set(truth.meta["machines"])
    stepped = pd.concat(parts).sort_values(["machine_id", "part_id"], ignore_index=True)
    fast = truth.parts.sort_values(["machine_id", "part_id"], ignore_index=True)
    pd.testing.assert_frame_equal(stepped, fast, check_dtype=False)
    assert pd.concat(failures)["failure_id"].tolist() == truth.failures["failure_id"].tolist()
    # Engine states reported while stepping are the truth's non-calendar states.
    engine_states = truth.states[~truth.states["state"].isin(["idle", "planned_stop"])]
    assert set(pd.concat(states)["start"]) >= set(engine_states["start"]) - {truth.start}


# --- ground truth consistency ------------------------------------------------------------------------


def test_states_tile_the_window_and_respect_the_calendar(truth: GroundTruth) -> None:
    window = (truth.end - truth.start).total_seconds()
    cal = truth.calendar
    production = cal[cal["kind"] == "production"]
    for mid, g in truth.states.groupby("machine_id"):
        g = g.sort_values("start")
        assert g["start"].iloc[0] == truth.start and g["end"].iloc[-1] == truth.end
        assert (g["start"].iloc[1:].to_numpy() == g["end"].iloc[:-1].to_numpy()).all(), mid
        assert (g["end"] > g["start"]).all()
        assert (g["end"] - g["start"]).dt.total_seconds().sum() == pytest.approx(window)
        # Outside production segments a machine is idle (or in a calendar planned stop), never running.
        active = g[~g["state"].isin(["idle", "planned_stop"])]
        idx = np.searchsorted(production["start"].to_numpy(), active["start"].to_numpy(), side="right") - 1
        assert (idx >= 0).all()
        assert (active["end"].to_numpy() <= production["end"].to_numpy()[idx]).all(), mid
    assert set(truth.states["state"]) <= {s.value for s in MachineState}
    # Every cause is explained: failures carry a fault code whose reason is a failure reason.
    failures = truth.states[truth.states["failure_id"] >= 0]
    assert failures["fault_code"].notna().all() and failures["reason_code"].notna().all()
    jams = truth.states[truth.states["fault_code"] == "JAM"]
    assert jams["small_stop"].all() and (jams["reason_code"] == "jam").all()
    assert ((jams["end"] - jams["start"]).dt.total_seconds() < 120).all()
    assert (truth.states.loc[truth.states["state"] == "setup", "reason_code"] == "changeover").all()


def test_part_flow_is_conserved(truth: GroundTruth) -> None:
    parts = truth.parts
    machines = truth.meta["machines"]
    good_ids = [set(parts.loc[(parts["machine_id"] == m) & parts["good"], "part_id"]) for m in machines]
    all_ids = [set(parts.loc[parts["machine_id"] == m, "part_id"]) for m in machines]
    for i in range(1, len(machines)):
        # A machine only ever works on parts the previous machine passed on as good (or initial WIP).
        wip = {p for p in all_ids[i] if p < 200}
        assert all_ids[i] - wip <= good_ids[i - 1]
        assert not (all_ids[i] & (all_ids[i - 1] - good_ids[i - 1]))
    assert (parts.loc[parts["reject"], "reason_code"].isin(["scrap", "startup-scrap"])).all()
    assert (parts["startup"] & parts["reject"]).any() and (~parts["startup"] & parts["reject"]).any()
    assert (parts["cycle_s"] >= parts["ideal_cycle_s"] - 1e-9).all()


def _independent_oee(truth: GroundTruth, mid: str, a: pd.Timestamp, b: pd.Timestamp) -> dict[str, float]:
    def clipped(frame: pd.DataFrame) -> float:
        s = frame["start"].clip(lower=a, upper=b)
        e = frame["end"].clip(lower=a, upper=b)
        return float((e - s).dt.total_seconds().sum())

    cal = truth.calendar
    ppt = clipped(cal[cal["kind"].isin(["production", "planned_stop"])])
    st = truth.states[truth.states["machine_id"] == mid]
    run = clipped(st[st["state"] == "running"]) + clipped(st[(st["state"] == "unplanned_stop") & st["small_stop"]])
    p = truth.parts[(truth.parts["machine_id"] == mid) & (truth.parts["ts"] >= a) & (truth.parts["ts"] < b)]
    ideal = float(p["ideal_cycle_s"].sum())
    good = int((~p["reject"]).sum())
    return {"A": run / ppt, "P": ideal / run, "Q": good / len(p), "ppt": ppt, "run": run, "total": len(p)}


@pytest.mark.parametrize("window", [(0, 4 * 24), (29, 53), (30.25, 31.5)])
def test_true_oee_equals_the_figures_recomputed_from_records(truth: GroundTruth, window: tuple[float, float]
                                                              ) -> None:
    a = truth.start + pd.Timedelta(hours=window[0])
    b = truth.start + pd.Timedelta(hours=window[1])
    for mid in truth.meta["machines"]:
        f = true_oee(truth, mid, a, b)
        ref = _independent_oee(truth, mid, a, b)
        assert f.planned_production_s == pytest.approx(ref["ppt"], abs=1e-6)
        assert f.run_s == pytest.approx(ref["run"], abs=1e-6)
        assert f.total_count == ref["total"]
        assert f.availability == pytest.approx(ref["A"], rel=1e-12)
        assert f.performance == pytest.approx(ref["P"], rel=1e-12)
        assert f.quality == pytest.approx(ref["Q"], rel=1e-12)
        assert f.oee == pytest.approx(ref["A"] * ref["P"] * ref["Q"], rel=1e-12)
        # OEE.com: every factor stays at or below 100 % when the ideal cycle time is right.
        assert 0 < f.availability <= 1 and 0 < f.performance <= 1 + 1e-9 and 0 < f.quality <= 1
    # Simple OEE = good x ICT / PPT holds too (single-product machine).
    f = true_oee(truth, "L1-M1", a, b)
    assert f.oee == pytest.approx(f.good_count * 50 / f.planned_production_s, rel=1e-9)


def test_planned_stop_segments_count_as_planned_production(plant: PlantModel) -> None:
    data = plant.model_dump(mode="json")
    data["sites"][0]["calendar"]["exceptions"].append(
        {"kind": "planned_stop", "start": "2026-01-06T08:00", "end": "2026-01-06T10:00", "name": "PM",
         "reason": "planned-maintenance"})
    model = PlantModel.model_validate(data)
    truth = simulate(model, SimulationConfig(), seed=1, start=START, duration=dt.timedelta(days=2), telemetry=False)
    pm = truth.states[truth.states["state"] == "planned_stop"]
    assert len(pm) == len(truth.meta["machines"]) and (pm["reason_code"] == "planned-maintenance").all()
    assert ((pm["end"] - pm["start"]).dt.total_seconds() == 7200).all()
    # Mon+Tue: 2 x 24 h of shifts (the Monday night shift starts at 22:00 local) minus breaks.
    ppt_no_pm = true_oee(truth, "L1-M2", truth.start, truth.end).planned_production_s
    truth.meta["planned_stops_count_against_availability"] = False
    assert true_oee(truth, "L1-M2").planned_production_s == pytest.approx(ppt_no_pm - 7200)


# --- degradation and telemetry -----------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["running", "scheduled"])
def test_degradation_raises_vibration_and_ends_in_a_failure(plant: PlantModel, clock: str) -> None:
    truth = simulate(plant, _wear_config(clock), seed=7, start=START, duration=dt.timedelta(days=5))
    wear = truth.failures[truth.failures["mode"] == "degradation"]
    assert len(wear) >= 2 and (wear["machine_id"] == "L1-M3").all()
    assert (wear["degradation_onset"] < wear["ts"]).all()
    assert not (truth.failures["machine_id"] == "L1-M6").any()
    h = truth.health
    assert (h.loc[h["machine_id"] == "L1-M6", "health"] == 1).all()
    m3 = h[h["machine_id"] == "L1-M3"].set_index("ts")["health"]
    assert m3.min() == 0 and m3.max() == 1
    for ts in wear["ts"]:
        # Health reaches 0 at the failure and the repair restores it.
        assert m3[:ts].iloc[-1] < 0.05
    tm = truth.telemetry
    vib = tm[(tm["machine_id"] == "L1-M3") & (tm["metric"] == "vibration_rms") & (tm["sensor_fault"] == "")]
    state = truth.states[truth.states["machine_id"] == "L1-M3"].sort_values("start")
    idx = np.searchsorted(state["start"].to_numpy(), vib["true_ts"].to_numpy(), side="right") - 1
    running = state["state"].to_numpy()[idx] == "running"
    health = np.interp(vib["true_ts"].astype("int64"), m3.index.astype("int64"), m3.to_numpy())
    worn = vib["value"].to_numpy()[running & (health < 0.4)]
    fresh = vib["value"].to_numpy()[running & (health > 0.99)]
    assert worn.size > 50 and fresh.size > 50
    assert np.median(worn) > 1.5 * np.median(fresh)
    # Warnings come more often when health is low.
    w = truth.warnings[truth.warnings["machine_id"] == "L1-M3"]
    assert (w["health"] < 0.5).mean() > (health < 0.5).mean()


def test_telemetry_shapes_and_sensor_faults(plant: PlantModel) -> None:
    rates = {"vibration_rms": 10.0, "bearing_temp": 60.0, "motor_current": 30.0, "cycle_time": 10.0}
    clean = SimulationConfig.model_validate({"defaults": {"telemetry": {
        "rates_s": rates, "sensor_faults": {"rate_per_30d": 0}}}})
    days = 2
    truth = simulate(plant, clean, seed=3, start=START, duration=dt.timedelta(days=days))
    tm = truth.telemetry
    assert list(tm.columns) == ["machine_id", "ts", "true_ts", "metric", "value", "unit", "sensor_fault"]
    counts = tm.groupby(["machine_id", "metric"], observed=True).size()
    for (_, metric), n in counts.items():
        assert n == days * 86400 / rates[metric]
    assert len(counts) == 6 * 4 and (tm["sensor_fault"] == "").all() and (tm["ts"] == tm["true_ts"]).all()
    assert tm["value"].notna().all() and np.isfinite(tm["value"]).all()
    temp = tm[tm["metric"] == "bearing_temp"]["value"]
    assert temp.min() > 10 and temp.max() < 80
    # Every kind of sensor fault shows, flagged.
    faulty = SimulationConfig.model_validate({"defaults": {"telemetry": {
        "rates_s": rates, "sensor_faults": {"rate_per_30d": 40}}}})
    bad = simulate(plant, faulty, seed=3, start=START, duration=dt.timedelta(days=days)).telemetry
    kinds = set(bad["sensor_fault"].astype(str)) - {""}
    assert kinds == {"flat_line", "stuck", "out_of_range", "clock_jump"}  # dropouts leave no rows
    assert len(bad) < len(tm)
    assert (bad.loc[bad["sensor_fault"] == "out_of_range", "value"] == OUT_OF_RANGE_VALUE).all()
    jumped = bad[bad["sensor_fault"] == "clock_jump"]
    assert (jumped["ts"] != jumped["true_ts"]).all()
    assert (bad.loc[bad["sensor_fault"] == "flat_line", "value"] == 0).all()


def test_first_order_lag_matches_the_recursion() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000).cumsum()
    alpha, y0 = 0.97, 3.0
    ref = np.empty_like(x)
    y = y0
    for i, v in enumerate(x):
        y = alpha * y + (1 - alpha) * v
        ref[i] = y
    np.testing.assert_allclose(first_order_lag(x, alpha, y0), ref, rtol=1e-9, atol=1e-9)


# --- export, events, CLI -----------------------------------------------------------------------------


def test_parquet_round_trip_and_events(truth: GroundTruth, tmp_path: Path) -> None:
    truth.write(tmp_path)
    back = GroundTruth.read(tmp_path)
    for name in ("states", "parts", "failures"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(truth, name), check_dtype=False)
    assert len(back.telemetry) == len(truth.telemetry)
    a, b = truth.start + pd.Timedelta(hours=30), truth.start + pd.Timedelta(hours=32)
    events = list(truth_to_events(truth, start=a, end=b))
    states = [e for e in events if isinstance(e, StateChange)]
    counts = [e for e in events if isinstance(e, ProductionCount)]
    samples = [e for e in events if isinstance(e, TelemetrySample)]
    in_window = truth.states[(truth.states["start"] >= a) & (truth.states["start"] < b)]
    assert len(states) == len(in_window) and all(e.source_id == "sim" for e in events)
    assert {e.fault_code for e in states} >= {"JAM"}
    parts = truth.parts[(truth.parts["ts"] >= a) & (truth.parts["ts"] < b)]
    assert len(counts) == len(parts) and sum(c.reject for c in counts) == parts["reject"].sum()
    assert len(samples) == ((truth.telemetry["ts"] >= a) & (truth.telemetry["ts"] < b)).sum()
    assert len({e.key for e in events}) == len(events)
    batched = list(truth_to_events(truth, start=a, end=b, include_states=False, include_telemetry=False,
                                   count_batch_s=600))
    assert sum(c.total for c in batched) == len(parts) and len(batched) < len(parts)
    again = list(truth_to_events(truth, start=a, end=b, include_telemetry=False))
    assert [e.key for e in again] == [e.key for e in events if not isinstance(e, TelemetrySample)]


def test_cli_writes_loadable_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--plant", str(REPO / "config" / "plant.yaml"), "--sim-config",
                              str(REPO / "config" / "simulation.yaml"), "--seed", "5", "--duration", "12h",
                              "--start", "2026-01-05T04:00Z", "--out", str(tmp_path / "out")])
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "L1-M6" in out and "OEE" in out
    truth = GroundTruth.read(tmp_path / "out")
    assert truth.end - truth.start == pd.Timedelta(hours=12)
    assert len(pd.read_parquet(tmp_path / "out" / "telemetry.parquet")) == len(truth.telemetry) > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--plant", "x", "--seed", "1", "--duration", "3x", "--out", "o"])
    bad = parser.parse_args(["--plant", str(tmp_path / "missing.yaml"), "--seed", "1", "--duration", "1h",
                             "--out", str(tmp_path / "o")])
    assert cli.run(bad) == 2
