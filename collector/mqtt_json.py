"""Andon's own MQTT JSON topics and payloads: schema, validation, conversion to canonical events.

README snippet (paste as is):

<!-- BEGIN mqtt-json-schema -->
### MQTT JSON topics (Andon native)

Topic: `andon/v1/<machine_id>/<kind>` with `kind` one of `state`, `count`, `counter`, `telemetry`,
`batch`. `machine_id` is the plant model's machine id (`[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64
characters). Publish with QoS 1; payloads are UTF-8 JSON objects, at most 16 KiB (a `batch` at most
4 MiB and 10,000 events). Unknown fields are rejected, types are strict (no numbers in strings).

Every payload carries `ts`, the time the event happened at the source, either an ISO 8601 string
**with** a UTC offset (`"2026-03-02T06:00:00.250Z"`, `"2026-03-02T07:00:00+01:00"`) or an integer of
Unix epoch **milliseconds** (`1772431200250`). A timestamp without a zone is rejected. An optional
`seq` (integer >= 0 or string of at most 64 characters) makes the event idempotent: the same
machine, kind and seq (with the same `ts`) is stored once however often it is delivered. Without
`seq` the key is a hash of the content, so an identical redelivery is also stored once.

Kinds and their fields (besides `ts` and `seq`):

- `state`: the machine entered `state` at `ts`. `state` (required) is one of `running`, `idle`,
  `starved`, `blocked`, `planned_stop`, `setup`, `unplanned_stop`, `offline` (aliases accepted:
  `execute`, `fault`, `down`, `stopped`, `changeover`, `planned`, `no_data` ...); optional
  `reason_code` and `fault_code` (strings of at most 64 characters; the fault code is mapped to a
  reason by the machine's `fault_map`).
- `count`: parts made since the previous count (deltas): `total` (int 0..1,000,000), `reject`
  (int 0..total, default 0), optional `product`.
- `counter`: raw monotonic PLC counters (e.g. PackTags `AccCount`): `processed` (int >= 0),
  `defective` (int >= 0, default 0), optional `product`. Andon turns readings into deltas, handling
  counter resets and wrap; the first reading after a collector start only sets the baseline.
- `telemetry`: one sample of one channel: `metric` (`[A-Za-z0-9_.:/-]`, at most 128), `value`
  (finite number), optional `unit` (at most 32).
- `batch`: many events of the topic's machine in one message: `{"events": [...]}` with 1..10,000
  objects, each one of the above plus a `kind` field (`"state"`, `"count"`, `"counter"`,
  `"telemetry"`). An event may repeat `machine_id`, which must then equal the topic's.

Examples:

```
andon/v1/L1-M2/state      {"ts": "2026-03-02T06:00:00Z", "state": "unplanned_stop", "fault_code": "E101", "seq": 17}
andon/v1/L1-M2/count      {"ts": 1772431260000, "total": 1, "reject": 0, "product": "A"}
andon/v1/L1-M2/counter    {"ts": "2026-03-02T06:01:00Z", "processed": 1234, "defective": 12}
andon/v1/L1-M2/telemetry  {"ts": "2026-03-02T06:01:00Z", "metric": "vibration_rms", "value": 2.8, "unit": "mm/s"}
andon/v1/L1-M2/batch      {"events": [
                            {"kind": "state", "ts": "2026-03-02T06:00:00Z", "state": "running"},
                            {"kind": "telemetry", "ts": 1772431200000, "metric": "temp", "value": 41.5}]}
```

A payload that fails validation is not stored as an event: it is counted and kept in the dead-letter
table with the reason (field path and problem, e.g. `events[3].total: Input should be greater than or
equal to 0`). In a batch only the bad events are rejected; the others are accepted.
<!-- END mqtt-json-schema -->
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable
from itertools import repeat
from operator import le, truediv
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from andon.events import (
    UTC,
    CounterTracker,
    Event,
    MachineState,
    ProductionCount,
    StateChange,
    TelemetrySample,
    parse_state,
    sequence_key,
    sequence_keyer,
)
from collector.base import Item, Rejection

TOPIC_PREFIX = "andon/v1"
KINDS = ("state", "count", "counter", "telemetry", "batch")
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000
_MACHINE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
# Epoch-ms bounds: 2000-01-01 .. 2200-01-01. Anything outside is a unit error (seconds, microseconds).
_MIN_TS_MS, _MAX_TS_MS = 946_684_800_000, 7_258_118_400_000


def _parse_ts(value: Any) -> dt.datetime:
    if isinstance(value, bool):
        raise ValueError("timestamp must be an ISO 8601 string with a zone or integer epoch milliseconds")
    if isinstance(value, int):
        if not _MIN_TS_MS <= value < _MAX_TS_MS:
            raise ValueError(f"epoch milliseconds {value} outside 2000..2200 (seconds or microseconds?)")
        return dt.datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, dt.datetime):  # when models are built in Python (the gateway)
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone")
        return value.astimezone(UTC)
    if isinstance(value, str):
        if len(value) > 40:
            raise ValueError("timestamp string too long")
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError("timestamp has no time zone (add Z or an offset such as +01:00)")
        parsed = parsed.astimezone(UTC)
        if not _MIN_TS_MS <= parsed.timestamp() * 1000 < _MAX_TS_MS:
            raise ValueError("timestamp outside 2000..2200")
        return parsed
    raise ValueError("timestamp must be an ISO 8601 string with a zone or integer epoch milliseconds")


parse_timestamp = _parse_ts  # public name: HTTP ingest parses the same timestamps


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_parse_ts),
    PlainSerializer(lambda v: v.isoformat().replace("+00:00", "Z"), return_type=str),
]
# Bounds of the payload fields, one place for the models and the fast paths (JsonDecoder._fast, _columns).
MAX_TEXT_LEN = 64  # seq strings, machine ids, reason and fault codes, products
MAX_STATE_LEN = 32
MAX_METRIC_LEN = 128
MAX_UNIT_LEN = 32
MAX_COUNT = 1_000_000  # parts in one count event
_MAX_I64 = (1 << 63) - 1
ShortText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LEN)]
Seq = Annotated[int, Field(ge=0, le=_MAX_I64)] | Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LEN)]
MachineId = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LEN, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ts: Timestamp
    seq: Seq | None = None
    machine_id: MachineId | None = None  # only meaningful inside a batch; must equal the topic's


class StateMessage(_Message):
    kind: Literal["state"] = "state"
    state: Annotated[str, Field(min_length=1, max_length=MAX_STATE_LEN)]
    reason_code: ShortText | None = None
    fault_code: ShortText | None = None

    @model_validator(mode="after")
    def _known_state(self) -> StateMessage:
        parse_state(self.state)  # ValueError names the allowed states
        return self


class CountMessage(_Message):
    kind: Literal["count"] = "count"
    total: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    reject: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    product: ShortText | None = None

    @model_validator(mode="after")
    def _reject_within_total(self) -> CountMessage:
        if self.reject > self.total:
            raise ValueError(f"reject ({self.reject}) exceeds total ({self.total})")
        return self


class CounterMessage(_Message):
    kind: Literal["counter"] = "counter"
    processed: Annotated[int, Field(ge=0, le=_MAX_I64)]
    defective: Annotated[int, Field(ge=0, le=_MAX_I64)] = 0
    product: ShortText | None = None


class TelemetryMessage(_Message):
    kind: Literal["telemetry"] = "telemetry"
    metric: Annotated[str, Field(min_length=1, max_length=MAX_METRIC_LEN, pattern=r"^[A-Za-z0-9_.:/\-]+$")]
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: Annotated[str, Field(max_length=MAX_UNIT_LEN)] = ""


AnyMessage = Annotated[StateMessage | CountMessage | CounterMessage | TelemetryMessage,
                       Field(discriminator="kind")]
_SINGLE: dict[str, type[_Message]] = {
    "state": StateMessage, "count": CountMessage, "counter": CounterMessage, "telemetry": TelemetryMessage,
}
_ANY_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyMessage)
_LIST_ADAPTER: TypeAdapter[list[Any]] = TypeAdapter(list[AnyMessage])

# Fast path (JsonDecoder._fast): the same rules as the models, checked by hand.
_EVENT_KINDS = frozenset(("state", "count", "counter", "telemetry"))
_MAX_EXACT = 1 << 53  # integer telemetry values converted to float exactly as the model does
_METRIC_RE = re.compile(r"[A-Za-z0-9_.:/\-]+")
_STATE_OK: dict[str, MachineState] = {s.value: s for s in MachineState}
_COMMON_FIELDS = frozenset(("kind", "ts", "seq", "machine_id"))
_FIELDS: dict[str, frozenset[str]] = {
    "state": _COMMON_FIELDS | {"state", "reason_code", "fault_code"},
    "count": _COMMON_FIELDS | {"total", "reject", "product"},
    "counter": _COMMON_FIELDS | {"processed", "defective", "product"},
    "telemetry": _COMMON_FIELDS | {"metric", "value", "unit"},
}
_from_timestamp = dt.datetime.fromtimestamp  # bound once: the fast path calls it for every event
_isfinite = math.isfinite
_get = dict.get
# Column checks (JsonDecoder._columns): the set of a column's types must be exactly one of these.
_JUST_DICT, _JUST_INT, _JUST_STR = frozenset((dict,)), frozenset((int,)), frozenset((str,))
_JUST_FLOAT, _JUST_NONE = frozenset((float,)), frozenset((type(None),))
_INT_OR_FLOAT = frozenset((int, float))
_COLUMN_KINDS = frozenset(("state", "count", "telemetry"))


def _ts_or_none(value: Any) -> dt.datetime | None:
    """A ts column's value as _fast takes it (epoch ms in range or a string _parse_ts accepts), else None."""
    if type(value) is int:
        return _from_timestamp(value / 1000, UTC) if _MIN_TS_MS <= value < _MAX_TS_MS else None
    if type(value) is str:
        try:
            return _parse_ts(value)
        except ValueError:
            return None
    return None


def _state_or_none(value: str) -> MachineState | None:
    try:
        return parse_state(value)
    except ValueError:
        return None


def _short_texts_or_none(column: list[Any]) -> bool:
    """Every value null or a string of 1..MAX_TEXT_LEN characters (reason and fault codes, products)."""
    texts = [v for v in column if v is not None]
    return not texts or (set(map(type, texts)) == _JUST_STR and min(map(len, texts)) >= 1
                         and max(map(len, texts)) <= MAX_TEXT_LEN)


class _MachineKeys:
    """What the fast path needs per machine: the prefix of its events' seq (``<machine>/``) and, per kind,
    the idempotency key of a seq (andon.events.sequence_key) with that common start hashed once."""

    __slots__ = ("count", "machine", "seq_prefix", "source_id", "state", "telemetry")

    def __init__(self, source_id: str, machine: str) -> None:
        self.source_id = source_id
        self.machine = machine
        self.seq_prefix = f"{machine}/"
        self.state = sequence_keyer(source_id, "s", self.seq_prefix)
        self.count = sequence_keyer(source_id, "c", self.seq_prefix)
        self.telemetry = sequence_keyer(source_id, "t", self.seq_prefix)


class _CounterReading:
    """A validated counter message waiting for the tracker (fast path)."""

    __slots__ = ("defective", "processed", "product", "seq", "ts")

    def __init__(self, ts: dt.datetime, processed: int, defective: int, product: str | None,
                 seq: str | None) -> None:
        self.ts = ts
        self.processed = processed
        self.defective = defective
        self.product = product
        self.seq = seq


_Fast = StateChange | ProductionCount | TelemetrySample | _CounterReading


def topic(machine_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return f"{TOPIC_PREFIX}/{machine_id}/{kind}"


def parse_topic(topic_name: str) -> tuple[str, str] | None:
    """``andon/v1/<machine_id>/<kind>`` -> (machine_id, kind); None when the topic is not ours."""
    try:
        return _TOPICS[topic_name]
    except KeyError:
        pass
    parsed = _parse_topic(topic_name)
    if len(_TOPICS) >= 4096:
        _TOPICS.clear()
    _TOPICS[topic_name] = parsed
    return parsed


_TOPICS: dict[str, tuple[str, str] | None] = {}  # parse_topic's answers: topics repeat


def _parse_topic(topic_name: str) -> tuple[str, str] | None:
    parts = topic_name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_PREFIX or parts[3] not in KINDS:
        return None
    machine = parts[2]
    if not machine or len(machine) > MAX_TEXT_LEN or not set(machine) <= _MACHINE_ID_CHARS or not machine[0].isalnum():
        return None
    return machine, parts[3]


def batch_payload(messages: Iterable[_Message]) -> bytes:
    return json.dumps({"events": [m.model_dump(mode="json", exclude_none=True) for m in messages]},
                      separators=(",", ":")).encode()


def message_payload(message: _Message) -> bytes:
    return message.model_dump_json(exclude_none=True, exclude={"kind"}).encode()


def _error_text(exc: ValidationError, prefix: str = "", *, tagged: bool = False) -> str:
    """``path: problem`` for the first errors; ``tagged``: locations start with the union's tag."""
    parts = []
    for err in exc.errors()[:5]:
        loc = list(err["loc"])
        if tagged and loc and isinstance(loc[0], str) and loc[0] in _SINGLE:
            loc = loc[1:]
        path = prefix
        for p in loc:
            path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{path or '(payload)'}: {msg}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class JsonDecoder:
    """Turns one MQTT message on an Andon JSON topic into events and rejections; never raises."""

    def __init__(self, source_id: str, *, known_machines: Iterable[str] | None = None,
                 counters: CounterTracker | None = None) -> None:
        self.source_id = source_id
        self.known_machines = frozenset(known_machines) if known_machines is not None else None
        self.counters = counters or CounterTracker()
        self._metrics_ok: set[str] = set()  # metric names that passed the pattern (fast path)
        self._machines: dict[str, _MachineKeys] = {}  # per machine: its seq prefix and key functions

    def _reject(self, reason: str, topic_name: str, payload: bytes | None) -> Rejection:
        return Rejection(self.source_id, reason, payload=payload, topic=topic_name)

    def decode(self, topic_name: str, payload: bytes) -> list[Item]:
        try:
            fast = self._decode_fast(topic_name, payload)
            return fast if fast is not None else self._decode(topic_name, payload)
        except Exception as exc:  # a bug must not kill the collector: keep the message as dead letter
            return [self._reject(f"internal error decoding message: {exc!r}", topic_name, payload)]

    def _decode(self, topic_name: str, payload: bytes) -> list[Item]:
        """The reference path: the standard library's JSON parser and the pydantic models, which also word
        every rejection. The fast path must give exactly what this gives, or leave the message to it."""
        parsed_topic = parse_topic(topic_name)
        if parsed_topic is None:
            return [self._reject(f"not an Andon JSON topic ({TOPIC_PREFIX}/<machine_id>/<kind>, kind one of "
                                 f"{', '.join(KINDS)})", topic_name, payload)]
        machine, kind = parsed_topic
        if self.known_machines is not None and machine not in self.known_machines:
            return [self._reject(f"unknown machine {machine!r}", topic_name, payload)]
        limit = MAX_BATCH_BYTES if kind == "batch" else MAX_PAYLOAD_BYTES
        if len(payload) > limit:
            return [self._reject(f"payload of {len(payload)} bytes exceeds {limit}", topic_name, payload)]
        try:
            data = _loads(payload)
        except (ValueError, RecursionError) as exc:
            return [self._reject(f"not valid JSON: {exc}", topic_name, payload)]
        if not isinstance(data, dict):
            return [self._reject(f"payload must be a JSON object, got {type(data).__name__}", topic_name, payload)]

        if kind != "batch":
            if "kind" in data and data["kind"] != kind:
                return [self._reject(f"kind: {data['kind']!r} does not match the topic's {kind!r}", topic_name,
                                     payload)]
            try:
                message = _SINGLE[kind].model_validate({**data, "kind": kind})
            except ValidationError as exc:
                return [self._reject(_error_text(exc), topic_name, payload)]
            return self._to_items(machine, [message], [None], topic_name, payload)

        extra = set(data) - {"events"}
        if extra:
            return [self._reject(f"{sorted(extra)[0]}: Extra inputs are not permitted", topic_name, payload)]
        events = data.get("events")
        if not isinstance(events, list) or not events:
            return [self._reject("events: must be a non-empty list", topic_name, payload)]
        if len(events) > MAX_BATCH_EVENTS:
            return [self._reject(f"events: {len(events)} events exceed {MAX_BATCH_EVENTS}", topic_name, payload)]
        try:
            messages: list[Any] = _LIST_ADAPTER.validate_python(events)
            return self._to_items(machine, messages, list(range(len(messages))), topic_name, payload)
        except ValidationError:
            pass
        # Some events are bad: validate one by one so the good ones still count.
        items: list[Item] = []
        good: list[Any] = []
        good_index: list[int | None] = []
        for i, raw in enumerate(events):
            try:
                good.append(_ANY_ADAPTER.validate_python(raw))
                good_index.append(i)
            except ValidationError as exc:
                items.append(self._reject(_error_text(exc, f"events[{i}]", tagged=True), topic_name, _clip(raw)))
        items.extend(self._to_items(machine, good, good_index, topic_name, payload))
        return items

    # --- fast path ------------------------------------------------------------------------------------
    # Plain, valid messages (the overwhelming majority) are parsed with orjson, checked by hand and turned
    # into canonical events directly, without building pydantic models. The checks accept a subset of what
    # the models accept and give the same values; anything else (an error, an unusual shape, a payload
    # orjson reads differently from the standard library, such as integers beyond 64 bits, which it turns
    # into floats) returns None and the message goes through _decode from its raw bytes. Nothing here
    # changes state before the whole message passed (the counter tracker is updated last), so falling
    # back is always safe.

    def _decode_fast(self, topic_name: str, payload: bytes) -> list[Item] | None:
        parsed_topic = parse_topic(topic_name)
        if parsed_topic is None:
            return None
        machine, kind = parsed_topic
        if self.known_machines is not None and machine not in self.known_machines:
            return None
        if len(payload) > (MAX_BATCH_BYTES if kind == "batch" else MAX_PAYLOAD_BYTES):
            return None
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(data) is not dict:
            return None
        keys = self._machines.get(machine) or self._machine_keys(machine)
        fast = self._fast
        if kind != "batch":
            if data.get("kind", kind) != kind:
                return None
            item = fast(keys, kind, data)
            if item is None:
                return None
            if type(item) is _CounterReading:
                return self._count_readings(machine, [item], False, topic_name, payload)
            return [item]
        events = data.get("events")
        if len(data) != 1 or type(events) is not list or not 0 < len(events) <= MAX_BATCH_EVENTS:
            return None
        columns = self._columns(keys, events)
        if columns is not None:
            return columns
        out: list[Any] = []
        append = out.append
        readings = False
        for raw in events:
            if type(raw) is not dict:
                return None
            event_kind = raw.get("kind")
            if event_kind not in _EVENT_KINDS:
                return None
            item = fast(keys, event_kind, raw)
            if item is None:
                return None
            if event_kind == "counter":
                readings = True
            append(item)
        return self._count_readings(machine, out, True, topic_name, payload) if readings else out

    def _columns(self, keys: _MachineKeys, events: list[Any]) -> list[Item] | None:
        """A batch checked column by column: the same rules as _fast, applied to each field of all events of
        a kind at once by builtins running in C (map, set, min, max), so a batch of a thousand events costs
        little more than building its events. None (the batch goes event by event): a field's column is not
        of one plain shape, a counter reading, or a value that could be unhashable (TypeError)."""
        try:
            if set(map(type, events)) != _JUST_DICT:
                return None
            kinds = list(map(_get, events, repeat("kind")))
            kind_set = set(kinds)
            if not kind_set <= _COLUMN_KINDS:
                return None
            if len(kind_set) == 1:
                return self._kind_columns(keys, kinds[0], events)
            # Kinds mixed: checked per kind on the events sorted by kind (stable: each kind keeps its
            # order), then put back in the message's order.
            order = sorted(range(len(events)), key=kinds.__getitem__)
            by_kind = list(map(events.__getitem__, order))
            out: list[Item] = []
            start = 0
            for kind in sorted(kind_set):
                end = start + kinds.count(kind)
                part = self._kind_columns(keys, kind, by_kind[start:end])
                if part is None:
                    return None
                out += part
                start = end
            back = sorted(range(len(order)), key=order.__getitem__)
            return list(map(out.__getitem__, back))
        except TypeError:  # an unhashable value (a list or an object) where a plain one belongs
            return None

    def _kind_columns(self, keys: _MachineKeys, kind: str, events: list[dict[str, Any]]) -> list[Item] | None:
        n = len(events)
        if not all(map(_FIELDS[kind].issuperset, events)):
            return None  # an unknown field
        # ts: epoch milliseconds in range, or strings _parse_ts takes.
        raw_ts = list(map(_get, events, repeat("ts")))
        if set(map(type, raw_ts)) == _JUST_INT:
            if min(raw_ts) < _MIN_TS_MS or max(raw_ts) >= _MAX_TS_MS:
                return None
            ts = list(map(_from_timestamp, map(truediv, raw_ts, repeat(1000)), repeat(UTC)))
        else:
            ts = list(map(_ts_or_none, raw_ts))
            if None in ts:
                return None
        # seq: all absent (or null), all strings of 1..MAX_TEXT_LEN characters, or all integers 0..2**63-1.
        raw_seq = list(map(_get, events, repeat("seq")))
        seq_types = set(map(type, raw_seq))
        seq: Iterable[str | None]
        key: Iterable[int]
        if seq_types == _JUST_NONE:
            seq, key = repeat(None, n), repeat(0, n)  # content keys, from the events' __post_init__
        else:
            if seq_types == _JUST_STR:
                if min(map(len, raw_seq)) < 1 or max(map(len, raw_seq)) > MAX_TEXT_LEN:
                    return None
                rest = raw_seq
            elif seq_types == _JUST_INT:
                if min(raw_seq) < 0 or max(raw_seq) > _MAX_I64:
                    return None
                rest = list(map(str, raw_seq))
            else:
                return None
            seq = list(map(keys.seq_prefix.__add__, rest))
            key = list(map(getattr(keys, kind), rest))
        if not set(map(_get, events, repeat("machine_id"))) <= {None, keys.machine}:
            return None
        machine, src = repeat(keys.machine, n), repeat(keys.source_id, n)
        if kind == "telemetry":
            metric = list(map(_get, events, repeat("metric")))
            metric_set = set(metric)
            if set(map(type, metric_set)) != _JUST_STR:
                return None
            for name in metric_set - self._metrics_ok:
                if not self._metric_ok(name):
                    return None
            value = list(map(_get, events, repeat("value")))
            value_types = set(map(type, value))
            if value_types != _JUST_FLOAT:
                if not value_types <= _INT_OR_FLOAT:
                    return None
                ints = [v for v in value if type(v) is int]
                if min(ints) <= -_MAX_EXACT or max(ints) >= _MAX_EXACT:
                    return None
                value = list(map(float, value))
            if not all(map(_isfinite, value)):
                return None
            unit = list(map(_get, events, repeat("unit"), repeat("")))
            if set(map(type, unit)) != _JUST_STR or max(map(len, unit)) > MAX_UNIT_LEN:
                return None
            return list(map(TelemetrySample, machine, ts, metric, value, src, unit, seq, key))
        if kind == "state":
            raw_state = list(map(_get, events, repeat("state")))
            if (set(map(type, raw_state)) != _JUST_STR or min(map(len, raw_state)) < 1
                    or max(map(len, raw_state)) > MAX_STATE_LEN):
                return None
            state = list(map(_STATE_OK.get, raw_state))
            if None in state:
                state = list(map(_state_or_none, raw_state))
                if None in state:
                    return None
            reason = list(map(_get, events, repeat("reason_code")))
            fault = list(map(_get, events, repeat("fault_code")))
            if not (_short_texts_or_none(reason) and _short_texts_or_none(fault)):
                return None
            return list(map(StateChange, machine, ts, state, src, reason, fault, seq, key))
        # count (counter readings never come here: the tracker takes them one by one)
        total = list(map(_get, events, repeat("total")))
        reject = list(map(_get, events, repeat("reject"), repeat(0)))
        product = list(map(_get, events, repeat("product")))
        if (set(map(type, total)) != _JUST_INT or set(map(type, reject)) != _JUST_INT or min(reject) < 0
                or max(total) > MAX_COUNT or not all(map(le, reject, total))
                or not _short_texts_or_none(product)):
            return None
        return list(map(ProductionCount, machine, ts, total, reject, src, product, seq, key))

    def _machine_keys(self, machine: str) -> _MachineKeys:
        keys = _MachineKeys(self.source_id, machine)
        if len(self._machines) >= 4096:
            self._machines.clear()
        self._machines[machine] = keys
        return keys

    def _fast(self, keys: _MachineKeys, kind: str, d: dict[str, Any]) -> _Fast | None:
        """One event object of ``kind`` (a "kind" key in it is already known to match): the event, or a
        counter reading for the tracker; None: leave the message to the models."""
        if not d.keys() <= _FIELDS[kind]:
            return None  # an unknown field: the models name it
        get = d.get
        raw_ts = get("ts")
        if type(raw_ts) is int:
            if not _MIN_TS_MS <= raw_ts < _MAX_TS_MS:
                return None
            ts = _from_timestamp(raw_ts / 1000, UTC)
        elif type(raw_ts) is str:
            try:
                ts = _parse_ts(raw_ts)
            except ValueError:
                return None
        else:
            return None
        raw_seq = get("seq")
        seq: str | None = None
        rest = ""
        if raw_seq is not None:
            if type(raw_seq) is str:
                if not 0 < len(raw_seq) <= MAX_TEXT_LEN:
                    return None
                rest = raw_seq
            elif type(raw_seq) is int:
                if not 0 <= raw_seq <= _MAX_I64:
                    return None
                rest = str(raw_seq)
            else:
                return None
            seq = keys.seq_prefix + rest
        mid = get("machine_id")
        if mid is not None and mid != keys.machine:  # the models word the mismatch (or the bad id)
            return None
        machine = keys.machine
        if kind == "telemetry":
            metric = get("metric")
            value = get("value")
            unit = get("unit", "")
            if type(metric) is not str or (metric not in self._metrics_ok and not self._metric_ok(metric)):
                return None
            tv = type(value)
            if tv is float:
                if not _isfinite(value):
                    return None
            elif tv is int and -_MAX_EXACT < value < _MAX_EXACT:
                value = float(value)
            else:
                return None
            if type(unit) is not str or len(unit) > MAX_UNIT_LEN:
                return None
            return TelemetrySample(machine, ts, metric, value, keys.source_id, unit, seq,
                                   keys.telemetry(rest) if seq is not None else 0)
        if kind == "state":
            raw_state = get("state")
            reason = get("reason_code")
            fault = get("fault_code")
            if type(raw_state) is not str or not 0 < len(raw_state) <= MAX_STATE_LEN:
                return None
            state = _STATE_OK.get(raw_state)
            if state is None:
                try:
                    state = parse_state(raw_state)
                except ValueError:
                    return None
            if not (reason is None or (type(reason) is str and 0 < len(reason) <= MAX_TEXT_LEN)):
                return None
            if not (fault is None or (type(fault) is str and 0 < len(fault) <= MAX_TEXT_LEN)):
                return None
            return StateChange(machine, ts, state, keys.source_id, reason, fault, seq,
                               keys.state(rest) if seq is not None else 0)
        product = get("product")
        if not (product is None or (type(product) is str and 0 < len(product) <= MAX_TEXT_LEN)):
            return None
        if kind == "count":
            total = get("total")
            reject = get("reject", 0)
            if type(total) is not int or type(reject) is not int or not 0 <= reject <= total <= MAX_COUNT:
                return None
            return ProductionCount(machine, ts, total, reject, keys.source_id, product, seq,
                                   keys.count(rest) if seq is not None else 0)
        processed = get("processed")
        defective = get("defective", 0)
        if (type(processed) is not int or type(defective) is not int
                or not 0 <= processed <= _MAX_I64 or not 0 <= defective <= _MAX_I64):
            return None
        return _CounterReading(ts, processed, defective, product, seq)

    def _metric_ok(self, metric: str) -> bool:
        if not 0 < len(metric) <= MAX_METRIC_LEN or _METRIC_RE.fullmatch(metric) is None:
            return False
        if len(self._metrics_ok) < 10_000:
            self._metrics_ok.add(metric)
        return True

    def _count_readings(self, machine: str, fast: list[Any], in_batch: bool, topic_name: str,
                        payload: bytes) -> list[Item]:
        """Counter readings -> deltas through the tracker, in order (as _to_items does for the models)."""
        out: list[Item] = []
        for index, item in enumerate(fast):
            if type(item) is not _CounterReading:
                out.append(item)
                continue
            src = self.source_id
            try:
                delta = self.counters.update(src, machine, item.ts, item.processed, item.defective, item.product)
            except ValueError as exc:
                out.append(self._reject(f"{f'events[{index}]' if in_batch else 'counter'}: {exc}", topic_name,
                                        None if in_batch else payload))
                continue
            if delta is None:
                continue
            if item.seq is not None:
                delta.key = sequence_key(src, item.seq, "c")
                delta.seq = item.seq
            out.append(delta)
        return out

    def decode_event(self, raw: Any, where: str = "") -> Item | None:
        """One event object that names its own machine (``machine_id``), as HTTP ingest receives them.
        Returns the event, a Rejection with the reason, or None (a first counter reading: baseline)."""
        try:
            message = _ANY_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            return self._reject(_error_text(exc, where, tagged=True), "http", _clip(raw))
        machine = message.machine_id
        if machine is None:
            return self._reject(f"{where}.machine_id: required", "http", _clip(raw))
        if self.known_machines is not None and machine not in self.known_machines:
            return self._reject(f"{where}.machine_id: unknown machine {machine!r}", "http", _clip(raw))
        try:
            return self._to_event(machine, message)
        except ValueError as exc:
            return self._reject(f"{where}: {exc}", "http", _clip(raw))

    def _to_items(self, machine: str, messages: list[Any], indexes: list[int | None], topic_name: str,
                  payload: bytes) -> list[Item]:
        out: list[Item] = []
        for message, index in zip(messages, indexes, strict=True):
            where = f"events[{index}]." if index is not None else ""
            if message.machine_id is not None and message.machine_id != machine:
                out.append(self._reject(f"{where}machine_id: {message.machine_id!r} differs from the topic's "
                                        f"{machine!r}", topic_name, payload if index is None else None))
                continue
            try:
                event = self._to_event(machine, message)
            except ValueError as exc:
                out.append(self._reject(f"{where.rstrip('.') or message.kind}: {exc}", topic_name,
                                        payload if index is None else None))
                continue
            if event is not None:
                out.append(event)
        return out

    def _to_event(self, machine: str, m: Any) -> Event | None:
        seq = None if m.seq is None else f"{machine}/{m.seq}"
        src = self.source_id
        if isinstance(m, StateMessage):
            return StateChange(machine, m.ts, parse_state(m.state), src, reason_code=m.reason_code,
                               fault_code=m.fault_code, seq=seq)
        if isinstance(m, CountMessage):
            return ProductionCount(machine, m.ts, m.total, m.reject, src, product=m.product, seq=seq)
        if isinstance(m, TelemetryMessage):
            return TelemetrySample(machine, m.ts, m.metric, m.value, src, unit=m.unit, seq=seq)
        delta = self.counters.update(src, machine, m.ts, m.processed, m.defective, m.product)
        if delta is None:
            return None
        if seq is not None:
            # Same message, same key: the counter message's own seq identifies the delta it produced.
            delta.key = sequence_key(src, seq, "c")
            delta.seq = seq
        return delta


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(payload: bytes | str) -> Any:
    """``json.loads(payload, parse_constant=_reject_constant)`` without a new JSONDecoder per call."""
    if isinstance(payload, str):
        return json.loads(payload, parse_constant=_reject_constant)
    return _JSON.decode(payload.decode(json.detect_encoding(payload), "surrogatepass"))


def _clip(raw: Any) -> str:
    text = json.dumps(raw, default=str)
    return text if len(text) <= 2048 else text[:2048] + "..."


__all__ = [
    "KINDS", "MAX_BATCH_EVENTS", "TOPIC_PREFIX", "CountMessage", "CounterMessage", "JsonDecoder",
    "MachineState", "StateMessage", "TelemetryMessage", "batch_payload", "message_payload", "parse_topic",
    "topic",
]
