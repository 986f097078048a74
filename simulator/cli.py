"""``andon simulate``: fast ground-truth generation, or the line served in real time over OPC UA / MQTT.

    andon simulate --plant config/plant.yaml [--sim-config config/simulation.yaml] --seed 7 \
        --duration 30d --start 2026-01-05T00:00Z --out out/sim

writes the ground-truth Parquet tables and meta.json into --out and prints one summary line per
machine (true OEE over the whole run).

    andon simulate --serve opcua|mqtt|both [--speed 1] [--start now-7d] [--sources-out sources.yaml]

runs the line in real time (``--speed`` x real time) and publishes it through the protocol front-ends
(simulator/serve.py): OPC UA PackML on --opcua-host:--opcua-port, Sparkplug B or Andon JSON to the
broker on --mqtt-host:--mqtt-port; ``both`` splits the machines between them (--split). A --start in
the past is fast-forwarded without publishing (--history-out writes that history as ground truth).
Runs until SIGINT/SIGTERM, or for --duration of simulated time when given.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from andon.plant import PlantModelError, load_plant_model
from simulator.config import SimulationConfigError, load_simulation_config
from simulator.simulation import parse_duration, simulate
from simulator.truth import true_oee

if TYPE_CHECKING:
    from simulator.serve import LiveRunner


def _parse_start(text: str) -> dt.datetime:
    t = text.strip()
    if t.lower().startswith("now"):
        rest = t[3:].strip()
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if not rest:
            return now
        if rest[0] in "+-":
            try:
                delta = parse_duration(rest[1:])
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"bad start time {text!r}: {exc}") from None
            return now - delta if rest[0] == "-" else now + delta
        raise argparse.ArgumentTypeError(f"bad start time {text!r}; use now, now-7d or ISO 8601")
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


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad speed {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} outside 0..65535")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad rate {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1")
    return value


def _default_plant() -> str | None:
    try:
        from andon.settings import get_settings

        return str(get_settings().plant_file)
    except Exception:  # settings unreadable: --plant must be given
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default_plant = _default_plant()
    parser.add_argument("--plant", default=default_plant, required=default_plant is None,
                        help=f"plant model file (YAML or TOML; default {default_plant})")
    parser.add_argument("--sim-config", default=None,
                        help="simulation parameter file (default: built-in defaults; with --serve, "
                             "config/simulation.yaml next to the plant file when present)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed; the same seed gives the same run (required without --serve; default 7)")
    parser.add_argument("--duration", type=_duration, default=None,
                        help="simulated time: 90m, 12h, 30d (required without --serve; with it: stop after)")
    parser.add_argument("--start", type=_parse_start, default=None,
                        help="simulation start, ISO 8601 with zone, or now / now-7d (default 2026-01-05T00:00Z; "
                             "with --serve: now, and an earlier start is history fast-forwarded without publishing)")
    parser.add_argument("--line", default=None, help="line id (default: the plant's first line)")
    parser.add_argument("--out", default=None, help="output directory for the ground truth (required without --serve)")
    parser.add_argument("--no-telemetry", action="store_true", help="skip telemetry (states, parts, failures only)")
    g = parser.add_argument_group("real-time serve mode")
    g.add_argument("--serve", choices=["opcua", "mqtt", "both"], default=None,
                   help="run in real time and publish over OPC UA, MQTT or both (split between them)")
    g.add_argument("--speed", type=_speed, default=1.0, help="simulated seconds per real second (default 1)")
    g.add_argument("--tick", type=float, default=0.2, help="wall seconds between publishing steps (default 0.2)")
    g.add_argument("--mqtt-format", choices=["sparkplug", "json"], default="sparkplug",
                   help="--serve mqtt: Sparkplug B (default) or Andon JSON topics")
    g.add_argument("--split", action="append", default=None, metavar="PROTOCOL=M1,M2",
                   help="--serve both: machines per protocol (opcua, sparkplug, json), repeatable; default: "
                        "first half OPC UA, last machine JSON, the rest Sparkplug B")
    g.add_argument("--opcua-host", default="127.0.0.1", help="OPC UA bind address (default 127.0.0.1)")
    g.add_argument("--opcua-port", type=_port, default=4840, help="OPC UA port (default 4840; 0: a free one)")
    g.add_argument("--opcua-secure", action="store_true",
                   help="also offer Basic256Sha256 Sign and SignAndEncrypt endpoints (generated certificates)")
    g.add_argument("--opcua-cert-dir", default=None, help="where the server certificate is generated and kept")
    g.add_argument("--mqtt-host", default="127.0.0.1", help="MQTT broker host (default 127.0.0.1)")
    g.add_argument("--mqtt-port", type=_port, default=1883, help="MQTT broker port (default 1883)")
    g.add_argument("--mqtt-username", default=None, help="MQTT user name (password from ANDON_SIM_MQTT_PASSWORD)")
    g.add_argument("--client-id-prefix", default="andon-sim", help="gateway client ids: PREFIX-sparkplug, PREFIX-json")
    g.add_argument("--sparkplug-group", default="andon", help="Sparkplug group id (default andon)")
    g.add_argument("--sparkplug-edge", default="sim-gateway", help="Sparkplug edge node id (default sim-gateway)")
    g.add_argument("--sparkplug-qos", type=int, choices=[0, 1], default=0, help="QoS of Sparkplug data (default 0)")
    g.add_argument("--mqtt-duplicate-rate", type=_rate, default=0.0,
                   help="fault injection: share of messages sent twice")
    g.add_argument("--mqtt-reorder-rate", type=_rate, default=0.0,
                   help="fault injection: share of messages held back and sent after the next one")
    g.add_argument("--mqtt-fault-seed", type=int, default=0, help="seed of the fault injection")
    g.add_argument("--sources-out", default=None, help="write the matching collector sources file here")
    g.add_argument("--history-out", default=None,
                   help="write the fast-forwarded history [start, now) as ground truth (Parquet) into this directory")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "serve", None):
        return run_serve(args)
    missing = [opt for opt, value in (("--seed", args.seed), ("--duration", args.duration), ("--out", args.out))
               if value is None]
    if missing:
        print(f"error: {', '.join(missing)} required (or --serve for the real-time mode)", file=sys.stderr)
        return 2
    if args.start is None:
        args.start = _parse_start("2026-01-05T00:00Z")
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


def _serve_sim_config(args: argparse.Namespace) -> str | None:
    if args.sim_config is not None:
        return str(args.sim_config)
    beside = Path(args.plant).with_name("simulation.yaml")
    return str(beside) if beside.is_file() else None


def run_serve(args: argparse.Namespace) -> int:
    """``--serve``: real time over the protocol front-ends until SIGINT/SIGTERM (or --duration)."""
    import logging
    import os

    from simulator.frontends.mqtt_gateway import GatewayFaults
    from simulator.serve import LiveRunner, ServeOptions, parse_split

    try:
        plant = load_plant_model(args.plant)
        config = load_simulation_config(_serve_sim_config(args))
    except (PlantModelError, SimulationConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        print("error: --out is for the fast mode; use --history-out with --serve", file=sys.stderr)
        return 2
    if args.split and args.serve != "both":
        print("error: --split applies to --serve both", file=sys.stderr)
        return 2
    if not args.tick > 0:
        print("error: --tick must be > 0", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC)
    if args.start is not None and args.start > now:
        print("error: --start must not be in the future", file=sys.stderr)
        return 2
    try:
        line_machines = [m.id for m in plant.line(args.line).machines_in_order] if args.line else \
            [m.id for m in next(ln for s in plant.sites for ln in s.lines).machines_in_order]
        split = parse_split(args.split, line_machines) if args.split else None
        options = ServeOptions(
            serve=args.serve, mqtt_format=args.mqtt_format, split=split, seed=7 if args.seed is None else args.seed,
            start=args.start, speed=args.speed, tick_s=args.tick, line_id=args.line,
            telemetry=not args.no_telemetry, history_telemetry=not args.no_telemetry,
            opcua_host=args.opcua_host, opcua_port=args.opcua_port,
            opcua_security=("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt") if args.opcua_secure
            else ("None",),
            opcua_cert_dir=Path(args.opcua_cert_dir) if args.opcua_cert_dir else None,
            mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, mqtt_username=args.mqtt_username,
            mqtt_password=os.environ.get("ANDON_SIM_MQTT_PASSWORD"), client_id_prefix=args.client_id_prefix,
            sparkplug_group=args.sparkplug_group, sparkplug_edge=args.sparkplug_edge,
            sparkplug_qos=args.sparkplug_qos,
            faults=GatewayFaults(duplicate_rate=args.mqtt_duplicate_rate, reorder_rate=args.mqtt_reorder_rate,
                                 seed=args.mqtt_fault_seed),
        )
        runner = LiveRunner(plant, config, options)
    except (KeyError, ValueError, StopIteration) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncua_log = logging.getLogger("asyncua")
    if asyncua_log.getEffectiveLevel() < logging.WARNING:
        asyncua_log.setLevel(logging.WARNING)  # one INFO line per node and request otherwise
    return asyncio.run(_serve(runner, args))


async def _serve(runner: LiveRunner, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.start()
    except (OSError, ConnectionError) as exc:
        print(f"error: cannot start the front-ends: {exc}", file=sys.stderr)
        return 1
    try:
        if runner.history is not None:
            h = runner.history
            print(f"history {h.start.isoformat()} .. {h.end.isoformat()}: {len(h.states)} states, "
                  f"{len(h.parts)} parts (not published)", flush=True)
            if args.history_out:
                await asyncio.to_thread(h.write, args.history_out)
                print(f"history written to {args.history_out}", flush=True)
        if args.sources_out:
            runner.write_sources(Path(args.sources_out))
            print(f"collector sources written to {args.sources_out}", flush=True)
        if runner.opcua is not None:
            print(f"OPC UA {runner.opcua.url}: {', '.join(runner.machines_on('opcua'))}", flush=True)
        if runner.sparkplug is not None:
            o = runner.options
            print(f"Sparkplug B spBv1.0/{o.sparkplug_group}/+/{o.sparkplug_edge} on {o.mqtt_host}:{o.mqtt_port}: "
                  f"{', '.join(runner.machines_on('sparkplug'))}", flush=True)
        if runner.json is not None:
            o = runner.options
            print(f"Andon JSON andon/v1/<machine>/... on {o.mqtt_host}:{o.mqtt_port}: "
                  f"{', '.join(runner.machines_on('json'))}", flush=True)
        print(f"serving from {runner.sim_now.isoformat()} at {runner.options.speed:g}x real time; "
              "Ctrl-C to stop", flush=True)
        until = runner.sim_now + args.duration if args.duration is not None else None
        await runner.run(until=until, stop=stop)
    finally:
        await runner.stop()
    s = runner.stats
    print(f"stopped at {runner.sim_now.isoformat()}: {s.states} state changes, {s.parts} parts, "
          f"{s.telemetry} telemetry samples published", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="andon simulate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
