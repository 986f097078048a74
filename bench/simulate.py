#!/usr/bin/env python3
"""Benchmark: a 30-day, 10-machine line with four telemetry channels every 10 s, written as Parquet.

The plant model (10 machines, three shifts on weekdays, two products) is built in code; three machines
wear out, one never fails. Times the whole fast path: simulation, ground truth, telemetry and Parquet
writing into a temporary directory. Last line: one JSON object with at least "seconds".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from andon.plant import PlantModel
from simulator.config import SimulationConfig
from simulator.simulation import simulate
from simulator.truth import true_oee

CHANNELS = {"vibration_rms": 10.0, "bearing_temp": 10.0, "motor_current": 10.0, "cycle_time": 10.0}


def bench_plant(machines: int) -> PlantModel:
    shift_breaks = {"early": ("06:00", "14:00", [("09:00", "09:15"), ("11:30", "12:00")]),
                    "late": ("14:00", "22:00", [("17:00", "17:15"), ("19:30", "20:00")]),
                    "night": ("22:00", "06:00", [("02:00", "02:30")])}
    return PlantModel.model_validate({
        "name": "bench",
        "sites": [{
            "id": "bench-site",
            "timezone": "Europe/Berlin",
            "calendar": {"shifts": [
                {"name": n, "start": a, "end": b, "breaks": [{"start": x, "end": y} for x, y in br]}
                for n, (a, b, br) in shift_breaks.items()
            ]},
            "lines": [{
                "id": "bench-line",
                "takt_time_s": 60,
                "machines": [
                    {
                        "id": f"B-M{k + 1:02d}",
                        "ideal_cycle_time_s": 45 + (k * 7) % 11,
                        "products": {"A": 45 + (k * 7) % 11, "B": 48 + (k * 7) % 11},
                        "buffer_after": {"capacity": 12, "normal_fill": 6} if k < machines - 1 else None,
                        "fault_map": {"E1*": "motor-overload", "E2*": "bearing-failure", "JAM": "jam"},
                    }
                    for k in range(machines)
                ],
            }],
        }],
        "reasons": [
            {"category": "Mechanical", "reasons": [
                {"code": "motor-overload", "failure": True, "loss": "breakdowns"},
                {"code": "bearing-failure", "failure": True, "loss": "breakdowns"}]},
            {"category": "Process", "reasons": [{"code": "jam", "loss": "small_stops"}]},
            {"category": "Planned", "reasons": [
                {"code": "changeover", "planned": True, "loss": "setup_adjustments"}]},
        ],
    })


def bench_config(machines: int) -> SimulationConfig:
    wear = {"degradation": {"enabled": True, "fault_code": "E201",
                            "onset": {"dist": "weibull", "shape": 2, "scale": 100, "unit": "h"},
                            "duration": {"dist": "lognormal", "median": 40, "sigma": 0.3, "unit": "h"}}}
    overrides: dict[str, dict] = {f"B-M{k:02d}": wear for k in (2, 5, 8) if k <= machines}
    overrides[f"B-M{machines:02d}"] = {"never_fails": True}
    return SimulationConfig.model_validate({
        "line": {"product_mix": {"A": 0.7, "B": 0.3}},
        "defaults": {"telemetry": {"rates_s": CHANNELS, "product_factors": {"A": 1.0, "B": 1.15}}},
        "machines": overrides,
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    plant = bench_plant(args.machines)
    config = bench_config(args.machines)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    t0 = time.perf_counter()
    truth = simulate(plant, config, seed=args.seed, start=start, duration=dt.timedelta(days=args.days))
    t_sim = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="andon-bench-sim-") as tmp:
        files = truth.write(tmp)
        size_mb = sum(f.stat().st_size for f in files) / 1e6
    seconds = time.perf_counter() - t0
    last = truth.meta["machines"][-1]
    oee = true_oee(truth, last)
    print(f"{args.machines} machines, {args.days:g} days, seed {args.seed}")
    print(f"  simulate + truth + telemetry: {t_sim:.2f} s; with Parquet writing: {seconds:.2f} s ({size_mb:.0f} MB)")
    print(f"  state intervals {len(truth.states)}, parts {len(truth.parts)}, failures {len(truth.failures)}, "
          f"telemetry rows {len(truth.telemetry)}")
    print(f"  line output ({last}): {oee.total_count} parts, OEE {oee.oee:.1%}")
    print(json.dumps({
        "seconds": round(seconds, 3),
        "simulate_seconds": round(t_sim, 3),
        "machines": args.machines,
        "days": args.days,
        "channels": len(CHANNELS),
        "interval_s": 10,
        "telemetry_rows": len(truth.telemetry),
        "state_rows": len(truth.states),
        "parts": len(truth.parts),
        "failures": len(truth.failures),
        "parquet_mb": round(size_mb, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
