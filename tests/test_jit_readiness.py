"""JIT readiness on simulated lines of known truth (simulator.simulation -> measured inputs -> what-if)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

from analytics.jit import (
    LineSetup,
    ReadinessSettings,
    Scenario,
    assess,
    draw_work,
    evaluate,
    measure_machines,
    station_model,
)
from analytics.jit.analytic import infinite_buffer_two_machine, zero_buffer_two_machine
from andon.plant import PlantModel
from simulator.config import SimulationConfig
from simulator.simulation import simulate
from simulator.truth import GroundTruth

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
FAST = ReadinessSettings(search_reps=8, search_hours=120.0, search_warmup_hours=40.0, verify_reps=10,
                         verify_hours=200.0, verify_warmup_hours=60.0, scan_blockers=3, refine_blockers=1)
PLAIN = {"cycle_noise_cv": 0.0, "slow_cycles": {"probability": 0.0}, "micro_stops": {"rate_per_h": 0},
         "quality": {"scrap_probability": 0.0, "startup_reject_probability": 0.0}, "telemetry": {"enabled": False}}


def _plant(cycles: list[float], buffers: list[int | None], takt: float = 60.0) -> PlantModel:
    return PlantModel.model_validate({
        "sites": [{"id": "s", "calendar": {"shifts": [
            {"name": "early", "start": "06:00", "end": "14:00", "breaks": [{"start": "10:00", "end": "10:30"}]},
            {"name": "late", "start": "14:00", "end": "22:00"}]},
            "lines": [{"id": "l", "takt_time_s": takt, "machines": [
                {"id": f"M{i + 1}", "ideal_cycle_time_s": c,
                 **({"buffer_after": {"capacity": b, "normal_fill": b}} if b is not None else {}),
                 "fault_map": {"E1*": "broken", "JAM": "jam"}}
                for i, (c, b) in enumerate(zip(cycles, buffers, strict=True))]}]}],
        "reasons": [{"category": "c", "reasons": [{"code": "broken", "failure": True, "loss": "breakdowns"},
                                                   {"code": "jam", "loss": "small_stops"}]}],
    })


def _history(plant: PlantModel, config: dict[str, Any], days: float, seed: int) -> tuple[GroundTruth, list]:
    truth = simulate(plant, SimulationConfig.model_validate(config), seed=seed, start=START,
                     duration=dt.timedelta(days=days), telemetry=False)
    intervals = truth.states.rename(columns={"machine_id": "machine"})[["machine", "start", "end", "state"]]
    counts = pd.DataFrame({"machine": truth.parts["machine_id"], "ts": truth.parts["ts"], "total": 1,
                           "reject": truth.parts["reject"].astype(int)})
    machines = truth.meta["machines"]
    ict = {m.id: m.ideal_cycle_s for m in plant.line("l").machines}
    inputs = measure_machines(machines, ict, intervals, None, counts, truth.start.to_pydatetime(),
                              truth.end.to_pydatetime(), plant.settings.small_stop_threshold_s)
    return truth, inputs


def _setup(plant: PlantModel) -> LineSetup:
    return LineSetup.from_plant(plant.line("l"), plant.site_of_line("l"))


def test_perfectly_reliable_line_is_ready_with_zero_buffers() -> None:
    plant = _plant([50.0, 52.0, 48.0], [10, 10, None])
    _, inputs = _history(plant, {"defaults": {**PLAIN, "cycle_noise_cv": 0.01, "failures": {"enabled": False}}},
                         days=3, seed=1)
    assert all(m.breakdowns.count == 0 and m.micro_stops.count == 0 for m in inputs)
    result = assess(_setup(plant), inputs, seed=5, settings=FAST)
    assert result.verdict == "READY"
    assert result.recommended == (0, 0, 0)
    assert result.recommended_point["ci_low"] >= 0.99
    assert result.to_dict()["recommendation"]["inventory_freed"] == 20
    assert result.blockers == []


def test_line_with_one_long_repair_machine_is_not_ready_and_names_it() -> None:
    plant = _plant([50.0, 50.0, 52.0, 48.0], [10, 10, 10, None])
    config = {
        "defaults": {**PLAIN, "micro_stops": {"rate_per_h": 1.0, "min_s": 10, "max_s": 60},
                     "failures": {"time_between": {"dist": "exponential", "mean": 30, "unit": "h"},
                                  "repair": {"dist": "lognormal", "median": 6, "sigma": 0.5, "unit": "min"}}},
        "machines": {"M2": {"failures": {"time_between": {"dist": "exponential", "mean": 8, "unit": "h"},
                                         "repair": {"dist": "lognormal", "median": 150, "sigma": 0.4,
                                                    "unit": "min"}}}},
    }
    _, inputs = _history(plant, config, days=40, seed=2)
    m2 = next(m for m in inputs if m.machine == "M2")
    assert m2.breakdowns.count >= 30  # enough to resample rather than fit
    result = assess(_setup(plant), inputs, seed=3, settings=FAST)
    out = result.to_dict()
    assert result.verdict == "NOT_READY", out["summary"]
    assert result.blockers[0].machine == "M2"
    assert "M2" in result.summary
    # M2's repairs are the rock: halving them is worth more than anything done at the other machines.
    best_elsewhere = max(b.throughput_gain for b in result.blockers if b.machine != "M2")
    assert max(b.throughput_gain for b in result.blockers if b.machine == "M2") > best_elsewhere
    assert "resampled" in out["inputs"]["M2"]["breakdowns"]


def test_predicted_throughput_matches_a_long_simulator_run() -> None:
    # Inputs measured on a 30-day history with 20-part buffers predict the output of the line with 3-part
    # buffers; the truth is three independent 30-day runs of the plant simulator with 3-part buffers.
    # The simulator is not paced by a customer, so the what-if runs without one (parts per second).
    # Stated tolerance: 2 % of the rate (the run-to-run spread of 30 days is about 1 %).
    config = {"defaults": {"telemetry": {"enabled": False},
                           "failures": {"time_between": {"dist": "weibull", "shape": 1.2, "scale": 12, "unit": "h"},
                                        "repair": {"dist": "lognormal", "median": 10, "sigma": 0.7,
                                                   "unit": "min"}}}}
    _, inputs = _history(_plant([50.0, 55.0, 52.0], [20, 20, None]), config, days=30, seed=11)
    models = [station_model(m) for m in inputs]
    work = draw_work(models, None, 40_000, 8, seed=1, warmup=2_000)
    predicted = evaluate(work, [Scenario((3, 3))])
    truth_rates = []
    for seed in (21, 22, 23):
        truth = simulate(_plant([50.0, 55.0, 52.0], [3, 3, None]), SimulationConfig.model_validate(config),
                         seed=seed, start=START, duration=dt.timedelta(days=30), telemetry=False)
        last = truth.states[truth.states["machine_id"] == "M3"]
        production_s = (last["end"] - last["start"]).dt.total_seconds()[~last["state"].isin(["idle"])].sum()
        good = ((truth.parts["machine_id"] == "M3") & truth.parts["good"]).sum()
        truth_rates.append(good / production_s)
    truth_rate = float(np.mean(truth_rates))
    assert abs(predicted.mean(0) / truth_rate - 1) <= 0.02, (predicted.mean(0), truth_rates)
    # And the buffers matter at all in this line: without them the prediction is clearly lower.
    assert evaluate(work, [Scenario((0, 0))]).mean(0) < 0.97 * predicted.mean(0)


def test_two_machine_line_agrees_with_closed_forms() -> None:
    # Two machines at takt (60 s), exponential failures on the running clock and exponential repairs (the
    # simulator lengthens repairs shorter than the 120 s small-stop threshold to 120 s: E[max(X, 120)]).
    # No buffer: PR = 1 / (1 + MTTR1/MTBF1 + MTTR2/MTBF2); unlimited: min(e1, e2) (§5.4). Stated tolerance:
    # 1.5 points (60 days give about 400 failures per machine: a few % error on each MTTR/MTBF).
    mtbf = (3 * 3600.0, 2 * 3600.0)
    mean_repair = (20 * 60.0, 15 * 60.0)
    floored = [120 + m * math.exp(-120 / m) for m in mean_repair]
    plant = _plant([60.0, 60.0], [5, None])
    config = {"defaults": PLAIN, "machines": {
        f"M{i + 1}": {"failures": {"time_between": {"dist": "exponential", "mean": mtbf[i]},
                                   "repair": {"dist": "exponential", "mean": mean_repair[i]}}} for i in range(2)}}
    _, inputs = _history(plant, config, days=60, seed=4)
    result = assess(_setup(plant), inputs, seed=1, settings=FAST)
    zero = zero_buffer_two_machine(mtbf[0], floored[0], mtbf[1], floored[1])
    unlimited = infinite_buffer_two_machine(mtbf[0], floored[0], mtbf[1], floored[1])
    assert abs(result.zero_point["throughput_fraction"] - zero) <= 0.015, (result.zero_point, zero)
    assert abs(result.unlimited_point["throughput_fraction"] - unlimited) <= 0.015, (result.unlimited_point,
                                                                                     unlimited)
    checks = {c["name"]: c for c in result.cross_checks}
    assert abs(checks["zero-buffer limit"]["analytic"] - zero) <= 0.015
    # At takt the machines cannot refill a buffer: no allocation keeps 99 % and the verdict says so.
    assert result.verdict == "NOT_READY" and not result.reached


def test_same_seed_same_answer() -> None:
    plant = _plant([50.0, 52.0, 48.0], [10, 10, None])
    config = {"defaults": {**PLAIN, "failures": {"time_between": {"dist": "exponential", "mean": 10, "unit": "h"},
                                                 "repair": {"dist": "lognormal", "median": 8, "sigma": 0.6,
                                                            "unit": "min"}}}}
    _, inputs = _history(plant, config, days=10, seed=8)
    a = assess(_setup(plant), inputs, seed=7, settings=FAST).to_dict()
    b = assess(_setup(plant), inputs, seed=7, settings=FAST).to_dict()
    assert a == b
    c = assess(_setup(plant), inputs, seed=8, settings=FAST).to_dict()
    assert c["curves"] != a["curves"]
