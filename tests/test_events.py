"""Canonical events: idempotency keys, state parsing, counters with resets and 16/32-bit wrap."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from andon.events import CounterTracker, MachineState, ProductionCount, StateChange, parse_state

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def t(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def test_keys_same_for_same_content_or_sequence():
    a = StateChange("m", t(0), MachineState.RUNNING, "src")
    b = StateChange("m", t(0), MachineState.RUNNING, "src")
    c = StateChange("m", t(0), MachineState.IDLE, "src")
    assert a.key == b.key != c.key
    assert StateChange("m", t(0), "running", "src", seq=7).key == StateChange("m", t(5), "idle", "src", seq=7).key
    assert StateChange("m", t(0), "running", "src", seq=7).key != StateChange("m", t(0), "running", "other", seq=7).key


def test_parse_state_aliases_and_errors():
    assert parse_state("Execute") is MachineState.RUNNING
    assert parse_state("changeover") is MachineState.SETUP
    assert parse_state("no data") is MachineState.OFFLINE
    with pytest.raises(ValueError, match="unknown machine state 'dancing'"):
        parse_state("dancing")


def test_count_validation():
    with pytest.raises(ValueError, match="reject"):
        ProductionCount("m", t(0), 2, 3, "s")
    with pytest.raises(ValueError):
        ProductionCount("m", t(0), -1, 0, "s")


def test_counter_deltas_wrap_and_reset_16bit():
    tr = CounterTracker(bits=16)
    assert tr.update("s", "m", t(0), 65530, 10) is None  # baseline
    d = tr.update("s", "m", t(1), 65535, 10)
    assert (d.total, d.reject) == (5, 0)
    d = tr.update("s", "m", t(2), 4, 11)  # wrapped: 65535 -> 0 -> 4
    assert (d.total, d.reject) == (5, 1)
    d = tr.update("s", "m", t(3), 3, 0)  # reset (PLC restart): counts restart from zero
    assert (d.total, d.reject) == (3, 0)
    assert tr.update("s", "m", t(4), 3, 0) is None  # unchanged
    assert tr.update("s", "m", t(2.5), 1, 0) is None  # late, older reading: ignored


def test_counter_wrap_32bit_and_restore():
    tr = CounterTracker(bits=32)
    tr.restore("s", "m", 2**32 - 2, 0, t(0))
    d = tr.update("s", "m", t(1), 3, 0)
    assert d.total == 5
    with pytest.raises(ValueError, match="32-bit"):
        tr.update("s", "m", t(2), 2**32, 0)


@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=200),
       st.integers(min_value=0, max_value=65535))
def test_wrapping_counter_deltas_sum_to_parts_made(increments, start):
    """Parts made per step (less than half the range) always come back exactly through a 16-bit wrap."""
    tr = CounterTracker(bits=16)
    value = start
    tr.update("s", "m", t(0), value)
    total = 0
    for i, inc in enumerate(increments, start=1):
        value = (value + inc) % 65536
        d = tr.update("s", "m", t(i), value)
        total += d.total if d else 0
    assert total == sum(increments)
