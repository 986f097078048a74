"""OPC UA source: follows machine state, part counters and telemetry on an OPC UA server (asyncua client).

One source is one endpoint. Per machine a node mapping says which variables carry the state (with a
value map), the processed/defective counters, the stop reason, the blocked/starved flags and the
telemetry channels; PackML (OPC 30050) machines can be found by browsing instead (``discover``).

Data flow per connection:

1. connect (security None, or Basic256Sha256 Sign / SignAndEncrypt with a client certificate; optional
   username/password) and resolve the mapping (explicit machines plus discovered ones);
2. **initial read** of every mapped node (batched ``Read`` requests), so a (re)connect picks up what
   changed while the collector was away: states with their true source timestamps, counters whose
   deltas across the outage are exact because the counters are cumulative;
3. a data-change **subscription** on all nodes (publishing interval, sampling interval and queue size
   configurable); values identical to what was already seen (same value, same source timestamp) are
   dropped, so the initial notifications of the new subscription do not double the initial read;
   servers that refuse subscriptions are **polled** instead (batched reads) when ``mode`` is ``auto``;
4. on a lost connection the client is torn down and rebuilt with exponential backoff (jittered); each
   new connection starts again at step 1.

Timestamps: events carry the SOURCE timestamp of the value (server timestamp when the source has
none, local receive time as the last resort). The server clock is compared with the local clock on
every connect (Server/ServerStatus/CurrentTime) and source timestamps of fresh notifications are
checked for lying in the future; beyond ``clock_skew_threshold_s`` the skew is flagged (warning log,
``stats.skew_flags``, ``stats.clock_skew_s``) and the source timestamps are still used.

PackML mapping (``preset: packml``, state = Status.StateCurrent, mode = Status.UnitModeCurrent): the
table and its decisions are in collector/packml.py, shared with the Sparkplug host (Execute -> running;
Suspended by the Blocked/Starved flags; Aborted/Held and the like -> unplanned_stop; Stopped -> idle,
override with ``values: {2: unplanned_stop, 7: unplanned_stop}`` where a plant wants stops as downtime;
Maintenance mode -> planned_stop, Manual -> setup unless faulted). The same precedence of mode over
state applies to every preset: a planned-stop mode first, then faults, then the mode, then the state.

OPC 40001 MachineryItemState (``preset: machinery``): 3 Executing -> running, 2 NotExecuting -> idle,
1 OutOfService -> unplanned_stop, 0 NotAvailable -> unplanned_stop (switched off inside planned time is
lost availability; planned shutdowns come from the calendar). MachineryOperationMode as ``mode_node``:
1 Maintenance -> planned_stop, 2 Setup -> setup. Custom maps (``preset: custom``) map integers or strings.

Counters go through ``CounterTracker`` (wrap at the configured bit width, reset). A processed and a
defective counter that belong to the same parts can arrive in different notifications; feeding them to
the tracker one at a time would count a defective part twice, so a counter change waits until its
partner carries the same source timestamp or ``counter_settle_s`` has passed. Reads (initial, polling)
are snapshots and are counted at once. The stop reason (Admin.StopReason.ID) becomes the fault_code of
non-running states. Bad status codes, unmapped state values and unusable values become ``Rejection``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto import security_policies
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from andon.events import (
    CounterTracker,
    Event,
    MachineState,
    StateChange,
    TelemetrySample,
    parse_state,
)
from andon.plant import PlantModel
from collector import packml
from collector.base import Item, Rejection, Source, SourceReport

log = logging.getLogger(__name__)
UTC = dt.UTC
StateTarget = packml.StateTarget

# --- value-map presets ---------------------------------------------------------------------------------

_M = MachineState
PACKML_STATE_NAMES = packml.STATE_NAMES
PACKML_STATE_MAP: dict[str, StateTarget] = {
    **{str(k): v for k, v in packml.STATE_TARGETS.items()},
    **{packml.STATE_NAMES[k].lower(): v for k, v in packml.STATE_TARGETS.items()},
}
PACKML_MODE_MAP: dict[str, MachineState] = {
    **{str(k): v for k, v in packml.UNIT_MODE_STATES.items()},
    **{packml.UNIT_MODE_NAMES[k].lower(): v for k, v in packml.UNIT_MODE_STATES.items()},
}
MACHINERY_STATE_MAP: dict[str, StateTarget] = {
    "0": _M.UNPLANNED_STOP, "notavailable": _M.UNPLANNED_STOP,
    "1": _M.UNPLANNED_STOP, "outofservice": _M.UNPLANNED_STOP,
    "2": _M.IDLE, "notexecuting": _M.IDLE,
    "3": _M.RUNNING, "executing": _M.RUNNING,
}
MACHINERY_MODE_MAP: dict[str, MachineState] = {"1": _M.PLANNED_STOP, "maintenance": _M.PLANNED_STOP,
                                               "2": _M.SETUP, "setup": _M.SETUP}
PRESETS: dict[str, tuple[dict[str, StateTarget], dict[str, MachineState]]] = {
    "packml": (PACKML_STATE_MAP, PACKML_MODE_MAP),
    "machinery": (MACHINERY_STATE_MAP, MACHINERY_MODE_MAP),
    "custom": ({}, {}),
}


def value_key(value: Any) -> str | None:
    """Normalise a node value for value-map lookup: integers as decimal text, strings lower-case."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return None
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    if isinstance(value, str):
        return value.strip().lower()
    return None


def _map_keys(v: Any) -> Any:
    if isinstance(v, dict):
        out = {}
        for k, t in v.items():
            key = value_key(k)
            if key is None:
                raise ValueError(f"value-map key {k!r} is neither an integer nor a string")
            out[key] = t
        return out
    return v


def _target(v: Any) -> StateTarget:
    if isinstance(v, str) and v.strip().lower() == packml.SUSPENDED:
        return packml.SUSPENDED
    return parse_state(v)


# --- configuration -------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecurityConfig(_Model):
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    client_certificate: Path | None = None  # DER or PEM
    client_private_key: Path | None = None  # PEM
    private_key_password: SecretStr | None = None
    # Pin the server certificate; without it the one offered by the endpoint is used.
    server_certificate: Path | None = None
    # Create a self-signed client certificate/key at the given paths when they are missing.
    generate_client_certificate: bool = False
    application_uri: str = "urn:andon:collector"
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> SecurityConfig:
        if self.mode != "None" and (self.client_certificate is None or self.client_private_key is None):
            raise ValueError(f"security mode {self.mode} needs client_certificate and client_private_key")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class StateMapping(_Model):
    node: str
    preset: Literal["packml", "machinery", "custom"] = "packml"
    # Custom map, or overrides of the preset: node value (integer or string) -> Andon state or "suspended".
    values: dict[str, StateTarget] = Field(default_factory=dict)
    mode_node: str | None = None  # PackML UnitModeCurrent or OPC 40001 MachineryOperationMode
    mode_values: dict[str, MachineState] = Field(default_factory=dict)  # overrides of the preset mode map
    blocked_node: str | None = None
    starved_node: str | None = None
    suspended_default: Literal["starved", "blocked"] = "starved"

    @field_validator("values", mode="before")
    @classmethod
    def _state_values(cls, v: Any) -> Any:
        v = _map_keys(v)
        return {k: _target(t) for k, t in v.items()} if isinstance(v, dict) else v

    @field_validator("mode_values", mode="before")
    @classmethod
    def _mode_values(cls, v: Any) -> Any:
        return _map_keys(v)

    @model_validator(mode="after")
    def _check(self) -> StateMapping:
        if self.preset == "custom" and not self.values:
            raise ValueError("a custom state mapping needs values")
        return self

    def state_map(self) -> dict[str, StateTarget]:
        return {**PRESETS[self.preset][0], **self.values}

    def mode_map(self) -> dict[str, MachineState]:
        return {**PRESETS[self.preset][1], **self.mode_values}


class CounterNode(_Model):
    node: str
    bits: Literal[16, 32, 64] | None = 32  # register width for wrap; None: never wraps
    signed: bool = False  # Int16/Int32 registers: negative readings are the upper half of the range
    # Structured values (OPC 30050 PackMLCountDataType[]): array index and field to take, e.g. AccCount.
    index: int | None = None
    field: str | None = None


class TelemetryNode(_Model):
    name: str = Field(min_length=1)
    node: str
    unit: str = ""


class MachineMapping(_Model):
    machine_id: str = Field(min_length=1)
    state: StateMapping | None = None
    processed: CounterNode | None = None
    defective: CounterNode | None = None
    stop_reason: str | None = None
    stop_reason_field: str | None = None  # when the node is a PackMLAlarmDataType structure: "ID"
    telemetry: list[TelemetryNode] = Field(default_factory=list)


class DiscoveryConfig(_Model):
    """Find PackML machines by browsing: objects with Status/StateCurrent, e.g. under PackMLObjects."""

    root: str | None = None  # node id to browse from; default the Objects folder
    max_depth: int = Field(default=4, ge=1, le=10)
    machine_ids: dict[str, str] = Field(default_factory=dict)  # browse name -> Andon machine id
    include: list[str] | None = None  # browse names to keep (default all)
    telemetry_folder: str = "Telemetry"
    speeds_as_telemetry: bool = True  # CurMachSpeed, MachSpeed, MachDesignSpeed


class OpcUaSourceConfig(_Model):
    id: str = Field(min_length=1)
    url: str = Field(pattern=r"^opc\.tcp://")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    machines: list[MachineMapping] = Field(default_factory=list)
    discover: DiscoveryConfig | None = None
    mode: Literal["auto", "subscribe", "poll"] = "auto"
    publishing_interval_ms: float = Field(default=100, gt=0)
    sampling_interval_ms: float = Field(default=0, ge=0)  # 0: the server's fastest
    queue_size: int = Field(default=10, ge=0)  # per monitored item, so quick changes are not merged
    poll_interval_s: float = Field(default=1.0, gt=0)
    read_chunk: int = Field(default=1000, ge=1)  # nodes per Read / CreateMonitoredItems request
    request_timeout_s: float = Field(default=4.0, gt=0)
    # Probe period (and probe timeout) for half-open connections; a closed socket is noticed at once.
    # Short values make a busy server look dead and cause needless reconnects.
    watchdog_interval_s: float = Field(default=5.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    timestamp: Literal["source", "server", "local"] = "source"
    clock_skew_threshold_s: float = Field(default=5.0, gt=0)
    counter_settle_s: float | None = Field(default=None, ge=0)  # default: 2 publishing intervals + 0.1 s
    batch_max: int = Field(default=5000, ge=1)
    # Unreachable for longer than this: the endpoint's machines become "no data" until it answers again.
    heartbeat_timeout_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> OpcUaSourceConfig:
        if not self.machines and self.discover is None:
            raise ValueError("map machines or enable discover")
        ids = [m.machine_id for m in self.machines]
        if len(set(ids)) != len(ids):
            raise ValueError("machine ids repeat")
        return self

    @property
    def settle_s(self) -> float:
        if self.counter_settle_s is not None:
            return self.counter_settle_s
        return 2 * self.publishing_interval_ms / 1000 + 0.1


# --- runtime state -------------------------------------------------------------------------------------

Role = Literal["state", "mode", "blocked", "starved", "stop_reason", "processed", "defective", "telemetry"]
_STATE_ROLES = frozenset({"state", "mode", "blocked", "starved", "stop_reason"})


@dataclass(slots=True)
class _Binding:
    machine_id: str
    role: Role
    node_id: str
    name: str = ""  # telemetry channel
    unit: str = ""
    counter: CounterNode | None = None
    struct_field: str | None = None
    last: tuple[Any, dt.datetime | None] | None = None  # (value, source ts) last processed, for de-duplication


@dataclass
class _MachineRuntime:
    mapping: MachineMapping
    state_map: dict[str, StateTarget]
    mode_map: dict[str, MachineState]
    tracker: CounterTracker
    state_raw: Any = None
    mode_raw: Any = None
    blocked: bool = False
    starved: bool = False
    stop_reason: str | None = None
    emitted: tuple[MachineState, str | None] | None = None
    total: int | None = None
    total_ts: dt.datetime | None = None
    reject: int | None = None
    reject_ts: dt.datetime | None = None
    counter_deadline: float | None = None  # monotonic time by which a half-seen counter pair is counted
    offline_since: dt.datetime | None = None  # "no data" was emitted at this time; cleared on fresh data


@dataclass
class OpcUaStats:
    connects: int = 0
    connection_losses: int = 0
    mode: str = ""
    notifications: int = 0
    reads: int = 0
    events: int = 0
    rejections: int = 0
    clock_skew_s: float | None = None
    skew_flags: int = 0
    last_error: str = ""


@dataclass(slots=True)
class _Update:
    binding: _Binding
    value: Any
    status: ua.StatusCode | None
    source_ts: dt.datetime | None
    server_ts: dt.datetime | None
    received: dt.datetime
    snapshot: bool  # from a Read (initial or poll) rather than a notification


class _ConnectionLost(Exception):
    pass


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def _status_bad(status: ua.StatusCode | None) -> bool:
    return status is not None and status.is_bad()


# --- discovery -----------------------------------------------------------------------------------------


async def _children(node: Node) -> dict[str, ua.ReferenceDescription]:
    return {r.BrowseName.Name: r for r in await node.get_children_descriptions()}


_COUNTER_TYPES: dict[int, tuple[int, bool]] = {
    ua.ObjectIds.Int16: (16, True), ua.ObjectIds.UInt16: (16, False), ua.ObjectIds.Int32: (32, True),
    ua.ObjectIds.UInt32: (32, False), ua.ObjectIds.Int64: (64, True), ua.ObjectIds.UInt64: (64, False),
}


async def _counter_from(client: Client, ref: ua.ReferenceDescription) -> CounterNode | None:
    """A counter mapping for Admin.ProdProcessedCount/ProdDefectiveCount, plain object or structure array."""
    node = client.get_node(ref.NodeId)
    if ref.NodeClass == ua.NodeClass.Variable:
        # OPC 30050: PackMLCountDataType[]; AccCount of the first element, an Int32.
        return CounterNode(node=ref.NodeId.to_string(), bits=32, signed=True, index=0, field="AccCount")
    kids = await _children(node)
    acc = kids.get("AccCount")
    if acc is None:
        return None
    dtype = await client.get_node(acc.NodeId).read_data_type()
    bits, signed = _COUNTER_TYPES.get(dtype.Identifier, (32, False)) if dtype.NamespaceIndex == 0 else (32, False)
    return CounterNode(node=acc.NodeId.to_string(), bits=bits, signed=signed)  # type: ignore[arg-type]


async def discover_packml(client: Client, cfg: DiscoveryConfig) -> list[MachineMapping]:
    """Browse for PackML machines (objects with a Status child holding StateCurrent) and map them."""
    root = client.get_node(cfg.root) if cfg.root else client.nodes.objects
    found: list[tuple[str, Node, dict[str, ua.ReferenceDescription]]] = []
    frontier: list[tuple[Node, int]] = [(root, 0)]
    seen: set[ua.NodeId] = set()
    while frontier:
        node, depth = frontier.pop(0)
        if node.nodeid in seen:
            continue
        seen.add(node.nodeid)
        kids = await _children(node)
        status = kids.get("Status")
        if status is not None and depth > 0:
            status_kids = await _children(client.get_node(status.NodeId))
            if "StateCurrent" in status_kids:
                name = (await node.read_browse_name()).Name
                found.append((name, node, {**{f"Status.{k}": v for k, v in status_kids.items()}, **kids}))
                continue
        if depth >= cfg.max_depth:
            continue
        for ref in kids.values():
            # Namespace 0 holds the server's own objects (Server, Aliases ...): nothing to find there.
            if ref.NodeClass in (ua.NodeClass.Object,) and ref.NodeId.NamespaceIndex != 0:
                frontier.append((client.get_node(ref.NodeId), depth + 1))
    mappings: list[MachineMapping] = []
    for name, _node, kids in found:
        if cfg.include is not None and name not in cfg.include:
            continue
        status = {k.split(".", 1)[1]: v for k, v in kids.items() if k.startswith("Status.")}

        def nid(refs: dict[str, ua.ReferenceDescription], key: str) -> str | None:
            r = refs.get(key)
            return r.NodeId.to_string() if r is not None else None

        state_node = nid(status, "StateCurrent")
        assert state_node is not None
        state = StateMapping(node=state_node, preset="packml", mode_node=nid(status, "UnitModeCurrent"),
                             blocked_node=nid(status, "EquipmentBlocked"),
                             starved_node=nid(status, "EquipmentStarved"))
        processed = defective = None
        stop_reason = stop_field = None
        telemetry: list[TelemetryNode] = []
        if cfg.speeds_as_telemetry:
            for key, tname in (("CurMachSpeed", "cur_mach_speed"), ("MachSpeed", "mach_speed")):
                if (n := nid(status, key)) is not None:
                    telemetry.append(TelemetryNode(name=tname, node=n, unit="1/min"))
        if "Admin" in kids:
            admin = await _children(client.get_node(kids["Admin"].NodeId))
            if "ProdProcessedCount" in admin:
                processed = await _counter_from(client, admin["ProdProcessedCount"])
            if "ProdDefectiveCount" in admin:
                defective = await _counter_from(client, admin["ProdDefectiveCount"])
            if (sr := admin.get("StopReason")) is not None:
                if sr.NodeClass == ua.NodeClass.Variable:
                    stop_reason, stop_field = sr.NodeId.to_string(), "ID"
                else:
                    stop_reason = nid(await _children(client.get_node(sr.NodeId)), "ID")
            if cfg.speeds_as_telemetry and (n := nid(admin, "MachDesignSpeed")) is not None:
                telemetry.append(TelemetryNode(name="mach_design_speed", node=n, unit="1/min"))
        if cfg.telemetry_folder in kids:
            for tname, ref in (await _children(client.get_node(kids[cfg.telemetry_folder].NodeId))).items():
                if ref.NodeClass == ua.NodeClass.Variable:
                    telemetry.append(TelemetryNode(name=tname, node=ref.NodeId.to_string()))
        mappings.append(MachineMapping(
            machine_id=cfg.machine_ids.get(name, name), state=state, processed=processed, defective=defective,
            stop_reason=stop_reason, stop_reason_field=stop_field, telemetry=telemetry,
        ))
    return mappings


# --- the source ----------------------------------------------------------------------------------------


class OpcUaSource(Source):
    """Source for one OPC UA endpoint; see the module docstring for the data flow and mappings."""

    def __init__(self, config: OpcUaSourceConfig, known_machines: Iterable[str] | None = None) -> None:
        self.config = config
        self.source_id = config.id
        self.known_machines = set(known_machines) if known_machines is not None else None
        self.stats = OpcUaStats()
        self._machines: dict[str, _MachineRuntime] = {}
        self._restored: dict[str, tuple[int, int, dt.datetime]] = {}
        self._client: Client | None = None
        self._closed = False
        self._lost_at: dt.datetime | None = None  # when the endpoint stopped answering (None: it answers)
        self._offline_emitted = False
        self.mappings: list[MachineMapping] = []  # resolved on the last connect

    # --- public helpers ----------------------------------------------------------------------------

    def restore_counters(self, machine_id: str, total_counter: int, reject_counter: int, ts: dt.datetime) -> None:
        """Resume counter deltas after a collector restart from the last stored raw readings."""
        self._restored[machine_id] = (total_counter, reject_counter, ts)
        if machine_id in self._machines:
            self._machines[machine_id].tracker.restore(self.source_id, machine_id, total_counter,
                                                       reject_counter, ts)

    async def close(self) -> None:
        self._closed = True
        await self._disconnect()

    # --- connection --------------------------------------------------------------------------------

    async def _connect(self) -> Client:
        cfg = self.config
        sec = cfg.security
        client = Client(cfg.url, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_interval_s)
        client.application_uri = sec.application_uri
        client.name = client.description = f"Andon collector {cfg.id}"
        # Short enough that a crashed collector's session (and its subscription) is freed soon.
        client.session_timeout = 120_000
        if sec.mode != "None":
            assert sec.client_certificate is not None and sec.client_private_key is not None
            if sec.generate_client_certificate and not (
                sec.client_certificate.is_file() and sec.client_private_key.is_file()
            ):
                await client.setup_self_signed_certificate(sec.client_private_key, sec.client_certificate)
            await client.set_security(
                security_policies.SecurityPolicyBasic256Sha256,
                certificate=str(sec.client_certificate),
                private_key=str(sec.client_private_key),
                private_key_password=sec.private_key_password.get_secret_value()
                if sec.private_key_password else None,
                server_certificate=str(sec.server_certificate) if sec.server_certificate else None,
                mode=getattr(ua.MessageSecurityMode, sec.mode),
            )
        if sec.username is not None and sec.password is not None:
            client.set_user(sec.username)
            client.set_password(sec.password.get_secret_value())
        await client.connect()
        self._client = client
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def _resolve(self, client: Client) -> tuple[list[_Binding], list[Rejection]]:
        """Explicit mappings plus discovered machines -> node bindings and per-machine runtime state."""
        rejections: list[Rejection] = []
        mappings = list(self.config.machines)
        if self.config.discover is not None:
            explicit = {m.machine_id for m in mappings}
            mappings += [m for m in await discover_packml(client, self.config.discover)
                         if m.machine_id not in explicit]
        self.mappings = mappings
        bindings: list[_Binding] = []
        for m in mappings:
            if self.known_machines is not None and m.machine_id not in self.known_machines:
                rejections.append(self._reject(f"machine {m.machine_id!r} is not in the plant model",
                                               None, m.machine_id))
                continue
            rt = self._machines.get(m.machine_id)
            if rt is None or rt.mapping != m:
                bits = m.processed.bits if m.processed else None
                tracker = rt.tracker if rt is not None and rt.tracker.bits == bits else CounterTracker(bits=bits)
                new = _MachineRuntime(
                    mapping=m,
                    state_map=m.state.state_map() if m.state else {},
                    mode_map=m.state.mode_map() if m.state else {},
                    tracker=tracker,
                )
                if rt is not None:  # keep what was seen across a reconnect
                    new.emitted, new.total, new.reject = rt.emitted, rt.total, rt.reject
                if m.machine_id in self._restored and rt is None:
                    total, reject, ts = self._restored[m.machine_id]
                    tracker.restore(self.source_id, m.machine_id, total, reject, ts)
                self._machines[m.machine_id] = rt = new
            mid = m.machine_id
            if m.state is not None:
                bindings.append(_Binding(mid, "state", m.state.node))
                if m.state.mode_node:
                    bindings.append(_Binding(mid, "mode", m.state.mode_node))
                if m.state.blocked_node:
                    bindings.append(_Binding(mid, "blocked", m.state.blocked_node))
                if m.state.starved_node:
                    bindings.append(_Binding(mid, "starved", m.state.starved_node))
            if m.stop_reason:
                bindings.append(_Binding(mid, "stop_reason", m.stop_reason, struct_field=m.stop_reason_field))
            if m.processed:
                bindings.append(_Binding(mid, "processed", m.processed.node, counter=m.processed))
            if m.defective:
                bindings.append(_Binding(mid, "defective", m.defective.node, counter=m.defective))
            for t in m.telemetry:
                bindings.append(_Binding(mid, "telemetry", t.node, name=t.name, unit=t.unit))
        return bindings, rejections

    def _reject(self, reason: str, payload: Any, topic: str | None) -> Rejection:
        self.stats.rejections += 1
        return Rejection(self.source_id, reason, None if payload is None else repr(payload)[:500], topic)

    async def _check_clock(self, client: Client) -> None:
        """Compare the server clock with ours (Server/ServerStatus/CurrentTime) and flag a skew."""
        t0 = time.time()
        server_now = _aware(await client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).read_value())
        t1 = time.time()
        if server_now is None:
            return
        skew = server_now.timestamp() - (t0 + t1) / 2
        self.stats.clock_skew_s = skew
        if abs(skew) > self.config.clock_skew_threshold_s:
            self.stats.skew_flags += 1
            log.warning("%s: server clock is %+.1f s off the local clock (threshold %.1f s)",
                        self.source_id, skew, self.config.clock_skew_threshold_s)

    # --- reading and subscribing -------------------------------------------------------------------

    async def _read(self, client: Client, bindings: Sequence[_Binding],
                    nodes: dict[str, Node]) -> list[_Update]:
        updates: list[_Update] = []
        chunk = self.config.read_chunk
        for i in range(0, len(bindings), chunk):
            part = bindings[i:i + chunk]
            dvs = await client.read_attributes([nodes[b.node_id] for b in part])
            received = dt.datetime.now(UTC)
            for b, dv in zip(part, dvs, strict=True):
                updates.append(_Update(b, dv.Value.Value if dv.Value is not None else None, dv.StatusCode,
                                       _aware(dv.SourceTimestamp), _aware(dv.ServerTimestamp), received, True))
        self.stats.reads += len(updates)
        return updates

    async def _subscribe(self, client: Client, bindings: Sequence[_Binding], nodes: dict[str, Node],
                         ) -> tuple[Subscription, dict[ua.NodeId, list[_Binding]], list[Rejection]]:
        cfg = self.config
        # Iterator mode with an unbounded queue: notifications are never dropped on the client side, and
        # no task is created per notification (the callback handler mode does that).
        sub = await client.create_subscription(cfg.publishing_interval_ms, None, queue_maxsize=0)
        by_node: dict[ua.NodeId, list[_Binding]] = {}
        unique: dict[str, Node] = {}
        for b in bindings:
            by_node.setdefault(nodes[b.node_id].nodeid, []).append(b)
            unique[b.node_id] = nodes[b.node_id]
        rejections: list[Rejection] = []
        items = list(unique.items())
        for i in range(0, len(items), cfg.read_chunk):
            part = items[i:i + cfg.read_chunk]
            results = await sub.subscribe_data_change(
                [n for _, n in part], queuesize=cfg.queue_size, sampling_interval=cfg.sampling_interval_ms)
            for (node_id, _), res in zip(part, results, strict=True):
                if isinstance(res, ua.StatusCode):
                    rejections.append(self._reject(f"cannot monitor node: {res.name}", None, node_id))
        return sub, by_node, rejections

    # --- turning values into events ----------------------------------------------------------------

    def _ts(self, u: _Update) -> dt.datetime:
        mode = self.config.timestamp
        if mode == "source":
            return u.source_ts or u.server_ts or u.received
        if mode == "server":
            return u.server_ts or u.source_ts or u.received
        return u.received

    def _process(self, updates: Iterable[_Update]) -> list[Item]:
        out: list[Item] = []
        state_groups: dict[str, dict[dt.datetime, list[_Update]]] = {}
        counter_groups: dict[str, dict[dt.datetime, list[_Update]]] = {}
        threshold = self.config.clock_skew_threshold_s
        for u in updates:
            b = u.binding
            key = (u.value, u.source_ts)
            if b.last is not None and b.last == key and not _status_bad(u.status):
                continue  # the same value again (subscription initial value after the initial read)
            if _status_bad(u.status):
                assert u.status is not None
                if b.last != ("<bad>", u.status.value):
                    out.append(self._reject(f"bad status {u.status.name} for {b.role} of {b.machine_id}",
                                            u.value, b.node_id))
                b.last = ("<bad>", u.status.value)
                continue
            b.last = key
            if (not u.snapshot and u.source_ts is not None
                    and (u.source_ts - u.received).total_seconds() > threshold):
                self.stats.skew_flags += 1
                self.stats.clock_skew_s = (u.source_ts - u.received).total_seconds()
                if self.stats.skew_flags in (1, 10, 100) or self.stats.skew_flags % 1000 == 0:
                    log.warning("%s: source timestamp of %s is %.1f s in the future (clock skew)",
                                self.source_id, b.node_id, self.stats.clock_skew_s)
            ts = self._ts(u)
            if b.role == "telemetry":
                item = self._telemetry(b, u.value, ts)
                out.append(item)
            elif b.role in _STATE_ROLES:
                state_groups.setdefault(b.machine_id, {}).setdefault(ts, []).append(u)
            else:
                counter_groups.setdefault(b.machine_id, {}).setdefault(ts, []).append(u)
        for machine_id, groups in state_groups.items():
            rt = self._machines[machine_id]
            # Same-timestamp values (state, flags, mode, reason written together) are applied together.
            for ts in sorted(groups):
                out.extend(self._apply_state(rt, groups[ts], ts))
        for machine_id, groups in counter_groups.items():
            rt = self._machines[machine_id]
            for ts in sorted(groups):
                out.extend(self._apply_counters(rt, groups[ts], ts))
        return out

    def _apply_counters(self, rt: _MachineRuntime, group: list[_Update], ts: dt.datetime) -> list[Item]:
        """Apply counter readings of one timestamp; count them once the processed/defective pair is complete."""
        out: list[Item] = []
        readings: list[tuple[Role, int]] = []
        for u in group:
            raw = self._counter_reading(u.binding, u.value)
            if isinstance(raw, Rejection):
                out.append(raw)
            else:
                readings.append((u.binding.role, raw))
        if not readings:
            return out
        # A reading below a value still waiting for its partner (wrap or reset) must not swallow the
        # parts counted before it: count what is pending first.
        if rt.counter_deadline is not None and any(
            (role == "processed" and rt.total is not None and raw < rt.total)
            or (role == "defective" and rt.reject is not None and raw < rt.reject)
            for role, raw in readings
        ):
            out.extend(self._flush_counters(rt))
        for role, raw in readings:
            if role == "processed":
                rt.total, rt.total_ts = raw, ts
            else:
                rt.reject, rt.reject_ts = raw, ts
        snapshot = any(u.snapshot for u in group)
        if rt.mapping.defective is None or rt.total_ts == rt.reject_ts or snapshot:
            out.extend(self._flush_counters(rt))
        elif rt.counter_deadline is None:
            rt.counter_deadline = time.monotonic() + self.config.settle_s
        return out

    def _telemetry(self, b: _Binding, value: Any, ts: dt.datetime) -> Item:
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)):
            return self._reject(f"telemetry {b.name!r} of {b.machine_id} is not a number", value, b.node_id)
        try:
            return TelemetrySample(b.machine_id, ts, b.name, float(value), self.source_id, b.unit)
        except ValueError as exc:
            return self._reject(str(exc), value, b.node_id)

    @staticmethod
    def _extract(value: Any, index: int | None, fld: str | None) -> Any:
        if index is not None and isinstance(value, (list, tuple)):
            value = value[index] if index < len(value) else None
        if fld is not None and value is not None and not isinstance(value, (int, float, str)):
            value = getattr(value, fld, None)
        return value

    def _counter_reading(self, b: _Binding, value: Any) -> int | Rejection:
        c = b.counter
        assert c is not None
        raw = self._extract(value, c.index, c.field)
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            return self._reject(f"{b.role} counter of {b.machine_id} is not an integer", value, b.node_id)
        if c.signed and c.bits and raw < 0:
            raw += 1 << c.bits
        if raw < 0 or (c.bits and raw >= 1 << c.bits):
            return self._reject(f"{b.role} counter of {b.machine_id} outside its {c.bits}-bit range",
                                value, b.node_id)
        return raw

    def _flush_counters(self, rt: _MachineRuntime) -> list[Item]:
        rt.counter_deadline = None
        if rt.total is None:
            return []
        ts = max(t for t in (rt.total_ts, rt.reject_ts) if t is not None)
        mid = rt.mapping.machine_id
        try:
            pc = rt.tracker.update(self.source_id, mid, ts, rt.total, rt.reject or 0)
        except ValueError as exc:
            return [self._reject(f"counters of {mid}: {exc}", (rt.total, rt.reject), None)]
        return [pc] if pc is not None else []

    def _flush_due(self) -> list[Item]:
        now = time.monotonic()
        out: list[Item] = []
        for rt in self._machines.values():
            if rt.counter_deadline is not None and now >= rt.counter_deadline:
                out.extend(self._flush_counters(rt))
        return out

    def _next_deadline(self) -> float | None:
        deadlines = [rt.counter_deadline for rt in self._machines.values() if rt.counter_deadline is not None]
        return min(deadlines) if deadlines else None

    def _apply_state(self, rt: _MachineRuntime, group: list[_Update], ts: dt.datetime) -> list[Item]:
        out: list[Item] = []
        touched_state = False
        for u in group:
            b = u.binding
            match b.role:
                case "state":
                    if value_key(u.value) is None:
                        out.append(self._reject(f"state value of {b.machine_id} is neither integer nor text",
                                                u.value, b.node_id))
                        continue
                    rt.state_raw = u.value
                    touched_state = True
                case "mode":
                    rt.mode_raw = u.value
                case "blocked":
                    rt.blocked = bool(u.value)
                case "starved":
                    rt.starved = bool(u.value)
                case "stop_reason":
                    v = self._extract(u.value, None, b.struct_field)
                    rt.stop_reason = None if v in (None, 0, "", "0") else str(v)
        if rt.state_raw is None:
            return out
        key = value_key(rt.state_raw)
        target = rt.state_map.get(key) if key is not None else None
        if target is None:
            if touched_state:
                out.append(self._reject(
                    f"state value {rt.state_raw!r} of {rt.mapping.machine_id} is not in the value map",
                    rt.state_raw, rt.mapping.state.node if rt.mapping.state else None))
            return out
        mode_key = value_key(rt.mode_raw) if rt.mode_raw is not None else None
        default = rt.mapping.state.suspended_default if rt.mapping.state else "starved"
        state = packml.resolve(target, rt.mode_map.get(mode_key) if mode_key is not None else None,
                               blocked=rt.blocked, starved=rt.starved, suspended_default=MachineState(default))
        fault = rt.stop_reason if state not in (MachineState.RUNNING, MachineState.OFFLINE) else None
        if rt.offline_since is not None:
            # After "no data", a state unchanged since before the outage still carries its old source
            # timestamp: it is known again as of now, not from back then (that would erase the gap).
            if ts <= rt.offline_since:
                ts = dt.datetime.now(UTC)
            rt.offline_since = None
        if rt.emitted == (state, fault):
            return out
        rt.emitted = (state, fault)
        out.append(StateChange(rt.mapping.machine_id, ts, state, self.source_id, fault_code=fault))
        return out

    # --- the event stream --------------------------------------------------------------------------

    def _count(self, items: list[Item]) -> list[Item]:
        self.stats.events += sum(1 for i in items if not isinstance(i, Rejection))
        return items

    async def events(self) -> AsyncIterator[list[Item]]:
        cfg = self.config
        delay = cfg.reconnect_initial_s
        while not self._closed:
            lost = asyncio.Event()
            try:
                client = await self._connect()

                async def on_lost(exc: Exception, lost: asyncio.Event = lost) -> None:
                    lost.set()

                client.connection_lost_callback = on_lost
                self.stats.connects += 1
                await self._check_clock(client)
                bindings, rejections = await self._resolve(client)
                nodes = {b.node_id: client.get_node(b.node_id) for b in bindings}
                items: list[Item] = list(rejections)
                items += self._process(await self._read(client, bindings, nodes))
                sub = None
                by_node: dict[ua.NodeId, list[_Binding]] = {}
                if cfg.mode != "poll" and bindings:
                    try:
                        sub, by_node, rej = await self._subscribe(client, bindings, nodes)
                        items += rej
                    except ua.UaStatusCodeError as exc:
                        if cfg.mode == "subscribe":
                            raise
                        log.warning("%s: subscriptions refused (%s); polling every %.1f s",
                                    self.source_id, exc, cfg.poll_interval_s)
                        sub = None
                self.stats.mode = "subscribe" if sub is not None else "poll"
                delay = cfg.reconnect_initial_s
                self._lost_at, self._offline_emitted = None, False
                if items:
                    yield self._count(items)
                if sub is not None:
                    stream = self._notifications(sub, by_node, lost)
                else:
                    stream = self._polls(client, bindings, nodes, lost)
                async for batch in stream:
                    yield self._count(batch)
            except (OSError, TimeoutError, ConnectionError, _ConnectionLost, ua.UaError) as exc:
                self.stats.connection_losses += 1
                self.stats.last_error = repr(exc)
                log.warning("%s: connection to %s lost or failed (%r); retrying in %.1f s",
                            self.source_id, cfg.url, exc, delay)
            except Exception as exc:  # a server answering nonsense must not end the source
                self.stats.connection_losses += 1
                self.stats.last_error = repr(exc)
                log.exception("%s: unexpected error talking to %s; reconnecting in %.1f s",
                              self.source_id, cfg.url, delay)
            finally:
                await self._disconnect()
            # A counter pair still waiting for its partner is left pending on purpose: the initial read of
            # the next connection is a consistent snapshot that counts it exactly.
            if self._closed:
                break
            if self._lost_at is None:
                self._lost_at = dt.datetime.now(UTC)
            wake = time.monotonic() + delay * random.uniform(0.8, 1.2)
            while (remaining := wake - time.monotonic()) > 0:
                offline = self._offline_due()
                if offline:
                    yield self._count(offline)
                until_offline = self._seconds_to_offline()
                await asyncio.sleep(remaining if until_offline is None else max(0.05, min(remaining, until_offline)))
            delay = min(delay * 2, cfg.reconnect_max_s)

    def _seconds_to_offline(self) -> float | None:
        timeout = self.config.heartbeat_timeout_s
        if timeout is None or self._lost_at is None or self._offline_emitted:
            return None
        return (self._lost_at + dt.timedelta(seconds=timeout) - dt.datetime.now(UTC)).total_seconds()

    def _offline_due(self) -> list[Item]:
        """"No data" for every machine of an endpoint that has been unreachable past the heartbeat."""
        left = self._seconds_to_offline()
        if left is None or left > 0:
            return []
        assert self._lost_at is not None and self.config.heartbeat_timeout_s is not None
        at = self._lost_at + dt.timedelta(seconds=self.config.heartbeat_timeout_s)
        self._offline_emitted = True
        out: list[Item] = []
        for machine_id, rt in self._machines.items():
            rt.emitted = (MachineState.OFFLINE, None)
            rt.offline_since = at
            out.append(StateChange(machine_id, at, MachineState.OFFLINE, self.source_id))
        return out

    async def _notifications(self, sub: Subscription, by_node: dict[ua.NodeId, list[_Binding]],
                             lost: asyncio.Event) -> AsyncIterator[list[Item]]:
        queue = sub._event_queue  # the iterator-mode queue; draining it directly avoids a task per item
        assert queue is not None
        batch_max = self.config.batch_max
        tick = self.config.watchdog_interval_s
        while True:
            if lost.is_set():
                raise _ConnectionLost("connection lost")
            deadline = self._next_deadline()
            timeout = tick if deadline is None else max(0.0, min(tick, deadline - time.monotonic()))
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives
                # together with a queue item, and the collector would then never stop.
                async with asyncio.timeout(timeout):
                    first = await queue.get()
            except TimeoutError:
                due = self._flush_due()
                if due:
                    yield due
                continue
            updates: list[_Update] = []
            received = dt.datetime.now(UTC)
            ev: Any = first
            while True:
                if ev is None:
                    raise _ConnectionLost("subscription closed")
                if isinstance(ev, DataChangeEvent):
                    dv = ev.data.monitored_item.Value
                    for b in by_node.get(ev.node.nodeid, ()):
                        updates.append(_Update(b, ev.value, dv.StatusCode if dv is not None else None,
                                               _aware(dv.SourceTimestamp) if dv is not None else None,
                                               _aware(dv.ServerTimestamp) if dv is not None else None,
                                               received, False))
                elif isinstance(ev, StatusChangeEvent):
                    status = ev.notification.Status
                    if status.is_bad():
                        raise _ConnectionLost(f"subscription status {status.name}")
                if len(updates) >= batch_max or queue.empty():
                    break
                ev = queue.get_nowait()
            self.stats.notifications += len(updates)
            items = self._process(updates) + self._flush_due()
            if items:
                yield items

    async def _polls(self, client: Client, bindings: list[_Binding], nodes: dict[str, Node],
                     lost: asyncio.Event) -> AsyncIterator[list[Item]]:
        interval = self.config.poll_interval_s
        next_poll = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))
            next_poll += interval
            if lost.is_set():
                raise _ConnectionLost("connection lost")
            items = self._process(await self._read(client, bindings, nodes))
            if items:
                yield items

    # --- check ------------------------------------------------------------------------------------

    async def check(self) -> SourceReport:
        try:
            client = await self._connect()
        except Exception as exc:
            return SourceReport(self.source_id, False, f"cannot connect to {self.config.url}: {exc!r}")
        try:
            await self._check_clock(client)
            bindings, rejections = await self._resolve(client)
            nodes = {b.node_id: client.get_node(b.node_id) for b in bindings}
            updates = await self._read(client, bindings, nodes)
            bad = [f"{u.binding.machine_id}/{u.binding.role}{'/' + u.binding.name if u.binding.name else ''}: "
                   f"{u.binding.node_id} {u.status.name if u.status else ''}"
                   for u in updates if _status_bad(u.status)]
            mapping: dict[str, dict[str, str]] = {}
            for b in bindings:
                role = f"telemetry.{b.name}" if b.role == "telemetry" else b.role
                mapping.setdefault(b.machine_id, {})[role] = b.node_id
            machines = sorted(mapping)
            ok = not bad and not rejections and bool(machines)
            detail = (f"{self.config.url}: {len(machines)} machines, {len(bindings)} nodes"
                      f"{', ' + str(len(bad)) + ' unreadable' if bad else ''}"
                      f"{', ' + str(len(rejections)) + ' rejected' if rejections else ''}")
            return SourceReport(self.source_id, ok, detail, machines, extra={
                "nodes": mapping, "bad_nodes": bad, "rejected": [r.reason for r in rejections],
                "clock_skew_s": self.stats.clock_skew_s, "security": self.config.security.mode,
            })
        except Exception as exc:
            return SourceReport(self.source_id, False, f"{self.config.url}: {exc!r}")
        finally:
            await self._disconnect()


def events_only(items: Iterable[Item]) -> list[Event]:
    """The events of a batch without its rejections (convenience for tests and tools)."""
    return [i for i in items if not isinstance(i, Rejection)]


__all__ = [
    "MACHINERY_MODE_MAP",
    "MACHINERY_STATE_MAP",
    "PACKML_MODE_MAP",
    "PACKML_STATE_MAP",
    "CounterNode",
    "DiscoveryConfig",
    "MachineMapping",
    "OpcUaSource",
    "OpcUaSourceConfig",
    "OpcUaStats",
    "SecurityConfig",
    "StateMapping",
    "TelemetryNode",
    "discover_packml",
    "events_only",
]


def from_config(cfg: dict[str, Any], plant: PlantModel, counters: CounterTracker | None = None) -> OpcUaSource:
    """Build the source from a sources-file entry (``id``, ``type: opcua`` and OpcUaSourceConfig fields);
    machines are checked against the plant, the heartbeat defaults to the plant's, and counter readings
    stored before a restart are resumed."""
    data = {k: v for k, v in cfg.items() if k != "type"}
    data.setdefault("heartbeat_timeout_s", plant.settings.heartbeat_timeout_s)
    source = OpcUaSource(OpcUaSourceConfig.model_validate(data), known_machines=[m.id for m in plant.machines()])
    if counters is not None:
        for (_, machine_id), total, reject, ts in counters.baselines():
            source.restore_counters(machine_id, total, reject, ts)
    return source
