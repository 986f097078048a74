"""Andon JSON topics: schema validation, batches with partial rejection, keys, fuzzing (no broker)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from collector.base import Rejection
from collector.mqtt_json import JsonDecoder, StateMessage, message_payload, parse_topic

TS = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)


def decode(topic: str, payload: Any, decoder: JsonDecoder | None = None) -> list[Any]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return (decoder or JsonDecoder("j", known_machines=["M1", "M2"])).decode(topic, raw)


def only_rejection(items: list[Any]) -> str:
    assert len(items) == 1 and isinstance(items[0], Rejection), items
    return items[0].reason


def test_state_with_iso_and_epoch_ms_timestamps() -> None:
    a = decode("andon/v1/M1/state", {"ts": "2026-03-02T07:00:00+01:00", "state": "fault", "fault_code": "E101"})
    b = decode("andon/v1/M1/state", {"ts": 1772431200000, "state": "unplanned_stop", "fault_code": "E101"})
    assert isinstance(a[0], StateChange) and a[0].ts == TS and a[0].state is MachineState.UNPLANNED_STOP
    assert b[0].ts == TS and a[0].key == b[0].key  # same content, same key


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"ts": "2026-03-02T06:00:00", "state": "running"}, "ts: timestamp has no time zone"),
    ({"ts": 1772431200, "state": "running"}, "ts: epoch milliseconds"),
    ({"ts": "yesterday", "state": "running"}, "ts: not an ISO 8601"),
    ({"state": "running"}, "ts: Field required"),
    ({"ts": 1772431200000, "state": "dancing"}, "unknown machine state"),
    ({"ts": 1772431200000, "state": "running", "colour": "red"}, "colour: Extra inputs"),
    ({"ts": 1772431200000, "state": "running", "seq": -1}, "seq"),
    ({"ts": 1772431200000, "state": 3}, "state: Input should be a valid string"),
])
def test_state_rejections_name_field_and_problem(payload: dict[str, Any], fragment: str) -> None:
    assert fragment in only_rejection(decode("andon/v1/M1/state", payload))


def test_count_telemetry_and_strict_types() -> None:
    (count,) = decode("andon/v1/M1/count", {"ts": 1772431200000, "total": 3, "reject": 1, "product": "A"})
    assert isinstance(count, ProductionCount) and (count.total, count.good, count.product) == (3, 2, "A")
    assert "reject (2) exceeds total (1)" in only_rejection(
        decode("andon/v1/M1/count", {"ts": 1772431200000, "total": 1, "reject": 2}))
    assert "total" in only_rejection(decode("andon/v1/M1/count", {"ts": 1772431200000, "total": "3"}))
    (tele,) = decode("andon/v1/M1/telemetry", {"ts": 1772431200000, "metric": "temp", "value": 41, "unit": "C"})
    assert isinstance(tele, TelemetrySample) and tele.value == 41.0 and tele.unit == "C"
    assert "value" in only_rejection(decode("andon/v1/M1/telemetry", {"ts": 1772431200000, "metric": "t",
                                                                        "value": True}))
    assert "not valid JSON" in only_rejection(decode("andon/v1/M1/telemetry",
                                                     b'{"ts": 1772431200000, "metric": "t", "value": NaN}'))


def test_counter_readings_become_deltas_with_seq_keys() -> None:
    decoder = JsonDecoder("j")
    assert decode("andon/v1/M1/counter", {"ts": 1772431200000, "processed": 100, "defective": 2}, decoder) == []
    (delta,) = decode("andon/v1/M1/counter", {"ts": 1772431260000, "processed": 110, "defective": 3, "seq": 9},
                      decoder)
    assert (delta.total, delta.reject) == (10, 1)
    (after_reset,) = decode("andon/v1/M1/counter", {"ts": 1772431320000, "processed": 4, "defective": 0}, decoder)
    assert (after_reset.total, after_reset.reject) == (4, 0)


def test_batch_accepts_good_events_and_rejects_bad_ones_by_path() -> None:
    payload = {"events": [
        {"kind": "state", "ts": 1772431200000, "state": "running", "seq": 1},
        {"kind": "count", "ts": 1772431200000, "total": -1},
        {"kind": "telemetry", "ts": 1772431200000, "metric": "temp", "value": 40.5},
        {"kind": "state", "ts": 1772431200000, "state": "idle", "machine_id": "M2"},
        {"kind": "bogus"},
    ]}
    items = decode("andon/v1/M1/batch", payload)
    reasons = sorted(i.reason for i in items if isinstance(i, Rejection))
    assert len(reasons) == 3
    assert reasons[0].startswith("events[1].total: Input should be greater than or equal to 0")
    assert reasons[1].startswith("events[3].machine_id: 'M2' differs")
    assert reasons[2].startswith("events[4]")
    good = [i for i in items if not isinstance(i, Rejection)]
    assert [type(g).__name__ for g in good] == ["StateChange", "TelemetrySample"]


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"events": []}, "non-empty list"),
    ({"events": {"kind": "state"}}, "non-empty list"),
    ({"events": [], "x": 1}, "x: Extra inputs"),
    ([1, 2], "JSON object"),
])
def test_batch_structure_errors(payload: Any, fragment: str) -> None:
    assert fragment in only_rejection(decode("andon/v1/M1/batch", payload))


def test_topics_and_unknown_machines() -> None:
    assert parse_topic("andon/v1/L1-M2/state") == ("L1-M2", "state")
    assert parse_topic("andon/v1/L1-M2/nope") is None
    assert parse_topic("andon/v1/-bad/state") is None
    assert "not an Andon JSON topic" in only_rejection(decode("andon/v2/M1/state", {}))
    assert "unknown machine 'M9'" in only_rejection(decode("andon/v1/M9/state", {}))


def test_gateway_payload_round_trips() -> None:
    message = StateMessage(ts=TS, state="blocked", seq=5, reason_code="downstream")
    (event,) = decode("andon/v1/M1/state", message_payload(message))
    assert (event.state, event.ts, event.reason_code, event.seq) == (MachineState.BLOCKED, TS, "downstream", "M1/5")


def test_oversized_payload_is_rejected() -> None:
    big = {"ts": 1772431200000, "metric": "t", "value": 1.0, "unit": "x" * 20_000}
    assert "exceeds" in only_rejection(decode("andon/v1/M1/telemetry", big))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
_field_dicts = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["state", "count", "counter", "telemetry", "x"]),
    "ts": st.one_of(st.integers(), st.text(max_size=30), st.just("2026-03-02T06:00:00Z"), st.just(1772431200000)),
    "state": st.one_of(st.text(max_size=12), st.sampled_from(["running", "fault"])),
    "total": st.integers(), "reject": st.integers(), "processed": st.integers(), "defective": st.integers(),
    "metric": st.text(max_size=20), "value": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
    "seq": _json, "machine_id": st.text(max_size=8),
})
_topic = st.one_of(
    st.builds(lambda m, k: f"andon/v1/{m}/{k}", st.sampled_from(["M1", "M9", ""]),
              st.sampled_from(["state", "count", "counter", "telemetry", "batch", "x"])),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(_topic, st.one_of(
    st.binary(max_size=300),
    _json.map(lambda v: json.dumps(v).encode()),
    _field_dicts.map(lambda v: json.dumps(v).encode()),
    st.lists(_field_dicts, max_size=5).map(lambda evs: json.dumps({"events": evs}).encode()),
))
def test_fuzzed_topics_and_payloads_never_raise(topic: str, payload: bytes) -> None:
    decoder = JsonDecoder("j", known_machines=["M1"])
    for item in decoder.decode(topic, payload):
        assert isinstance(item, Rejection | StateChange | ProductionCount | TelemetrySample)
        if isinstance(item, Rejection):
            assert item.reason and "internal error" not in item.reason, item.reason


def _slow_decoder() -> JsonDecoder:
    """A decoder that always goes through the standard library's parser and the pydantic models (the fast
    path switched off)."""
    decoder = JsonDecoder("j", known_machines=["M1", "M-2.x"])
    decoder._decode_fast = lambda *_a: None  # type: ignore[method-assign]
    return decoder


def _same_items(fast: list[Any], slow: list[Any]) -> None:
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is type(b)
        if isinstance(a, Rejection):
            assert (a.reason, a.payload, a.topic) == (b.reason, b.payload, b.topic)
        else:
            assert a == b  # every field, the key included
            assert a.ts.utcoffset() == b.ts.utcoffset() and a.ts.isoformat() == b.ts.isoformat()
            assert type(getattr(a, "value", 0.0)) is type(getattr(b, "value", 0.0))


_ABSENT = object()


def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid seven times in eight: most generated objects are valid, the rest have one or two faults."""
    return st.integers(0, 7).flatmap(lambda n: invalid if n == 0 else valid)


def _optional(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _mostly(st.one_of(st.just(_ABSENT), valid), invalid)


_near_valid = st.fixed_dictionaries(
    {"ts": _mostly(st.one_of(st.integers(946_684_800_000, 7_258_118_399_999),
                             st.sampled_from(["2026-03-02T06:00:00.250Z", "2026-03-02T07:00:00+01:00",
                                              "2026-03-02 06:00:00.123456-03:30", "2026-03-02T06:00Z"])),
                   st.one_of(st.integers(946_684_799_000, 7_258_118_400_001), st.booleans(), st.none(),
                             st.floats(1e12, 2e12), st.sampled_from(["2026-03-02T06:00:00", "1999-12-31T23:59:59Z",
                                                                     "x", "", "2026-03-02T06:00:00Z" + " " * 30]))),
        "seq": _optional(st.one_of(st.integers(0, (1 << 63) - 1), st.text(min_size=1, max_size=64), st.none()),
                       st.one_of(st.integers(-2, 1 << 64), st.text(max_size=66), st.booleans(), st.floats())),
        "machine_id": _optional(st.sampled_from(["M1", "M-2.x", None]),
                              st.one_of(st.sampled_from(["M9", "-M1", ""]), st.integers())),
        "state": _mostly(st.sampled_from(["running", "Fault", "no-data", "changeover", "idle", " Down "]),
                         st.one_of(st.sampled_from(["bogus", "", "x" * 33]), st.integers(), st.none())),
        "reason_code": _optional(st.one_of(st.text(min_size=1, max_size=64), st.none()),
                               st.one_of(st.sampled_from(["", "r" * 65]), st.integers())),
        "fault_code": _optional(st.sampled_from(["E101", None]),
                                st.one_of(st.sampled_from(["", "x" * 65]), st.integers())),
        "total": _mostly(st.integers(0, 1_000_000), st.one_of(st.sampled_from([-1, 1_000_001]), st.booleans(),
                                                               st.floats(0, 5), st.none())),
        "reject": _optional(st.integers(0, 3), st.one_of(st.sampled_from([-1, 1_000_001]), st.booleans(), st.none())),
        "product": _optional(st.sampled_from(["A", None]), st.one_of(st.sampled_from(["", "p" * 65]), st.integers())),
        "processed": _mostly(st.integers(0, (1 << 63) - 1), st.one_of(st.sampled_from([-1, 1 << 63]), st.booleans(),
                                                                       st.floats(0, 5))),
        "defective": _optional(st.integers(0, 5), st.one_of(st.sampled_from([-1, 1 << 63]), st.none())),
        "metric": _mostly(st.sampled_from(["temp", "a/b:c.d-e_f", "m" * 128]),
                          st.one_of(st.sampled_from(["bad metric", "", "m" * 129, "temp\n", "é"]), st.integers(),
                                    st.none())),
        "value": _mostly(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(1 << 60), 1 << 60)),
                         st.one_of(st.integers(-(1 << 70), 1 << 70), st.booleans(), st.text(max_size=2), st.none(),
                                   st.just(1e308 * 10))),
        "unit": _optional(st.sampled_from(["", "mm/s", "u" * 32]),
                          st.one_of(st.just("u" * 33), st.none(), st.integers())),
    },
)
_kinds = st.sampled_from(["state", "count", "counter", "telemetry"])


def _shaped(kind: str, fields: dict[str, Any], extra: bool) -> dict[str, Any]:
    """Keep the fields of ``kind`` (plus, now and then, a stray one) so most objects are near-valid."""
    own = {"state": {"state", "reason_code", "fault_code"}, "count": {"total", "reject", "product"},
           "counter": {"processed", "defective", "product"}, "telemetry": {"metric", "value", "unit"}}[kind]
    out = {k: v for k, v in fields.items() if k in own | {"ts", "seq", "machine_id"} and v is not _ABSENT}
    return out | {"extra": 1} if extra else out


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(_kinds, _near_valid, st.integers(0, 15).map(lambda n: n == 0), st.booleans()),
                min_size=1, max_size=6),
       st.sampled_from(["M1", "M-2.x"]), st.booleans())
def test_fast_path_matches_the_models(objs: list[tuple[str, dict[str, Any], bool, bool]], machine: str,
                                      as_batch: bool) -> None:
    """Whatever the hand-written fast path accepts, it turns into exactly what the models give, and the
    rest falls back to them: same events (keys included), same rejections, same counter state."""
    fast, slow = JsonDecoder("j", known_machines=["M1", "M-2.x"]), _slow_decoder()
    messages: list[tuple[str, bytes]] = []
    if as_batch:
        events = [{**_shaped(k, f, x), **({"kind": k} if not kindless else {})} for k, f, x, kindless in objs]
        messages.append((f"andon/v1/{machine}/batch", json.dumps({"events": events}).encode()))
    else:
        for k, f, x, with_kind in objs:
            body = _shaped(k, f, x) | ({"kind": k} if with_kind else {})
            messages.append((f"andon/v1/{machine}/{k}", json.dumps(body).encode()))
    for topic, payload in messages * 2:  # twice: the second counter readings are deltas
        _same_items(fast.decode(topic, payload), slow.decode(topic, payload))
    assert fast.counters.baselines() == slow.counters.baselines()


_VALID_FIELDS = {
    "state": {"ts": "1772431200000", "state": '"running"', "reason_code": '"R1"', "seq": "7"},
    "count": {"ts": '"2026-03-02T06:00:00Z"', "total": "3", "reject": "1", "product": '"A"', "seq": '"s-1"'},
    "counter": {"ts": "1772431200000", "processed": "1234", "defective": "5", "seq": "8"},
    "telemetry": {"ts": "1772431200000", "metric": '"temp"', "value": "41.5", "unit": '"degC"', "seq": "9"},
}
# JSON text that orjson and the standard library read differently (integers beyond 64 bits, which orjson
# turns into floats; infinities; lone surrogates; a byte order mark) or alike but unusually.
_odd_literals = st.one_of(
    st.sampled_from(["1180591620717411303424", "-9223372036854775809", "18446744073709551615",
                     "9223372036854775808", "9223372036854775807", "1e400", "-1e400", "1E2", "0.1e1", "-0.0",
                     "9007199254740993", "1772431200000.0", '"\\ud800"', '"a\\u0000b"', '"\\u00e9"', "null",
                     "true", '"running"', '"2026-03-02T06:00:00Z"', "1772431200000", '"M1"', "3", "0", "[]"]),
    st.integers(-(1 << 70), 1 << 70).map(str),
)


_REQUIRED = {"ts", "state", "total", "processed", "metric", "value"}


@st.composite
def _odd_object(draw: st.DrawFn, kind: str, with_kind: bool) -> str:
    fields = [(k, v) for k, v in _VALID_FIELDS[kind].items() if k in _REQUIRED or draw(st.integers(0, 4)) > 0]
    for _ in range(draw(st.integers(0, 2))):  # an odd value in place, as a new field or a repeated one
        how = draw(st.sampled_from(["replace", "replace", "add", "repeat"]))
        if how == "replace":
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = (fields[i][0], draw(_odd_literals))
        elif how == "add":
            fields.append((draw(st.sampled_from([*_VALID_FIELDS[kind], "machine_id", "kind", "extra"])),
                           draw(_odd_literals)))
        else:  # the same name twice: the last one counts (both parsers)
            i = draw(st.integers(0, len(fields) - 1))
            fields.insert(draw(st.integers(0, i)), (fields[i][0], draw(_odd_literals)))
    if with_kind:
        fields.insert(0, ("kind", f'"{kind}"'))
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields) + "}"


@settings(max_examples=500, deadline=None)
@given(st.data(), st.lists(_kinds, min_size=1, max_size=4), st.booleans(),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_fast_path_matches_the_models_on_unusual_json(data: st.DataObject, kinds: list[str], as_batch: bool,
                                                      encoding: str) -> None:
    """Payloads that orjson (the fast path's parser) reads differently from the standard library's json
    (the models' parser), or not at all, give exactly what the models give."""
    fast, slow = JsonDecoder("j", known_machines=["M1", "M-2.x"]), _slow_decoder()
    if as_batch:
        texts = [("batch", '{"events": [' + ", ".join(data.draw(_odd_object(k, True)) for k in kinds) + "]}")]
    else:
        texts = [(k, data.draw(_odd_object(k, data.draw(st.booleans())))) for k in kinds]
    for kind, text in texts * 2:  # twice: the second counter readings are deltas
        payload = text.encode(encoding, "surrogatepass")
        _same_items(fast.decode(f"andon/v1/M1/{kind}", payload), slow.decode(f"andon/v1/M1/{kind}", payload))
    assert fast.counters.baselines() == slow.counters.baselines()


_valid_event = st.one_of(
    st.fixed_dictionaries({"kind": st.just("telemetry"), "metric": st.sampled_from(["temp", "a/b:c.d-e_f", "m" * 128]),
                           "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                              st.integers(-(1 << 53) + 1, (1 << 53) - 1))},
                          optional={"unit": st.sampled_from(["", "mm/s", "u" * 32])}),
    st.fixed_dictionaries({"kind": st.just("state"),
                           "state": st.sampled_from(["running", "Fault", "no-data", "idle", " Down ", "changeover"])},
                          optional={"reason_code": st.one_of(st.none(), st.text(min_size=1, max_size=64)),
                                    "fault_code": st.sampled_from(["E101", None])}),
    st.fixed_dictionaries({"kind": st.just("count"), "total": st.integers(0, 1_000_000)},
                          optional={"reject": st.integers(0, 0), "product": st.sampled_from(["A", None, "p" * 64])}),
)
_valid_ts = st.one_of(st.integers(946_684_800_000, 7_258_118_399_999),
                      st.sampled_from(["2026-03-02T06:00:00.250Z", "2026-03-02T07:00:00+01:00"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_valid_event, _valid_ts, st.one_of(st.none(), st.integers(0, (1 << 63) - 1),
                                                             st.text(min_size=1, max_size=64)),
                          st.sampled_from([None, "M1"])), min_size=1, max_size=40),
       st.sampled_from(["int", "str", "none", "mixed"]), st.sampled_from(["int", "any"]))
def test_batches_checked_by_column_match_event_by_event(
        rows: list[tuple[dict[str, Any], Any, Any, str | None]], seq_shape: str, ts_shape: str) -> None:
    """Valid batches (mostly one shape per field, as gateways send them) give the same events in the same
    order whether checked column by column, event by event, or by the models."""
    events = []
    for i, (event, ts, seq, machine_id) in enumerate(rows):
        body = {**event, "ts": ts if ts_shape == "any" or isinstance(ts, int) else 1772431200000 + i}
        if "reject" in body:
            body["reject"] = min(body["total"], i)
        seq = {"int": i, "str": f"s{i}", "none": None, "mixed": seq}[seq_shape]
        if seq is not None:
            body["seq"] = seq
        if machine_id is not None:
            body["machine_id"] = machine_id
        events.append(body)
    payload = json.dumps({"events": events}).encode()
    by_column = JsonDecoder("j", known_machines=["M1"])
    by_event = JsonDecoder("j", known_machines=["M1"])
    by_event._columns = lambda *_a: None  # type: ignore[method-assign]
    columns_used = by_column._columns(by_column._machine_keys("M1"), json.loads(payload)["events"]) is not None
    got = by_column.decode("andon/v1/M1/batch", payload)
    _same_items(got, by_event.decode("andon/v1/M1/batch", payload))
    _same_items(got, _slow_decoder().decode("andon/v1/M1/batch", payload))
    assert len(got) == len(events) and all(not isinstance(i, Rejection) for i in got)
    if seq_shape != "mixed" and (ts_shape == "int" or len({type(e["ts"]) for e in events}) == 1):
        assert columns_used  # the common shapes do take the column path


def test_fast_path_takes_the_common_shapes() -> None:
    decoder = JsonDecoder("j", known_machines=["M1"])
    decoder._to_items = None  # type: ignore[assignment,method-assign]  # the model path would fail
    batch = {"events": [
        {"kind": "state", "ts": 1772431200000, "state": "running", "seq": 1},
        {"kind": "count", "ts": "2026-03-02T06:00:00Z", "total": 2, "reject": 1, "seq": "a"},
        {"kind": "telemetry", "ts": 1772431200001, "metric": "temp", "value": 41, "unit": "degC"},
        {"kind": "counter", "ts": 1772431200002, "processed": 10},
    ]}
    items = decoder.decode("andon/v1/M1/batch", json.dumps(batch).encode())
    assert [type(i) for i in items] == [StateChange, ProductionCount, TelemetrySample]
    assert items[2].value == 41.0 and isinstance(items[2].value, float)
    decoder._fast = None  # type: ignore[assignment,method-assign]  # nor event by event: by column
    big = {"events": [{"kind": "telemetry", "ts": 1772431200000 + i, "metric": "temp", "value": i / 3, "seq": i}
                      for i in range(2000)] + [{"kind": "state", "ts": 1772431200000, "state": "idle", "seq": "x"}]}
    items = decoder.decode("andon/v1/M1/batch", json.dumps(big).encode())
    assert len(items) == 2001 and items[1999].value == 1999 / 3 and items[2000].state is MachineState.IDLE
    decoder = JsonDecoder("j", known_machines=["M1"])
    decoder._to_items = None  # type: ignore[assignment,method-assign]
    single = decoder.decode("andon/v1/M1/state", b'{"ts": 1772431200000, "state": "fault", "seq": 7}')
    assert [i.state for i in single] == [MachineState.UNPLANNED_STOP]
