#!/usr/bin/env python3
"""Benchmark: MQTT -> TimescaleDB end to end through Andon's collector, against ceilings in the same run.

Everything runs on loopback against a Mosquitto of the bench's own (free port, temp config, persistence
off, in-flight and queue limits raised), so the shared broker is not disturbed. The publisher runs in
its own processes, ``--publishers`` streams at once, from payload files in chunks (one topic each):
``mosquitto_pub -l`` for single events (C, little CPU; it gives up beyond 65,535 queued QoS 1 messages)
and bench/mqtt_publish.py (paho) for the 100 kB batch payloads, which mosquitto_pub -l reads slowly.

Per run, with the same publisher and the same payloads:

* ``paho QoS 1 ceiling``: a paho-mqtt 2 subscriber (QoS 1, MQTT 5, same Receive Maximum as the
  collector) that only ``json.loads`` each payload and lets paho acknowledge it.
* ``qos1``: single-event QoS 1 messages (Andon JSON, state and count topics) through the real path:
  ``collector.mqtt`` MqttSource (from_config, as ``andon collect`` builds it: known machines, heartbeat,
  manual acknowledgements after the batch is durable) -> ``collector.runtime.run`` -> Delivery -> EventWriter
  -> a fresh database (``db.upgrade`` + ``plant_sync`` of config/plant.yaml).
* ``batched``: ``andon/v1/<machine>/batch`` messages of ``--events-per-message`` events (5 % state,
  15 % count, 80 % telemetry) through the same path, in events/s.
* ``copy``: binary COPY of the very rows the writer stores for those events into identical hypertables
  (the ceiling for the database side).

Rates are from the moment the publisher starts until the last message is processed (ceiling) or the last
event is committed (collector). Order alternates between runs; figures are medians. Last line: JSON.

Other processes on a shared machine move the rates; the collector's CPU time per message / per event
moves much less, so each run also prints it, split by thread (``main``: the event loop, which decodes;
``paho``: the network thread; ``writer``: the worker threads that build rows and COPY) and the part the
cyclic garbage collector took. ``--profile`` adds cProfile of the event loop's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import getpass
import io
import json
import os
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from andon.events import Event  # noqa: E402
from andon.plant import load_plant_model  # noqa: E402
from andon.storage import db, plant_sync  # noqa: E402
from andon.storage.writer import _TABLES, EventWriter, WriteResult  # noqa: E402
from collector import mqtt as mqtt_source  # noqa: E402
from collector import mqtt_json, runtime  # noqa: E402
from collector.base import Rejection  # noqa: E402
from collector.heartbeat import NO_DATA_REASON  # noqa: E402
from collector.spool import Spool  # noqa: E402

BASE = "postgresql://postgres@127.0.0.1:5432/postgres"
RECEIVE_MAXIMUM = 1000  # the collector's default (MqttSourceConfig.receive_maximum)
TIMEOUT_S = 300.0


# --- broker and publisher -------------------------------------------------------------------------------


class Broker:
    """A mosquitto of the bench's own on a free loopback port: no persistence, generous limits."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.workdir = workdir
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_inflight_messages {RECEIVE_MAXIMUM}\nmax_queued_messages 2000000\nmax_queued_bytes 0\n"
            "message_size_limit 0\n"
            f"log_dest file {workdir}/mosquitto.log\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"mosquitto did not start: {(workdir / 'mosquitto.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Load:
    """Payload files, one topic each, and what they hold."""

    chunks: list[tuple[str, Path]]  # (topic, file with one payload per line)
    messages: int
    events: list[Event]  # the canonical events the collector should store (for the COPY ceiling)
    big: bool = False  # batch payloads: published by a paho process, not mosquitto_pub -l


def publish(port: int, load: Load, publishers: int) -> float:
    """Publish every chunk at QoS 1 from ``publishers`` processes at once; returns (perf_counter) when the
    broker has acknowledged all of them. Single-event chunks go through ``mosquitto_pub -l`` (C, cheap per
    message, one process per chunk); batch payloads (100 kB lines, which mosquitto_pub -l reads slowly)
    through bench/mqtt_publish.py (paho), one process per stream."""
    streams = [load.chunks[i::publishers] for i in range(publishers)]

    def run(cmd: list[str], stdin: Any = None) -> None:
        subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True,
                       timeout=TIMEOUT_S)

    def stream(chunks: list[tuple[str, Path]]) -> None:
        if load.big:
            run([sys.executable, str(ROOT / "bench" / "mqtt_publish.py"), str(port),
                 *(f"{topic}={path}" for topic, path in chunks)])
            return
        for topic, path in chunks:
            with path.open("rb") as f:
                run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l", "-t", topic,
                     "-V", "mqttv5"], f)

    with ThreadPoolExecutor(publishers) as ex:
        for fut in [ex.submit(stream, s) for s in streams if s]:
            fut.result()
    return time.perf_counter()


# --- payloads -------------------------------------------------------------------------------------------


def single_load(workdir: Path, machines: list[str], n: int, chunk: int, run: int, base: dt.datetime,
                decoder: mqtt_json.JsonDecoder) -> Load:
    """n single-event messages: chunks alternate between machines and between state and count topics."""
    states = ["running", "idle", "running", "unplanned_stop", "running", "starved"]
    chunks: list[tuple[str, Path]] = []
    events: list[Event] = []
    base_ms = int(base.timestamp() * 1000)
    for c, k in enumerate(range(0, n, chunk)):
        machine = machines[c % len(machines)]
        kind = "state" if c % 2 == 0 else "count"
        topic = mqtt_json.topic(machine, kind)
        lines = []
        for i in range(k, min(n, k + chunk)):
            ts = base_ms + i  # unique per message: nothing is a duplicate
            if kind == "state":
                payload = {"ts": ts, "state": states[i % len(states)], "seq": f"r{run}-{i}"}
                if payload["state"] == "unplanned_stop":
                    payload["fault_code"] = "E101"
            else:
                payload = {"ts": ts, "total": 3, "reject": int(i % 7 == 0), "product": "A", "seq": f"r{run}-{i}"}
            lines.append(json.dumps(payload, separators=(",", ":")))
        path = workdir / f"single-{run}-{c}.txt"
        path.write_text("\n".join(lines) + "\n")
        chunks.append((topic, path))
        for line in lines:
            events += [x for x in decoder.decode(topic, line.encode()) if not isinstance(x, Rejection)]
    return Load(chunks, n, events)


def batch_load(workdir: Path, machines: list[str], n_events: int, per_message: int, messages_per_chunk: int,
               run: int, base: dt.datetime, decoder: mqtt_json.JsonDecoder) -> Load:
    """Batch messages of ``per_message`` events (5 % state, 15 % count, 80 % telemetry) per machine."""
    metrics = [("vibration_rms", "mm/s"), ("bearing_temp", "degC"), ("motor_current", "A"), ("cycle_time", "s")]
    states = ["running", "idle", "running", "unplanned_stop", "running", "starved"]
    base_ms = int(base.timestamp() * 1000)
    n_messages = -(-n_events // per_message)
    chunks: list[tuple[str, Path]] = []
    events: list[Event] = []
    lines_of: dict[str, list[str]] = {}
    for j in range(n_messages):
        machine = machines[j % len(machines)]
        evs: list[dict[str, Any]] = []
        for i in range(j * per_message, min(n_events, (j + 1) * per_message)):
            ts = base_ms + i
            r = i % 20
            if r == 0:
                evs.append({"kind": "state", "ts": ts, "state": states[(i // 20) % len(states)], "seq": f"b{run}-{i}"})
            elif r < 4:
                evs.append({"kind": "count", "ts": ts, "total": 2, "reject": int(r == 1), "seq": f"b{run}-{i}"})
            else:
                metric, unit = metrics[r % 4]
                evs.append({"kind": "telemetry", "ts": ts, "metric": metric, "value": round((i % 997) * 0.013, 3),
                            "unit": unit, "seq": f"b{run}-{i}"})
        lines_of.setdefault(machine, []).append(json.dumps({"events": evs}, separators=(",", ":")))
    # Chunks interleave the machines, so no machine's feed goes quiet past the heartbeat timeout.
    per_machine = [[lines[k:k + messages_per_chunk] for k in range(0, len(lines), messages_per_chunk)]
                   for lines in lines_of.values()]
    c = 0
    for k in range(max(len(p) for p in per_machine)):
        for machine, parts in zip(lines_of, per_machine, strict=True):
            if k >= len(parts):
                continue
            topic = mqtt_json.topic(machine, "batch")
            path = workdir / f"batch-{run}-{c}.txt"
            path.write_text("\n".join(parts[k]) + "\n")
            chunks.append((topic, path))
            c += 1
            for line in parts[k]:
                events += [x for x in decoder.decode(topic, line.encode()) if not isinstance(x, Rejection)]
    return Load(chunks, n_messages, events, big=True)


# --- the ceiling: paho, parse only ----------------------------------------------------------------------


def paho_ceiling(port: int, load: Load, publishers: int) -> tuple[float, float, float]:
    """Messages/s of a paho subscriber that only parses, of the publisher itself, and the subscriber's CPU
    seconds meanwhile."""
    done = threading.Event()
    state = {"n": 0, "t": 0.0}
    target = load.messages

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        json.loads(msg.payload)
        state["n"] += 1
        if state["n"] >= target:
            state["t"] = time.perf_counter()
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    client.connect("127.0.0.1", port, properties=props)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(f"{mqtt_json.TOPIC_PREFIX}/+/+", qos=1)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("paho subscriber: no SUBACK")
        t0 = time.perf_counter()
        c0 = time.process_time()
        t_pub = publish(port, load, publishers)
        if not done.wait(TIMEOUT_S):
            raise RuntimeError(f"paho subscriber got {state['n']} of {target} messages")
        cpu_s = time.process_time() - c0
    finally:
        client.disconnect()
        client.loop_stop()
    return target / (state["t"] - t0), target / (t_pub - t0), cpu_s


class GcTimer:
    """CPU seconds the cyclic garbage collector spends (in whichever thread it runs), via gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._start


GC_TIMER = GcTimer()


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's threads, by kind (Linux /proc): where the collector's time
    goes (decoding in the event loop, paho's network thread, the writer's worker threads)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = float(os.sysconf("SC_CLK_TCK"))
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(task.name), "other")
        kind = "main" if name == "MainThread" else "paho" if name.startswith("paho") else \
            "writer" if name.startswith("asyncio") else name.rstrip("0123456789-_ ") or "other"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


# --- the collector path ---------------------------------------------------------------------------------


@dataclass
class TimedDelivery(runtime.Delivery):
    """The runtime's Delivery, noting when the stored count reaches a target."""

    target: int = 0
    reached_at: float = 0.0
    reached: threading.Event = field(default_factory=threading.Event)

    def _write(self, events: list[Event]) -> None:
        super()._write(events)
        if self.target and self.stats["written"] >= self.target and not self.reached.is_set():
            self.reached_at = time.perf_counter()
            self.reached.set()


def collector_rate(delivery: TimedDelivery, plant: Any, port: int, load: Load, publishers: int,
                   profile: cProfile.Profile | None = None) -> tuple[float, float, dict[str, Any]]:
    """(events/s, messages/s) from publish start to the last event committed, plus the source counters and
    ``cpu_s``: the CPU time the collector's process (paho, decoding, writer threads) spent meanwhile, a
    figure that the machine's other load hardly moves (the database's CPU is not in it)."""
    source = mqtt_source.from_config(
        {"id": "bench-mqtt", "type": "mqtt", "host": "127.0.0.1", "port": port,
         "client_id": f"andon-bench-{uuid.uuid4().hex[:8]}", "receive_maximum": RECEIVE_MAXIMUM},
        plant)
    expected = len(load.events)

    cpu: dict[str, Any] = {"s": 0.0, "threads": {}}

    async def go() -> tuple[float, float, float]:
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run([source], delivery, stop))
        try:
            for _ in range(1000):
                if source.connected:
                    break
                await asyncio.sleep(0.01)
            else:
                raise RuntimeError("collector did not connect")
            await asyncio.sleep(0.5)  # the SUBACK
            delivery.reached.clear()
            delivery.target = delivery.stats["written"] + expected
            if profile is not None:
                profile.enable()
            t0 = time.perf_counter()
            c0 = time.process_time()
            threads0 = thread_cpu()
            gc0 = GC_TIMER.seconds
            t_pub = await asyncio.to_thread(publish, port, load, publishers)
            if not await asyncio.to_thread(delivery.reached.wait, TIMEOUT_S):
                raise RuntimeError(f"collector stored {delivery.stats['written']} of {delivery.target}")
            cpu["s"] = time.process_time() - c0
            cpu["threads"] = {name: round(s - threads0.get(name, 0.0), 3) for name, s in thread_cpu().items()
                              if s - threads0.get(name, 0.0) > 0.005}
            cpu["threads"]["gc (in those)"] = round(GC_TIMER.seconds - gc0, 3)
            if profile is not None:
                profile.disable()
            return expected / (delivery.reached_at - t0), load.messages / (delivery.reached_at - t0), \
                load.messages / (t_pub - t0)
        finally:
            stop.set()
            await task

    ev_rate, msg_rate, pub_rate = asyncio.run(go())
    counters = {"messages_in": source.messages_in, "events_in": source.events_in, "rejected": source.rejected,
                "acks_sent": source.acks_sent, "pub_msgs_per_s": round(pub_rate), "cpu_s": cpu["s"],
                "thread_cpu_s": cpu["threads"]}
    if source.rejected:
        raise RuntimeError(f"collector rejected {source.rejected}: {dict(source.rejection_reasons)}")
    return ev_rate, msg_rate, counters


# --- the database ceiling -------------------------------------------------------------------------------


def copy_rate(url: str, writer: EventWriter, events: list[Event], batch: int = 10_000) -> float:
    row_batches = []
    for i in range(0, len(events), batch):
        rows, _ = writer._rows(events[i:i + batch], WriteResult())
        row_batches.append(rows)
    n = sum(len(r) for rb in row_batches for r in rb.values())
    with psycopg.connect(url) as conn:
        t = time.perf_counter()
        for rows in row_batches:
            with conn.transaction():
                for kind, kind_rows in rows.items():
                    if not kind_rows:
                        continue
                    table, cols, types = _TABLES[kind]
                    with conn.cursor() as cur, cur.copy(
                            f"copy raw_{table} ({', '.join(cols)}) from stdin (format binary)") as cp:
                        cp.set_types(types)
                        for row in kind_rows:
                            cp.write_row(row)
        return n / (time.perf_counter() - t)


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    name = f"andon_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(BASE, autocommit=True) as c:
        c.execute(f'create database "{name}"')
    try:
        yield make_conninfo(BASE, dbname=name)
    finally:
        with psycopg.connect(BASE, autocommit=True) as c:
            c.execute(f'drop database if exists "{name}" with (force)')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000, help="single-event QoS 1 messages per run")
    ap.add_argument("--chunk", type=int, default=20_000, help="messages per mosquitto_pub (< 65,535)")
    ap.add_argument("--batch-events", type=int, default=500_000, help="events per batched run")
    ap.add_argument("--events-per-message", type=int, default=1000)
    ap.add_argument("--publishers", type=int, default=2, help="mosquitto_pub processes at once")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", choices=["qos1", "batched"], help="cProfile the collector's process in the "
                    "last run of this kind (its threads: paho's and the writer's are not traced)")
    args = ap.parse_args()
    if args.chunk > 65_000:
        ap.error("--chunk must stay below 65,535 (mosquitto_pub -l gives up beyond that)")

    plant = load_plant_model(ROOT / "config" / "plant.yaml")
    machines = [m.id for m in plant.machines()]
    decoder = mqtt_json.JsonDecoder("bench-mqtt", known_machines=machines)
    paho_rates: list[float] = []
    qos1_rates: list[float] = []
    batched_rates: list[float] = []
    copy_rates: list[float] = []
    pub_rates: list[float] = []
    qos1_cpu: list[float] = []  # collector process CPU per message / per event: robust to a busy machine
    batched_cpu: list[float] = []
    paho_cpu: list[float] = []
    profile_text = ""
    with tempfile.TemporaryDirectory(prefix="andon-bench-mqtt-") as tmp, bench_database() as url:
        work = Path(tmp)
        broker = Broker(work)
        try:
            db.upgrade(url, create_db=False)
            with psycopg.connect(url, autocommit=True) as conn:
                plant_sync.sync_plant_model(conn, plant, "bench")
                for kind, (table, _, _) in _TABLES.items():
                    conn.execute(f"create table raw_{table} (like {table} including defaults including indexes)")
                    interval = "1 day" if kind == "telemetry" else "7 days"
                    conn.execute(f"select create_hypertable('raw_{table}', 'ts', chunk_time_interval => "
                                 f"interval '{interval}')")
            pool = db.make_pool(url, 1, 4)
            spool = Spool(work / "spool")
            try:
                writer = EventWriter(pool)
                delivery = TimedDelivery(writer, spool, pool)
                now = dt.datetime.now(dt.UTC).replace(microsecond=0)
                for run in range(args.runs):
                    # Fresh timestamps per run (minutes apart) so every event is new.
                    single = single_load(work, machines, args.messages, args.chunk, run,
                                         now - dt.timedelta(hours=2, minutes=-10 * run), decoder)
                    batch = batch_load(work, machines, args.batch_events, args.events_per_message, 50, run,
                                       now - dt.timedelta(hours=1, minutes=-10 * run), decoder)
                    prof_q = cProfile.Profile() if args.profile == "qos1" and run == args.runs - 1 else None
                    prof_b = cProfile.Profile() if args.profile == "batched" and run == args.runs - 1 else None
                    if run % 2 == 0:
                        ceiling, pub, paho_cpu_s = paho_ceiling(broker.port, single, args.publishers)
                        _, qos1, qcounters = collector_rate(delivery, plant, broker.port, single, args.publishers,
                                                            prof_q)
                    else:
                        _, qos1, qcounters = collector_rate(delivery, plant, broker.port, single, args.publishers,
                                                            prof_q)
                        ceiling, pub, paho_cpu_s = paho_ceiling(broker.port, single, args.publishers)
                    batched, _, bcounters = collector_rate(delivery, plant, broker.port, batch, args.publishers,
                                                           prof_b)
                    cp = copy_rate(url, writer, single.events + batch.events)
                    paho_rates.append(ceiling)
                    qos1_rates.append(qos1)
                    batched_rates.append(batched)
                    copy_rates.append(cp)
                    pub_rates.append(pub)
                    qos1_cpu.append(qcounters["cpu_s"] * 1e6 / args.messages)
                    paho_cpu.append(paho_cpu_s * 1e6 / args.messages)
                    batched_cpu.append(bcounters["cpu_s"] * 1e6 / len(batch.events))
                    print(f"run {run}: paho QoS 1 parse-only {ceiling:,.0f} msg/s (publisher alone {pub:,.0f}), "
                          f"collector QoS 1 {qos1:,.0f} msg/s ({qos1 / ceiling:.0%}), batched {batched:,.0f} "
                          f"events/s ({bcounters['messages_in']} messages), raw COPY {cp:,.0f} rows/s; collector CPU "
                          f"{qos1_cpu[-1]:.1f} us/message (QoS 1; paho parse-only {paho_cpu[-1]:.1f}), "
                          f"{batched_cpu[-1]:.2f} us/event (batched); CPU s by thread: QoS 1 "
                          f"{qcounters['thread_cpu_s']}, batched {bcounters['thread_cpu_s']}",
                          flush=True)
                    for prof in (prof_q, prof_b):
                        if prof is not None:
                            out = io.StringIO()
                            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
                            profile_text = out.getvalue()
                    for f in work.glob("*.txt"):
                        f.unlink()
                with psycopg.connect(url) as conn:
                    # (Heartbeat "no data" rows, if a feed went quiet past the timeout, are not the bench's.)
                    stored = conn.execute("select (select count(*) from state_events where reason_code is distinct "
                                          "from %s) + (select count(*) from count_events) + "
                                          "(select count(*) from telemetry)", (NO_DATA_REASON,)).fetchone()[0]
                expected = args.runs * (len(single.events) + len(batch.events))
                if stored != expected:
                    raise RuntimeError(f"stored {stored} events, expected {expected}")
            finally:
                spool.close()
                pool.close()
        finally:
            broker.stop()
    if profile_text:
        print(profile_text)
    paho_med, qos1_med = statistics.median(paho_rates), statistics.median(qos1_rates)
    ratios = [q / p for q, p in zip(qos1_rates, paho_rates, strict=True)]
    batched_med, copy_med = statistics.median(batched_rates), statistics.median(copy_rates)
    print(f"median of {args.runs}: collector QoS 1 {qos1_med:,.0f} msg/s vs paho parse-only {paho_med:,.0f} msg/s "
          f"(ratio {qos1_med / paho_med:.2f}, per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}; target 0.80); "
          f"batched {batched_med:,.0f} events/s (target 100,000; raw COPY {copy_med:,.0f} rows/s, "
          f"ratio {batched_med / copy_med:.2f}); all {stored:,} events stored once")
    print(json.dumps({
        "qos1_msgs_per_s": round(qos1_med), "paho_qos1_ceiling": round(paho_med),
        "qos1_ratio": round(qos1_med / paho_med, 3), "qos1_ratio_per_run": [round(r, 3) for r in ratios],
        "batched_events_per_s": round(batched_med), "copy_rows_per_s": round(copy_med),
        "batched_over_copy": round(batched_med / copy_med, 3),
        "publisher_msgs_per_s": round(statistics.median(pub_rates)),
        "qos1_cpu_us_per_msg": round(statistics.median(qos1_cpu), 2),
        "paho_qos1_cpu_us_per_msg": round(statistics.median(paho_cpu), 2),
        "batched_cpu_us_per_event": round(statistics.median(batched_cpu), 3),
        "runs": args.runs, "messages_per_run": args.messages, "batched_events_per_run": args.batch_events,
        "events_per_message": args.events_per_message, "publishers": args.publishers,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
