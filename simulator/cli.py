"""``andon simulate``: fast ground-truth generation (the real-time front-ends are wired elsewhere).

    andon simulate --plant config/plant.yaml [--sim-config config/simulation.yaml] --seed 7 \
        --duration 30d --start 2026-01-05T00:00Z --out out/sim

Writes the ground-truth Parquet tables and meta.json into --out and prints one summary line per
machine (true OEE over the whole run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from andon.plant import PlantModelError, load_plant_model
from simulator.config import SimulationConfigError, load_simulation_config
from simulator.simulation import parse_duration, simulate
from simulator.truth import true_oee


def _parse_start(text: str) -> dt.datetime:
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad start time {text!r}; use ISO 8601 such as 2026-01-05T00:00Z") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"start time {text!r} needs a time zone (Z or +01:00)")
    return value


def _duration(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plant", required=True, help="plant model file (YAML or TOML)")
    parser.add_argument("--sim-config", default=None, help="simulation parameter file (default: built-in defaults)")
    parser.add_argument("--seed", type=int, required=True, help="random seed; the same seed gives the same run")
    parser.add_argument("--duration", type=_duration, required=True, help="simulated time: 90m, 12h, 30d")
    parser.add_argument("--start", type=_parse_start, default=_parse_start("2026-01-05T00:00Z"),
                        help="simulation start, ISO 8601 with zone (default 2026-01-05T00:00Z)")
    parser.add_argument("--line", default=None, help="line id (default: the plant's first line)")
    parser.add_argument("--out", required=True, help="output directory for the ground truth")
    parser.add_argument("--no-telemetry", action="store_true", help="skip telemetry (states, parts, failures only)")


def run(args: argparse.Namespace) -> int:
    try:
        plant = load_plant_model(args.plant)
        config = load_simulation_config(args.sim_config)
    except (PlantModelError, SimulationConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        truth = simulate(plant, config, seed=args.seed, start=args.start, duration=args.duration,
                         line_id=args.line, telemetry=not args.no_telemetry)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = truth.write(args.out)
    elapsed = time.perf_counter() - t0
    print(f"simulated line {truth.meta['line_id']} from {truth.start.isoformat()} to {truth.end.isoformat()} "
          f"(seed {args.seed}) in {elapsed:.1f} s; {len(files)} files in {args.out}")
    for mid in truth.meta["machines"]:
        f = true_oee(truth, mid)
        print(f"  {mid}: OEE {f.oee:.1%} (A {f.availability:.1%}, P {f.performance:.1%}, Q {f.quality:.1%}), "
              f"{f.total_count} parts, {f.reject_count} rejects")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="andon simulate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
