#!/usr/bin/env python3
"""Benchmark: a year of OEE by day for a 20-machine line, through the API, against the raw computation.

Setup (timed separately, not part of the figures): a fresh database, the bench plant (bench/simulate.py,
one line of ``--machines`` machines, three shifts with breaks, Europe/Berlin) and a simulated year of that
line. State changes are cut to 1 s resolution (whole-second timestamps; where several changes fall in one
second the last one holds, repeats of the same state are dropped); parts are reported as counts per
machine, product and 60 s window, stamped at the window's last part (as truth_to_events(count_batch_s=60)
does, built here with pandas instead of iterrows). The events go through Andon's EventWriter, then
``andon.storage.rollups.refresh`` builds rollups and downtime.

Measured:

* ``p95_ms`` / ``p50_ms``: GET /api/v1/lines/{line}/oee?start=..&end=..&bucket=day for the whole year,
  against a real uvicorn server (own process, ``api.app:create_app``) with a viewer key, after warm-up.
* ``raw_ms``: the same figures from the raw events without rollups: per machine the state events, counts
  and stops of the year read and integrated into periods by ``rollups.compute_periods`` (the code behind
  the rollups), then the endpoint's own analytics (``api.service.line_oee_answer``) on those periods. The
  two answers are compared number by number (relative 1e-9; the OEE values absolutely to 1e-9) and both
  OEE figures are printed.

To iterate without the setup: ``--reuse-db NAME`` uses database NAME if it holds a finished bench setup
(pending migrations applied, rollups refreshed, then timed), otherwise sets it up under that name and keeps
it; ``--keep-db [NAME]`` keeps the database of a normal run.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import math
import os
import pstats
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from simulate import bench_config, bench_plant  # noqa: E402

from andon.events import MachineState, ProductionCount, StateChange  # noqa: E402
from andon.storage import db, keys, plant_sync, queries, rollups  # noqa: E402
from andon.storage.writer import EventWriter  # noqa: E402
from api import service  # noqa: E402
from api.routers import oee as oee_router  # noqa: E402
from simulator.simulation import simulate  # noqa: E402

BASE = os.environ.get("ANDON_BENCH_BASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LINE = "bench-line"
SOURCE = "sim"
TARGET_P95_MS = 200.0
# Europe/Berlin local midnight, Monday 2025-01-06: a year of whole local days (no DST change at the edges).
START = dt.datetime(2025, 1, 5, 23, 0, tzinfo=dt.UTC)


# --- data ----------------------------------------------------------------------------------------------


def one_second_states(states: pd.DataFrame) -> pd.DataFrame:
    """State changes at whole seconds: the last change inside a second holds, repeats are dropped."""
    st = states[["machine_id", "start", "state", "reason_code", "fault_code"]].copy()
    st["start"] = st["start"].dt.floor("s")
    st = st.sort_values(["machine_id", "start"], kind="stable")
    st = st.drop_duplicates(["machine_id", "start"], keep="last")
    same = (st["machine_id"] == st["machine_id"].shift()) & (st["state"] == st["state"].shift())
    return st[~same].reset_index(drop=True)


def batched_counts(parts: pd.DataFrame, start: dt.datetime, window_s: int = 60) -> pd.DataFrame:
    """One count per machine, product and ``window_s`` window, stamped at its last part (whole second)."""
    width = window_s * 1_000_000_000
    frame = pd.DataFrame({
        "machine_id": parts["machine_id"].to_numpy(),
        "window": (parts["ts"].astype("int64").to_numpy() - pd.Timestamp(start).value) // width,
        "product": parts["product"].astype(object).where(parts["product"].notna(), "").to_numpy(),
        "ts": parts["ts"].to_numpy(),
        "reject": parts["reject"].astype(bool).astype(np.int64).to_numpy(),
    })
    grouped = frame.groupby(["machine_id", "window", "product"], sort=True).agg(
        ts=("ts", "max"), total=("ts", "size"), reject=("reject", "sum")).reset_index()
    grouped["ts"] = pd.to_datetime(grouped["ts"], utc=True).dt.floor("s")
    return grouped


def _py_times(series: pd.Series) -> list[dt.datetime]:
    seconds = series.astype("int64").to_numpy() // 1_000_000_000
    return [dt.datetime.fromtimestamp(int(s), dt.UTC) for s in seconds]


def machine_events(states: pd.DataFrame, counts: pd.DataFrame) -> Iterator[list[Any]]:
    """Canonical events, one machine at a time (states, then counts), with stable sequence ids."""
    state_of = {s.value: s for s in MachineState}
    for mid, st in states.groupby("machine_id", sort=True):
        ts = _py_times(st["start"])
        reason = st["reason_code"].astype(object).where(st["reason_code"].notna(), None).tolist()
        fault = st["fault_code"].astype(object).where(st["fault_code"].notna(), None).tolist()
        events: list[Any] = [
            StateChange(str(mid), t, state_of[s], SOURCE, reason_code=r or None, fault_code=f or None,
                        seq=f"{mid}:{int(t.timestamp())}")
            for t, s, r, f in zip(ts, st["state"].tolist(), reason, fault, strict=True)
        ]
        ct = counts[counts["machine_id"] == mid]
        events += [
            ProductionCount(str(mid), t, int(n), int(rj), SOURCE, product=p or None, seq=f"{mid}:{w}:{p}")
            for t, n, rj, p, w in zip(_py_times(ct["ts"]), ct["total"].tolist(), ct["reject"].tolist(),
                                      ct["product"].tolist(), ct["window"].tolist(), strict=True)
        ]
        yield events


def setup_data(url: str, machines: int, days: int, seed: int, batch: int) -> dict[str, Any]:
    plant = bench_plant(machines)
    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        plant_sync.sync_plant_model(conn, plant, "bench")
    t = time.perf_counter()
    truth = simulate(plant, bench_config(machines), seed=seed, start=START, duration=dt.timedelta(days=days),
                     telemetry=False)
    timings["simulate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    states = one_second_states(truth.states)
    counts = batched_counts(truth.parts, START)
    n_intervals, n_parts = len(truth.states), len(truth.parts)
    del truth
    timings["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pool = db.make_pool(url, max_size=2)
    try:
        writer = EventWriter(pool)
        for events in machine_events(states, counts):
            for i in range(0, len(events), batch):
                writer.write(events[i:i + batch])
    finally:
        pool.close()
    timings["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with psycopg.connect(url) as conn:
        stats = rollups.refresh(conn)
        conn.commit()
    timings["refresh_s"] = time.perf_counter() - t
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return {"timings": timings, "state_events": len(states), "count_events": len(counts),
            "sim_state_intervals": n_intervals, "parts": n_parts, "rollup_rows": stats.periods_written,
            "stops": stats.stops_written}


def _has_bench_data(name: str) -> bool:
    """Whether database `name` exists and holds the bench line's rollups (a finished setup)."""
    with psycopg.connect(BASE, autocommit=True) as c:
        if c.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            return False
    try:
        with psycopg.connect(make_conninfo(BASE, dbname=name)) as conn:
            return bool(conn.execute("select exists (select 1 from rollup_watermarks)").fetchone()[0])
    except psycopg.Error:
        return False


def existing_data(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        n_states, n_counts, n_rollups, n_stops = conn.execute(
            "select (select count(*) from state_events), (select count(*) from count_events), "
            "(select count(*) from machine_rollups), (select count(*) from downtime)").fetchone()
    return {"timings": {}, "state_events": n_states, "count_events": n_counts, "sim_state_intervals": 0,
            "parts": 0, "rollup_rows": n_rollups, "stops": n_stops}


# --- the answer, from raw events ------------------------------------------------------------------------


def raw_answer(url: str, start: dt.datetime, end: dt.datetime) -> tuple[dict[str, Any], float]:
    """The endpoint's figures from raw events only (no machine_rollups read); returns (answer, ms)."""
    with psycopg.connect(url) as conn:
        ctx = rollups.load_context(conn)
        t = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        rows: list[tuple[Any, ...]] = []
        for mid in [m.id for m in ctx.model.line(LINE).machines_in_order]:
            m = ctx.by_id[mid]
            _, horizon = rollups.horizon_of(conn, m)
            horizon = min(horizon, now) if horizon is not None else start
            rows += rollups.compute_periods(conn, m, start, end, horizon)
        periods = pd.DataFrame(rows, columns=rollups.ROLLUP_COLUMNS)
        periods["machine"] = periods["machine"].map({m.num: m.id for m in ctx.machines.values()})
        for c in ("period_start", "period_end"):
            periods[c] = pd.to_datetime(periods[c], utc=True)
        intervals = None
        if end - start <= dt.timedelta(days=oee_router.ATTRIBUTION_MAX_DAYS):
            ids = [m.id for m in ctx.model.line(LINE).machines_in_order]
            intervals = queries.intervals(conn, ctx, ids, start, end, now=now)
        line = ctx.model.line(LINE)
        answer = service.line_oee_answer(periods, None, intervals, ctx, line, "bottleneck", "day",
                                         ctx.model.site_of_line(LINE).tz, now)
        ms = (time.perf_counter() - t) * 1000
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(answer), ms


def compare(a: Any, b: Any, path: str = "") -> tuple[list[str], float]:
    """Differences beyond relative 1e-9 between two JSON values; and the largest |difference| of an OEE."""
    diffs: list[str] = []
    worst_oee = 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                diffs.append(f"{path}.{k}: only on one side")
                continue
            d, w = compare(a[k], b[k], f"{path}.{k}")
            diffs += d
            worst_oee = max(worst_oee, w)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"], math.inf
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d, w = compare(x, y, f"{path}[{i}]")
            diffs += d
            worst_oee = max(worst_oee, w)
    elif isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        if path.endswith(".oee"):
            worst_oee = abs(a - b)
            if worst_oee > 1e-9:
                diffs.append(f"{path}: {a!r} vs {b!r}")
        elif not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
            diffs.append(f"{path}: {a!r} vs {b!r}")
    elif a != b:
        diffs.append(f"{path}: {a!r} vs {b!r}")
    return diffs, worst_oee


def api_part(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in ("line_oee", "machines_rolled_up", "buckets")}


# --- the API server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def api_server(url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "ANDON_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not come up in 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def profile_endpoint(url: str, start: dt.datetime, end: dt.datetime, top: int) -> str:
    """cProfile of the endpoint's work in this process (storage + analytics, no HTTP)."""
    with psycopg.connect(url) as conn:
        ctx = rollups.load_context(conn)
        kwargs: dict[str, Any] = {"line_id": LINE, "start": start.isoformat(), "end": end.isoformat(),
                                  "window": None, "bucket": "day", "basis": "bottleneck", "_": None,
                                  "conn": conn, "ctx": ctx}
        oee_router.line_oee(**kwargs)  # warm
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        oee_router.line_oee(**kwargs)
        prof.disable()
        ms = (time.perf_counter() - t) * 1000
        # The SQL alone, for the split between database and pandas.
        now = dt.datetime.now(dt.UTC)
        ids = [m.id for m in ctx.model.line(LINE).machines_in_order]
        t = time.perf_counter()
        queries.ensure_fresh(conn, ctx, now)
        queries.periods(conn, ctx, ids, start, end, now=now, grain="day")
        load_ms = (time.perf_counter() - t) * 1000
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return f"in-process handler {ms:.0f} ms (cProfile on), of which load (queries.periods) ~{load_ms:.0f} ms\n" \
        + out.getvalue()


# --- main -----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--machines", type=int, default=20)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--requests", type=int, default=40, help="timed requests (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--raw-runs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=20_000, help="events per writer batch in the setup")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of the handler in-process")
    ap.add_argument("--keep-db", nargs="?", const="", metavar="NAME",
                    help="keep the bench database (named NAME if given) for investigation or --reuse-db")
    ap.add_argument("--reuse-db", "--db", dest="db", metavar="NAME",
                    help="reuse database NAME (same --machines/--days/--seed) if it holds bench data, pending "
                         "migrations applied; otherwise set it up under that name and keep it")
    args = ap.parse_args()
    if args.requests < 20:
        ap.error("--requests must be at least 20 for a p95")

    name = args.db or args.keep_db or f"andon_bench_{uuid.uuid4().hex[:8]}"
    keep = args.keep_db is not None or args.db is not None
    url = make_conninfo(BASE, dbname=name)
    reuse = args.db is not None and _has_bench_data(name)
    if not reuse:
        with psycopg.connect(BASE, autocommit=True) as c:
            if c.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None:
                if not name.startswith("andon_bench"):
                    ap.error(f"database {name} exists without bench data: drop it or pick another name")
                c.execute(f'drop database "{name}" with (force)')  # an unfinished bench setup
            c.execute(f'create database "{name}"')
    print(f"database {name} ({'reused' if reuse else 'new'}{', kept' if keep else ''})", flush=True)
    try:
        t0 = time.perf_counter()
        db.upgrade(url, create_db=False)
        if reuse:
            # New migrations may have marked ranges dirty (or added stored grains): bring them up to date
            # before timing, as the background refresher would.
            with psycopg.connect(url) as conn:
                rollups.refresh(conn)
                conn.commit()
                conn.execute("analyze")
            info = existing_data(url)
        else:
            info = setup_data(url, args.machines, args.days, args.seed, args.batch)
        setup_s = time.perf_counter() - t0
        tm = info["timings"]
        print(f"setup {setup_s:.0f} s ({', '.join(f'{k[:-2]} {v:.0f} s' for k, v in tm.items()) or 'reused'}); "
              f"{info['state_events']:,} state events ({info['sim_state_intervals']:,} simulated intervals), "
              f"{info['count_events']:,} count events ({info['parts']:,} parts), {info['rollup_rows']:,} rollup "
              f"rows, {info['stops']:,} stops", flush=True)

        start, end = START, START + dt.timedelta(days=args.days)
        with psycopg.connect(url) as conn:
            _, token = keys.create_key(conn, "bench", "viewer")
            conn.commit()
        params = {"start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z"),
                  "bucket": "day"}
        latencies: list[float] = []
        with api_server(url) as base, httpx.Client(base_url=base, headers={"X-API-Key": token},
                                                   timeout=120) as client:
            path = f"/api/v1/lines/{LINE}/oee"
            for _ in range(args.warmup):
                r = client.get(path, params=params)
                r.raise_for_status()
            api = r.json()
            for _ in range(args.requests):
                t = time.perf_counter()
                r = client.get(path, params=params)
                latencies.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        print(f"API: {args.requests} requests, p50 {p50:.0f} ms, p95 {p95:.0f} ms, min {min(latencies):.0f} ms, "
              f"max {max(latencies):.0f} ms ({len(api['buckets'])} day buckets; target p95 < {TARGET_P95_MS:.0f} ms)",
              flush=True)

        raw_times = []
        for _ in range(args.raw_runs):
            raw, ms = raw_answer(url, start, end)
            raw_times.append(ms)
        raw_ms = statistics.median(raw_times)
        diffs, worst = compare(api_part(api), raw)
        api_oee, raw_oee = api["line_oee"]["oee"]["oee"], raw["line_oee"]["oee"]["oee"]
        api_roll, raw_roll = api["machines_rolled_up"]["oee"], raw["machines_rolled_up"]["oee"]
        print(f"raw (no rollups): {raw_ms:,.0f} ms ({raw_ms / p50:,.0f}x the API's p50)")
        print(f"line OEE: rollups {api_oee!r}, raw {raw_oee!r}; machines rolled up: rollups {api_roll!r}, "
              f"raw {raw_roll!r}; largest OEE difference {worst:.2e}; "
              f"{'answers equal' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:10]:
            print(f"  DIFF {d}")
        if args.profile:
            print(profile_endpoint(url, start, end, 30))
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(BASE, autocommit=True) as c:
                c.execute(f'drop database if exists "{name}" with (force)')
    print(json.dumps({
        "p95_ms": round(p95, 1), "p50_ms": round(p50, 1), "raw_ms": round(raw_ms), "target_p95_ms": TARGET_P95_MS,
        "raw_over_p50": round(raw_ms / p50, 1), "requests": args.requests, "machines": args.machines,
        "days": args.days, "buckets": len(api["buckets"]), "state_events": info["state_events"],
        "count_events": info["count_events"], "rollup_rows": info["rollup_rows"], "equal": not diffs,
        "max_oee_diff": worst, "oee_rollups": api_oee, "oee_raw": raw_oee, "setup_s": round(setup_s, 1),
        **{k: round(v, 1) for k, v in tm.items()}, "raw_runs": args.raw_runs,
    }))
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
