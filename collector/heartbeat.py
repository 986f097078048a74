"""Silence detection shared by all sources: a feed that goes quiet turns its machines to "no data".

A *feed* is whatever delivers a machine's data and can fall silent as a whole: an MQTT machine topic,
a Sparkplug edge node, an OPC UA endpoint. When nothing arrives from a feed for ``timeout_s``, each
of its machines gets one ``StateChange`` OFFLINE (reason ``no_data``) stamped at the moment silence was
concluded (last message + timeout, on the collector's clock): before that the machine's last reported
state stands, because gateways report by exception. When the feed speaks again, every machine that
was marked offline gets back its last known state (stamped with the arrival), unless the new data
carries a state change of its own.
"""

from __future__ import annotations

import datetime as dt
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from andon.events import UTC, Event, MachineState, StateChange, content_key

NO_DATA_REASON = "no_data"
_machine_of = operator.attrgetter("machine_id")


@dataclass
class _Feed:
    machines: set[str] = field(default_factory=set)
    last_seen: float = 0.0
    last_seen_wall: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))
    silent: bool = False


class Heartbeat:
    def __init__(
        self,
        source_id: str,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(UTC),
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("heartbeat timeout must be > 0")
        self.source_id = source_id
        self.timeout_s = timeout_s
        self._clock = clock
        self._wall = wall_clock
        self._feeds: dict[str, _Feed] = {}
        self._last_state: dict[str, StateChange] = {}
        self._offline: set[str] = set()
        self.offline_events = 0

    @property
    def offline_machines(self) -> frozenset[str]:
        return frozenset(self._offline)

    def observe(self, feed: str, events: Sequence[Event] = (), machines: Iterable[str] = ()) -> list[StateChange]:
        """Record that ``feed`` spoke (carrying ``events``, on behalf of ``machines`` and the events'
        machines). Returns the state changes that bring machines back from "no data"."""
        state = self._feeds.get(feed)
        if state is None:  # (not setdefault: a new _Feed per call reads the clock for nothing)
            state = self._feeds[feed] = _Feed()
        state.last_seen = self._clock()
        state.last_seen_wall = self._wall()
        state.silent = False
        spoke = set(machines)
        spoke.update(map(_machine_of, events))  # in C: a batch message carries thousands of events
        last_state = self._last_state
        for event in [e for e in events if type(e) is StateChange]:
            previous = last_state.get(event.machine_id)
            if previous is None or event.ts >= previous.ts:
                last_state[event.machine_id] = event
        state.machines |= spoke
        if not self._offline or self._offline.isdisjoint(spoke):
            return []  # the common case: nothing comes back
        with_state: set[str] = set()
        first_ts: dict[str, dt.datetime] = {}
        for event in events:
            if event.machine_id not in first_ts or event.ts < first_ts[event.machine_id]:
                first_ts[event.machine_id] = event.ts
            if isinstance(event, StateChange):
                with_state.add(event.machine_id)
        restored: list[StateChange] = []
        for machine in sorted(spoke & self._offline):
            self._offline.discard(machine)
            last = self._last_state.get(machine)
            if machine in with_state or last is None or last.state is MachineState.OFFLINE:
                continue
            ts = first_ts.get(machine, state.last_seen_wall)
            restored.append(StateChange(
                machine, ts, last.state, self.source_id, reason_code=last.reason_code, fault_code=last.fault_code,
                key=content_key("heartbeat-restore", self.source_id, machine, ts.isoformat(), last.state)))
        return restored

    def expire(self) -> list[StateChange]:
        """OFFLINE state changes for the machines of feeds silent past the timeout (once per silence)."""
        now = self._clock()
        out: list[StateChange] = []
        for feed in self._feeds.values():
            if feed.silent or now - feed.last_seen < self.timeout_s:
                continue
            feed.silent = True
            ts = feed.last_seen_wall + dt.timedelta(seconds=self.timeout_s)
            for machine in sorted(feed.machines - self._offline):
                self._offline.add(machine)
                self.offline_events += 1
                out.append(StateChange(
                    machine, ts, MachineState.OFFLINE, self.source_id, reason_code=NO_DATA_REASON,
                    key=content_key("heartbeat-offline", self.source_id, machine, ts.isoformat())))
        return out

    def forget(self, feed: str) -> None:
        self._feeds.pop(feed, None)
