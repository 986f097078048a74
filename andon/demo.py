"""`andon demo`: Andon on a simulated JIT line, with real services.

1. the database is migrated and the demo plant synced; a maintainer key is made for the board (so a
   newcomer can enter downtime reasons) and a viewer key;
2. the simulated 6-machine line starts 30 days in the past: those days are written straight into the
   database as history (so OEE, downtime, reliability and JIT readiness have something to chew on), and
   from now on the line runs in real time and talks like real PLCs: L1-M1..M3 over OPC UA (PackML),
   L1-M4..M5 over MQTT Sparkplug B, L1-M6 over Andon JSON on MQTT;
3. the collectors (`andon collect`) ingest it, and the API with the live board serves it.

Stopping the command (Ctrl-C) stops everything it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from psycopg.conninfo import make_conninfo

from andon.settings import get_settings
from andon.storage import db, keys

log = logging.getLogger("andon.demo")
HISTORY_DAYS = 30
DEMO_DATABASE = "andon_demo"
TELEMETRY_HISTORY_DAYS = 3


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class _Child:
    """A child process whose output is echoed with a prefix and watched for marker lines."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self.seen = threading.Condition()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        threading.Thread(target=self._pump, daemon=True, name=f"{name}-output").start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.seen:
                self.lines.append(line.rstrip())
                self.seen.notify_all()
            if "WARNING" in line or "ERROR" in line or "Traceback" in line:
                print(f"[{self.name}] {line.rstrip()}", flush=True)

    def wait_for(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.seen:
            while not any(marker in ln for ln in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return any(marker in ln for ln in self.lines)
                self.seen.wait(min(left, 0.5))
            return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _load_history(url: str, history_dir: Path) -> None:
    """States and parts of the whole history, telemetry of its last days, then rollups up to date."""
    import psycopg

    from andon.storage import rollups
    from simulator.serve import write_history
    from simulator.truth import GroundTruth, truth_to_events

    t0 = time.monotonic()
    truth = GroundTruth.read(history_dir)
    n = write_history(url, truth, telemetry=False, count_batch_s=60)
    recent = truth.end - dt.timedelta(days=TELEMETRY_HISTORY_DAYS)
    pool = db.make_pool(url, 1, 2)
    try:
        from andon.storage.writer import EventWriter

        writer = EventWriter(pool)
        batch: list = []
        for ev in truth_to_events(truth, source_id="sim-history", include_states=False, include_counts=False,
                                  start=recent):
            batch.append(ev)
            if len(batch) >= 50_000:
                n += writer.write(batch).total_inserted
                batch = []
        if batch:
            n += writer.write(batch).total_inserted
    finally:
        pool.close()
    with psycopg.connect(url) as conn:
        rollups.refresh(conn)
        conn.commit()
    print(f"demo: {HISTORY_DAYS} days of history stored ({n:,} rows) in {time.monotonic() - t0:.0f} s; "
          "OEE, downtime, reliability and JIT readiness now have data", flush=True)


def main(args: argparse.Namespace) -> int:
    from andon.cli import main as andon_main

    base_settings = get_settings()
    port = args.port or base_settings.api_port
    busy = [f"{name} port {p}" for name, h, p in (("API", base_settings.api_host, port),
                                                  ("OPC UA", "127.0.0.1", 4840)) if _port_busy(h, p)]
    if busy:
        print(f"andon demo: {', '.join(busy)} already in use (another demo running?); stop it first",
              file=sys.stderr)
        return 1
    # The demo gets a database of its own, made anew on every run: its history is simulated from "now",
    # so a second run's history would interleave with the first one's in a kept database.
    demo_url = make_conninfo(base_settings.database_url, dbname=DEMO_DATABASE)
    with db.connect(make_conninfo(base_settings.database_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{DEMO_DATABASE}" with (force)')
    os.environ["ANDON_DATABASE_URL"] = demo_url
    get_settings.cache_clear()
    settings = get_settings()
    if andon_main(["db", "upgrade"]) != 0:
        return 1
    stamp = time.strftime("%Y-%m-%d %H:%M")
    with db.connect(settings.database_url) as conn:
        _, board_key = keys.create_key(conn, f"demo board {stamp}", "maintainer")
        _, viewer_key = keys.create_key(conn, f"demo viewer {stamp}", "viewer")
        conn.commit()

    work = Path(tempfile.mkdtemp(prefix="andon-demo-"))
    history_dir, sources = work / "history", work / "sources.yaml"
    children: list[_Child] = []
    py = sys.executable
    try:
        sim = _Child("simulator", [py, "-m", "andon.cli", "simulate", "--serve", "both",
                                   "--start", f"now-{HISTORY_DAYS}d", "--speed", str(args.speed),
                                   "--history-out", str(history_dir), "--sources-out", str(sources)])
        children.append(sim)
        if not sim.wait_for("collector sources written", timeout=120):
            print("andon demo: the simulator did not start:\n" + "\n".join(sim.lines[-20:]), file=sys.stderr)
            return 1
        env = {"ANDON_SPOOL_DIR": str(work / "spool")}
        children.append(_Child("collector", [py, "-m", "andon.cli", "collect", "--sources", str(sources),
                                             "--metrics-port", "9108"], env))
        threading.Thread(target=_load_history, args=(settings.database_url, history_dir), daemon=True,
                         name="history").start()
        base = f"http://{settings.api_host}:{port}"
        print("\n" + "=" * 78)
        print("Andon demo: a simulated 6-machine JIT line, live over OPC UA and MQTT")
        print(f"  live board:     {base}/board#key={board_key}")
        print(f"  downtime:       {base}/downtime     JIT readiness: {base}/jit     risk: {base}/risk")
        print(f"  API docs:       {base}/docs")
        print(f"  database:       {DEMO_DATABASE} (made anew for each demo run)")
        print(f"  viewer key:     {viewer_key}")
        print(f"  maintainer key: {board_key}   (the board link carries it; it may enter downtime reasons)")
        print("Press Ctrl-C to stop.")
        print("=" * 78 + "\n", flush=True)
        import uvicorn

        uvicorn.run("api.app:create_app", factory=True, host=settings.api_host, port=port, log_level="warning")
    finally:
        for c in reversed(children):
            c.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0
