"""Sparkplug B codec and host-application core, as pure logic (no broker): seq, bdSeq, aliases, PackML."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from collector.base import Rejection
from collector.sparkplug import (
    BDSEQ_METRIC,
    REBIRTH_METRIC,
    DataType,
    MetricSpec,
    Payload,
    SparkplugHost,
    SparkplugHostConfig,
    build_file_descriptor,
    decode_payload,
    encode_payload,
    metric_value,
    packml_to_machine_state,
    parse_topic,
)

G, E = "plant", "gw1"
T0 = 1_772_431_200_000  # 2026-03-02T06:00:00Z in ms
NBIRTH = f"spBv1.0/{G}/NBIRTH/{E}"
NDEATH = f"spBv1.0/{G}/NDEATH/{E}"
NDATA = f"spBv1.0/{G}/NDATA/{E}"


def dtopic(kind: str, device: str = "M1") -> str:
    return f"spBv1.0/{G}/{kind}/{E}/{device}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_host(**cfg: Any) -> tuple[SparkplugHost, FakeClock]:
    clock = FakeClock()
    config = SparkplugHostConfig(reorder_timeout_s=2.0, **cfg)
    return SparkplugHost("sp", config, known_machines=["M1", "M2", "NODE"], clock=clock), clock


def nbirth(bd_seq: int = 0, ts: int = T0) -> bytes:
    return encode_payload([MetricSpec(BDSEQ_METRIC, DataType.INT64, bd_seq),
                           MetricSpec(REBIRTH_METRIC, DataType.BOOLEAN, False)], timestamp_ms=ts, seq=0)


def ndeath(bd_seq: int) -> bytes:
    return encode_payload([MetricSpec(BDSEQ_METRIC, DataType.INT64, bd_seq)], timestamp_ms=T0)


def dbirth(seq: int, ts: int = T0, state: int = 6, processed: int = 100, defective: int = 1,
           alias_base: int = 10) -> bytes:
    return encode_payload([
        MetricSpec("Status.StateCurrent", DataType.INT32, state, alias=alias_base),
        MetricSpec("Status.UnitModeCurrent", DataType.INT32, 1, alias=alias_base + 1),
        MetricSpec("Status.EquipmentInterlock.Blocked", DataType.BOOLEAN, False, alias=alias_base + 2),
        MetricSpec("Status.EquipmentInterlock.Starved", DataType.BOOLEAN, False, alias=alias_base + 3),
        MetricSpec("Admin.StopReason.ID", DataType.INT32, 0, alias=alias_base + 4),
        MetricSpec("Admin.ProdProcessedCount[0].AccCount", DataType.INT32, processed, alias=alias_base + 5),
        MetricSpec("Admin.ProdDefectiveCount[0].AccCount", DataType.INT32, defective, alias=alias_base + 6),
        MetricSpec("Vibration/RMS", DataType.FLOAT, 2.5, alias=alias_base + 7, properties={"engUnit": "mm/s"}),
    ], timestamp_ms=ts, seq=seq)


def ddata(seq: int, metrics: list[tuple[int, int, Any]], ts: int = T0) -> bytes:
    return encode_payload([MetricSpec(None, dtype, value, alias=alias, timestamp_ms=ts)
                           for alias, dtype, value in metrics], timestamp_ms=ts, seq=seq)


def state_ddata(seq: int, state: int, ts: int) -> bytes:
    return ddata(seq, [(10, DataType.INT32, state)], ts)


def born(host: SparkplugHost) -> None:
    assert not _rejections(host.handle(NBIRTH, nbirth(0)).items)
    assert not _rejections(host.handle(dtopic("DBIRTH"), dbirth(1)).items)


def _rejections(items: list[Any]) -> list[Rejection]:
    return [i for i in items if isinstance(i, Rejection)]


def _states(items: list[Any]) -> list[StateChange]:
    return [i for i in items if isinstance(i, StateChange)]


# --- codec ---------------------------------------------------------------------------------------------


def test_descriptor_uses_spec_field_numbers() -> None:
    fdp = build_file_descriptor()
    assert fdp.package == "org.eclipse.tahu.protobuf" and fdp.syntax == "proto2"
    payload = fdp.message_type[0]
    assert {f.name: f.number for f in payload.field} == {"timestamp": 1, "metrics": 2, "seq": 3, "uuid": 4, "body": 5}
    metric = next(m for m in payload.nested_type if m.name == "Metric")
    numbers = {f.name: f.number for f in metric.field}
    assert numbers["alias"] == 2 and numbers["datatype"] == 4 and numbers["is_null"] == 7
    assert numbers["int_value"] == 10 and numbers["boolean_value"] == 14 and numbers["template_value"] == 18


def test_wire_bytes_match_hand_encoded_protobuf() -> None:
    # Payload{timestamp=1, seq=3, metrics=[{name="a", alias=2, datatype=3, int_value=5}]} encoded by hand.
    data = encode_payload([MetricSpec("a", DataType.INT32, 5, alias=2)], timestamp_ms=1, seq=3)
    metric = bytes([0x0A, 1, ord("a"), 0x10, 2, 0x20, 3, 0x50, 5])
    expected = bytes([0x08, 1, 0x12, len(metric)]) + metric + bytes([0x18, 3])
    assert data == expected


@pytest.mark.parametrize(("dtype", "value"), [
    (DataType.INT8, -5), (DataType.INT16, -300), (DataType.INT32, -2_000_000_000), (DataType.INT64, -(2**62)),
    (DataType.UINT32, 4_000_000_000), (DataType.UINT64, 2**63), (DataType.BOOLEAN, True),
    (DataType.STRING, "E101"), (DataType.DOUBLE, 2.75), (DataType.FLOAT, 1.5),
])
def test_metric_values_round_trip(dtype: DataType, value: Any) -> None:
    payload = decode_payload(encode_payload([MetricSpec("x", dtype, value)], timestamp_ms=T0))
    assert metric_value(payload.metrics[0], dtype) == value


def test_negative_int32_is_twos_complement_on_the_wire() -> None:
    payload = decode_payload(encode_payload([MetricSpec("x", DataType.INT32, -1)]))
    assert payload.metrics[0].int_value == 2**32 - 1


def test_topics() -> None:
    assert parse_topic("spBv1.0/g/DDATA/e/d").device == "d"  # type: ignore[union-attr]
    assert parse_topic("spBv1.0/STATE/host").message_type == "STATE"  # type: ignore[union-attr]
    assert parse_topic("spBv1.0/g/NDATA/e/d") is None  # device forbidden on node messages
    assert parse_topic("spBv1.0/g/DDATA/e") is None  # device required on device messages
    assert parse_topic("spBv1.0/g/FOO/e") is None
    assert parse_topic("andon/v1/M1/state") is None


# --- PackML mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "mode", "blocked", "starved", "expected"), [
    (6, 1, False, False, MachineState.RUNNING),
    (5, 1, True, False, MachineState.BLOCKED),
    (13, 1, False, True, MachineState.STARVED),
    (14, 1, True, True, MachineState.BLOCKED),
    (5, 1, False, False, MachineState.STARVED),
    (9, 1, False, False, MachineState.UNPLANNED_STOP),
    (8, 1, False, False, MachineState.UNPLANNED_STOP),
    (1, 1, False, False, MachineState.UNPLANNED_STOP),
    (11, 1, False, False, MachineState.UNPLANNED_STOP),
    (2, 1, False, False, MachineState.IDLE),
    (7, 1, False, False, MachineState.IDLE),
    (4, 1, False, False, MachineState.IDLE),
    (17, 1, False, False, MachineState.IDLE),
    (6, 2, False, False, MachineState.PLANNED_STOP),
    (9, 2, False, False, MachineState.PLANNED_STOP),
    (2, 3, False, False, MachineState.SETUP),
    (9, 3, False, False, MachineState.UNPLANNED_STOP),
    (0, 1, False, False, MachineState.OFFLINE),
    (42, 1, False, False, MachineState.OFFLINE),
])
def test_packml_mapping(number: int, mode: int, blocked: bool, starved: bool, expected: MachineState) -> None:
    assert packml_to_machine_state(number, mode, blocked=blocked, starved=starved) is expected


# --- host: births, aliases, events ---------------------------------------------------------------------


def test_births_define_aliases_and_data_resolves_by_alias() -> None:
    host, _ = make_host()
    result = host.handle(NBIRTH, nbirth(0))
    assert result.items == []
    birth = host.handle(dtopic("DBIRTH"), dbirth(1, state=6, processed=100, defective=1)).items
    t0 = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    assert [(s.state, s.ts) for s in _states(birth)] == [(MachineState.RUNNING, t0)]
    tele = [i for i in birth if isinstance(i, TelemetrySample)]
    assert [(t.metric, t.value, t.unit) for t in tele] == [("Vibration/RMS", 2.5, "mm/s")]
    assert not [i for i in birth if isinstance(i, ProductionCount)]  # first reading is the baseline

    # Suspended with Starved; then a stop with a reason; then counters move by 7 processed, 2 defective.
    items = host.handle(dtopic("DDATA"), ddata(2, [(13, DataType.BOOLEAN, True), (10, DataType.INT32, 5)],
                                               ts=T0 + 1000)).items
    assert [s.state for s in _states(items)] == [MachineState.STARVED]
    items = host.handle(dtopic("DDATA"), ddata(3, [(14, DataType.INT32, 17), (10, DataType.INT32, 9)],
                                               ts=T0 + 2000)).items
    assert [(s.state, s.fault_code) for s in _states(items)] == [(MachineState.UNPLANNED_STOP, "17")]
    items = host.handle(dtopic("DDATA"), ddata(4, [(15, DataType.INT32, 107), (16, DataType.INT32, 3)],
                                               ts=T0 + 3000)).items
    counts = [i for i in items if isinstance(i, ProductionCount)]
    assert [(c.total, c.reject, c.good) for c in counts] == [(7, 2, 5)]
    assert host.rebirth_requests == 0


def test_same_message_twice_gives_same_keys_and_late_duplicate_is_accepted() -> None:
    host, _ = make_host()
    born(host)
    msg = ddata(2, [(17, DataType.FLOAT, 3.5)], ts=T0 + 1000)
    first = host.handle(dtopic("DDATA"), msg).items
    again = host.handle(dtopic("DDATA"), msg).items  # seq 2 is now behind: a redelivery
    assert len(first) == 1 and [i.key for i in again] == [first[0].key]
    assert host.rebirth_requests == 0


def test_unknown_alias_rejects_metric_and_requests_one_rebirth() -> None:
    host, _ = make_host()
    born(host)
    result = host.handle(dtopic("DDATA"), ddata(2, [(99, DataType.INT32, 1), (17, DataType.FLOAT, 1.0)]))
    assert len(_rejections(result.items)) == 1 and "alias 99" in _rejections(result.items)[0].reason
    assert len([i for i in result.items if isinstance(i, TelemetrySample)]) == 1
    assert [o.topic for o in result.outbound] == [f"spBv1.0/{G}/NCMD/{E}"]
    cmd = decode_payload(result.outbound[0].payload)
    assert cmd.metrics[0].name == REBIRTH_METRIC and cmd.metrics[0].boolean_value is True
    again = host.handle(dtopic("DDATA"), ddata(3, [(98, DataType.INT32, 1)]))
    assert again.outbound == []  # still waiting for the NBIRTH asked for
    assert host.rebirth_requests == 1


def test_data_before_birth_is_rejected_and_rebirth_requested() -> None:
    host, _ = make_host()
    result = host.handle(dtopic("DDATA"), ddata(5, [(10, DataType.INT32, 6)]))
    assert len(_rejections(result.items)) == 1 and "before its NBIRTH" in result.items[0].reason  # type: ignore[union-attr]
    assert len(result.outbound) == 1 and host.rebirth_requests == 1


def test_gap_filled_within_timeout_needs_no_rebirth_and_keeps_order() -> None:
    host, clock = make_host()
    born(host)
    r4 = host.handle(dtopic("DDATA"), state_ddata(3, 9, T0 + 3000), token="m3")
    assert r4.items == [] and r4.done == []  # held: seq 2 is missing
    clock.now += 1.0
    assert host.poll().items == []
    r2 = host.handle(dtopic("DDATA"), state_ddata(2, 5, T0 + 2000), token="m2")
    assert [s.state for s in _states(r2.items)] == [MachineState.STARVED, MachineState.UNPLANNED_STOP]
    assert r2.done == ["m2", "m3"]
    clock.now += 5.0
    assert host.poll().outbound == [] and host.rebirth_requests == 0


def test_gap_not_filled_requests_exactly_one_rebirth_and_flushes_held() -> None:
    host, clock = make_host()
    born(host)
    host.handle(dtopic("DDATA"), state_ddata(3, 9, T0 + 3000), token="m3")
    host.handle(dtopic("DDATA"), state_ddata(4, 6, T0 + 4000), token="m4")
    clock.now += 1.9
    assert host.poll().outbound == []
    clock.now += 0.2
    fired = host.poll()
    assert len(fired.outbound) == 1 and fired.done == ["m3", "m4"]
    assert [s.state for s in _states(fired.items)] == [MachineState.UNPLANNED_STOP, MachineState.RUNNING]
    clock.now += 10
    assert host.poll().outbound == []
    assert host.rebirth_requests == 1 and host.seq_gaps == 1
    # The NBIRTH that answers resets the session; data continues from seq 1 without a new request.
    host.handle(NBIRTH, nbirth(0))
    host.handle(dtopic("DBIRTH"), dbirth(1, state=6))
    host.handle(dtopic("DDATA"), state_ddata(2, 11, T0 + 9000))
    assert host.rebirth_requests == 1


def test_seq_wraps_from_255_to_0() -> None:
    host, _ = make_host()
    born(host)
    seq, state_ts = 2, T0
    for _ in range(300):
        state_ts += 1000
        result = host.handle(dtopic("DDATA"), ddata(seq, [(17, DataType.FLOAT, float(state_ts))], ts=state_ts))
        assert len(result.items) == 1, seq
        seq = (seq + 1) % 256
    assert host.rebirth_requests == 0


def test_ndeath_with_current_bdseq_marks_machines_offline_and_stale_one_is_ignored() -> None:
    host, _ = make_host(machine_map={f"{G}/{E}": "NODE"})
    host.handle(NBIRTH, nbirth(7))
    host.handle(dtopic("DBIRTH", "M1"), dbirth(1, alias_base=10))
    host.handle(dtopic("DBIRTH", "M2"), dbirth(2, alias_base=30))
    stale = host.handle(NDEATH, ndeath(6)).items
    assert stale == [] and host.ignored_deaths == 1 and host.node_online(G, E)
    offline = host.handle(NDEATH, ndeath(7)).items
    assert sorted((s.machine_id, s.state) for s in _states(offline)) == [
        ("M1", MachineState.OFFLINE), ("M2", MachineState.OFFLINE), ("NODE", MachineState.OFFLINE)]
    assert not host.node_online(G, E)
    # Reconnected with bdSeq 8; the late Will of session 7 arrives afterwards and changes nothing.
    host.handle(NBIRTH, nbirth(8))
    back = host.handle(dtopic("DBIRTH", "M1"), dbirth(1, alias_base=10)).items
    assert [s.state for s in _states(back)] == [MachineState.RUNNING]
    assert host.handle(NDEATH, ndeath(7)).items == [] and host.node_online(G, E)


def test_ddeath_marks_only_that_device_offline() -> None:
    host, _ = make_host()
    born(host)
    items = host.handle(dtopic("DDEATH"), encode_payload([], timestamp_ms=T0 + 5000, seq=2)).items
    assert [(s.machine_id, s.state) for s in _states(items)] == [("M1", MachineState.OFFLINE)]


def test_machine_map_and_unknown_machine() -> None:
    host, _ = make_host(machine_map={f"{G}/{E}/press-7": "M2"})
    host.handle(NBIRTH, nbirth(0))
    mapped = host.handle(dtopic("DBIRTH", "press-7"), dbirth(1)).items
    assert {i.machine_id for i in mapped if not isinstance(i, Rejection)} == {"M2"}
    unknown = host.handle(dtopic("DBIRTH", "ghost"), dbirth(2, alias_base=50)).items
    assert len(_rejections(unknown)) == 1 and "ghost" in unknown[0].reason  # type: ignore[union-attr]
    assert not [i for i in unknown if not isinstance(i, Rejection)]


def test_malformed_payload_is_rejected() -> None:
    host, _ = make_host()
    born(host)
    result = host.handle(dtopic("DDATA"), b"\x0a\xff\xff\xff\xff\xff")
    assert len(result.items) == 1 and isinstance(result.items[0], Rejection)
    assert len(result.outbound) == 1  # a born node is asked to rebirth


# --- fuzzing -------------------------------------------------------------------------------------------

_topics = st.one_of(
    st.sampled_from([NBIRTH, NDEATH, NDATA, dtopic("DBIRTH"), dtopic("DDATA"), dtopic("DDEATH"),
                     "spBv1.0/STATE/x", f"spBv1.0/{G}/NCMD/{E}"]),
    st.text(max_size=60),
    st.builds(lambda parts: "spBv1.0/" + "/".join(parts), st.lists(st.text(max_size=8), max_size=5)),
)
_metric = st.builds(
    MetricSpec,
    name=st.one_of(st.none(), st.sampled_from(["bdSeq", "Status.StateCurrent", "Admin.ProdProcessedCount",
                                               "Admin.StopReason.ID", "x", REBIRTH_METRIC]), st.text(max_size=20)),
    datatype=st.just(DataType.INT64),
    value=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    alias=st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)),
    timestamp_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)),
)
_protobufish = st.builds(
    lambda metrics, seq, ts, cut: encode_payload(metrics, seq=seq, timestamp_ms=ts)[: cut or None],
    st.lists(_metric, max_size=6), st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    st.integers(0, 2**64 - 1), st.integers(0, 40),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_topics, st.one_of(st.binary(max_size=200), _protobufish)), min_size=1, max_size=8))
def test_fuzzed_messages_never_raise(messages: list[tuple[str, bytes]]) -> None:
    host, clock = make_host()
    born(host)
    for topic, payload in messages:
        result = host.handle(topic, payload, token=object())
        for item in result.items:
            assert isinstance(item, Rejection | StateChange | ProductionCount | TelemetrySample)
            if isinstance(item, Rejection):
                assert "internal error" not in item.reason, item.reason
        clock.now += 1.5
        host.poll()


def test_payload_class_is_built_at_runtime() -> None:
    assert Payload.DESCRIPTOR.full_name == "org.eclipse.tahu.protobuf.Payload"
    assert Payload.DESCRIPTOR.file.name == "andon_sparkplug_b.proto"
