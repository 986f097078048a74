"""The real `andon collect` process end to end: MQTT (own broker) -> collector -> TimescaleDB, with the
collector killed with SIGKILL mid-stream and restarted: nothing acknowledged is lost, nothing is doubled,
and counter readings across the restart give exactly the parts made."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.brokers import OwnBroker

REPO = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 5, 4, 8, 0, tzinfo=dt.UTC)
N_SAMPLES = 3000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_collector(sources: Path, db_url: str, spool: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "ANDON_DATABASE_URL": db_url, "ANDON_PLANT_FILE": str(REPO / "config" / "plant.yaml"),
           "ANDON_SPOOL_DIR": str(spool), "ANDON_LOG_LEVEL": "INFO"}
    return subprocess.Popen(
        [sys.executable, "-m", "andon.cli", "collect", "--sources", str(sources), "--metrics-port",
         str(_free_port())], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)


def _stored(db_url: str) -> tuple[int, int, int]:
    with psycopg.connect(db_url) as conn:
        tel = conn.execute("select count(*), count(distinct ts) from telemetry where metric = 'e2e'").fetchone()
        parts = conn.execute("select coalesce(sum(total), 0) from count_events where source_id = 'e2e-mqtt'"
                             ).fetchone()[0]
    return tel[0], tel[1], int(parts)


@pytest.mark.timeout(180)
def test_collector_sigkill_and_restart_loses_nothing(fresh_db_url: str, own_broker: OwnBroker, tmp_path: Path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(json.dumps({"sources": [{
        "id": "e2e-mqtt", "type": "mqtt", "host": "127.0.0.1", "port": own_broker.port,
        "client_id": "andon-e2e-collector", "counter_bits": 16}]}))
    log = tmp_path / "collector.log"
    collector = _start_collector(sources, fresh_db_url, tmp_path / "spool", log)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="e2e-publisher", protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", own_broker.port)
    pub.loop_start()
    try:
        # Wait until the collector's persistent session exists (it subscribed), so QoS 1 messages queue
        # for it from now on even while it is dead.
        deadline = time.monotonic() + 30
        while b"connected to" not in log.read_bytes() and time.monotonic() < deadline:
            if collector.poll() is not None:
                pytest.fail(f"collector exited: {log.read_text()}")
            time.sleep(0.2)
        time.sleep(1.0)
        counter_start = 65000  # the counter wraps at 16 bits during the run
        done = threading.Event()

        def publish() -> None:
            for i in range(N_SAMPLES):
                ts = T0 + dt.timedelta(seconds=i)
                pub.publish("andon/v1/L1-M1/telemetry", json.dumps(
                    {"ts": ts.isoformat(), "metric": "e2e", "value": float(i), "seq": i}), qos=1)
                if i % 10 == 0:
                    pub.publish("andon/v1/L1-M1/counter", json.dumps(
                        {"ts": ts.isoformat(), "processed": (counter_start + i) % 65536, "defective": 0}), qos=1)
                if i % 200 == 0:
                    time.sleep(0.05)
            done.set()

        producer = threading.Thread(target=publish)
        producer.start()
        time.sleep(0.6)
        collector.send_signal(signal.SIGKILL)  # mid-stream, no chance to flush or say goodbye
        collector.wait(10)
        time.sleep(1.0)
        collector = _start_collector(sources, fresh_db_url, tmp_path / "spool", log)
        producer.join(60)
        assert done.is_set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows, distinct, parts = _stored(fresh_db_url)
            if rows >= N_SAMPLES:
                break
            time.sleep(0.5)
        rows, distinct, parts = _stored(fresh_db_url)
        assert (rows, distinct) == (N_SAMPLES, N_SAMPLES), log.read_text()[-3000:]
        # Counter readings every 10 samples from counter_start: the first only sets the baseline.
        last_reading = ((N_SAMPLES - 1) // 10) * 10
        assert parts == last_reading
    finally:
        pub.loop_stop()
        pub.disconnect()
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(15)
        except subprocess.TimeoutExpired:
            collector.kill()
