"""MQTT source and simulator gateway against a real Mosquitto on loopback.

The shared broker on 127.0.0.1:1883 serves most tests (every test uses its own client ids, machine
ids, Sparkplug group and host id, so parallel users of the broker do not interfere); the broker-restart
test starts its own mosquitto on a free port with persistence on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from collector import sparkplug
from collector.base import Item, Rejection
from collector.mqtt import MqttSource, MqttSourceConfig
from collector.sparkplug import BDSEQ_METRIC, DataType, MetricSpec, SparkplugHostConfig
from simulator.frontends.mqtt_gateway import MqttGateway, MqttGatewayConfig
from tests.brokers import OwnBroker

BROKER_PORT = 1883
T0 = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)

pytestmark = pytest.mark.timeout(60)


def _broker_up(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(autouse=True, scope="module")
def _need_broker() -> None:
    if not _broker_up(BROKER_PORT):
        pytest.fail("Mosquitto is not listening on 127.0.0.1:1883 (scripts/services.sh starts it)")


def uid() -> str:
    return uuid.uuid4().hex[:8]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


class Consumer:
    """Drives a source like the collector runtime does: the iterator is resumed (which acknowledges
    the previous batch) only when the test says the batch is durable."""

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.items: list[Item] = []
        self.batches: list[list[Item]] = []
        self._it: AsyncIterator[list[Item]] = source.events().__aiter__()
        self._pending: asyncio.Task[list[Item]] | None = None

    async def next_batch(self, timeout: float) -> list[Item] | None:
        """Resume the iterator (acknowledging the last batch) and wait for the next batch."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._it.__anext__())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        batch = self._pending.result()
        self._pending = None
        self.items.extend(batch)
        self.batches.append(batch)
        return batch

    async def until(self, predicate: Callable[[list[Item]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.items):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout} s; got {len(self.items)} items: "
                                     f"{self.items[-5:]}")
            await self.next_batch(min(left, 0.5))

    async def settle(self, quiet_s: float = 0.6) -> None:
        """Keep resuming (acknowledging) until nothing arrives for ``quiet_s``."""
        while await self.next_batch(quiet_s) is not None:
            pass

    async def close(self) -> None:
        """Stop without acknowledging the batch last received (the iterator is not resumed)."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await self._pending
            self._pending = None
        else:
            await self._it.aclose()  # type: ignore[attr-defined]


def events(items: list[Item], kind: type | None = None) -> list[Any]:
    return [i for i in items if not isinstance(i, Rejection) and (kind is None or isinstance(i, kind))]


def unique_keys(items: list[Item]) -> set[tuple[str, dt.datetime, int]]:
    return {(e.machine_id, e.ts, e.key) for e in events(items)}


async def started_source(config: MqttSourceConfig) -> tuple[MqttSource, Consumer]:
    source = MqttSource(config)
    consumer = Consumer(source)
    await consumer.next_batch(0.05)  # starts the client (a resumed session may deliver at once)
    deadline = time.monotonic() + 5
    while not source.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert source.connected
    await asyncio.sleep(0.2)  # SUBACK
    return source, consumer


async def started_gateway(config: MqttGatewayConfig) -> MqttGateway:
    gateway = MqttGateway(config)
    await asyncio.to_thread(gateway.start)
    return gateway


def raw_publish(topic: str, payload: bytes, port: int = BROKER_PORT, qos: int = 1, retain: bool = False) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uid()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def read_retained(topic: str, port: int = BROKER_PORT) -> bytes | None:
    got: list[bytes] = []
    ready = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ret-{uid()}")
    client.on_message = lambda _c, _u, m: (got.append(m.payload), ready.set())
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(2)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


# --- JSON ----------------------------------------------------------------------------------------------


async def test_json_round_trip_gateway_to_source() -> None:
    u = uid()
    m1, m2 = f"J{u}-M1", f"J{u}-M2"
    source, consumer = await started_source(MqttSourceConfig(
        source_id="json", client_id=f"src-{u}", json_topics=[f"andon/v1/{m}/+" for m in (m1, m2, f"J{u}-M9")],
        known_machines=[m1, m2]))
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json"))
    batch_gateway = await started_gateway(MqttGatewayConfig(client_id=f"gwb-{u}", mode="json", batch=True))
    try:
        gateway.publish_state(m1, "running", ts=at(0))
        gateway.publish_counts(m1, 1000, 10, ts=at(0))  # baseline
        gateway.publish_counts(m1, 1012, 11, ts=at(60))
        gateway.duplicate_next()
        gateway.publish_state(m1, MachineState.UNPLANNED_STOP, fault_code="E101", ts=at(61))
        gateway.publish_telemetry(m1, "vibration_rms", 2.8, "mm/s", ts=at(62))
        gateway.publish_count(m1, 2, 1, product="B", ts=at(63))
        gateway.inject_malformed(m1)
        gateway.publish_state(f"J{u}-M9", "idle", ts=at(64))  # not a plant machine
        for i in range(5):
            batch_gateway.publish_telemetry(m2, "temp", 40.0 + i, "C", ts=at(i))
        batch_gateway.publish_state(m2, "blocked", ts=at(5))
        batch_gateway.flush()
        await consumer.until(lambda items: len(items) >= 14)
        await consumer.settle()
    finally:
        gateway.stop()
        batch_gateway.stop()
        await consumer.close()

    states = sorted((e.machine_id, e.ts, e.state, e.fault_code) for e in events(consumer.items, StateChange))
    assert states == [
        (m1, at(0), MachineState.RUNNING, None),
        (m1, at(61), MachineState.UNPLANNED_STOP, "E101"),
        (m1, at(61), MachineState.UNPLANNED_STOP, "E101"),  # the injected duplicate ...
        (m2, at(5), MachineState.BLOCKED, None),
    ]
    assert len(unique_keys(events(consumer.items, StateChange))) == 3  # ... has the same key
    counts = sorted((c.ts, c.total, c.reject) for c in events(consumer.items, ProductionCount))
    assert counts == [(at(60), 12, 1), (at(63), 2, 1)]
    temps = sorted((t.machine_id, t.metric, t.value) for t in events(consumer.items, TelemetrySample))
    assert temps == [(m1, "vibration_rms", 2.8)] + [(m2, "temp", 40.0 + i) for i in range(5)]
    rejections = [i for i in consumer.items if isinstance(i, Rejection)]
    assert len(rejections) == 2 and source.rejected == 2
    assert any("not valid JSON" in r.reason for r in rejections)
    assert any("unknown machine" in r.reason for r in rejections)
    assert source.events_in == len(events(consumer.items)) == 12
    assert source.acks_sent == source.messages_in  # every message acknowledged once its batch was done


# --- Sparkplug -----------------------------------------------------------------------------------------


def sparkplug_configs(u: str, machines: list[str], reorder_timeout_s: float = 0.5
                      ) -> tuple[MqttSourceConfig, MqttGatewayConfig]:
    source = MqttSourceConfig(
        source_id="spb", client_id=f"host-{u}", json_topics=[], known_machines=machines,
        sparkplug=SparkplugHostConfig(host_id=f"andon-{u}", groups=[f"G{u}"], reorder_timeout_s=reorder_timeout_s))
    gateway = MqttGatewayConfig(client_id=f"edge-{u}", mode="sparkplug", group_id=f"G{u}", edge_node_id="edge1",
                                machines=machines, telemetry={machines[0]: {"temp": "C"}})
    return source, gateway


async def test_sparkplug_round_trip_aliases_packml_counters_and_state_topic() -> None:
    u = uid()
    m1, m2 = f"S{u}-M1", f"S{u}-M2"
    source_cfg, gateway_cfg = sparkplug_configs(u, [m1, m2])
    source, consumer = await started_source(source_cfg)
    host_state = json.loads(read_retained(f"spBv1.0/STATE/andon-{u}") or b"{}")
    assert host_state["online"] is True and isinstance(host_state["timestamp"], int)
    gateway = await started_gateway(gateway_cfg)
    try:
        gateway.publish_state(m1, "running", ts=at(0))
        gateway.publish_counts(m1, 500, 5, ts=at(0))
        gateway.publish_counts(m1, 530, 7, ts=at(30))
        gateway.publish_packml(m1, 5, blocked=True, ts=at(31))  # Suspended + Blocked
        gateway.publish_packml(m1, 13, starved=True, ts=at(40))  # Suspending + Starved
        gateway.reorder_next()  # the next DDATA is sent after the one following it: no rebirth needed
        gateway.publish_state(m1, "unplanned_stop", fault_code="JAM", ts=at(50))
        gateway.publish_state(m1, "planned_stop", ts=at(60))
        gateway.publish_state(m2, "setup", ts=at(61))
        gateway.publish_telemetry(m1, "temp", 41.5, ts=at(62))
        gateway.publish_telemetry(m2, "current", 3.25, "A", ts=at(63))  # new metric: DBIRTH for M2
        gateway.publish_counts(m1, 531, 7, ts=at(70))
        await consumer.until(lambda items: len(events(items, ProductionCount)) >= 2
                             and any(getattr(i, "metric", "") == "current" for i in items))
        await consumer.settle()
        # Every data message went through aliases only (names are in births): check one on the wire.
        payload = sparkplug.encode_payload([MetricSpec(None, DataType.DOUBLE, 1.0, alias=999)], seq=0)
        assert sparkplug.decode_payload(payload).metrics[0].name == ""
    finally:
        gateway.stop()
        await consumer.close()

    transitions = [(e.ts, e.state, e.fault_code) for e in events(consumer.items, StateChange) if e.machine_id == m1]
    assert transitions == [
        (at(0), MachineState.RUNNING, None),
        (at(31), MachineState.BLOCKED, None),
        (at(40), MachineState.STARVED, None),
        (at(50), MachineState.UNPLANNED_STOP, "JAM"),
        (at(60), MachineState.PLANNED_STOP, None),
    ]
    m2_states = [e.state for e in events(consumer.items, StateChange) if e.machine_id == m2]
    assert m2_states == [MachineState.SETUP]
    counts = [(c.ts, c.total, c.reject) for c in events(consumer.items, ProductionCount)]
    assert counts == [(at(30), 30, 2), (at(70), 1, 0)]
    tele = sorted((t.machine_id, t.metric, t.value, t.unit) for t in events(consumer.items, TelemetrySample))
    assert tele == [(m1, "temp", 41.5, "C"), (m2, "current", 3.25, "A")]
    assert source.rebirth_requests == 0 and gateway.reordered == 1
    assert not [i for i in consumer.items if isinstance(i, Rejection)]
    host_state = json.loads(read_retained(f"spBv1.0/STATE/andon-{u}") or b"{}")
    assert host_state["online"] is False


async def test_seq_gap_causes_exactly_one_rebirth_and_the_gateway_rebirths() -> None:
    u = uid()
    m1 = f"R{u}-M1"
    source_cfg, gateway_cfg = sparkplug_configs(u, [m1], reorder_timeout_s=0.4)
    source, consumer = await started_source(source_cfg)
    gateway = await started_gateway(gateway_cfg)
    try:
        gateway.publish_state(m1, "running", ts=at(0))
        await consumer.until(lambda items: len(events(items, StateChange)) >= 1)
        gateway.inject_seq_gap()
        gateway.publish_state(m1, "idle", ts=at(10))  # held: its predecessor never comes
        gateway.publish_state(m1, "running", ts=at(20))
        await consumer.until(lambda _: gateway.rebirths_served >= 1, timeout=5)
        gateway.publish_state(m1, "blocked", ts=at(30))  # after the rebirth, seq restarted at 0
        await consumer.until(lambda items: any(getattr(e, "state", None) is MachineState.BLOCKED for e in items))
        await consumer.settle()
    finally:
        gateway.stop()
        await consumer.close()
    assert source.rebirth_requests == 1 and gateway.rebirths_served == 1
    assert [(e.ts, e.state) for e in events(consumer.items, StateChange)] == [
        (at(0), MachineState.RUNNING), (at(10), MachineState.IDLE), (at(20), MachineState.RUNNING),
        (at(30), MachineState.BLOCKED)]


async def test_ndeath_marks_offline_and_stale_ndeath_is_ignored() -> None:
    u = uid()
    m1 = f"D{u}-M1"
    source_cfg, gateway_cfg = sparkplug_configs(u, [m1])
    source, consumer = await started_source(source_cfg)
    gateway = await started_gateway(gateway_cfg)
    try:
        gateway.publish_state(m1, "running", ts=at(0))
        await consumer.until(lambda items: len(events(items, StateChange)) >= 1)
        await asyncio.to_thread(gateway.restart)  # Will (NDEATH bdSeq 0) fires; reconnects with bdSeq 1
        await consumer.until(lambda items: len(events(items, StateChange)) >= 3)
        assert gateway.bd_seq == 1
        # A late copy of the old session's Will: must be ignored.
        raw_publish(f"spBv1.0/G{u}/NDEATH/edge1",
                    sparkplug.encode_payload([MetricSpec(BDSEQ_METRIC, DataType.INT64, 0)]))
        gateway.publish_state(m1, "idle", ts=dt.datetime.now(dt.UTC))
        await consumer.until(lambda items: len(events(items, StateChange)) >= 4)
        await consumer.settle(0.4)
    finally:
        gateway.stop(clean=False)
        await consumer.close()
    states = [e.state for e in events(consumer.items, StateChange)]
    assert states == [MachineState.RUNNING, MachineState.OFFLINE, MachineState.RUNNING, MachineState.IDLE]
    offline, back = events(consumer.items, StateChange)[1:3]
    assert offline.reason_code == "NDEATH" and back.ts >= offline.ts
    assert source.host is not None and source.host.ignored_deaths == 1


# --- persistent session, broker restart, shared subscriptions ------------------------------------------


async def test_persistent_session_redelivers_unacknowledged_and_queued_messages(own_broker: OwnBroker) -> None:
    # Our own broker: on the shared, busy one, Mosquitto 2.0.11 was seen redelivering some messages
    # that had been acknowledged just before the DISCONNECT (harmless: same keys), which would blur
    # the "acknowledged means not redelivered" check below.
    u = uid()
    machine = f"P{u}-M1"
    config = MqttSourceConfig(source_id="json", client_id=f"persist-{u}", port=own_broker.port,
                              json_topics=[f"andon/v1/{machine}/+"])
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json", port=own_broker.port))
    expected: set[float] = set()

    def publish(first: int, count: int) -> None:
        for i in range(first, first + count):
            gateway.publish_telemetry(machine, "temp", float(i), ts=at(i))
            expected.add(float(i))
        assert gateway.wait_published()

    try:
        source_a, first_run = await started_source(config)
        publish(0, 30)
        await first_run.until(lambda items: len(items) >= 1)
        acked = {t.value for t in events(first_run.items)}  # resumed past this batch: acknowledged
        publish(30, 30)
        unacked_batch = await first_run.next_batch(5)  # received but never resumed: not acknowledged
        assert unacked_batch
        await first_run.close()
        assert source_a.acks_sent == len(acked)
        publish(60, 40)  # the collector is down: the broker keeps these for the session

        _, second_run = await started_source(config)
        await second_run.until(lambda items: {t.value for t in events(items)} | acked >= expected, timeout=15)
        await second_run.settle(0.5)
        await second_run.close()
    finally:
        gateway.stop()
    second = {t.value for t in events(second_run.items)}
    assert acked.isdisjoint(second)  # what was acknowledged is not delivered again
    assert {t.value for t in events(unacked_batch)} <= second  # what was not, is
    all_items = events(first_run.items) + events(second_run.items)
    assert len(unique_keys(all_items)) == len(expected) == 100  # nothing lost, nothing doubled after dedup


async def test_broker_restart_mid_stream_loses_nothing(own_broker: OwnBroker) -> None:
    u = uid()
    machine = f"B{u}-M1"
    source, consumer = await started_source(MqttSourceConfig(
        source_id="json", client_id=f"restart-{u}", port=own_broker.port, json_topics=[f"andon/v1/{machine}/+"]))
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json", port=own_broker.port))
    total = 300

    def produce() -> None:
        for i in range(total):
            gateway.publish_telemetry(machine, "temp", float(i), ts=at(i))
            time.sleep(0.004)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        await consumer.until(lambda items: len(items) >= 60)
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_broker.start)
        await asyncio.to_thread(producer.join)
        await consumer.until(lambda items: len({t.value for t in events(items)}) >= total, timeout=25)
        await consumer.settle(0.5)
    finally:
        producer.join()
        gateway.stop()
        await consumer.close()
    values = {t.value for t in events(consumer.items)}
    assert values == {float(i) for i in range(total)}
    assert len(unique_keys(consumer.items)) == total
    assert source.reconnects >= 1


async def test_shared_subscription_splits_messages_between_two_sources() -> None:
    u = uid()
    machine = f"X{u}-M1"
    common = {"json_topics": [f"andon/v1/{machine}/+"], "shared_group": f"andon-{u}"}
    _, first = await started_source(MqttSourceConfig(source_id="a", client_id=f"a-{u}", **common))
    _, second = await started_source(MqttSourceConfig(source_id="b", client_id=f"b-{u}", **common))
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json"))
    try:
        for i in range(100):
            gateway.publish_telemetry(machine, "temp", float(i), ts=at(i))
        deadline = time.monotonic() + 10
        while len(events(first.items)) + len(events(second.items)) < 100 and time.monotonic() < deadline:
            await asyncio.gather(first.next_batch(0.2), second.next_batch(0.2))
        await asyncio.gather(first.settle(0.3), second.settle(0.3))
    finally:
        gateway.stop()
        await first.close()
        await second.close()
    a = {t.value for t in events(first.items)}
    b = {t.value for t in events(second.items)}
    assert a and b and a.isdisjoint(b)
    assert a | b == {float(i) for i in range(100)}


# --- heartbeat and check -------------------------------------------------------------------------------


async def test_silent_machine_goes_offline_and_comes_back() -> None:
    u = uid()
    machine = f"H{u}-M1"
    source, consumer = await started_source(MqttSourceConfig(
        source_id="json", client_id=f"hb-{u}", json_topics=[f"andon/v1/{machine}/+"], heartbeat_timeout_s=0.5))
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json"))
    try:
        gateway.publish_state(machine, "running", ts=dt.datetime.now(dt.UTC))
        await consumer.until(lambda items: any(getattr(e, "state", None) is MachineState.OFFLINE
                                               for e in items), timeout=5)
        gateway.publish_telemetry(machine, "temp", 40.0, ts=dt.datetime.now(dt.UTC))
        await consumer.until(lambda items: len(events(items, StateChange)) >= 3, timeout=5)
    finally:
        gateway.stop()
        await consumer.close()
    states = events(consumer.items, StateChange)
    assert [s.state for s in states] == [MachineState.RUNNING, MachineState.OFFLINE, MachineState.RUNNING]
    assert states[1].reason_code == "no_data" and source.heartbeat_offline == 1


async def test_check_reports_topics_and_machines() -> None:
    u = uid()
    machine = f"C{u}-M1"
    source = MqttSource(MqttSourceConfig(source_id="json", client_id=f"chk-{u}", json_topics=[f"andon/v1/{machine}/+"],
                                         known_machines=[], check_window_s=0.8))
    gateway = await started_gateway(MqttGatewayConfig(client_id=f"gw-{u}", mode="json"))
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            gateway.publish_telemetry(machine, "temp", 1.0)
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        report = await source.check()
    finally:
        stop.set()
        producer.join()
        gateway.stop()
    assert report.ok and report.machines == [machine]
    assert report.extra["unknown_machines"] == [machine]
    assert f"andon/v1/{machine}/telemetry" in report.extra["topics"]
    bad = await MqttSource(MqttSourceConfig(source_id="x", port=1, check_window_s=0.2)).check()
    assert not bad.ok


def test_deferred_acknowledgements_go_out_in_order_and_only_on_their_connection() -> None:
    """The runtime acknowledges pipelined batches once durable (Batch.defer): PUBACKs still leave in the
    order the messages were taken, once each, and never for a connection that has since been replaced."""
    from collector.mqtt import _Received

    source = MqttSource(MqttSourceConfig(source_id="t"))

    class FakeClient:
        def __init__(self) -> None:
            self.acked: list[int] = []

        def ack(self, mid: int, qos: int) -> None:
            self.acked.append(mid)

    client = FakeClient()
    source._client = client  # type: ignore[assignment]
    source._generation = 2
    now = dt.datetime.now(dt.UTC)

    def rec(mid: int, generation: int = 2, qos: int = 1) -> _Received:
        return _Received(generation, mid, qos, "andon/v1/M1/state", b"{}", now)

    first = source._ack_once_durable(client, [rec(1), rec(2), rec(9, qos=0)])  # type: ignore[arg-type]
    second = source._ack_once_durable(client, [rec(3), rec(4, generation=1)])  # type: ignore[arg-type]
    empty = source._ack_once_durable(client, [])  # type: ignore[arg-type]
    second()
    assert client.acked == []  # durable, but behind a batch that is not yet
    first()
    assert client.acked == [1, 2, 3] and source.acks_skipped == 1  # mid 4 came on an earlier connection
    first()
    empty()
    assert client.acked == [1, 2, 3] and source.acks_sent == 3
    late = source._ack_once_durable(client, [rec(5)])  # type: ignore[arg-type]
    source._client = None  # the source shut down before the write finished: the broker redelivers
    late()
    assert client.acked == [1, 2, 3]
