#!/usr/bin/env python3
"""Benchmark: JIT readiness of a 10-machine line from 90 days of history, recommendation search included.

The history is simulated first (not timed: the bench line of bench/simulate.py, three shifts on weekdays,
two products, three wearing machines, one that never fails) and shaped like storage's frames (state
intervals, stop list, per-part counts). Timed: measuring the inputs from those frames and the whole
analysis (station models, the marginal-gain search, its re-check on independent replications, the
curves, the blockers with their re-searches, the analytic cross-checks). Target: under 10 s on a
2-core machine. Last line: one JSON object with "seconds".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simulate import bench_config, bench_plant

from analytics.jit import LineSetup, assess, measure_machines
from simulator.simulation import simulate


def frames(truth, plant) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The truth as storage would return it: intervals, stops (with the reason's planned flag), counts."""
    states = truth.states
    intervals = pd.DataFrame({"machine": states["machine_id"], "start": states["start"], "end": states["end"],
                              "state": states["state"]})
    planned = {r.code: r.planned for c in plant.reasons for r in c.reasons}
    stop_rows = states[states["state"].isin(["idle", "planned_stop", "setup", "unplanned_stop"])]
    stops = pd.DataFrame({
        "machine": stop_rows["machine_id"], "start_ts": stop_rows["start"], "end_ts": stop_rows["end"],
        "state": stop_rows["state"], "reason_code": stop_rows["reason_code"],
        "planned": stop_rows["reason_code"].map(lambda c: planned.get(c) if c else None).astype(object),
    })
    parts = truth.parts
    counts = pd.DataFrame({"machine": parts["machine_id"], "ts": parts["ts"], "total": 1,
                           "reject": parts["reject"].astype(int)})
    return intervals, stops, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    plant = bench_plant(args.machines)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    t0 = time.perf_counter()
    truth = simulate(plant, bench_config(args.machines), seed=args.seed, start=start,
                     duration=dt.timedelta(days=args.days), telemetry=False)
    intervals, stops, counts = frames(truth, plant)
    t_history = time.perf_counter() - t0
    line = plant.line("bench-line")
    setup = LineSetup.from_plant(line, plant.site_of_line(line.id))

    t0 = time.perf_counter()
    inputs = measure_machines(setup.machines, setup.ideal_cycle_s, intervals, stops, counts,
                              truth.start.to_pydatetime(), truth.end.to_pydatetime(),
                              plant.settings.small_stop_threshold_s)
    t_measure = time.perf_counter() - t0
    result = assess(setup, inputs, seed=args.seed)
    seconds = time.perf_counter() - t0
    out = result.to_dict()
    rec = out["recommendation"]
    print(f"{args.machines} machines, {args.days:g} days of history ({len(intervals)} state intervals, "
          f"{len(counts)} parts; simulated in {t_history:.1f} s, not timed)")
    print(f"  measured inputs {t_measure:.2f} s, readiness {seconds:.2f} s in total")
    print(f"  {out['summary']}")
    print(f"  recommended {[lk['recommended'] for lk in rec['links']]}, "
          f"today {[lk['current'] for lk in rec['links']]}")
    for b in out["blockers"][:3]:
        print(f"  blocker: {b['text']}")
    print(json.dumps({
        "seconds": round(seconds, 3),
        "measure_seconds": round(t_measure, 3),
        "machines": args.machines,
        "days": args.days,
        "state_intervals": len(intervals),
        "parts": len(counts),
        "verdict": out["verdict"],
        "total_current": rec["total_current"],
        "total_recommended": rec["total_recommended"],
        "throughput_fraction": round(rec["throughput_fraction"], 5),
        "ci_low": round(rec["ci_low"], 5),
        "scenario_evaluations": out["simulation"]["evaluations"],
        "history_seconds_untimed": round(t_history, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
