#!/usr/bin/env python3
"""Benchmark: one OPC UA collector process following N monitored items that change every second.

The simulator's OPC UA server runs in its own process(es) (the Python server saturates long before the
client does), each writing its share of the items once per second, spread over ``--slices`` batches per
second, every value stamped with its source timestamp. This process runs the collector (OpcUaSource,
discovery + subscription) and measures, per notification, the lag from the source timestamp to the
moment the collector yields the event, plus its own CPU time (time.process_time: this process only, not
the servers). The last line printed is one JSON object.

    python bench/opcua.py                # 5,000 items, 1 server process
    python bench/opcua.py --items 10000  # stretch target: 2 server processes by default
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from andon.events import TelemetrySample
from collector.opcua import DiscoveryConfig, OpcUaSource, OpcUaSourceConfig
from simulator.frontends.opcua_server import SimOpcUaServer

ITEMS_PER_MACHINE = 100


def _serve(index: int, port: int, items: int, slices: int, seconds: float, ready: mp.Queue,
           behind_s: Any) -> None:
    """Server process: expose ``items`` telemetry variables and change every one of them once per second."""

    async def main() -> None:
        n_machines = max(1, math.ceil(items / ITEMS_PER_MACHINE))
        channels = [f"ch{j:03d}" for j in range(ITEMS_PER_MACHINE)]
        machines = [f"S{index}-M{i:03d}" for i in range(n_machines)]
        pairs = [(m, c) for m in machines for c in channels][:items]
        srv = SimOpcUaServer(machines, port=port, telemetry=channels, security=["None"])
        await srv.start()
        # The address space is built once and lives forever: keep it out of the cyclic GC's full scans,
        # which otherwise stall this process for a good fraction of a second now and then.
        gc.freeze()
        # Items the server does not change (the rounding up to whole machines) are not part of the load.
        ready.put(srv.url)
        per_slice = math.ceil(len(pairs) / slices)
        tick = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            for s in range(slices):
                due = start + tick + s / slices
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:  # the server did not keep up with its schedule
                    behind_s.value = max(behind_s.value, -delay)
                part = pairs[s * per_slice:(s + 1) * per_slice]
                # A value that differs every second, or the server would not report a change.
                await srv.set_telemetry_many(((m, c, tick + (k % 97) / 100) for k, (m, c) in enumerate(part)))
            tick += 1
        await srv.stop()

    asyncio.run(main())


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


async def collect(urls: list[str], items: int, warmup: float, measure: float, publishing_ms: float,
                  server_pids: list[int], behind: list[Any]) -> dict[str, Any]:
    sources = [OpcUaSource(OpcUaSourceConfig(
        id=f"bench{i}", url=url, publishing_interval_ms=publishing_ms, queue_size=1, request_timeout_s=30,
        discover=DiscoveryConfig(speeds_as_telemetry=False))) for i, url in enumerate(urls)]
    lags: list[float] = []
    state = {"measuring": False, "n": 0, "initial": 0}

    async def follow(src: OpcUaSource) -> None:
        async for batch in src.events():
            now = time.time()
            if not state["measuring"]:
                state["initial"] += len(batch)
                continue
            for ev in batch:
                if isinstance(ev, TelemetrySample):
                    lags.append(now - ev.ts.timestamp())
            state["n"] += len(batch)

    t_setup = time.monotonic()
    tasks = [asyncio.create_task(follow(s)) for s in sources]
    # Discovery, initial read and subscription first; then the warm-up, then the measured window.
    while state["initial"] < items and time.monotonic() - t_setup < 120:
        await asyncio.sleep(0.1)
    setup_s = time.monotonic() - t_setup
    await asyncio.sleep(warmup)
    state["measuring"] = True
    srv0 = [proc_cpu_s(p) for p in server_pids]
    for b in behind:  # only lateness inside the measured window counts
        b.value = 0.0
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(measure)
    cpu1, wall1 = time.process_time(), time.monotonic()
    srv1 = [proc_cpu_s(p) for p in server_pids]
    state["measuring"] = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in sources:
        await s.close()
    wall = wall1 - wall0
    return {
        "setup_s": round(setup_s, 2),
        "notifications": state["n"],
        "notifications_per_s": round(state["n"] / wall, 1),
        "collector_cpu": round((cpu1 - cpu0) / wall, 3),
        "cpu_us_per_notification": round(1e6 * (cpu1 - cpu0) / max(1, state["n"]), 1),
        "lags": lags,
        "connection_losses": sum(s.stats.connection_losses for s in sources),
        "server_cpu": [round((b - a) / wall, 3) for a, b in zip(srv0, srv1, strict=True)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=5000, help="monitored items, each changing once per second")
    ap.add_argument("--servers", type=int, default=0, help="server processes (default: 1 per 5,000 items)")
    ap.add_argument("--slices", type=int, default=10, help="write batches per second per server")
    ap.add_argument("--publishing-ms", type=float, default=100.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window")
    args = ap.parse_args()
    servers = args.servers or max(1, math.ceil(args.items / 5000))
    shares = [args.items // servers + (1 if i < args.items % servers else 0) for i in range(servers)]
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    behind = [ctx.Value("d", 0.0) for _ in shares]
    server_seconds = 180 + args.warmup + args.seconds  # outlives setup; stopped by the parent
    procs = [ctx.Process(target=_serve, args=(i, 0, n, args.slices, server_seconds, ready, behind[i]),
                         daemon=True) for i, n in enumerate(shares)]
    for p in procs:
        p.start()
    urls = [ready.get(timeout=180) for _ in procs]
    print(f"{servers} server process(es) up: {', '.join(urls)}; {args.items} items, "
          f"{args.slices} write batches/s each, publishing interval {args.publishing_ms:.0f} ms", flush=True)
    res = asyncio.run(collect(urls, args.items, args.warmup, args.seconds, args.publishing_ms,
                              [p.pid for p in procs if p.pid is not None], behind))
    server_behind = [round(b.value, 3) for b in behind]
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=10)
    lags = res.pop("lags")
    expected = args.items * args.seconds
    report = {
        "items": args.items,
        "lag_p95_s": round(percentile(lags, 0.95), 3),
        "lag_p50_s": round(percentile(lags, 0.50), 3),
        "lag_max_s": round(max(lags), 3) if lags else None,
        "collector_cpu": res["collector_cpu"],
        "received_ratio": round(len(lags) / expected, 3),
        "servers": servers,
        "seconds": args.seconds,
        "publishing_ms": args.publishing_ms,
        "server_max_behind_s": server_behind,
        **{k: v for k, v in res.items() if k != "collector_cpu"},
        "cpus": os.cpu_count(),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(f"setup (discovery, initial read, subscribe): {res['setup_s']} s")
    print(f"notifications: {len(lags)} in {args.seconds:.0f} s ({report['received_ratio']:.1%} of the "
          f"{expected:.0f} written)")
    print(f"lag source->yield: p50 {report['lag_p50_s']} s, p95 {report['lag_p95_s']} s, max {report['lag_max_s']} s")
    print(f"collector CPU: {report['collector_cpu']:.1%} of one core "
          f"({res['cpu_us_per_notification']} us per notification); server processes: "
          f"{', '.join(f'{c:.0%}' for c in res['server_cpu'])} of a core, at most {max(server_behind)} s "
          f"behind their write schedule")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
