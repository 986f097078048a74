"""The simulator's real-time serve mode (simulator/serve.py): the running simulation drives the OPC UA
server and the MQTT gateways, and what a real asyncua client, a real paho subscriber and the real
collectors (into a fresh database) see equals the simulation's own ground truth.

Brokers: the shared Mosquitto on 127.0.0.1:1883 for Sparkplug, with a group and client ids of the test's
own (other users of the broker are not disturbed and do not disturb); Andon JSON topics have a fixed
namespace (andon/v1/<machine>/...) that other users of the shared broker may publish on, so the tests
that publish or count JSON messages use a Mosquitto of their own (tests/brokers.py). The simulated
window is a weekday morning in the past, with a break, stops and blocking in it; timestamps are
simulated time (the tests run at 60-120x).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pandas as pd
import psycopg
import pytest
from asyncua import Client
from paho.mqtt.enums import CallbackAPIVersion

from andon.events import STATE_BY_CODE, MachineState
from andon.plant import PlantModel
from andon.storage import db
from andon.storage.writer import EventWriter
from collector import runtime, sparkplug
from collector.opcua import PACKML_MODE_MAP, PACKML_STATE_MAP
from collector.spool import Spool
from simulator.config import SimulationConfig, load_simulation_config
from simulator.frontends.mqtt_gateway import GatewayFaults
from simulator.frontends.opcua_server import free_port
from simulator.serve import (
    HISTORY_SOURCE_ID,
    LiveRunner,
    ServeOptions,
    default_split,
    packml_for,
    parse_split,
    sources_config,
    stop_reason_id,
    write_history,
)
from simulator.simulation import simulate
from simulator.truth import GroundTruth
from tests.brokers import OwnBroker, broker_up

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
BROKER_PORT = 1883
MACHINES = ["L1-M1", "L1-M2", "L1-M3", "L1-M4", "L1-M5", "L1-M6"]
# Monday 2 Nov 2026, early shift (Europe/Berlin, UTC+1); the breakfast break starts 08:00Z.
SIM_START = dt.datetime(2026, 11, 2, 5, 30, tzinfo=dt.UTC)
LIVE_FROM = dt.datetime(2026, 11, 2, 7, 52, tzinfo=dt.UTC)
E2E_LIVE_FROM = dt.datetime(2026, 11, 2, 7, 55, tzinfo=dt.UTC)  # 6 minutes across the break at 08:00Z


@pytest.fixture(scope="module")
def sim_config() -> SimulationConfig:
    return load_simulation_config(REPO / "config" / "simulation.yaml")


def _busy_config(base: SimulationConfig) -> SimulationConfig:
    """The demo parameters with stops, failures and changeovers frequent enough to show in minutes."""
    d = base.model_dump()
    d["line"]["lot_size"] = {"dist": "exponential", "mean": 25}
    d["defaults"]["failures"]["time_between"] = {"dist": "exponential", "mean": 60, "unit": "min"}
    d["defaults"]["micro_stops"]["rate_per_h"] = 8
    d["defaults"]["changeover"]["duration"] = {"dist": "lognormal", "median": 1, "sigma": 0.3, "unit": "min"}
    return SimulationConfig.model_validate(d)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _truth(plant: PlantModel, config: SimulationConfig, seed: int, end: dt.datetime) -> GroundTruth:
    """The simulation's own truth, from a fresh fast run (same seed, same records)."""
    return simulate(plant, config, seed=seed, start=SIM_START, duration=end - SIM_START, telemetry=False)


def _state_at(truth: GroundTruth, machine: str, ts: dt.datetime) -> pd.Series:
    st = truth.states[truth.states["machine_id"] == machine]
    row = st[(st["start"] <= ts) & (st["end"] > ts)]
    assert len(row) == 1, (machine, ts)
    return row.iloc[0]


def _parts(truth: GroundTruth, a: dt.datetime, b: dt.datetime) -> dict[str, tuple[int, int]]:
    pr = truth.parts[(truth.parts["ts"] >= a) & (truth.parts["ts"] < b)]
    return {m: (int((pr["machine_id"] == m).sum()), int(pr[pr["machine_id"] == m]["reject"].sum()))
            for m in MACHINES}


def _durations(changes: list[tuple[dt.datetime, str]], a: dt.datetime, b: dt.datetime) -> dict[str, float]:
    """Seconds per state within [a, b) of a machine's state changes (each holds until the next)."""
    out: dict[str, float] = defaultdict(float)
    for (t0, state), (t1, _) in zip(changes, [*changes[1:], (b, "")], strict=True):
        lo, hi = max(t0, a), min(t1, b)
        if hi > lo:
            out[state] += (hi - lo).total_seconds()
    return dict(out)


def _truth_changes(truth: GroundTruth, machine: str) -> list[tuple[dt.datetime, str]]:
    st = truth.states[truth.states["machine_id"] == machine].sort_values("start")
    out: list[tuple[dt.datetime, str]] = []
    for ts, state in zip(st["start"], st["state"], strict=True):
        if not out or out[-1][1] != state:
            out.append((ts.to_pydatetime(), state))
    return out


# --- pure logic --------------------------------------------------------------------------------------------


def test_packml_mapping_round_trips_through_both_collectors():
    """Every simulator state, published as PackML, is read back as the same state by the OPC UA
    collector's preset maps and by the Sparkplug host's mapping."""
    cases = [(s, False, None) for s in MachineState if s is not MachineState.OFFLINE]
    cases += [(MachineState.UNPLANNED_STOP, True, None), (MachineState.IDLE, False, "break"),
              (MachineState.IDLE, False, "no_shift")]
    for state, small, kind in cases:
        pk = packml_for(state, small_stop=small, calendar_kind=kind)
        mode = PACKML_MODE_MAP.get(str(pk.unit_mode))
        target = PACKML_STATE_MAP[str(pk.state)]
        if mode is not None:
            via_opcua = mode
        elif target == "suspended":
            via_opcua = MachineState.BLOCKED if pk.blocked and not pk.starved else MachineState.STARVED
        else:
            via_opcua = target
        via_sparkplug = sparkplug.packml_to_machine_state(pk.state, pk.unit_mode, blocked=pk.blocked,
                                                          starved=pk.starved)
        assert via_opcua == state and via_sparkplug == state, (state, pk)
    assert packml_for(MachineState.UNPLANNED_STOP, small_stop=True).state == 11
    assert packml_for(MachineState.UNPLANNED_STOP).state == 9
    assert (packml_for(MachineState.SETUP).unit_mode, packml_for(MachineState.PLANNED_STOP).unit_mode) == (3, 2)
    assert [stop_reason_id(c) for c in ("E101", "E4", "JAM", None, "")] == [101, 4, 900, 0, 0]
    assert stop_reason_id("XYZ") == stop_reason_id("XYZ") > 1_000_000


def test_split_defaults_and_validation():
    assert default_split(MACHINES) == {"L1-M1": "opcua", "L1-M2": "opcua", "L1-M3": "opcua",
                                       "L1-M4": "sparkplug", "L1-M5": "sparkplug", "L1-M6": "json"}
    assert set(default_split(["a", "b", "c"]).values()) == {"opcua", "sparkplug", "json"}
    assert default_split(["a"]) == {"a": "opcua"}
    assert parse_split(["json=L1-M1", "opcua=L1-M2,L1-M3"], MACHINES) == {
        "L1-M1": "json", "L1-M2": "opcua", "L1-M3": "opcua"}
    for bad in (["opcua=L1-M1", "json=L1-M1"], ["modbus=L1-M1"], ["opcua=L9"], ["opcua"]):
        with pytest.raises(ValueError):
            parse_split(bad, MACHINES)
    with pytest.raises(ValueError):
        ServeOptions(serve="opcua", split={"L1-M1": "opcua"})
    with pytest.raises(ValueError):
        ServeOptions(speed=0)


def test_demo_sources_file_matches_serve_defaults_and_builds(demo_plant: PlantModel, tmp_path: Path):
    """config/sources.yaml is what the default `--serve both` publishes, and the collector builds it."""
    path = REPO / "config" / "sources.yaml"
    demo = runtime.load_sources_file(path)
    generated = tmp_path / "sources.yaml"
    generated.write_text(json.dumps(sources_config(ServeOptions(), MACHINES)))
    assert demo.model_dump() == runtime.load_sources_file(generated).model_dump()
    built = [runtime.build_source(c, demo_plant) for c in demo.sources]
    assert [type(s).__name__ for s in built] == ["OpcUaSource", "MqttSource"]
    opc, mqtt = built
    assert opc.config.url == "opc.tcp://127.0.0.1:4840/andon/sim"
    assert opc.config.discover is not None and opc.config.discover.include == ["L1-M1", "L1-M2", "L1-M3"]
    assert mqtt.config.sparkplug is not None and mqtt.config.sparkplug.groups == ["andon"]
    assert mqtt.config.json_topics == ["andon/v1/+/+"]


# --- OPC UA ------------------------------------------------------------------------------------------------


async def test_opcua_packml_nodes_follow_the_truth(demo_plant: PlantModel, sim_config: SimulationConfig):
    """All six machines on OPC UA at 120x; an asyncua client subscribed to StateCurrent sees every value
    with a source timestamp at which the truth has that state, and the final PackML tags and AccCount
    counters equal the truth (history parts included: the counters never reset)."""
    seed = 4
    end = LIVE_FROM + dt.timedelta(minutes=10)
    runner = LiveRunner(demo_plant, sim_config, ServeOptions(
        serve="opcua", seed=seed, start=SIM_START, live_from=LIVE_FROM, speed=120, opcua_port=free_port(),
        tick_s=0.1))
    await runner.start()
    seen: list[tuple[str, int, dt.datetime]] = []
    try:
        assert runner.history is not None and runner.history.end == pd.Timestamp(LIVE_FROM)
        async with Client(runner.opcua_url, timeout=10) as client:
            assert runner.opcua is not None
            ids = {mid: runner.opcua.node_ids(mid) for mid in MACHINES}
            node_machine = {client.get_node(ids[mid]["state"]).nodeid: mid for mid in MACHINES}

            class Handler:
                def datachange_notification(self, node: Any, val: int, data: Any) -> None:
                    seen.append((node_machine[node.nodeid], val, data.monitored_item.Value.SourceTimestamp))

            sub = await client.create_subscription(50, Handler())
            await sub.subscribe_data_change([client.get_node(n) for n in node_machine], queuesize=100)
            await asyncio.sleep(0.3)
            await runner.run(until=end)
            await asyncio.sleep(0.5)
            truth = _truth(demo_plant, sim_config, seed, end)
            last = end - dt.timedelta(microseconds=1)
            for mid in MACHINES:
                vals = await client.read_values([client.get_node(ids[mid][role]) for role in (
                    "state", "unit_mode", "blocked", "starved", "stop_reason_id", "processed_acc", "defective_acc")])
                row = _state_at(truth, mid, last)
                pk = packml_for(MachineState(row["state"]), small_stop=bool(row["small_stop"]),
                                calendar_kind="break")
                fault = row["fault_code"] if row["state"] == "unplanned_stop" else None
                assert vals[:5] == [pk.state, pk.unit_mode, pk.blocked, pk.starved, stop_reason_id(fault)], mid
                parts = truth.parts[truth.parts["machine_id"] == mid]
                assert vals[5:] == [len(parts), int(parts["reject"].sum())], mid
    finally:
        await runner.stop()
    live = [(m, v, t.replace(tzinfo=dt.UTC)) for m, v, t in seen if t.replace(tzinfo=dt.UTC) >= LIVE_FROM]
    assert len(live) >= 30  # the window has ~85 state changes, several of them changes of StateCurrent
    for mid, value, ts in live:
        row = _state_at(truth, mid, ts)
        assert value == packml_for(MachineState(row["state"]), small_stop=bool(row["small_stop"]),
                                   calendar_kind="break").state, (mid, ts, value, row["state"])
    # Every change of the PackML state number in the truth was seen, at its time.
    changes = 0
    for mid in MACHINES:
        st = truth.states[truth.states["machine_id"] == mid].sort_values("start")
        numbers = [(ts.to_pydatetime(), packml_for(MachineState(state), small_stop=bool(small),
                                                   calendar_kind="break").state)
                   for ts, state, small in zip(st["start"], st["state"], st["small_stop"], strict=True)]
        got = sorted(ts for m, _, ts in live if m == mid)
        for (_, before), (ts, number) in itertools.pairwise(numbers):
            if LIVE_FROM < ts < end and number != before:
                changes += 1
                assert any(abs((g - ts).total_seconds()) < 1e-3 for g in got), (mid, ts, number)
    assert changes >= 20


# --- MQTT: Sparkplug B and JSON on the shared broker ---------------------------------------------------------


class _Subscriber:
    def __init__(self, topics: list[str], port: int = BROKER_PORT) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=_unique("serve-sub"),
                                  protocol=paho.MQTTv5)

        def on_connect(c: paho.Client, *_: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_: Any) -> None:
            self._ready.set()

        def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message

    def __enter__(self) -> _Subscriber:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscription not acknowledged"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)


def _require_shared_broker() -> None:
    if not broker_up(BROKER_PORT):
        pytest.fail(f"no MQTT broker on 127.0.0.1:{BROKER_PORT} (start the services: scripts/services.sh)")


async def test_sparkplug_births_and_data_follow_the_truth(demo_plant: PlantModel, sim_config: SimulationConfig):
    """--serve mqtt (Sparkplug B): NBIRTH, a DBIRTH per machine, DDATA whose last counter readings equal
    the truth's part totals and whose state metrics carry the truth's states; NDEATH at a clean stop.
    The gateway's fault injection is passed through (here: duplicated messages)."""
    _require_shared_broker()
    seed, group = 11, _unique("serve-sp")
    end = LIVE_FROM + dt.timedelta(minutes=8)
    options = ServeOptions(serve="mqtt", mqtt_format="sparkplug", seed=seed, start=SIM_START, live_from=LIVE_FROM,
                           speed=120, sparkplug_group=group, client_id_prefix=group, tick_s=0.1,
                           faults=GatewayFaults(duplicate_rate=0.05, seed=1))
    with _Subscriber([f"spBv1.0/{group}/#"]) as sub:
        runner = LiveRunner(demo_plant, sim_config, options)
        try:
            await runner.start()
            await runner.run(until=end)
        finally:
            await runner.stop()
        await asyncio.sleep(0.5)
        messages = sub.snapshot()
    assert runner.sparkplug is not None and runner.sparkplug.duplicates_sent > 0
    assert len(messages) - len(set(messages)) >= runner.sparkplug.duplicates_sent  # the copies arrived
    truth = _truth(demo_plant, sim_config, seed, end)
    kinds = [sparkplug.parse_topic(t) for t, _ in messages]
    types = [k.message_type for k in kinds if k is not None]
    assert types[0] == "NBIRTH" and types[-1] == "NDEATH"
    assert sorted(k.device for k in kinds if k is not None and k.message_type == "DBIRTH") == MACHINES
    births: dict[str, dict[int, tuple[str, int]]] = defaultdict(dict)  # device -> alias -> (name, datatype)
    last: dict[tuple[str, str], Any] = {}
    states: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for (_topic, payload), kind in zip(messages, kinds, strict=True):
        assert kind is not None
        if kind.message_type not in ("DBIRTH", "DDATA"):
            continue
        assert kind.device is not None
        for m in sparkplug.decode_payload(payload).metrics:
            if kind.message_type == "DBIRTH":
                births[kind.device][m.alias] = (m.name, m.datatype)
            name, datatype = births[kind.device][m.alias]
            value = sparkplug.metric_value(m, datatype)
            if value is None:
                continue
            last[(kind.device, name)] = value
            if name == "Status.StateCurrent" and kind.message_type == "DDATA":
                states[kind.device].append((dt.datetime.fromtimestamp(m.timestamp / 1000, dt.UTC), value))
    expected = _parts(truth, SIM_START, end)
    for mid in MACHINES:
        assert (last[(mid, "Admin.ProdProcessedCount[0].AccCount")],
                last[(mid, "Admin.ProdDefectiveCount[0].AccCount")]) == expected[mid], mid
        assert {(mid, ch) for ch in ("vibration_rms", "bearing_temp", "motor_current", "cycle_time")} <= set(last)
        for ts, value in states[mid]:
            row = _state_at(truth, mid, ts + dt.timedelta(microseconds=500))  # ms timestamps
            assert value == packml_for(MachineState(row["state"]), small_stop=bool(row["small_stop"]),
                                       calendar_kind="break").state, (mid, ts)
    assert sum(len(v) for v in states.values()) >= 20


async def test_json_topics_carry_every_part_state_and_sample(demo_plant: PlantModel, sim_config: SimulationConfig,
                                                           own_broker: OwnBroker):
    """--serve mqtt --mqtt-format json (on a broker of the test's own: the JSON topic space is shared):
    exactly one count message per part of the truth (product and reject), a state message per change,
    telemetry every 10 simulated seconds per channel."""
    seed, prefix = 4, _unique("serve-json")
    end = LIVE_FROM + dt.timedelta(minutes=6)
    options = ServeOptions(serve="mqtt", mqtt_format="json", seed=seed, start=SIM_START, live_from=LIVE_FROM,
                           speed=120, client_id_prefix=prefix, tick_s=0.1, mqtt_port=own_broker.port)
    with _Subscriber(["andon/v1/+/+"], own_broker.port) as sub:
        runner = LiveRunner(demo_plant, sim_config, options)
        try:
            await runner.start()
            await runner.run(until=end)
        finally:
            await runner.stop()
        await asyncio.sleep(0.5)
        messages = sub.snapshot()
    truth = _truth(demo_plant, sim_config, seed, end)
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, payload in messages:
        _, _, mid, kind = topic.split("/")
        body = json.loads(payload)
        ts = pd.Timestamp(body["ts"])
        assert mid in MACHINES and pd.Timestamp(LIVE_FROM) <= ts < pd.Timestamp(end), (topic, body)
        got[kind].append({"machine": mid, **body, "ts": ts})
    counts = [(c["machine"], c["ts"], c["total"], c["reject"], c.get("product")) for c in got["count"]]
    pr = truth.parts[(truth.parts["ts"] >= LIVE_FROM) & (truth.parts["ts"] < end)]
    expected = {(m, ts, 1, int(r), p) for m, ts, r, p in zip(pr["machine_id"], pr["ts"], pr["reject"], pr["product"],
                                                             strict=True)}
    assert expected and sorted(expected) == sorted(counts)
    state_msgs = {(s["machine"], s["ts"], s["state"]) for s in got["state"]}
    for mid in MACHINES:
        for ts, state in _truth_changes(truth, mid):
            if LIVE_FROM < ts < end:
                assert (mid, pd.Timestamp(ts), state) in state_msgs, (mid, ts, state)
    samples = {(t["machine"], t["metric"], t["ts"]) for t in got["telemetry"]}
    assert len([s for s in samples if s[1] == "bearing_temp" and s[0] == "L1-M1"]) == 6 * 60 // 10


# --- CLI ------------------------------------------------------------------------------------------------------


def test_cli_serves_writes_sources_and_stops_cleanly_on_sigterm(tmp_path: Path):
    """`andon simulate --serve mqtt` in its own process: history fast-forwarded and written, sources file
    written, data flowing, and on SIGTERM the Sparkplug NDEATH and a clean exit."""
    _require_shared_broker()
    group = _unique("serve-cli")
    sources = tmp_path / "sources.yaml"
    history = tmp_path / "history"
    with _Subscriber([f"spBv1.0/{group}/#"]) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "andon.cli", "simulate", "--serve", "mqtt", "--speed", "60", "--start=now-2h",
             "--seed", "3", "--sparkplug-group", group, "--client-id-prefix", group, "--sources-out", str(sources),
             "--history-out", str(history)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum("/DDATA/" in t for t, _ in sub.snapshot()) < 20:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(0.3)
        topics = [t for t, _ in sub.snapshot()]
    assert proc.returncode == 0, out
    assert "not published" in out and "stopped at" in out, out
    assert topics[0].endswith("/NBIRTH/sim-gateway") and topics[-1].endswith("/NDEATH/sim-gateway"), topics[-3:]
    loaded = runtime.load_sources_file(sources)
    assert [s.type for s in loaded.sources] == ["mqtt"]
    assert loaded.model_dump()["sources"][0]["sparkplug"]["groups"] == [group]
    hist = GroundTruth.read(history)
    # --start=now-2h is read before the imports and the start-up; live from the moment serving begins.
    assert pd.Timedelta(hours=2) <= hist.end - hist.start < pd.Timedelta(hours=2, seconds=30)
    assert len(hist.states) > 0


# --- end to end: serve both + the real collectors + a fresh database ----------------------------------------


def _stored(url: str, a: dt.datetime, b: dt.datetime) -> tuple[dict[str, dict[str, tuple[int, int]]],
                                                               dict[str, list[tuple[dt.datetime, str, str | None]]]]:
    with psycopg.connect(url) as conn:
        counts: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
        for mid, source, total, reject in conn.execute(
                "select m.id, c.source_id, sum(c.total), sum(c.reject) from count_events c "
                "join machines m on m.num = c.machine where c.ts >= %s and c.ts < %s group by 1, 2", (a, b)):
            counts[mid][source] = (int(total), int(reject))
        states: dict[str, list[tuple[dt.datetime, str, str | None]]] = defaultdict(list)
        for mid, ts, state, fault in conn.execute(
                "select m.id, s.ts, s.state, s.fault_code from state_events s join machines m on m.num = s.machine "
                "where s.source_id <> %s and s.ts < %s order by s.ts", (HISTORY_SOURCE_ID, b)):
            states[mid].append((ts, STATE_BY_CODE[state].value, fault))
    return counts, states


async def test_end_to_end_serve_both_through_the_collectors_into_the_database(
        demo_plant: PlantModel, sim_config: SimulationConfig, fresh_db_url: str, own_broker: OwnBroker,
        tmp_path: Path):
    """--serve both (L1-M1..M3 OPC UA PackML, L1-M4..M5 Sparkplug B, L1-M6 JSON) at 60x over 6 simulated
    minutes, read by the real collectors (collector.runtime, sources file written by the runner) into a
    fresh database, with the history written straight to the database: stored parts per machine equal
    the truth exactly, each machine from its one source, and the stored state timeline equals the truth's
    (same changes, same times)."""
    # Seed 6 of the busier line: 27 changes in the window (break, starved, blocked, micro-stops, a failure
    # E202 on an OPC UA machine), 25 parts with a reject.
    sim_config = _busy_config(sim_config)
    seed = 6
    live_from = E2E_LIVE_FROM
    end = live_from + dt.timedelta(minutes=6)
    tag = _unique("e2e")
    options = ServeOptions(serve="both", seed=seed, start=SIM_START, live_from=live_from, speed=60,
                           opcua_port=free_port(), mqtt_port=own_broker.port, client_id_prefix=tag,
                           collector_client_id=f"{tag}-collector", tick_s=0.1)
    runner = LiveRunner(demo_plant, sim_config, options)
    sources_path = tmp_path / "sources.yaml"
    runner.write_sources(sources_path)  # before start: the OPC UA port is fixed in the options
    cfg = runtime.load_sources_file(sources_path)
    pool = db.make_pool(fresh_db_url, 1, 4)
    spool = Spool(tmp_path / "spool", 1 << 26)
    delivery = runtime.Delivery(EventWriter(pool), spool, pool)
    sources = {c.id: runtime.build_source(c, demo_plant, runtime.restored_counters(pool, c.id, c.counter_bits))
               for c in cfg.sources}
    mqtt_source, opcua_source = sources["sim-mqtt"], sources["sim-opcua"]
    stop_collect = asyncio.Event()
    collect_mqtt = asyncio.create_task(runtime.run([mqtt_source], delivery, stop_collect))
    collect_opcua: asyncio.Task[None] | None = None
    try:
        # The MQTT collector subscribes first, so it sees the births and every message after them.
        for _ in range(100):
            if mqtt_source.connected:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await runner.start()
        assert runner.history is not None
        history_rows = await asyncio.to_thread(write_history, pool, runner.history)
        collect_opcua = asyncio.create_task(runtime.run([opcua_source], delivery, stop_collect))
        for _ in range(200):  # connected and the initial read (the counter baselines) done
            if opcua_source.stats.reads >= 3 * 7:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert opcua_source.stats.reads > 0, "the OPC UA collector did not connect"  # type: ignore[attr-defined]
        t0 = time.monotonic()
        await runner.run(until=end)
        run_wall = time.monotonic() - t0
        truth = _truth(demo_plant, sim_config, seed, end)
        expected = _parts(truth, live_from, end)
        owner = {m: ("sim-opcua" if p == "opcua" else "sim-mqtt") for m, p in runner.split.items()}
        deadline = time.monotonic() + 20
        while True:
            counts, states = await asyncio.to_thread(_stored, fresh_db_url, live_from, end)
            live = {m: counts.get(m, {}).get(owner[m], (0, 0)) for m in MACHINES}
            if live == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await runner.stop()
        stop_collect.set()
        await asyncio.gather(collect_mqtt, *([collect_opcua] if collect_opcua else []), return_exceptions=True)
        spool.close()
        pool.close()
    assert run_wall < 6 * 60 / 60 + 2
    assert runner.split == default_split(MACHINES)
    # Parts: exact, per machine, from the machine's one source; the history from the history writer.
    assert live == expected
    history = _parts(truth, SIM_START, live_from)
    for mid in MACHINES:
        assert set(counts[mid]) <= {owner[mid], HISTORY_SOURCE_ID}, counts[mid]
    counts_all, _ = await asyncio.to_thread(_stored, fresh_db_url, SIM_START, live_from)
    assert {m: counts_all[m].get(HISTORY_SOURCE_ID, (0, 0)) for m in MACHINES} == history
    hist = runner.history
    assert history_rows == len(hist.states) + len(hist.parts) + len(hist.telemetry) > 10_000
    assert sum(n for n, _ in expected.values()) > 20 and sum(r for _, r in expected.values()) >= 1
    # States: the stored changes (collector de-duplication: one per change of state and fault code)
    # are the truth's changes at the same instants, so time per state matches to the millisecond.
    changes = 0
    for mid in MACHINES:
        stored: list[tuple[dt.datetime, str]] = []
        for ts, state, _ in states[mid]:
            if ts >= live_from and (not stored or stored[-1][1] != state):
                stored.append((ts, state))
        want = [(ts, s) for ts, s in _truth_changes(truth, mid) if live_from < ts < end]
        first = _state_at(truth, mid, live_from)["state"]
        assert stored[0] == (live_from, first), (mid, stored[:2])
        # Sparkplug timestamps are milliseconds; OPC UA and JSON keep the microseconds.
        assert [st for _, st in stored[1:]] == [st for _, st in want], mid
        assert all(abs((a - b).total_seconds()) <= 0.001 for (a, _), (b, _) in zip(stored[1:], want, strict=True))
        changes += len(want)
        got_d = _durations(stored, live_from, end)
        want_d = _durations([(live_from, first), *want], live_from, end)
        assert got_d.keys() == want_d.keys()
        assert all(abs(got_d[k] - want_d[k]) <= 0.001 * (len(want) + 1) for k in want_d), (mid, got_d, want_d)
    assert changes >= 20
    # Fault codes: OPC UA's numeric StopReason ID, the code itself over Sparkplug and JSON.
    faults = []
    for mid in MACHINES:
        for ts, state, fault in states[mid]:
            if ts <= live_from or state != "unplanned_stop":
                continue
            code = _state_at(truth, mid, ts + dt.timedelta(microseconds=500))["fault_code"]  # ms on Sparkplug
            assert fault == (str(stop_reason_id(code)) if owner[mid] == "sim-opcua" else code), (mid, ts)
            faults.append((owner[mid], code))
    assert ("sim-opcua", "E202") in faults and ("sim-mqtt", "JAM") in faults, faults
