"""A PLC gateway on MQTT, driven by the simulated line: Andon JSON topics or Sparkplug B.

The line calls ``publish_state``, ``publish_packml``, ``publish_counts``, ``publish_count``,
``publish_telemetry`` and ``flush``; the gateway publishes the way a real gateway does.

JSON mode (``mode="json"``): ``andon/v1/<machine>/<kind>`` at QoS 1 under a persistent session, every
message with a per-machine ``seq`` so redeliveries and injected duplicates are idempotent. With
``batch=True`` events are collected until ``flush()`` and sent as one ``batch`` message per machine.

Sparkplug B mode (``mode="sparkplug"``): one edge node (``group_id``/``edge_node_id``), one device
per machine (device id = machine id). NDEATH with ``bdSeq`` is the MQTT Will; NBIRTH (seq 0,
``bdSeq``, ``Node Control/Rebirth``) and a DBIRTH per device carry every metric with an alias;
NDATA/DDATA carry aliases only; seq 0-255 wraps. A ``Node Control/Rebirth`` NCMD is answered with a
fresh NBIRTH (same bdSeq) and all DBIRTHs. Device metrics are PackTags:
``Status.StateCurrent``, ``Status.UnitModeCurrent``, ``Status.EquipmentInterlock.Blocked``/``Starved``,
``Admin.StopReason.ID`` (String datatype, since the plant's fault codes are strings such as "E101";
Int32 in PackTags, and the host accepts both), ``Admin.ProdProcessedCount[0].AccCount``,
``Admin.ProdDefectiveCount[0].AccCount``, plus one Double per telemetry channel (``engUnit``
property). A telemetry channel seen for the first time triggers a DBIRTH of that device (births must
carry every metric); declare channels in ``telemetry`` to avoid that. Data is published at QoS 0 as
the specification says (``sparkplug_qos`` to change it).

Andon states are published as PackML: running -> 6 Execute; idle -> 4 Idle; starved/blocked -> 5
Suspended with the Starved/Blocked interlock; planned_stop -> unit mode 2 Maintenance, 2 Stopped;
setup -> unit mode 3 Manual, 2 Stopped; unplanned_stop -> 9 Aborted with the stop reason; offline ->
0 Undefined. The host maps them back to the same Andon states.

Fault injection: ``faults.duplicate_rate`` / ``faults.reorder_rate`` (seeded), and on demand
``duplicate_next()``, ``reorder_next()`` (hold the next message and send it after the one following),
``inject_seq_gap()`` (skip one seq), ``inject_malformed()`` (a payload that does not decode) and
``restart()`` (drop the TCP connection without DISCONNECT so the broker fires the Will, then
reconnect with bdSeq + 1).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from andon.events import UTC, MachineState, parse_state
from collector import mqtt_json, sparkplug
from collector.sparkplug import BDSEQ_METRIC, REBIRTH_METRIC, DataType, MetricSpec

log = logging.getLogger(__name__)

STATE_CURRENT = "Status.StateCurrent"
UNIT_MODE = "Status.UnitModeCurrent"
BLOCKED = "Status.EquipmentInterlock.Blocked"
STARVED = "Status.EquipmentInterlock.Starved"
STOP_REASON = "Admin.StopReason.ID"
PROCESSED = "Admin.ProdProcessedCount[0].AccCount"
DEFECTIVE = "Admin.ProdDefectiveCount[0].AccCount"

# Andon state -> (PackML state number, unit mode, blocked, starved)
PACKML_FOR_STATE: dict[MachineState, tuple[int, int, bool, bool]] = {
    MachineState.RUNNING: (6, 1, False, False),
    MachineState.IDLE: (4, 1, False, False),
    MachineState.STARVED: (5, 1, False, True),
    MachineState.BLOCKED: (5, 1, True, False),
    MachineState.PLANNED_STOP: (2, 2, False, False),
    MachineState.SETUP: (2, 3, False, False),
    MachineState.UNPLANNED_STOP: (9, 1, False, False),
    MachineState.OFFLINE: (0, 1, False, False),
}


class GatewayFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    reorder_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0


class MqttGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    mode: Literal["json", "sparkplug"] = "json"
    client_id: str = "andon-sim-gateway"
    protocol: Literal["5", "3.1.1"] = "5"
    persistent_session: bool = True  # keep QoS 1 messages across a broker restart
    json_qos: Literal[0, 1] = 1
    batch: bool = False  # JSON: collect until flush() and send one batch message per machine
    group_id: str = "andon"
    edge_node_id: str = "sim-gateway"
    sparkplug_qos: Literal[0, 1] = 0
    auto_flush: bool = True  # Sparkplug: one DDATA per call; False: one DDATA per device at flush()
    machines: list[str] = Field(default_factory=list, description="devices born at connect")
    telemetry: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="machine -> {channel: unit}, born at connect")
    faults: GatewayFaults = Field(default_factory=GatewayFaults)
    connect_timeout_s: float = Field(default=10.0, gt=0)


@dataclass
class _DeviceMetric:
    alias: int
    datatype: int
    value: Any
    unit: str = ""
    ts_ms: int | None = None


@dataclass
class _Device:
    metrics: dict[str, _DeviceMetric] = field(default_factory=dict)
    changed: dict[str, None] = field(default_factory=dict)  # ordered set of names awaiting DDATA


def _ms(ts: dt.datetime | None) -> int:
    if ts is None:
        return sparkplug.now_ms()
    if ts.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return round(ts.timestamp() * 1000)


class MqttGateway:
    def __init__(self, config: MqttGatewayConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._rng = random.Random(config.faults.seed)
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        # QoS 1 publishes not yet acknowledged by the broker (paho's MQTTMessageInfo keeps reporting
        # "not connected" for a message queued while offline even after it went out, so track PUBACKs).
        self._mid_lock = threading.Lock()
        self._unacked_mids: set[int] = set()
        self._early_acks: set[int] = set()
        self._held: tuple[str, bytes, int] | None = None
        self._duplicate_next = False
        self._reorder_next = False
        # JSON
        self._json_seq: dict[str, int] = {}
        self._json_pending: dict[str, list[Any]] = {}
        # Sparkplug
        self.bd_seq = 0
        self._seq = 0
        self._next_alias = 1
        self._devices: dict[str, _Device] = {}
        # counters
        self.messages_published = 0
        self.duplicates_sent = 0
        self.reordered = 0
        self.rebirths_served = 0
        self.restarts = 0
        for machine in config.machines:
            self._device(machine)
        for machine, channels in config.telemetry.items():
            device = self._device(machine)
            for channel, unit in channels.items():
                self._define(device, channel, DataType.DOUBLE, 0.0, unit)

    @property
    def sparkplug_mode(self) -> bool:
        return self.config.mode == "sparkplug"

    @property
    def seq(self) -> int:
        """The seq the next Sparkplug message will carry."""
        return self._seq

    # --- connection ------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._client = self._new_client()
        if not self._connected.wait(self.config.connect_timeout_s):
            raise ConnectionError(f"gateway could not connect to {self.config.host}:{self.config.port}")

    def _new_client(self) -> paho.Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        persistent = cfg.persistent_session and not self.sparkplug_mode
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
            clean_session=None if v5 else not persistent,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        client.reconnect_delay_set(1, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        if self.sparkplug_mode:
            client.will_set(self._topic("NDEATH"), self._ndeath_payload(), qos=1, retain=False)
        kwargs: dict[str, Any] = {"keepalive": 30}
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 24 * 3600 if persistent else 0
            kwargs.update(clean_start=not persistent, properties=props)
        client.connect_async(cfg.host, cfg.port, **kwargs)
        client.loop_start()
        return client

    def _on_connect(self, client: paho.Client, _u: Any, _flags: Any, reason_code: Any, _p: Any) -> None:
        if reason_code.is_failure:
            log.warning("gateway connect refused: %s", reason_code)
            return
        if self.sparkplug_mode:
            client.subscribe(self._topic("NCMD"), qos=1)
            with self._lock:
                self._birth(client)
        self._connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        self._connected.clear()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._mid_lock:
            if mid in self._unacked_mids:
                self._unacked_mids.discard(mid)
            else:
                self._early_acks.add(mid)  # acknowledged before _track saw the mid

    def _track(self, info: paho.MQTTMessageInfo) -> None:
        with self._mid_lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._unacked_mids.add(info.mid)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        try:
            payload = sparkplug.decode_payload(message.payload)
        except sparkplug.SparkplugDecodeError:
            return
        for m in payload.metrics:
            if m.name == REBIRTH_METRIC and sparkplug.metric_value(m, DataType.BOOLEAN) is True:
                with self._lock:
                    self.rebirths_served += 1
                    if self._client is not None:
                        self._birth(self._client)

    def stop(self, *, clean: bool = True) -> None:
        """Disconnect. Sparkplug: a clean stop publishes NDEATH first (the broker drops the Will)."""
        with self._lock:
            self.flush()
            client, self._client = self._client, None
        if client is None:
            return
        self.wait_published()
        if clean and self.sparkplug_mode and self._connected.is_set():
            client.publish(self._topic("NDEATH"), self._ndeath_payload(), qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

    def restart(self) -> None:
        """Crash and come back: the TCP connection drops without DISCONNECT (the broker publishes the
        Will, i.e. NDEATH with the old bdSeq), then a new connection with bdSeq + 1 and fresh births."""
        self.wait_published()
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.loop_stop()
            sock = old.socket()
            if sock is not None:
                sock.close()
        self._connected.clear()
        with self._mid_lock:
            self._unacked_mids.clear()  # the old client is gone; what it had not sent is lost, as in a crash
            self._early_acks.clear()
        with self._lock:
            self.restarts += 1
            if self.sparkplug_mode:
                self.bd_seq = (self.bd_seq + 1) % 256
            self._client = self._new_client()
        if not self._connected.wait(self.config.connect_timeout_s):
            raise ConnectionError("gateway could not reconnect")

    def wait_published(self, timeout_s: float = 10.0) -> bool:
        """Wait until every QoS 1 message published so far was acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._mid_lock:
                if not self._unacked_mids:
                    return True
            time.sleep(0.005)
        return False

    # --- publishing with fault injection ---------------------------------------------------------------

    def duplicate_next(self) -> None:
        self._duplicate_next = True

    def reorder_next(self) -> None:
        self._reorder_next = True

    def _send(self, topic: str, payload: bytes, qos: int) -> None:
        with self._lock:
            if self._client is None:
                raise RuntimeError("gateway is not started")
            if self._held is None and (self._reorder_next or self._rng.random() < self.config.faults.reorder_rate):
                self._reorder_next = False
                self._held = (topic, payload, qos)
                self.reordered += 1
                return
            self._raw_publish(topic, payload, qos)
            if self._duplicate_next or self._rng.random() < self.config.faults.duplicate_rate:
                self._duplicate_next = False
                self.duplicates_sent += 1
                self._raw_publish(topic, payload, qos)
            if self._held is not None:
                held, self._held = self._held, None
                self._raw_publish(*held)

    def _raw_publish(self, topic: str, payload: bytes, qos: int) -> None:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=qos)
        self.messages_published += 1
        if qos > 0:
            self._track(info)

    def _release_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._raw_publish(*held)

    def inject_malformed(self, machine_id: str | None = None) -> None:
        """Publish a payload that cannot be decoded (truncated JSON, or bytes that are not protobuf)."""
        machine = machine_id or (self.config.machines[0] if self.config.machines else "M1")
        with self._lock:
            if self.sparkplug_mode:
                self._raw_publish(self._topic("DDATA", machine), b"\x0a\xff\xff\xff\xff\xff",
                                  self.config.sparkplug_qos)
            else:
                self._raw_publish(mqtt_json.topic(machine, "state"), b'{"ts": "2026-01-01T00:00:00Z", "sta',
                                  self.config.json_qos)

    def inject_seq_gap(self) -> None:
        """Skip one Sparkplug seq: the host sees a gap that nothing will fill."""
        with self._lock:
            self._seq = (self._seq + 1) % 256

    # --- the line's interface --------------------------------------------------------------------------

    def publish_state(self, machine_id: str, state: MachineState | str, *, fault_code: str | None = None,
                      reason_code: str | None = None, ts: dt.datetime | None = None) -> None:
        st = parse_state(state)
        if not self.sparkplug_mode:
            self._json(machine_id, mqtt_json.StateMessage(ts=ts or dt.datetime.now(UTC), state=st.value,
                                                          fault_code=fault_code, reason_code=reason_code,
                                                          seq=self._next_json_seq(machine_id)))
            return
        number, mode, blocked, starved = PACKML_FOR_STATE[st]
        self.publish_packml(machine_id, number, unit_mode=mode, blocked=blocked, starved=starved,
                            stop_reason=fault_code if st is MachineState.UNPLANNED_STOP else None, ts=ts)

    def publish_packml(self, machine_id: str, state_number: int, *, unit_mode: int = 1, blocked: bool = False,
                       starved: bool = False, stop_reason: str | None = None,
                       ts: dt.datetime | None = None) -> None:
        """Publish raw PackTags (Sparkplug); in JSON mode the host's mapping is applied here."""
        if not self.sparkplug_mode:
            st = sparkplug.packml_to_machine_state(state_number, unit_mode, blocked=blocked, starved=starved)
            self.publish_state(machine_id, st, fault_code=stop_reason, ts=ts)
            return
        ms = _ms(ts)
        with self._lock:
            device = self._device(machine_id)
            self._set(machine_id, device, STOP_REASON, DataType.STRING, stop_reason or "", ms)
            self._set(machine_id, device, BLOCKED, DataType.BOOLEAN, blocked, ms)
            self._set(machine_id, device, STARVED, DataType.BOOLEAN, starved, ms)
            self._set(machine_id, device, UNIT_MODE, DataType.INT32, unit_mode, ms)
            self._set(machine_id, device, STATE_CURRENT, DataType.INT32, state_number, ms)
            self._auto_flush(machine_id)

    def publish_counts(self, machine_id: str, processed_acc: int, defective_acc: int = 0, *,
                       ts: dt.datetime | None = None) -> None:
        """Non-resetting PLC counters (PackTags AccCount); the collector makes the deltas."""
        if not self.sparkplug_mode:
            self._json(machine_id, mqtt_json.CounterMessage(ts=ts or dt.datetime.now(UTC),
                                                            processed=processed_acc, defective=defective_acc,
                                                            seq=self._next_json_seq(machine_id)))
            return
        ms = _ms(ts)
        with self._lock:
            device = self._device(machine_id)
            self._set(machine_id, device, PROCESSED, DataType.INT32, processed_acc, ms)
            self._set(machine_id, device, DEFECTIVE, DataType.INT32, defective_acc, ms)
            self._auto_flush(machine_id)

    def publish_count(self, machine_id: str, total: int, reject: int = 0, *, product: str | None = None,
                      ts: dt.datetime | None = None) -> None:
        """Parts made since the last count (JSON ``count`` kind; Sparkplug has no delta tag)."""
        if self.sparkplug_mode:
            raise ValueError("Sparkplug gateways publish accumulating counters: use publish_counts")
        self._json(machine_id, mqtt_json.CountMessage(ts=ts or dt.datetime.now(UTC), total=total, reject=reject,
                                                      product=product, seq=self._next_json_seq(machine_id)))

    def publish_telemetry(self, machine_id: str, metric: str, value: float, unit: str = "", *,
                          ts: dt.datetime | None = None) -> None:
        if not self.sparkplug_mode:
            self._json(machine_id, mqtt_json.TelemetryMessage(ts=ts or dt.datetime.now(UTC), metric=metric,
                                                              value=value, unit=unit,
                                                              seq=self._next_json_seq(machine_id)))
            return
        ms = _ms(ts)
        with self._lock:
            device = self._device(machine_id)
            if metric not in device.metrics:
                self._define(device, metric, DataType.DOUBLE, float(value), unit, ms)
                if self._client is not None and self._connected.is_set():
                    self._dbirth(machine_id)  # births must list every metric: re-birth this device
                return
            self._set(machine_id, device, metric, DataType.DOUBLE, float(value), ms)
            self._auto_flush(machine_id)

    def flush(self) -> None:
        """Send what was collected (JSON batches, Sparkplug DDATA) and release a held message."""
        with self._lock:
            if self._client is None:
                return
            if self.sparkplug_mode:
                for machine in list(self._devices):
                    self._send_ddata(machine)
            else:
                for machine, messages in list(self._json_pending.items()):
                    if messages:
                        self._send(mqtt_json.topic(machine, "batch"), mqtt_json.batch_payload(messages),
                                   self.config.json_qos)
                self._json_pending.clear()
            self._release_held()

    # --- JSON ------------------------------------------------------------------------------------------

    def _next_json_seq(self, machine_id: str) -> int:
        with self._lock:
            seq = self._json_seq.get(machine_id, 0) + 1
            self._json_seq[machine_id] = seq
            return seq

    def _json(self, machine_id: str, message: Any) -> None:
        if self.config.batch:
            with self._lock:
                self._json_pending.setdefault(machine_id, []).append(message)
            return
        self._send(mqtt_json.topic(machine_id, message.kind), mqtt_json.message_payload(message),
                   self.config.json_qos)

    # --- Sparkplug -------------------------------------------------------------------------------------

    def _topic(self, message_type: str, device: str | None = None) -> str:
        return sparkplug.topic_for(self.config.group_id, message_type, self.config.edge_node_id, device)

    def _ndeath_payload(self) -> bytes:
        return sparkplug.encode_payload([MetricSpec(BDSEQ_METRIC, DataType.INT64, self.bd_seq)])

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _device(self, machine_id: str) -> _Device:
        device = self._devices.get(machine_id)
        if device is None:
            device = self._devices[machine_id] = _Device()
            for name, dtype, value in [
                (STATE_CURRENT, DataType.INT32, 0), (UNIT_MODE, DataType.INT32, 1),
                (BLOCKED, DataType.BOOLEAN, False), (STARVED, DataType.BOOLEAN, False),
                (STOP_REASON, DataType.STRING, ""), (PROCESSED, DataType.INT32, 0),
                (DEFECTIVE, DataType.INT32, 0),
            ]:
                self._define(device, name, dtype, value)
            if self._client is not None and self._connected.is_set():
                self._dbirth(machine_id)
        return device

    def _define(self, device: _Device, name: str, dtype: int, value: Any, unit: str = "",
                ts_ms: int | None = None) -> None:
        device.metrics[name] = _DeviceMetric(self._next_alias, dtype, value, unit, ts_ms)
        self._next_alias += 1

    def _set(self, machine_id: str, device: _Device, name: str, dtype: int, value: Any, ts_ms: int) -> None:
        metric = device.metrics[name]
        if metric.value == value and metric.ts_ms is not None:
            return  # report by exception
        metric.value, metric.ts_ms = value, ts_ms
        device.changed[name] = None

    def _auto_flush(self, machine_id: str) -> None:
        if self.config.auto_flush:
            self._send_ddata(machine_id)

    def _send_ddata(self, machine_id: str) -> None:
        device = self._devices[machine_id]
        if not device.changed:
            return
        metrics = [MetricSpec(None, m.datatype, m.value, alias=m.alias, timestamp_ms=m.ts_ms)
                   for m in (device.metrics[n] for n in device.changed)]
        device.changed.clear()
        payload = sparkplug.encode_payload(metrics, seq=self._next_seq())
        self._send(self._topic("DDATA", machine_id), payload, self.config.sparkplug_qos)

    def _birth(self, client: paho.Client) -> None:
        """NBIRTH (seq 0, bdSeq, Rebirth=false) and a DBIRTH per device, published in order."""
        self._held = None  # a rebirth starts clean; whatever was held belongs to the old sequence
        self._seq = 0
        nbirth = sparkplug.encode_payload(
            [MetricSpec(BDSEQ_METRIC, DataType.INT64, self.bd_seq),
             MetricSpec(REBIRTH_METRIC, DataType.BOOLEAN, False)],
            seq=self._next_seq())
        info = client.publish(self._topic("NBIRTH"), nbirth, qos=self.config.sparkplug_qos)
        self.messages_published += 1
        if self.config.sparkplug_qos:
            self._track(info)
        for machine in list(self._devices):
            self._dbirth(machine, client)

    def _dbirth(self, machine_id: str, client: paho.Client | None = None) -> None:
        client = client or self._client
        assert client is not None
        device = self._devices[machine_id]
        device.changed.clear()  # the birth carries every current value
        # A metric never set is born null: the PLC has not reported it, so there is no value to claim.
        metrics = [
            MetricSpec(name, m.datatype, None if m.ts_ms is None else m.value, alias=m.alias,
                       timestamp_ms=m.ts_ms,
                       properties={"engUnit": m.unit} if m.unit else None)
            for name, m in device.metrics.items()
        ]
        payload = sparkplug.encode_payload(metrics, seq=self._next_seq())
        info = client.publish(self._topic("DBIRTH", machine_id), payload, qos=self.config.sparkplug_qos)
        self.messages_published += 1
        if self.config.sparkplug_qos:
            self._track(info)


__all__ = ["PACKML_FOR_STATE", "GatewayFaults", "MqttGateway", "MqttGatewayConfig"]
