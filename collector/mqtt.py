"""The MQTT source: Andon JSON topics and Sparkplug B (as a host application) from one broker connection.

Delivery guarantees
-------------------
* QoS 1 with a persistent session: MQTT 5 ``clean_start=False`` with a session expiry (or 3.1.1
  ``clean_session=False``) under a fixed client id, so the broker queues messages while the collector
  is down and redelivers the unacknowledged ones when it comes back.
* Manual acknowledgements (paho ``manual_ack=True``): a message's PUBACK is sent only once the batch
  holding its events is durable: when the consumer resumes the iterator past it, or, if the consumer
  took the acknowledgement over with ``Batch.defer()`` (the runtime does, to decode the next batch while
  this one is written), when it calls it. PUBACKs go out in the order the messages were taken. A
  message that arrived on an earlier connection is never acknowledged on the new one: the broker
  redelivers it and the idempotency keys make the second copy a no-op in storage.
* The broker limits unacknowledged messages in flight (MQTT 5 Receive Maximum, sent as
  ``receive_maximum``; Mosquitto's own ``max_inflight_messages`` defaults to 20): batches are cut as
  soon as nothing more is waiting, so a small in-flight window does not stall the stream.
* MQTT 5 shared subscriptions (``shared_group``) split the JSON topic space between several collector
  processes. Sparkplug topics are never shared: a host must see every message of an edge node to
  check its seq; split Sparkplug by group with ``sparkplug.groups`` instead.

Sparkplug: the host publishes its STATE birth (``spBv1.0/STATE/<host_id>``, QoS 1, retained) on every
connect, has the matching death as its MQTT Will, publishes the death before a clean disconnect, and
sends the Rebirth NCMDs the host core asks for.

Counters (plain attributes, for Prometheus later): ``messages_in``, ``events_in``, ``rejected``,
``reconnects``, ``acks_sent``, ``acks_skipped``, ``rebirth_requests``, ``heartbeat_offline``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from andon.events import UTC, CounterTracker, Event
from andon.plant import PlantModel
from collector import mqtt_json, sparkplug
from collector.base import Batch, Item, Rejection, Source, SourceReport
from collector.heartbeat import Heartbeat
from collector.sparkplug import SparkplugHostConfig

log = logging.getLogger(__name__)


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(default=None, description="CA bundle; None: the system's")
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    insecure_skip_hostname_check: bool = False

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class MqttSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: str = Field(min_length=1, max_length=64)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: TlsSettings | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(default=None, max_length=128,
                                  description="fixed id of the persistent session; default andon-<source_id>")
    protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    qos: Literal[1, 2] = 1
    json_topics: list[str] = Field(default_factory=lambda: [f"{mqtt_json.TOPIC_PREFIX}/+/+"])
    shared_group: str | None = Field(default=None, pattern=r"^[^+#/]+$",
                                     description="MQTT 5 shared subscription group for the JSON topics")
    sparkplug: SparkplugHostConfig | None = None
    known_machines: list[str] | None = Field(default=None, description="plant machine ids; others rejected")
    reconnect_min_s: int = Field(default=1, ge=1, le=60)
    reconnect_max_s: int = Field(default=30, ge=1, le=3600)
    batch_max: int = Field(default=5000, ge=1, le=100_000, description="messages per batch at most")
    batch_max_bytes: int = Field(default=1 << 20, ge=1, description=(
        "payload bytes per batch at most (at least one message): bounds the events decoded ahead of the "
        "database when messages carry many events each (about 10,000 events per MiB of JSON)"))
    batch_linger_s: float = Field(default=0.0, ge=0, le=5)
    heartbeat_timeout_s: float | None = Field(default=None, gt=0)
    check_window_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("json_topics")
    @classmethod
    def _valid_filters(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            levels = topic.split("/")
            bad = [lv for lv in levels if ("+" in lv or "#" in lv) and lv not in ("+", "#")]
            if not topic or bad or "#" in levels[:-1]:
                raise ValueError(f"invalid MQTT topic filter {topic!r}: + and # must fill a whole level, "
                                 "# only the last")
        return topics

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"andon-{self.source_id}"

    def subscriptions(self) -> list[str]:
        topics = [f"$share/{self.shared_group}/{t}" if self.shared_group else t for t in self.json_topics]
        if self.sparkplug is not None:
            topics += [f"{sparkplug.NAMESPACE}/{g}/+/#" for g in self.sparkplug.groups]
            if not self.sparkplug.groups:  # one wildcard covers every group and the STATE topics
                topics.append(f"{sparkplug.NAMESPACE}/#")
            else:
                topics.append(sparkplug.state_topic(self.sparkplug.host_id))
        return topics


@dataclass(slots=True)
class _Received:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: dt.datetime


@dataclass(slots=True)
class _PendingAck:
    done: list[Any]
    durable: bool = False


def _tls_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure_skip_hostname_check:
        context.check_hostname = False
    return context


def make_client(config: MqttSourceConfig, client_id: str, *, persistent: bool, manual_ack: bool) -> paho.Client:
    """A paho 2 client with the config's protocol, TLS, credentials and reconnect backoff."""
    v5 = config.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if v5 else not persistent,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=manual_ack,
    )
    if config.tls is not None:
        client.tls_set_context(_tls_context(config.tls))
    if config.username is not None:
        client.username_pw_set(config.username,
                               config.password.get_secret_value() if config.password else None)
    client.reconnect_delay_set(config.reconnect_min_s, max(config.reconnect_min_s, config.reconnect_max_s))
    return client


def connect_properties(config: MqttSourceConfig, *, persistent: bool) -> Properties | None:
    if config.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = config.session_expiry_s if persistent else 0
    props.ReceiveMaximum = config.receive_maximum
    return props


class MqttSource(Source):
    def __init__(self, config: MqttSourceConfig, *, counters: CounterTracker | None = None) -> None:
        self.config = config
        self.source_id = config.source_id
        self.counters = counters or CounterTracker()
        self.json = mqtt_json.JsonDecoder(config.source_id, known_machines=config.known_machines,
                                          counters=self.counters)
        self.host = (sparkplug.SparkplugHost(config.source_id, config.sparkplug,
                                             known_machines=config.known_machines, counters=self.counters)
                     if config.sparkplug is not None else None)
        self.heartbeat = (Heartbeat(config.source_id, config.heartbeat_timeout_s)
                          if config.heartbeat_timeout_s else None)
        self.messages_in = 0
        self.events_in = 0
        self.rejected = 0
        self.connects = 0
        self.acks_sent = 0
        self.acks_skipped = 0
        self.rejection_reasons: collections.Counter[str] = collections.Counter()
        self._generation = 0
        self._inbox: collections.deque[_Received] = collections.deque()
        self._acks: collections.deque[_PendingAck] = collections.deque()  # oldest first
        self._wake_pending = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._connected = threading.Event()
        self._state_ts = sparkplug.now_ms()
        self._closed = False

    # --- counters --------------------------------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def rebirth_requests(self) -> int:
        return self.host.rebirth_requests if self.host else 0

    @property
    def heartbeat_offline(self) -> int:
        return self.heartbeat.offline_events if self.heartbeat else 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho callbacks (paho's network thread) -------------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any, reason_code: Any,
                    _properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("%s: MQTT connect refused: %s", self.source_id, reason_code)
            return
        self._generation += 1
        self.connects += 1
        self._connected.set()
        log.info("%s: connected to %s:%s (session present: %s)", self.source_id, self.config.host,
                 self.config.port, getattr(flags, "session_present", None))
        topics = self.config.subscriptions()
        if self.config.protocol == "5":
            client.subscribe([(t, SubscribeOptions(qos=self.config.qos)) for t in topics])
        else:
            client.subscribe([(t, self.config.qos) for t in topics])
        if self.config.sparkplug is not None:
            client.publish(sparkplug.state_topic(self.config.sparkplug.host_id),
                           sparkplug.state_payload(True, self._state_ts), qos=1, retain=True)

    def _on_disconnect(self, client: paho.Client, _userdata: Any, _flags: Any, reason_code: Any,
                       _properties: Any) -> None:
        self._connected.clear()
        if not self._closed:
            log.warning("%s: MQTT connection lost (%s); reconnecting", self.source_id, reason_code)
            self._set_state_will(client)  # the next birth carries the new Will's timestamp

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        self._inbox.append(_Received(self._generation, message.mid, message.qos, message.topic,
                                     bytes(message.payload), dt.datetime.now(UTC)))
        if not self._wake_pending and self._loop is not None and self._wake is not None:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake.set)

    def _set_state_will(self, client: paho.Client) -> None:
        if self.config.sparkplug is None:
            return
        self._state_ts = sparkplug.now_ms()
        client.will_set(sparkplug.state_topic(self.config.sparkplug.host_id),
                        sparkplug.state_payload(False, self._state_ts), qos=1, retain=True)

    # --- the iterator ----------------------------------------------------------------------------------

    def _start(self) -> paho.Client:
        client = make_client(self.config, self.config.effective_client_id, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._set_state_will(client)
        kwargs: dict[str, Any] = {"keepalive": self.config.keepalive_s}
        if self.config.protocol == "5":
            kwargs.update(clean_start=False, properties=connect_properties(self.config, persistent=True))
        client.connect_async(self.config.host, self.config.port, **kwargs)
        client.loop_start()
        return client

    def _tick_s(self) -> float:
        tick = 0.5
        if self.config.sparkplug is not None:
            tick = min(tick, self.config.sparkplug.reorder_timeout_s / 4)
        if self.config.heartbeat_timeout_s:
            tick = min(tick, self.config.heartbeat_timeout_s / 4)
        return max(tick, 0.01)

    async def events(self) -> AsyncIterator[list[Item]]:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._closed = False
        self._acks = collections.deque()  # acknowledgements of an earlier run are void
        self._client = client = self._start()
        tick = self._tick_s()
        try:
            while not self._closed:
                received = await self._next_messages(tick)
                items: list[Item] = []
                done: list[_Received] = []
                for rec in received:
                    self._process(rec, items, done)
                if self.host is not None:
                    polled = self.host.poll()
                    self._publish(polled.outbound)
                    items.extend(polled.items)
                    done.extend(polled.done)
                if self.heartbeat is not None:
                    items.extend(self.heartbeat.expire())
                if items:
                    self._count(items)
                    durable = self._ack_once_durable(client, done)
                    batch = Batch(items, durable)
                    yield batch  # resumed once the batch is durable, or earlier if the consumer deferred
                    if not batch.deferred:
                        durable()
                elif done:  # nothing to store: acknowledged behind the batches before it
                    self._ack_once_durable(client, done)()
        finally:
            await self._shutdown(client)

    async def _next_messages(self, timeout: float) -> list[_Received]:
        assert self._wake is not None
        if not self._inbox:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives
            # together with the wake-up, and the collector would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        self._wake.clear()
        self._wake_pending = False
        if self.config.batch_linger_s and self._inbox and len(self._inbox) < self.config.batch_max:
            await asyncio.sleep(self.config.batch_linger_s)
        out: list[_Received] = []
        inbox = self._inbox
        batch_max, budget = self.config.batch_max, self.config.batch_max_bytes
        while inbox and len(out) < batch_max and budget > 0:
            rec = inbox.popleft()
            out.append(rec)
            budget -= len(rec.payload)
        if inbox:  # more than one batch waiting: come straight back
            self._wake.set()
        return out

    def _process(self, rec: _Received, items: list[Item], done: list[_Received]) -> None:
        self.messages_in += 1
        if rec.topic.startswith(f"{sparkplug.NAMESPACE}/") and self.host is not None:
            result = self.host.handle(rec.topic, rec.payload, rec, received_at=rec.received_at)
            self._publish(result.outbound)
            items.extend(result.items)
            done.extend(result.done)
            if self.heartbeat is not None:
                topic = sparkplug.parse_topic(rec.topic)
                if topic is not None and topic.message_type not in ("STATE", "NCMD", "DCMD"):
                    if topic.message_type == "NDEATH":
                        self.heartbeat.forget(topic.node_key)
                    elif self.host.node_online(topic.group, topic.edge_node):
                        events = [i for i in result.items if not isinstance(i, Rejection)]
                        items.extend(self.heartbeat.observe(
                            topic.node_key, events, self.host.machines_of_node(topic.group, topic.edge_node)))
            return
        decoded = self.json.decode(rec.topic, rec.payload)
        items.extend(decoded)
        done.append(rec)
        if self.heartbeat is not None:
            parsed = mqtt_json.parse_topic(rec.topic)
            events: list[Event] = (decoded if Rejection not in map(type, decoded)  # type: ignore[assignment]
                                   else [i for i in decoded if type(i) is not Rejection])
            if parsed is not None and (events or not decoded):
                items.extend(self.heartbeat.observe(f"json:{parsed[0]}", events, [parsed[0]]))

    def _count(self, items: list[Item]) -> None:
        rejected = collections.Counter(map(type, items))[Rejection]  # counted in C: batches are large
        self.events_in += len(items) - rejected
        if rejected:
            self.rejected += rejected
            self.rejection_reasons.update(item.reason.split(":")[0][:80] for item in items
                                          if type(item) is Rejection)

    def _ack_once_durable(self, client: paho.Client, done: list[Any]) -> Callable[[], None]:
        """The acknowledgement of one batch: marks it durable, then acknowledges every batch at the head
        of the queue that is durable (so PUBACKs keep the order the messages were taken in)."""
        entry = _PendingAck(done)
        self._acks.append(entry)
        acks = self._acks

        def durable() -> None:
            if entry.durable:
                return
            entry.durable = True
            while acks and acks[0].durable:
                head = acks.popleft()
                if self._client is client:
                    self._ack(client, head.done)
                else:  # the connection this came from is gone: the broker redelivers
                    self.acks_skipped += sum(1 for r in head.done if isinstance(r, _Received) and r.qos)

        return durable

    def _ack(self, client: paho.Client, done: list[Any]) -> None:
        generation = self._generation
        for rec in done:
            if not isinstance(rec, _Received) or rec.qos == 0:
                continue
            if rec.generation != generation:
                self.acks_skipped += 1  # from an earlier connection: the broker redelivers it
                continue
            client.ack(rec.mid, rec.qos)
            self.acks_sent += 1

    def _publish(self, outbound: list[sparkplug.OutboundMessage]) -> None:
        if self._client is None:
            return
        for msg in outbound:
            self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)

    async def _shutdown(self, client: paho.Client) -> None:
        self._closed = True
        if self.config.sparkplug is not None and self._connected.is_set():
            info = client.publish(sparkplug.state_topic(self.config.sparkplug.host_id),
                                  sparkplug.state_payload(False, self._state_ts), qos=1, retain=True)
            deadline = time.monotonic() + 2
            while not info.is_published() and time.monotonic() < deadline and self._connected.is_set():
                await asyncio.sleep(0.01)
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._connected.clear()
        self._client = None

    async def close(self) -> None:
        """Stop: the iterator ends at its next wake-up. Unacknowledged messages stay with the broker."""
        self._closed = True
        if self._wake is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- check -----------------------------------------------------------------------------------------

    async def check(self) -> SourceReport:
        """Connect with a throwaway session (never the collector's persistent one), listen for
        ``check_window_s`` and report the topics and machines seen."""
        cfg = self.config
        client = make_client(cfg, f"{cfg.effective_client_id}-check-{os.getpid()}", persistent=False,
                             manual_ack=False)
        topics_seen: collections.Counter[str] = collections.Counter()
        machines: set[str] = set()
        connected = threading.Event()
        failure: list[str] = []
        lock = threading.Lock()

        def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                failure.append(str(rc))
                return
            plain = list(cfg.json_topics)
            if cfg.sparkplug is not None:
                plain += [f"{sparkplug.NAMESPACE}/{g}/+/#" for g in (cfg.sparkplug.groups or ["+"])]
            c.subscribe([(t, 0) for t in plain])
            connected.set()

        def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            with lock:
                topics_seen[msg.topic] += 1
                parsed = mqtt_json.parse_topic(msg.topic)
                if parsed is not None:
                    machines.add(parsed[0])
                sp = sparkplug.parse_topic(msg.topic)
                if sp is not None and sp.device and cfg.sparkplug is not None:
                    mapped = cfg.sparkplug.machine_map.get(f"{sp.node_key}/{sp.device}")
                    machines.add(mapped or sp.device)

        client.on_connect = on_connect
        client.on_message = on_message
        kwargs: dict[str, Any] = {"keepalive": cfg.keepalive_s}
        if cfg.protocol == "5":
            kwargs.update(clean_start=True, properties=connect_properties(cfg, persistent=False))
        try:
            await asyncio.to_thread(client.connect, cfg.host, cfg.port, **kwargs)
        except (OSError, ValueError) as exc:
            return SourceReport(self.source_id, False, f"cannot connect to {cfg.host}:{cfg.port}: {exc}")
        client.loop_start()
        try:
            deadline = time.monotonic() + max(2.0, cfg.check_window_s)
            while not connected.is_set() and not failure and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if not connected.is_set():
                detail = f"connection refused: {failure[0]}" if failure else "no CONNACK"
                return SourceReport(self.source_id, False, f"{cfg.host}:{cfg.port}: {detail}")
            await asyncio.sleep(cfg.check_window_s)
        finally:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        with lock:
            known = set(cfg.known_machines) if cfg.known_machines is not None else None
            unknown = sorted(machines - known) if known is not None else []
            detail = (f"connected to {cfg.host}:{cfg.port}; {sum(topics_seen.values())} messages on "
                      f"{len(topics_seen)} topics in {cfg.check_window_s:g} s")
            if unknown:
                detail += f"; unknown machines: {', '.join(unknown[:20])}"
            return SourceReport(self.source_id, True, detail, machines=sorted(machines),
                                extra={"topics": dict(topics_seen.most_common(200)),
                                       "subscriptions": cfg.subscriptions(), "unknown_machines": unknown})


__all__ = ["MqttSource", "MqttSourceConfig", "TlsSettings", "connect_properties", "make_client"]


def from_config(cfg: dict[str, Any], plant: PlantModel, counters: CounterTracker | None = None) -> MqttSource:
    """Build the source from a sources-file entry (``id``, ``type: mqtt`` and MqttSourceConfig fields).
    Machines default to the plant's, the heartbeat to the plant's timeout."""
    data = {k: v for k, v in cfg.items() if k not in ("id", "type")}
    if isinstance(data.get("client_id"), str):
        # Replicas sharing one sources file need their own persistent sessions: "{hostname}" makes one.
        data["client_id"] = data["client_id"].replace("{hostname}", socket.gethostname())
    data.setdefault("known_machines", [m.id for m in plant.machines()])
    data.setdefault("heartbeat_timeout_s", plant.settings.heartbeat_timeout_s)
    return MqttSource(MqttSourceConfig(source_id=cfg["id"], **data), counters=counters)
