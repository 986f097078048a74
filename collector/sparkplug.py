"""Sparkplug B: payload codec and a compliant host application core (pure logic, no I/O).

Codec
-----
The Eclipse Tahu payload schema (proto2, package ``org.eclipse.tahu.protobuf``) is built at import time
from a ``FileDescriptorProto`` assembled in code from the field numbers of the specification, and the
message classes come from protobuf's message factory. No generated ``_pb2`` module and no third-party
Sparkplug package (those pin paho-mqtt < 2).

Host application
----------------
``SparkplugHost.handle(topic, payload, ...)`` takes one received MQTT message and returns a ``HostResult``:
canonical events and rejections, MQTT messages to publish (Rebirth NCMDs), and the tokens of the
messages whose events are all in this result (safe to acknowledge once the result is durable; a message
held back for reordering is acknowledged only when its events come out). ``poll(now)`` fires reorder
timeouts. The MQTT source (collector.mqtt) does the I/O, including the host STATE birth and death.

Rules implemented (Sparkplug 3.0, see docs/field-reference §4):

* per edge node session: bdSeq from the NBIRTH ``bdSeq`` metric; an NDEATH whose bdSeq differs from the
  current NBIRTH's (a late Will of an older connection) is ignored;
* NBIRTH/DBIRTH define metric names, datatypes and aliases (aliases unique per edge node); NDATA/DDATA
  are resolved by alias, or by name when the edge node does not use aliases;
* ``seq`` 0-255 per edge node, shared by NBIRTH/NDATA/DBIRTH/DDATA/DDEATH, wrapping 255 -> 0. A message
  ahead of the expected seq is held; if the gap is not filled within ``reorder_timeout_s`` the host sends
  ONE ``Node Control/Rebirth`` NCMD and then processes what it held (losing nothing it has). A message
  behind the expected seq (duplicate, late redelivery) is processed as is: its idempotency keys equal
  those of the first delivery, so storage keeps it once;
* Rebirth is also requested (once per session until the NBIRTH arrives, repeated only after
  ``rebirth_retry_s``) on data before birth, unknown alias or metric, and a malformed payload;
* NDEATH marks every machine of the edge node OFFLINE, DDEATH the device's machine.

Mapping to canonical events (PackTags names work out of the box; matching ignores case and treats
``/`` like ``.``, so ``Status/StateCurrent`` works too):

* ``Status.StateCurrent`` (PackML state number) together with ``Status.UnitModeCurrent``,
  ``Status.EquipmentInterlock.Blocked``/``.Starved`` (or ``Status.EquipmentBlocked``/``EquipmentStarved``)
  and ``Admin.StopReason.ID``/``.Value`` -> ``StateChange`` (see ``packml_to_machine_state``), emitted
  when the derived state or fault code changes;
* ``Admin.ProdProcessedCount`` / ``Admin.ProdDefectiveCount`` (bare, ``[0]``, ``.AccCount`` or
  ``[0].AccCount``) -> counter readings -> ``ProductionCount`` deltas through ``CounterTracker``;
* any other numeric metric -> ``TelemetrySample`` (unit from the birth's ``engUnit``/``unit`` property).

Machine ids: ``machine_map`` keys ``"group/edge/device"`` (device metrics) or ``"group/edge"``
(node-level metrics); without an entry a device id is the machine id and node-level metrics are not
attributed to a machine. Timestamps are the metric's, else the payload's, else the receive time.
The idempotency key of every event is built from (group, edge node, bdSeq, seq, payload timestamp,
metric alias or name): a redelivered message gives the same keys. The payload timestamp is part of it
because seq wraps every 256 messages and a rebirth restarts it under the same bdSeq.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ConfigDict, Field

from andon.events import UTC, CounterTracker, Event, MachineState, StateChange, TelemetrySample
from collector import packml
from collector.base import Item, Rejection
from collector.packml import packml_to_machine_state  # the PackML table is shared with OPC UA

NAMESPACE = "spBv1.0"
PACKAGE = "org.eclipse.tahu.protobuf"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

# --- payload schema, built at runtime ------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_EXT_MAX = 536_870_912  # "extensions N to max": exclusive end of the field-number range


def _add_field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    *,
    label: int = _OPTIONAL,
    type_name: str | None = None,
    oneof_index: int | None = None,
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)  # type: ignore[arg-type]
    if type_name:
        f.type_name = f".{PACKAGE}.Payload.{type_name}"
    if oneof_index is not None:
        f.oneof_index = oneof_index


def _extendable(msg: descriptor_pb2.DescriptorProto, start: int) -> None:
    msg.extension_range.add(start=start, end=_EXT_MAX)


def _value_extension(parent: descriptor_pb2.DescriptorProto, name: str) -> None:
    _extendable(parent.nested_type.add(name=name), 1)


def _scalar_oneof(msg: descriptor_pb2.DescriptorProto, first: int, ext_type: str | None) -> None:
    """The int/long/float/double/bool/string value oneof shared by Parameter, DataSetValue, PropertyValue."""
    msg.oneof_decl.add(name="value")
    for offset, (name, ftype) in enumerate(
        [
            ("int_value", _F.TYPE_UINT32),
            ("long_value", _F.TYPE_UINT64),
            ("float_value", _F.TYPE_FLOAT),
            ("double_value", _F.TYPE_DOUBLE),
            ("boolean_value", _F.TYPE_BOOL),
            ("string_value", _F.TYPE_STRING),
        ]
    ):
        _add_field(msg, name, first + offset, ftype, oneof_index=0)
    if ext_type:
        _add_field(msg, "extension_value", first + 6, _F.TYPE_MESSAGE, type_name=ext_type, oneof_index=0)


def build_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """sparkplug_b.proto (Tahu), field numbers as in Sparkplug 3.0 §6.4."""
    fdp = descriptor_pb2.FileDescriptorProto(name="andon_sparkplug_b.proto", package=PACKAGE, syntax="proto2")
    payload = fdp.message_type.add(name="Payload")

    template = payload.nested_type.add(name="Template")
    parameter = template.nested_type.add(name="Parameter")
    _add_field(parameter, "name", 1, _F.TYPE_STRING)
    _add_field(parameter, "type", 2, _F.TYPE_UINT32)
    _value_extension(parameter, "ParameterValueExtension")
    _scalar_oneof(parameter, 3, "Template.Parameter.ParameterValueExtension")
    _add_field(template, "version", 1, _F.TYPE_STRING)
    _add_field(template, "metrics", 2, _F.TYPE_MESSAGE, label=_REPEATED, type_name="Metric")
    _add_field(template, "parameters", 3, _F.TYPE_MESSAGE, label=_REPEATED, type_name="Template.Parameter")
    _add_field(template, "template_ref", 4, _F.TYPE_STRING)
    _add_field(template, "is_definition", 5, _F.TYPE_BOOL)
    _extendable(template, 6)

    dataset = payload.nested_type.add(name="DataSet")
    ds_value = dataset.nested_type.add(name="DataSetValue")
    _value_extension(ds_value, "DataSetValueExtension")
    _scalar_oneof(ds_value, 1, "DataSet.DataSetValue.DataSetValueExtension")
    row = dataset.nested_type.add(name="Row")
    _add_field(row, "elements", 1, _F.TYPE_MESSAGE, label=_REPEATED, type_name="DataSet.DataSetValue")
    _extendable(row, 2)
    _add_field(dataset, "num_of_columns", 1, _F.TYPE_UINT64)
    _add_field(dataset, "columns", 2, _F.TYPE_STRING, label=_REPEATED)
    _add_field(dataset, "types", 3, _F.TYPE_UINT32, label=_REPEATED)
    _add_field(dataset, "rows", 4, _F.TYPE_MESSAGE, label=_REPEATED, type_name="DataSet.Row")
    _extendable(dataset, 5)

    prop_value = payload.nested_type.add(name="PropertyValue")
    _add_field(prop_value, "type", 1, _F.TYPE_UINT32)
    _add_field(prop_value, "is_null", 2, _F.TYPE_BOOL)
    _value_extension(prop_value, "PropertyValueExtension")
    _scalar_oneof(prop_value, 3, None)
    _add_field(prop_value, "propertyset_value", 9, _F.TYPE_MESSAGE, type_name="PropertySet", oneof_index=0)
    _add_field(prop_value, "propertysets_value", 10, _F.TYPE_MESSAGE, type_name="PropertySetList",
               oneof_index=0)
    _add_field(prop_value, "extension_value", 11, _F.TYPE_MESSAGE,
               type_name="PropertyValue.PropertyValueExtension", oneof_index=0)

    prop_set = payload.nested_type.add(name="PropertySet")
    _add_field(prop_set, "keys", 1, _F.TYPE_STRING, label=_REPEATED)
    _add_field(prop_set, "values", 2, _F.TYPE_MESSAGE, label=_REPEATED, type_name="PropertyValue")
    _extendable(prop_set, 3)

    prop_set_list = payload.nested_type.add(name="PropertySetList")
    _add_field(prop_set_list, "propertyset", 1, _F.TYPE_MESSAGE, label=_REPEATED, type_name="PropertySet")
    _extendable(prop_set_list, 2)

    metadata = payload.nested_type.add(name="MetaData")
    for number, (name, ftype) in enumerate(
        [
            ("is_multi_part", _F.TYPE_BOOL),
            ("content_type", _F.TYPE_STRING),
            ("size", _F.TYPE_UINT64),
            ("seq", _F.TYPE_UINT64),
            ("file_name", _F.TYPE_STRING),
            ("file_type", _F.TYPE_STRING),
            ("md5", _F.TYPE_STRING),
            ("description", _F.TYPE_STRING),
        ],
        start=1,
    ):
        _add_field(metadata, name, number, ftype)
    _extendable(metadata, 9)

    metric = payload.nested_type.add(name="Metric")
    _add_field(metric, "name", 1, _F.TYPE_STRING)
    _add_field(metric, "alias", 2, _F.TYPE_UINT64)
    _add_field(metric, "timestamp", 3, _F.TYPE_UINT64)
    _add_field(metric, "datatype", 4, _F.TYPE_UINT32)
    _add_field(metric, "is_historical", 5, _F.TYPE_BOOL)
    _add_field(metric, "is_transient", 6, _F.TYPE_BOOL)
    _add_field(metric, "is_null", 7, _F.TYPE_BOOL)
    _add_field(metric, "metadata", 8, _F.TYPE_MESSAGE, type_name="MetaData")
    _add_field(metric, "properties", 9, _F.TYPE_MESSAGE, type_name="PropertySet")
    _value_extension(metric, "MetricValueExtension")
    metric.oneof_decl.add(name="value")
    for name, number, ftype, type_name in [
        ("int_value", 10, _F.TYPE_UINT32, None),
        ("long_value", 11, _F.TYPE_UINT64, None),
        ("float_value", 12, _F.TYPE_FLOAT, None),
        ("double_value", 13, _F.TYPE_DOUBLE, None),
        ("boolean_value", 14, _F.TYPE_BOOL, None),
        ("string_value", 15, _F.TYPE_STRING, None),
        ("bytes_value", 16, _F.TYPE_BYTES, None),
        ("dataset_value", 17, _F.TYPE_MESSAGE, "DataSet"),
        ("template_value", 18, _F.TYPE_MESSAGE, "Template"),
        ("extension_value", 19, _F.TYPE_MESSAGE, "Metric.MetricValueExtension"),
    ]:
        _add_field(metric, name, number, ftype, type_name=type_name, oneof_index=0)

    _add_field(payload, "timestamp", 1, _F.TYPE_UINT64)
    _add_field(payload, "metrics", 2, _F.TYPE_MESSAGE, label=_REPEATED, type_name="Metric")
    _add_field(payload, "seq", 3, _F.TYPE_UINT64)
    _add_field(payload, "uuid", 4, _F.TYPE_STRING)
    _add_field(payload, "body", 5, _F.TYPE_BYTES)
    _extendable(payload, 6)
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(build_file_descriptor())
Payload: type[Message] = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Payload"))
Metric: type[Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{PACKAGE}.Payload.Metric")
)


class DataType(IntEnum):
    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}
_INT_FIELD_TYPES = {DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16,
                    DataType.UINT32}
_LONG_FIELD_TYPES = {DataType.INT64, DataType.UINT64, DataType.DATETIME}
_STRING_TYPES = {DataType.STRING, DataType.TEXT, DataType.UUID}
NUMERIC_TYPES = frozenset(_INT_FIELD_TYPES | {DataType.INT64, DataType.UINT64, DataType.FLOAT, DataType.DOUBLE})

Scalar = bool | int | float | str | bytes


class SparkplugDecodeError(ValueError):
    pass


def set_metric_value(metric: Any, datatype: int, value: Scalar | None) -> None:
    """Store ``value`` in the oneof field the datatype uses; signed ints in two's complement (as Tahu)."""
    metric.datatype = int(datatype)
    if value is None:
        metric.is_null = True
        return
    dtype = DataType(datatype)
    if dtype in _INT_FIELD_TYPES or dtype in _LONG_FIELD_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{dtype.name} metric needs an int, got {type(value).__name__}")
        bits = _SIGNED_BITS.get(dtype)
        if bits and value < 0:
            value += 1 << bits
        if dtype in _INT_FIELD_TYPES:
            metric.int_value = value
        else:
            metric.long_value = value
    elif dtype == DataType.FLOAT:
        metric.float_value = float(value)  # type: ignore[arg-type]
    elif dtype == DataType.DOUBLE:
        metric.double_value = float(value)  # type: ignore[arg-type]
    elif dtype == DataType.BOOLEAN:
        metric.boolean_value = bool(value)
    elif dtype in _STRING_TYPES:
        metric.string_value = str(value)
    elif dtype in (DataType.BYTES, DataType.FILE):
        metric.bytes_value = bytes(value)  # type: ignore[arg-type]
    else:
        raise TypeError(f"datatype {dtype.name} is not supported by this encoder")


def metric_value(metric: Any, datatype: int) -> Scalar | None:
    """The metric's scalar value interpreted with ``datatype``; None for null and non-scalar values."""
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    if which in ("int_value", "long_value"):
        raw = int(getattr(metric, which))
        bits = _SIGNED_BITS.get(datatype)  # type: ignore[call-overload]
        if bits:
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return raw
    if which in ("float_value", "double_value", "boolean_value", "string_value", "bytes_value"):
        return getattr(metric, which)  # type: ignore[no-any-return]
    return None


def decode_payload(data: bytes) -> Any:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SparkplugDecodeError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    payload = Payload()
    try:
        payload.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        raise SparkplugDecodeError(f"not a Sparkplug B protobuf payload: {exc}") from None
    return payload


@dataclass(slots=True)
class MetricSpec:
    """One metric to encode: name and/or alias, datatype, value, optional timestamp and properties."""

    name: str | None
    datatype: int
    value: Scalar | None
    alias: int | None = None
    timestamp_ms: int | None = None
    properties: Mapping[str, str] | None = None


def encode_payload(metrics: Iterable[MetricSpec], *, timestamp_ms: int | None = None,
                   seq: int | None = None) -> bytes:
    payload = Payload()
    payload.timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    if seq is not None:
        payload.seq = seq
    for spec in metrics:
        m = payload.metrics.add()
        if spec.name is not None:
            m.name = spec.name
        if spec.alias is not None:
            m.alias = spec.alias
        if spec.timestamp_ms is not None:
            m.timestamp = spec.timestamp_ms
        if spec.properties:
            for key, text in spec.properties.items():
                m.properties.keys.append(key)
                pv = m.properties.values.add()
                pv.type = DataType.STRING
                pv.string_value = text
        set_metric_value(m, spec.datatype, spec.value)
    return bytes(payload.SerializeToString())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rebirth_command(timestamp_ms: int | None = None) -> bytes:
    return encode_payload([MetricSpec(REBIRTH_METRIC, DataType.BOOLEAN, True)], timestamp_ms=timestamp_ms)


# --- topics and host STATE ---------------------------------------------------------------------------

MESSAGE_TYPES = frozenset({"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"})
_DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
_ID_FORBIDDEN = re.compile(r"[+#/]")


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    message_type: str  # NBIRTH ... DCMD, or STATE
    edge_node: str  # the host id for STATE
    device: str | None = None

    @property
    def node_key(self) -> str:
        return f"{self.group}/{self.edge_node}"


def parse_topic(topic: str) -> SparkplugTopic | None:
    """``spBv1.0/group/TYPE/edge[/device]`` or ``spBv1.0/STATE/host``; None when not a valid topic."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        return None
    if parts[1] == "STATE":
        return SparkplugTopic("", "STATE", parts[2]) if len(parts) == 3 and parts[2] else None
    if len(parts) not in (4, 5) or parts[2] not in MESSAGE_TYPES:
        return None
    group, mtype, edge = parts[1], parts[2], parts[3]
    device = parts[4] if len(parts) == 5 else None
    if (device is None) == (mtype in _DEVICE_TYPES):
        return None  # device id required for D* messages and forbidden for N* messages
    if not group or not edge or device == "":
        return None
    return SparkplugTopic(group, mtype, edge, device)


def topic_for(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    for part in (group, edge_node, device or "x"):
        if not part or _ID_FORBIDDEN.search(part):
            raise ValueError(f"invalid Sparkplug id {part!r}")
    tail = f"/{device}" if device else ""
    return f"{NAMESPACE}/{group}/{message_type}/{edge_node}{tail}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def normalize_metric_name(name: str) -> str:
    return name.replace("/", ".").strip().lower()


_STATE_NAMES = frozenset({"status.statecurrent"})
_MODE_NAMES = frozenset({"status.unitmodecurrent"})
_BLOCKED_NAMES = frozenset({"status.equipmentinterlock.blocked", "status.equipmentblocked"})
_STARVED_NAMES = frozenset({"status.equipmentinterlock.starved", "status.equipmentstarved"})
_STOP_ID_NAMES = frozenset({"admin.stopreason.id", "admin.stopreason"})
_STOP_VALUE_NAMES = frozenset({"admin.stopreason.value"})
_COUNTER_RE = re.compile(r"^admin\.prod(processed|defective)count(?:\[(\d+)\])?(?:\.(\w+))?$")
_IGNORED_PREFIXES = ("node control.", "device control.", "properties.")
_UNIT_PROPERTY_KEYS = ("engunit", "unit", "units", "engineeringunits")


class SparkplugHostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host_id: str = Field(default="andon", min_length=1, max_length=64, pattern=r"^[^+#/]+$")
    groups: list[str] = Field(default_factory=list, description="groups to follow; empty: all")
    reorder_timeout_s: float = Field(default=2.0, gt=0, le=60)
    rebirth_retry_s: float = Field(default=30.0, gt=0, le=3600)
    machine_map: dict[str, str] = Field(
        default_factory=dict, description='"group/edge/device" or "group/edge" -> machine id'
    )
    device_is_machine: bool = True
    suspended_without_flags: MachineState = MachineState.STARVED
    unit_mode_states: dict[int, MachineState] = Field(
        default_factory=lambda: dict(packml.UNIT_MODE_STATES)
    )


@dataclass(slots=True)
class OutboundMessage:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class HostResult:
    items: list[Item] = field(default_factory=list)
    outbound: list[OutboundMessage] = field(default_factory=list)
    done: list[Any] = field(default_factory=list)  # tokens of messages fully turned into items

    def extend(self, other: HostResult) -> None:
        self.items.extend(other.items)
        self.outbound.extend(other.outbound)
        self.done.extend(other.done)


@dataclass(slots=True)
class _MetricDef:
    name: str
    normalized: str
    datatype: int
    device: str | None
    unit: str = ""


@dataclass(slots=True)
class _Pending:
    topic: SparkplugTopic
    raw_topic: str
    payload: Any
    received_at: dt.datetime
    tokens: list[Any]


@dataclass
class _NodeSession:
    group: str
    edge: str
    bd_seq: int | None = None
    online: bool = False
    expected_seq: int = 0
    aliases: dict[int, _MetricDef] = field(default_factory=dict)
    names: dict[tuple[str | None, str], _MetricDef] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)  # every device ever born under this node
    devices_online: set[str] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    gap_deadline: float | None = None
    rebirth_requested_at: float | None = None


@dataclass
class _MachineTags:
    """Last known PackTags of one machine, so a state can be derived from metrics arriving apart."""

    state_number: int | None = None
    unit_mode: int | None = None
    blocked: bool = False
    starved: bool = False
    stop_id: str | None = None
    stop_value: str | None = None
    processed: int | None = None
    defective: int | None = None
    emitted: tuple[MachineState, str | None] | None = None
    emitted_ts: dt.datetime | None = None
    # Newest telemetry timestamp emitted per metric: a rebirth repeats current values with their
    # original timestamps under new seq numbers, which would otherwise be stored a second time.
    telemetry_ts: dict[str, dt.datetime] = field(default_factory=dict)


def _ms_to_datetime(ms: int) -> dt.datetime:
    if not 0 < ms < 7_258_118_400_000:  # up to year 2200
        raise ValueError(f"timestamp {ms} ms is out of range")
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)


def _fault_text(value: Scalar | None) -> str | None:
    if value is None or isinstance(value, bytes):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()[:64]
    return None if text in ("", "0", "False") else text


class SparkplugHost:
    """Host-application state for every edge node seen; feed it messages with ``handle`` and call
    ``poll`` regularly (at least every ``reorder_timeout_s / 2``) so reorder timeouts fire."""

    def __init__(
        self,
        source_id: str,
        config: SparkplugHostConfig | None = None,
        *,
        known_machines: Iterable[str] | None = None,
        counters: CounterTracker | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.source_id = source_id
        self.config = config or SparkplugHostConfig()
        self.known_machines = frozenset(known_machines) if known_machines is not None else None
        self.counters = counters or CounterTracker()
        self._clock = clock
        self._nodes: dict[str, _NodeSession] = {}
        self._tags: dict[str, _MachineTags] = {}
        self.rebirth_requests = 0
        self.seq_gaps = 0
        self.ignored_deaths = 0

    # --- public ----------------------------------------------------------------------------------------

    def machines_of_node(self, group: str, edge: str) -> list[str]:
        session = self._nodes.get(f"{group}/{edge}")
        if session is None:
            return []
        found = [self._device_machine(group, edge, d) for d in sorted(session.devices)]
        node_machine = self.config.machine_map.get(f"{group}/{edge}")
        return sorted({m for m in [*found, node_machine] if m})

    def node_online(self, group: str, edge: str) -> bool:
        session = self._nodes.get(f"{group}/{edge}")
        return bool(session and session.online)

    def handle(self, topic: str, payload: bytes, token: Any = None, *, now: float | None = None,
               received_at: dt.datetime | None = None) -> HostResult:
        """One MQTT message in; never raises for bad input (it becomes a Rejection)."""
        now = self._clock() if now is None else now
        received_at = received_at or dt.datetime.now(UTC)
        result = HostResult()
        try:
            self._handle(topic, payload, token, now, received_at, result)
        except Exception as exc:  # a bug must not kill the collector: keep the message as dead letter
            result.items.append(self._reject(f"internal error handling message: {exc!r}", topic, payload))
            result.done.append(token)
        return result

    def poll(self, now: float | None = None) -> HostResult:
        """Fire expired reorder timers: request one Rebirth and process what is held, in seq order."""
        now = self._clock() if now is None else now
        result = HostResult()
        for session in list(self._nodes.values()):
            if session.gap_deadline is not None and now >= session.gap_deadline:
                self.seq_gaps += 1
                self._request_rebirth(session, now, result)
                self._flush_pending(session, result)
        return result

    # --- internals -------------------------------------------------------------------------------------

    def _reject(self, reason: str, topic: str | None, payload: bytes | None) -> Rejection:
        return Rejection(self.source_id, reason, payload=payload, topic=topic)

    def _handle(self, raw_topic: str, data: bytes, token: Any, now: float, received_at: dt.datetime,
                result: HostResult) -> None:
        topic = parse_topic(raw_topic)
        if topic is None:
            result.items.append(self._reject("not a Sparkplug B topic", raw_topic, data))
            result.done.append(token)
            return
        if topic.message_type in ("STATE", "NCMD", "DCMD"):
            result.done.append(token)  # host states and commands (ours or another host's): nothing to record
            return
        if self.config.groups and topic.group not in self.config.groups:
            result.done.append(token)
            return
        session = self._nodes.get(topic.node_key)
        try:
            payload = decode_payload(data)
        except SparkplugDecodeError as exc:
            result.items.append(self._reject(str(exc), raw_topic, data))
            result.done.append(token)
            if session is not None and session.online:
                self._request_rebirth(session, now, result)
            return

        if topic.message_type == "NBIRTH":
            self._on_nbirth(topic, raw_topic, data, payload, token, now, received_at, result)
            return
        if topic.message_type == "NDEATH":
            self._on_ndeath(topic, raw_topic, data, payload, token, received_at, result)
            return
        if session is None or not session.online:
            session = session or self._new_session(topic)
            result.items.append(self._reject(
                f"{topic.message_type} from {topic.node_key} before its NBIRTH; Rebirth requested",
                raw_topic, data))
            result.done.append(token)
            self._request_rebirth(session, now, result)
            return
        if not payload.HasField("seq") or payload.seq > 255:
            result.items.append(self._reject(f"{topic.message_type} without a valid seq (0-255)", raw_topic, data))
            result.done.append(token)
            self._request_rebirth(session, now, result)
            return
        seq = int(payload.seq)
        ahead = (seq - session.expected_seq) % 256
        if ahead == 0:
            self._process(session, topic, raw_topic, data, payload, received_at, now, result)
            result.done.append(token)
            session.expected_seq = (seq + 1) % 256
            self._drain_in_order(session, now, result)
        elif ahead < 128:
            held = session.pending.get(seq)
            if held is None:
                session.pending[seq] = _Pending(topic, raw_topic, payload, received_at, [token])
            else:
                held.tokens.append(token)  # duplicate of a message still held: ack both when it is processed
            if session.gap_deadline is None:
                session.gap_deadline = now + self.config.reorder_timeout_s
        else:
            # Behind the expected seq: a duplicate or late redelivery. Record it (same keys as before).
            self._process(session, topic, raw_topic, data, payload, received_at, now, result)
            result.done.append(token)

    def _new_session(self, topic: SparkplugTopic) -> _NodeSession:
        session = _NodeSession(topic.group, topic.edge_node)
        self._nodes[topic.node_key] = session
        return session

    def _drain_in_order(self, session: _NodeSession, now: float, result: HostResult) -> None:
        while session.expected_seq in session.pending:
            held = session.pending.pop(session.expected_seq)
            self._process(session, held.topic, held.raw_topic, None, held.payload, held.received_at, now, result)
            result.done.extend(held.tokens)
            session.expected_seq = (session.expected_seq + 1) % 256
        if not session.pending:
            session.gap_deadline = None

    def _flush_pending(self, session: _NodeSession, result: HostResult) -> None:
        """Give up waiting for a missing seq: process what is held, oldest first, and go on after it."""
        now = self._clock()
        for seq in sorted(session.pending, key=lambda s: (s - session.expected_seq) % 256):
            held = session.pending.pop(seq)
            self._process(session, held.topic, held.raw_topic, None, held.payload, held.received_at, now, result)
            result.done.extend(held.tokens)
            session.expected_seq = (seq + 1) % 256
        session.gap_deadline = None

    def _request_rebirth(self, session: _NodeSession, now: float, result: HostResult) -> None:
        last = session.rebirth_requested_at
        if last is not None and now - last < self.config.rebirth_retry_s:
            return  # one request per gap: wait for the NBIRTH it asked for
        session.rebirth_requested_at = now
        self.rebirth_requests += 1
        result.outbound.append(OutboundMessage(topic_for(session.group, "NCMD", session.edge), rebirth_command()))

    def _on_nbirth(self, topic: SparkplugTopic, raw_topic: str, data: bytes, payload: Any, token: Any,
                   now: float, received_at: dt.datetime, result: HostResult) -> None:
        bd_seq = None
        for m in payload.metrics:
            if m.name == BDSEQ_METRIC:
                value = metric_value(m, m.datatype or DataType.INT64)
                bd_seq = value if isinstance(value, int) and not isinstance(value, bool) else None
        if bd_seq is None:
            result.items.append(self._reject("NBIRTH without an integer bdSeq metric", raw_topic, data))
            result.done.append(token)
            return
        session = self._nodes.get(topic.node_key) or self._new_session(topic)
        if session.pending:  # data of the previous birth still held: it belongs to the old alias map
            self._flush_pending(session, result)
        session.bd_seq = bd_seq
        session.online = True
        session.aliases.clear()
        session.names.clear()
        session.devices_online.clear()
        session.gap_deadline = None
        session.rebirth_requested_at = None
        seq = int(payload.seq) if payload.HasField("seq") and payload.seq <= 255 else 0
        session.expected_seq = (seq + 1) % 256
        self._process(session, topic, raw_topic, data, payload, received_at, now, result)
        result.done.append(token)

    def _on_ndeath(self, topic: SparkplugTopic, raw_topic: str, data: bytes, payload: Any, token: Any,
                   received_at: dt.datetime, result: HostResult) -> None:
        result.done.append(token)
        session = self._nodes.get(topic.node_key)
        bd_seq = None
        for m in payload.metrics:
            if m.name == BDSEQ_METRIC:
                value = metric_value(m, m.datatype or DataType.INT64)
                bd_seq = value if isinstance(value, int) else None
        if session is None or not session.online or bd_seq is None or bd_seq != session.bd_seq:
            self.ignored_deaths += 1  # a late Will of an older connection, or a node we never saw born
            return
        session.online = False
        session.devices_online.clear()
        session.pending.clear()
        session.gap_deadline = None
        # The Will was registered at CONNECT time, so its timestamp is not the time of death: use arrival.
        machines = self.machines_of_node(topic.group, topic.edge_node)
        for machine in machines:
            self._emit_offline(machine, received_at, f"{topic.node_key}/{bd_seq}/NDEATH/{machine}",
                               "NDEATH", result)

    def _emit_offline(self, machine: str, ts: dt.datetime, seq_key: str, reason: str,
                      result: HostResult) -> None:
        if self.known_machines is not None and machine not in self.known_machines:
            return
        tags = self._tags.setdefault(machine, _MachineTags())
        tags.emitted = (MachineState.OFFLINE, None)
        tags.emitted_ts = ts
        result.items.append(StateChange(machine, ts, MachineState.OFFLINE, self.source_id,
                                        reason_code=reason, seq=seq_key))

    def _device_machine(self, group: str, edge: str, device: str | None) -> str | None:
        if device is None:
            return self.config.machine_map.get(f"{group}/{edge}")
        mapped = self.config.machine_map.get(f"{group}/{edge}/{device}")
        if mapped:
            return mapped
        return device if self.config.device_is_machine else None

    def _process(self, session: _NodeSession, topic: SparkplugTopic, raw_topic: str, data: bytes | None,
                 payload: Any, received_at: dt.datetime, now: float, result: HostResult) -> None:
        """One in-order (or accepted late) message with a seq, or an NBIRTH."""
        mtype, device = topic.message_type, topic.device
        try:
            payload_ts = _ms_to_datetime(int(payload.timestamp)) if payload.HasField("timestamp") else received_at
        except ValueError as exc:
            result.items.append(self._reject(f"{mtype}: {exc}", raw_topic, data))
            return
        payload_ms = int(payload.timestamp) if payload.HasField("timestamp") else "none"
        key_base = f"{topic.node_key}/{session.bd_seq}/{payload.seq if payload.HasField('seq') else '-'}/{payload_ms}"
        machine = self._device_machine(topic.group, topic.edge_node, device)
        if mtype in ("DBIRTH", "DDATA", "DDEATH") and device is not None:
            session.devices.add(device)
        if machine is not None and self.known_machines is not None and machine not in self.known_machines:
            result.items.append(self._reject(f"unknown machine {machine!r} for {topic.node_key}/{device or ''}",
                                             raw_topic, data))
            machine = None

        if mtype == "DDEATH":
            assert device is not None
            session.devices_online.discard(device)
            if machine is not None:
                self._emit_offline(machine, payload_ts, f"{key_base}/DDEATH", "DDEATH", result)
            return

        resolved: list[tuple[_MetricDef, Any, str]] = []
        if mtype in ("NBIRTH", "DBIRTH"):
            if mtype == "DBIRTH":
                assert device is not None
                for alias in [a for a, d in session.aliases.items() if d.device == device]:
                    del session.aliases[alias]
                for name_key in [k for k in session.names if k[0] == device]:
                    del session.names[name_key]
                session.devices_online.add(device)
            for m in payload.metrics:
                if not m.name:
                    result.items.append(self._reject(f"{mtype} metric without a name", raw_topic, data))
                    continue
                unit = ""
                if m.HasField("properties"):
                    for k, v in zip(m.properties.keys, m.properties.values, strict=False):
                        if k.lower() in _UNIT_PROPERTY_KEYS and v.WhichOneof("value") == "string_value":
                            unit = v.string_value[:32]
                dtype = int(m.datatype) if m.HasField("datatype") else _infer_datatype(m)
                mdef = _MetricDef(m.name, normalize_metric_name(m.name), dtype, device, unit)
                session.names[(device, m.name)] = mdef
                if m.HasField("alias") and m.name != REBIRTH_METRIC:
                    session.aliases[int(m.alias)] = mdef
                resolved.append((mdef, m, str(m.alias) if m.HasField("alias") else m.name))
        else:  # NDATA / DDATA
            if mtype == "DDATA" and device not in session.devices_online:
                result.items.append(self._reject(f"DDATA from {topic.node_key}/{device} before its DBIRTH; "
                                                 "Rebirth requested", raw_topic, data))
                self._request_rebirth(session, now, result)
                return
            unknown: list[str] = []
            for m in payload.metrics:
                found: _MetricDef | None = None
                if m.HasField("alias"):
                    found = session.aliases.get(int(m.alias))
                    ident = str(m.alias)
                elif m.name:
                    found = session.names.get((device, m.name))
                    ident = m.name
                else:
                    ident = "?"
                if found is None or found.device != device:
                    unknown.append(f"alias {m.alias}" if m.HasField("alias") else f"metric {m.name!r}")
                    continue
                resolved.append((found, m, ident))
            if unknown:
                result.items.append(self._reject(
                    f"{mtype} from {topic.node_key}{'/' + device if device else ''}: unknown "
                    f"{', '.join(unknown[:10])} (not in birth); Rebirth requested", raw_topic, data))
                self._request_rebirth(session, now, result)
        if machine is None:
            return
        self._emit_machine_events(machine, resolved, payload_ts, key_base, raw_topic, data, result,
                                  is_birth=mtype.endswith("BIRTH"))

    def _emit_machine_events(self, machine: str, resolved: list[tuple[_MetricDef, Any, str]],
                             payload_ts: dt.datetime, key_base: str, raw_topic: str,
                             data: bytes | None, result: HostResult, *, is_birth: bool = False) -> None:
        tags = self._tags.setdefault(machine, _MachineTags())
        state_touched = False
        state_ts: dt.datetime | None = None
        state_ident = "state"
        counter_ts: dt.datetime | None = None
        counter_touched = False
        for mdef, m, ident in resolved:
            value = metric_value(m, mdef.datatype)
            if value is None:
                continue
            try:
                ts = _ms_to_datetime(int(m.timestamp)) if m.HasField("timestamp") else payload_ts
            except ValueError as exc:
                result.items.append(self._reject(f"metric {mdef.name!r}: {exc}", raw_topic, data))
                continue
            name = mdef.normalized
            if name == "bdseq" or name.startswith(_IGNORED_PREFIXES):
                continue
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if name in _STATE_NAMES:
                if not is_number or (isinstance(value, float) and not value.is_integer()):
                    result.items.append(self._reject(f"{mdef.name} is not an integer: {value!r}", raw_topic, data))
                    continue
                tags.state_number = int(value)
                state_touched, state_ident = True, ident
                state_ts = ts if state_ts is None else max(state_ts, ts)
            elif name in _MODE_NAMES and is_number:
                tags.unit_mode = int(value)
                state_touched = True
                state_ts = ts if state_ts is None else max(state_ts, ts)
            elif name in _BLOCKED_NAMES or name in _STARVED_NAMES:
                flag = bool(value) if isinstance(value, bool | int | float) else False
                if name in _BLOCKED_NAMES:
                    tags.blocked = flag
                else:
                    tags.starved = flag
                state_touched = True
                state_ts = ts if state_ts is None else max(state_ts, ts)
            elif name in _STOP_ID_NAMES or name in _STOP_VALUE_NAMES:
                if name in _STOP_ID_NAMES:
                    tags.stop_id = _fault_text(value)
                else:
                    tags.stop_value = _fault_text(value)
                state_touched = True
                state_ts = ts if state_ts is None else max(state_ts, ts)
            elif (cm := _COUNTER_RE.match(name)) is not None:
                index, member = cm.group(2), cm.group(3)
                if index not in (None, "0") or member not in (None, "acccount"):
                    continue  # other count slots and the per-job Count are not the OEE counter
                if not is_number or value < 0:
                    result.items.append(self._reject(f"{mdef.name} is not a counter reading: {value!r}",
                                                     raw_topic, data))
                    continue
                if cm.group(1) == "processed":
                    tags.processed = int(value)
                else:
                    tags.defective = int(value)
                counter_touched = True
                counter_ts = ts if counter_ts is None else max(counter_ts, ts)
            elif is_number and mdef.datatype in NUMERIC_TYPES | {DataType.UNKNOWN}:
                newest = tags.telemetry_ts.get(mdef.name)
                if is_birth and newest is not None and ts <= newest:
                    continue  # a birth repeating a value already recorded
                if newest is None or ts > newest:
                    tags.telemetry_ts[mdef.name] = ts
                try:
                    result.items.append(TelemetrySample(machine, ts, mdef.name, float(value), self.source_id,
                                                        unit=mdef.unit, seq=f"{key_base}/{ident}"))
                except (ValueError, OverflowError) as exc:
                    result.items.append(self._reject(f"metric {mdef.name!r}: {exc}", raw_topic, data))

        if state_touched and tags.state_number is not None and state_ts is not None:
            state = packml_to_machine_state(
                tags.state_number, tags.unit_mode, blocked=tags.blocked, starved=tags.starved,
                unit_mode_states=self.config.unit_mode_states,
                suspended_without_flags=self.config.suspended_without_flags)
            fault = None
            if state not in (MachineState.RUNNING, MachineState.OFFLINE) and tags.stop_id:
                fault = tags.stop_id if not tags.stop_value else f"{tags.stop_id}.{tags.stop_value}"
            if (state, fault) != tags.emitted:
                if is_birth and tags.emitted_ts is not None and state_ts < tags.emitted_ts:
                    # A birth re-asserts a state set before something we recorded since (an NDEATH,
                    # say): it holds from the birth on, not from its old metric timestamp.
                    state_ts = max(payload_ts, tags.emitted_ts)
                tags.emitted = (state, fault)
                tags.emitted_ts = state_ts
                # The PackML state number is not a reason of the plant's tree: the stop's reason comes
                # from the fault code through the machine's fault map (or from a person).
                result.items.append(StateChange(machine, state_ts, state, self.source_id, fault_code=fault,
                                                seq=f"{key_base}/{state_ident}"))
        if counter_touched and tags.processed is not None and counter_ts is not None:
            try:
                delta = self.counters.update(self.source_id, machine, counter_ts, tags.processed,
                                             tags.defective or 0)
            except ValueError as exc:
                result.items.append(self._reject(f"counter reading: {exc}", raw_topic, data))
                delta = None
            if delta is not None:
                result.items.append(dataclasses.replace(delta, seq=f"{key_base}/counter", key=0))


def _infer_datatype(metric: Any) -> int:
    which = metric.WhichOneof("value")
    return {
        "int_value": DataType.UINT32, "long_value": DataType.UINT64, "float_value": DataType.FLOAT,
        "double_value": DataType.DOUBLE, "boolean_value": DataType.BOOLEAN, "string_value": DataType.STRING,
        "bytes_value": DataType.BYTES,
    }.get(which or "", DataType.UNKNOWN)


def events_only(items: Iterable[Item]) -> list[Event]:
    return [i for i in items if not isinstance(i, Rejection)]


__all__ = [
    "BDSEQ_METRIC", "NAMESPACE", "REBIRTH_METRIC", "DataType", "HostResult", "Metric", "MetricSpec",
    "OutboundMessage", "Payload", "SparkplugDecodeError", "SparkplugHost", "SparkplugHostConfig",
    "SparkplugTopic", "decode_payload", "encode_payload", "metric_value", "packml_to_machine_state",
    "parse_topic", "rebirth_command", "set_metric_value", "state_payload", "state_topic", "topic_for",
]
