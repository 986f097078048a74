"""Canonical events: the one vocabulary every collector, HTTP ingest and the storage writer share.

Three kinds of event, each with its source timestamp, source id and an idempotency key:

- ``StateChange``: the machine entered a state (running, idle, starved, blocked, planned stop,
  setup/changeover, unplanned stop/fault, offline/unknown), optionally with a reason or fault code;
- ``ProductionCount``: parts made since the previous count (total, good, reject), per cycle or turned
  into deltas from monotonic PLC counters by ``CounterTracker`` (resets and 16/32-bit wrap handled);
- ``TelemetrySample``: one value of one metric, with its unit.

The idempotency key is a signed 64-bit integer: from the source's own sequence number where it has one
(replaying the same message gives the same key), otherwise a hash of the event's content. Storage keeps
one row per (machine, timestamp, key), so a batch written twice is stored once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

UTC = dt.UTC


class MachineState(StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    STARVED = "starved"
    BLOCKED = "blocked"
    PLANNED_STOP = "planned_stop"
    SETUP = "setup"
    UNPLANNED_STOP = "unplanned_stop"  # fault / breakdown / any stop not planned
    OFFLINE = "offline"  # no data: source silent past its heartbeat, or unknown state


# Small integer codes for storage; stable forever (stored in hypertables).
STATE_CODES: dict[MachineState, int] = {
    MachineState.RUNNING: 1,
    MachineState.IDLE: 2,
    MachineState.STARVED: 3,
    MachineState.BLOCKED: 4,
    MachineState.PLANNED_STOP: 5,
    MachineState.SETUP: 6,
    MachineState.UNPLANNED_STOP: 7,
    MachineState.OFFLINE: 8,
}
STATE_BY_CODE: dict[int, MachineState] = {v: k for k, v in STATE_CODES.items()}
STOP_STATES = frozenset(
    {MachineState.IDLE, MachineState.PLANNED_STOP, MachineState.SETUP, MachineState.UNPLANNED_STOP}
)

_ALIASES = {
    "run": MachineState.RUNNING,
    "execute": MachineState.RUNNING,
    "producing": MachineState.RUNNING,
    "fault": MachineState.UNPLANNED_STOP,
    "down": MachineState.UNPLANNED_STOP,
    "stopped": MachineState.UNPLANNED_STOP,
    "unplanned": MachineState.UNPLANNED_STOP,
    "changeover": MachineState.SETUP,
    "planned": MachineState.PLANNED_STOP,
    "unknown": MachineState.OFFLINE,
    "no_data": MachineState.OFFLINE,
}


def parse_state(value: str | MachineState) -> MachineState:
    if isinstance(value, MachineState):
        return value
    v = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return MachineState(v)
    except ValueError:
        if v in _ALIASES:
            return _ALIASES[v]
        raise ValueError(
            f"unknown machine state {value!r}; expected one of {[s.value for s in MachineState]}"
        ) from None


_I64 = struct.Struct("<q")


def _to_i64(digest: bytes) -> int:
    return _I64.unpack(digest[:8])[0]


def sequence_key(source_id: str, seq: int | str, kind: str = "") -> int:
    """Key from a source's own sequence (message id, PLC sequence number): same message, same key."""
    return _to_i64(hashlib.blake2b(f"{source_id}\x1f{kind}\x1f{seq}".encode(), digest_size=8).digest())


def sequence_keyer(source_id: str, kind: str, seq_prefix: str = "") -> Callable[[str], int]:
    """``rest -> sequence_key(source_id, seq_prefix + rest, kind)``, with the common start hashed once: a
    decoder keying thousands of events of one machine per second pays only for each event's own part."""
    start = hashlib.blake2b(f"{source_id}\x1f{kind}\x1f{seq_prefix}".encode(), digest_size=8)
    unpack = _I64.unpack

    def key(rest: str) -> int:
        h = start.copy()
        h.update(rest.encode())
        return unpack(h.digest())[0]

    return key


def content_key(*parts: Any) -> int:
    """Key from the event's content when the source has no sequence."""
    return _to_i64(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest())


def ensure_utc(ts: dt.datetime) -> dt.datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (UTC offset)")
    return ts.astimezone(UTC)


@dataclass(slots=True)
class StateChange:
    machine_id: str
    ts: dt.datetime
    state: MachineState
    source_id: str
    reason_code: str | None = None
    fault_code: str | None = None
    seq: int | str | None = None
    key: int = field(default=0)

    kind = "state"

    def __post_init__(self) -> None:
        if not self.key:
            self.key = (
                sequence_key(self.source_id, self.seq, "s")
                if self.seq is not None
                else content_key("s", self.machine_id, self.ts.isoformat(), self.state, self.reason_code,
                                 self.fault_code)
            )


@dataclass(slots=True)
class ProductionCount:
    """Parts made since the previous count event of this machine and source (deltas, not totals)."""

    machine_id: str
    ts: dt.datetime
    total: int
    reject: int
    source_id: str
    product: str | None = None
    seq: int | str | None = None
    key: int = field(default=0)
    # Raw counter readings this delta came from, kept so a restarted collector can resume deltas.
    total_counter: int | None = None
    reject_counter: int | None = None

    kind = "count"

    def __post_init__(self) -> None:
        if self.total < 0 or self.reject < 0:
            raise ValueError("counts must be >= 0")
        if self.reject > self.total:
            raise ValueError(f"reject ({self.reject}) exceeds total ({self.total})")
        if not self.key:
            self.key = (
                sequence_key(self.source_id, self.seq, "c")
                if self.seq is not None
                else content_key("c", self.machine_id, self.ts.isoformat(), self.total, self.reject, self.product,
                                 self.total_counter, self.reject_counter)
            )

    @property
    def good(self) -> int:
        return self.total - self.reject


@dataclass(slots=True)
class TelemetrySample:
    machine_id: str
    ts: dt.datetime
    metric: str
    value: float
    source_id: str
    unit: str = ""
    seq: int | str | None = None
    key: int = field(default=0)

    kind = "telemetry"

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"telemetry value for {self.metric!r} is not a finite number")
        if not self.key:
            self.key = (
                sequence_key(self.source_id, self.seq, "t")
                if self.seq is not None
                else content_key("t", self.machine_id, self.ts.isoformat(), self.metric, repr(self.value))
            )


Event = StateChange | ProductionCount | TelemetrySample


# --- counters ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _CounterState:
    total: int
    reject: int
    ts: dt.datetime


@dataclass
class CounterTracker:
    """Turns monotonic PLC counter readings (processed, defective) into ProductionCount deltas.

    A counter that goes down is either a wrap (a 16- or 32-bit register rolled over: the delta across
    the wrap is small) or a reset (PLC restart, job change: the count restarts from zero, so the new
    reading is the delta). With a known bit width, a decrease whose wrap-around delta is less than half
    the register range is read as a wrap; anything else as a reset. The first reading of a counter only
    sets the baseline (its history is unknown), unless a baseline was restored with ``restore``.
    """

    bits: int | None = None  # None: counters are not expected to wrap (64-bit, floats)
    _last: dict[tuple[str, str], _CounterState] = field(default_factory=dict)

    def restore(self, source_id: str, machine_id: str, total: int, reject: int, ts: dt.datetime) -> None:
        self._last[(source_id, machine_id)] = _CounterState(total, reject, ts)

    def baselines(self) -> list[tuple[tuple[str, str], int, int, dt.datetime]]:
        """((source_id, machine_id), total, reject, ts) of every counter seen or restored."""
        return [(k, v.total, v.reject, v.ts) for k, v in self._last.items()]

    def has_baseline(self, source_id: str, machine_id: str) -> bool:
        return (source_id, machine_id) in self._last

    def _delta(self, old: int, new: int) -> int:
        if new >= old:
            return new - old
        if self.bits:
            span = 1 << self.bits
            wrapped = new + span - old
            if 0 <= wrapped < span // 2:
                return wrapped
        return new  # reset: counted from zero again

    def update(
        self,
        source_id: str,
        machine_id: str,
        ts: dt.datetime,
        total_counter: int,
        reject_counter: int = 0,
        product: str | None = None,
    ) -> ProductionCount | None:
        if total_counter < 0 or reject_counter < 0:
            raise ValueError("counter readings must be >= 0")
        if self.bits and (total_counter >= 1 << self.bits or reject_counter >= 1 << self.bits):
            raise ValueError(f"counter reading exceeds {self.bits}-bit range")
        k = (source_id, machine_id)
        prev = self._last.get(k)
        self._last[k] = _CounterState(total_counter, reject_counter, ts)
        if prev is None:
            return None
        if ts < prev.ts:
            # An older reading arriving late carries no new parts: keep the newer baseline.
            self._last[k] = prev
            return None
        d_total = self._delta(prev.total, total_counter)
        d_reject = self._delta(prev.reject, reject_counter)
        if d_total == 0 and d_reject == 0:
            return None
        # A defective counter that moved more than the processed counter (independent resets or a PLC
        # that counts rejects separately) cannot give negative good parts.
        d_total = max(d_total, d_reject)
        return ProductionCount(
            machine_id=machine_id,
            ts=ts,
            total=d_total,
            reject=d_reject,
            source_id=source_id,
            product=product,
            total_counter=total_counter,
            reject_counter=reject_counter,
        )


# --- plain-dict form (spool files, HTTP, logs) ----------------------------------------------------------


def event_to_dict(ev: Event) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": ev.kind, "machine_id": ev.machine_id, "ts": ev.ts.isoformat(),
                            "source_id": ev.source_id, "seq": ev.seq, "key": ev.key}
    if isinstance(ev, StateChange):
        base.update(state=ev.state.value, reason_code=ev.reason_code, fault_code=ev.fault_code)
    elif isinstance(ev, ProductionCount):
        base.update(total=ev.total, reject=ev.reject, product=ev.product, total_counter=ev.total_counter,
                    reject_counter=ev.reject_counter)
    else:
        base.update(metric=ev.metric, value=ev.value, unit=ev.unit)
    return base


def event_from_dict(d: dict[str, Any]) -> Event:
    """Inverse of event_to_dict (trusted input: the spool). HTTP input is validated by pydantic first."""
    ts = ensure_utc(dt.datetime.fromisoformat(d["ts"]))
    common = {"machine_id": d["machine_id"], "ts": ts, "source_id": d["source_id"], "seq": d.get("seq"),
              "key": d.get("key") or 0}
    kind = d["kind"]
    if kind == "state":
        return StateChange(state=parse_state(d["state"]), reason_code=d.get("reason_code"),
                           fault_code=d.get("fault_code"), **common)
    if kind == "count":
        return ProductionCount(total=d["total"], reject=d["reject"], product=d.get("product"),
                               total_counter=d.get("total_counter"), reject_counter=d.get("reject_counter"), **common)
    if kind == "telemetry":
        return TelemetrySample(metric=d["metric"], value=float(d["value"]), unit=d.get("unit") or "", **common)
    raise ValueError(f"unknown event kind {kind!r}")
