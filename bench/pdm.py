#!/usr/bin/env python3
"""Benchmark of the predictive-maintenance risk engine on simulated fleets with ground truth.

Trains on one fleet (seed, parameters) plus, by default, two fleets with randomised wear and sensor
parameters (domain randomisation, seeds following the training seed), and evaluates on a fleet the
model never saw: another seed, other machines, other wear parameters (onset, duration, form, signal
gains), another product mix with a stronger product effect, more sensor faults, planned maintenance
stops. Nothing about the evaluation fleet (its seed or its parameters) is used in training or in
choosing thresholds: those are chosen on out-of-fold predictions of the training fleets. Prints the report; the last
line is one JSON object with warned_share, premature_share, precision_at_k,
false_alarms_per_machine_week and the rest of the measurements.

    python bench/pdm.py [--train-days 60] [--test-days 45] [--train-seed 11] [--test-seed 29]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.pdm.data import FleetHistory, history_from_truth
from analytics.pdm.engine import PdmModel, TrainConfig, fit_model
from analytics.pdm.evaluation import act_during
from analytics.pdm.features import FeatureConfig
from andon.plant import PlantModel
from simulator.config import SimulationConfig
from simulator.simulation import simulate

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday
SHIFTS = {"early": ("06:00", "14:00", [("09:00", "09:15"), ("11:30", "12:00")]),
          "late": ("14:00", "22:00", [("17:00", "17:15"), ("19:30", "20:00")]),
          "night": ("22:00", "06:00", [("02:00", "02:30")])}


def fleet_plant(prefix: str, machines: int, *, days: int, start: dt.datetime = START) -> PlantModel:
    """A line of `machines` machines, three shifts on weekdays, two products, weekly planned maintenance."""
    stops = []
    for week in range(days // 7 + 1):
        day = (start + dt.timedelta(days=7 * week + 2)).date()  # Wednesdays
        stops.append({"kind": "planned_stop", "start": f"{day}T10:00", "end": f"{day}T12:00",
                      "name": "PM", "reason": "planned-maintenance"})
    return PlantModel.model_validate({
        "name": f"pdm-{prefix}",
        "settings": {"small_stop_threshold_s": 120, "min_failure_duration_s": 120},
        "sites": [{
            "id": f"{prefix}-site", "timezone": "Europe/Berlin",
            "calendar": {"shifts": [
                {"name": n, "start": a, "end": b, "days": ["mon", "tue", "wed", "thu", "fri"],
                 "breaks": [{"start": x, "end": y} for x, y in br]} for n, (a, b, br) in SHIFTS.items()],
                "exceptions": stops},
            "lines": [{
                "id": f"{prefix}-line", "takt_time_s": 60,
                "machines": [{
                    "id": f"{prefix}-M{k + 1:02d}",
                    "ideal_cycle_time_s": 45 + (k * 7) % 9,
                    "products": {"A": 45 + (k * 7) % 9, "B": 48 + (k * 7) % 9},
                    "buffer_after": {"capacity": 12, "normal_fill": 6} if k < machines - 1 else None,
                    "fault_map": {"E1*": "motor-overload", "E2*": "bearing-failure", "JAM": "jam"},
                } for k in range(machines)],
            }],
        }],
        "reasons": [
            {"category": "Mechanical", "reasons": [
                {"code": "motor-overload", "failure": True, "loss": "breakdowns"},
                {"code": "bearing-failure", "failure": True, "loss": "breakdowns"}]},
            {"category": "Process", "reasons": [{"code": "jam", "loss": "small_stops"}]},
            {"category": "Planned", "reasons": [
                {"code": "changeover", "planned": True, "loss": "setup_adjustments"},
                {"code": "planned-maintenance", "planned": True, "loss": "setup_adjustments"}]},
        ],
    })


@dataclass(frozen=True)
class FleetParams:
    """The wear and signal parameters of one simulated fleet (what a model could overfit to)."""

    failure_scale_h: float = 45.0  # random breakdowns (out of scope): Weibull scale
    product_b_factor: float = 1.15  # product B's vibration / current baseline relative to A
    vibration_gain: float = 4.0
    temp_health_rise_c: float = 25.0
    current_health_gain_a: float = 4.0
    sensor_faults_per_30d: float = 1.0
    onset_scale_h: float = 120.0  # + 20 h per machine kind
    duration_median_h: float = 50.0  # + 5 h per machine kind
    gamma_kinds_odd: bool = True  # gamma wear on odd machine kinds (exponential on even), or the reverse
    product_a_share: float = 0.6
    lot_mean: float = 400.0


TRAIN = FleetParams()
# The unseen fleet: every parameter above differs (weaker sensor gains, earlier and faster wear, the
# forms swapped between machine kinds, a stronger product effect, more sensor faults).
TEST = FleetParams(failure_scale_h=60.0, product_b_factor=1.25, vibration_gain=3.0, temp_health_rise_c=20.0,
                   current_health_gain_a=3.0, sensor_faults_per_30d=1.5, onset_scale_h=90.0, duration_median_h=40.0,
                   gamma_kinds_odd=False, product_a_share=0.5, lot_mean=300.0)
VARIANTS = {"train": TRAIN, "test": TEST}


def randomised_params(seed: int) -> FleetParams:
    """Domain randomisation for extra training fleets: every sensor gain from 0.55 to 1.1 of the
    training fleet's, wear onset, duration and product effect varied, forms assigned either way. Seeded,
    so a training run is reproducible."""
    rng = np.random.default_rng(seed)

    def vary(x: float, lo: float, hi: float) -> float:
        return float(round(x * rng.uniform(lo, hi), 2))

    return FleetParams(
        failure_scale_h=vary(TRAIN.failure_scale_h, 0.8, 1.5), product_b_factor=float(round(rng.uniform(1.05, 1.3), 2)),
        vibration_gain=vary(TRAIN.vibration_gain, 0.55, 1.1),
        temp_health_rise_c=vary(TRAIN.temp_health_rise_c, 0.55, 1.1),
        current_health_gain_a=vary(TRAIN.current_health_gain_a, 0.55, 1.1),
        sensor_faults_per_30d=vary(TRAIN.sensor_faults_per_30d, 0.8, 1.8),
        onset_scale_h=vary(TRAIN.onset_scale_h, 0.7, 1.1), duration_median_h=vary(TRAIN.duration_median_h, 0.75, 1.15),
        gamma_kinds_odd=bool(rng.random() < 0.5), product_a_share=float(round(rng.uniform(0.4, 0.7), 2)),
        lot_mean=float(round(rng.uniform(250, 450))))


def fleet_config(prefix: str, machines: int, variant: str | FleetParams, *,
                 telemetry_every_s: float = 10.0) -> SimulationConfig:
    """Wear on most machines, healthy ones that never fail, confounders everywhere.

    variant "train" and "test" differ in every wear and signal parameter the model could overfit to."""
    fp = VARIANTS[variant] if isinstance(variant, str) else variant
    rates = dict.fromkeys(("vibration_rms", "bearing_temp", "motor_current", "cycle_time"), telemetry_every_s)
    defaults: dict[str, Any] = {
        "failures": {"time_between": {"dist": "weibull", "shape": 1.1, "scale": fp.failure_scale_h, "unit": "h"}},
        "telemetry": {
            "rates_s": rates,
            "product_factors": {"A": 1.0, "B": fp.product_b_factor},
            "vibration_gain": fp.vibration_gain,
            "temp_health_rise_c": fp.temp_health_rise_c,
            "current_health_gain_a": fp.current_health_gain_a,
            "sensor_faults": {"rate_per_30d": fp.sensor_faults_per_30d},
        },
    }
    per_machine: dict[str, dict[str, Any]] = {}
    for k in range(machines):
        mid = f"{prefix}-M{k + 1:02d}"
        kind = k % 5
        if kind == 4:
            per_machine[mid] = {"never_fails": True}
            continue
        form = "gamma" if (kind % 2 == 1) == fp.gamma_kinds_odd else "exponential"
        per_machine[mid] = {"degradation": {
            "enabled": True, "form": form,
            "onset": {"dist": "weibull", "shape": 2.0, "scale": fp.onset_scale_h + 20 * kind, "unit": "h"},
            "duration": {"dist": "lognormal", "median": fp.duration_median_h + 5 * kind, "sigma": 0.3, "unit": "h"},
            "fault_code": "E205",
            "repair": "imperfect" if kind == 3 else "as_good_as_new",
            "repair_effectiveness": 0.85,
        }, "failures": {"repair": {"dist": "lognormal", "median": 90, "sigma": 0.4, "unit": "min"}}
            if kind == 2 else {}}
    return SimulationConfig.model_validate({
        "line": {"product_mix": {"A": fp.product_a_share, "B": round(1 - fp.product_a_share, 2)},
                 "lot_size": {"dist": "exponential", "mean": fp.lot_mean}},
        "defaults": defaults,
        "machines": per_machine,
    })


def simulate_fleet(prefix: str, machines: int, variant: str | FleetParams, *, seed: int, days: int,
                   telemetry_every_s: float = 10.0) -> tuple[Any, FleetHistory]:
    plant = fleet_plant(prefix, machines, days=days)
    cfg = fleet_config(prefix, machines, variant, telemetry_every_s=telemetry_every_s)
    truth = simulate(plant, cfg, seed=seed, start=START, duration=dt.timedelta(days=days))
    return truth, history_from_truth(truth, small_stop_s=plant.settings.small_stop_threshold_s)


def confounder_report(model: PdmModel, scored: pd.DataFrame, truth: Any) -> dict[str, int]:
    """Samples at act during planned stops, product changes and sensor faults while the machine was truly
    healthy (simulator health >= 0.97, i.e. not yet wearing): each one is a confounder raising a machine."""
    health = truth.health.rename(columns={"machine_id": "machine"}).sort_values("ts")
    health = health.assign(machine=health["machine"].astype(object), ts=health["ts"].astype("datetime64[ns, UTC]"))
    probe = scored[["machine", "ts", "level"]].sort_values("ts")
    probe = probe.assign(machine=probe["machine"].astype(object), ts=probe["ts"].astype("datetime64[ns, UTC]"))
    probe = pd.merge_asof(probe, health[["machine", "ts", "health"]], on="ts", by="machine", direction="backward")
    calm = probe[probe["health"] >= 0.97]
    cal = truth.calendar
    planned = cal[cal["kind"] == "planned_stop"][["start", "end"]]
    faults = truth.sensor_faults.rename(columns={"machine_id": "machine"})[["machine", "start", "end"]]
    states = truth.states
    setups = states[states["state"] == "setup"].rename(columns={"machine_id": "machine"})[["machine", "start", "end"]]
    setups = setups.assign(end=setups["end"] + pd.Timedelta(hours=2))  # the new product's first hours
    healthy_machines = [m for m in truth.meta["machines"] if m not in set(truth.failures.loc[
        truth.failures["mode"] == "degradation", "machine_id"])]
    return {
        "act_during_planned_stops": len(act_during(calm, planned, margin_h=1.0)),
        "act_after_product_change": len(act_during(calm, setups)),
        "act_during_sensor_faults": len(act_during(calm, faults, margin_h=1.0)),
        "act_on_never_failing_machines": int(((scored["level"] == "act")
                                              & scored["machine"].isin(healthy_machines)).sum()),
        "sensor_fault_episodes": len(truth.sensor_faults),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-days", type=int, default=60)
    ap.add_argument("--test-days", type=int, default=45)
    ap.add_argument("--train-machines", type=int, default=10)
    ap.add_argument("--test-machines", type=int, default=12)
    ap.add_argument("--train-seed", type=int, default=11)
    ap.add_argument("--test-seed", type=int, default=29)
    ap.add_argument("--randomised-fleets", type=int, default=2,
                    help="extra training fleets with randomised wear and sensor parameters (seeds train-seed+1..)")
    ap.add_argument("--randomised-days", type=int, default=45)
    ap.add_argument("--recipe", choices=("fleets", "single"), default="fleets",
                    help="fleets: the training fleet plus randomised fleets and a 14 h act candidate (the evaluated "
                         "recipe); single: one fleet's history with the default TrainConfig, as `andon train` fits "
                         "a plant's own history today")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    c0 = time.process_time()
    _train_truth, train_hist = simulate_fleet("TR", args.train_machines, "train", seed=args.train_seed,
                                              days=args.train_days)
    histories = [train_hist]
    randomised = []
    for k in range(args.randomised_fleets if args.recipe == "fleets" else 0):
        seed = args.train_seed + 1 + k
        params = randomised_params(seed)
        randomised.append((seed, params))
        # Coarser telemetry (30 s) for the extra fleets: the 10-minute bins need no more, and it is faster.
        histories.append(simulate_fleet(f"R{k + 1}", args.train_machines, params, seed=seed,
                                        days=args.randomised_days, telemetry_every_s=30.0)[1])
    t_sim = time.perf_counter() - t0
    # No gain-scaled copies: the randomised fleets show wear with other sensor gains for real. A 14 h act
    # classifier is a candidate (kept only if it warns better out of fold than the 24 h one).
    if args.recipe == "fleets":
        model = fit_model(histories, TrainConfig(features=FeatureConfig(act_horizon_h=14.0), gain_augmentation=()))
    else:
        model = fit_model(histories, TrainConfig())
    t_fit = time.perf_counter() - t0 - t_sim
    test_truth, test_hist = simulate_fleet("TE", args.test_machines, "test", seed=args.test_seed, days=args.test_days)
    t1 = time.perf_counter()
    ev, scored = model.evaluate(test_hist)
    t_score = time.perf_counter() - t1
    conf = confounder_report(model, scored, test_truth)
    cv = model.metrics.get("cv", {})
    m = model.metrics
    print(f"train fleets: {args.train_machines} machines x {args.train_days} d, seed {args.train_seed}, plus "
          f"{len(randomised)} randomised fleets x {args.randomised_days} d: {m['in_scope_failures']} wear-out "
          f"failures; act classifier GroupKFold({m.get('cv_folds')}) AUC {m.get('cv_auc')}, "
          f"AP {m.get('cv_average_precision')}")
    for seed, params in randomised:
        print(f"  randomised fleet seed {seed}: {params}")
    print(f"  out-of-fold: warned {cv.get('warned_share')}, premature {cv.get('premature_share')}, "
          f"false alarms/machine-week {cv.get('false_alarms_per_machine_week')}")
    print(f"  act classifier candidates (out of fold): {m.get('act_candidates')}; act horizon "
          f"{m.get('act_horizon_h')} h")
    print(f"  thresholds: {model.thresholds.to_dict()}")
    print(f"  Weibull prior: {model.weibull.to_dict() if model.weibull else None}")
    print(f"test fleet (never seen): {args.test_machines} machines x {args.test_days} d, seed {args.test_seed}; "
          f"judged from day 7 on")
    print(f"  wear-out failures {ev.failures}: warned 4-24 h ahead {ev.warned}, premature {ev.premature}, "
          f"late {ev.late}, missed {ev.missed}")
    print(f"  median lead time {ev.median_lead_time_h} h; leads {sorted(round(x, 1) for x in ev.leads_h)}")
    print(f"  alarm episodes {ev.episodes}: false {ev.false_alarm_episodes}, premature {ev.premature_episodes} "
          f"over {ev.machine_weeks:.1f} machine-weeks")
    print(f"  precision@k (k = min(3, failing machines), {ev.precision_days} days): "
          f"{ev.precision_at_k}")
    print(f"  RUL MAE {ev.rul_mae_h} running h, RMSE {ev.rul_rmse_h} ({ev.rul_samples} samples within 48 h)")
    print(f"  confounders: {conf}")
    print(f"  time: simulate+bin train {t_sim:.1f} s, fit {t_fit:.1f} s, score test {t_score:.1f} s "
          f"(wall); CPU {time.process_time() - c0:.1f} s in all")
    result = {
        "warned_share": ev.warned_share, "premature_share": ev.premature_share,
        "precision_at_k": ev.precision_at_k, "false_alarms_per_machine_week": ev.false_alarms_per_machine_week,
        "premature_alarms_per_machine_week": ev.premature_alarms_per_machine_week,
        "median_lead_time_h": ev.median_lead_time_h, "failures": ev.failures, "missed": ev.missed,
        "late": ev.late, "rul_mae_h": ev.rul_mae_h, "rul_rmse_h": ev.rul_rmse_h,
        "cv_auc": model.metrics.get("cv_auc"), **conf,
        "recipe": args.recipe, "train_seed": args.train_seed, "test_seed": args.test_seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
