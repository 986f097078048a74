"""PackML state numbers -> Andon states: the one table the OPC UA collector's ``packml`` preset and the
Sparkplug host both use (ISA-TR88.00.02; the numbers are PackTags ``Status.StateCurrent`` and OPC 30050
``StateCurrent`` alike).

The decisions, and why:

* 6 Execute -> running (19 Running, the OPC 30050 super-state, likewise).
* 5/13/14 Suspended/Suspending/Unsuspending: by definition waiting for EXTERNAL conditions -> blocked if
  the Blocked interlock is set, else starved if Starved is set (blocked wins when both are: the machine
  cannot unload whatever it has), else the configured default (starved).
* 8/9/1 Aborting/Aborted/Clearing: a fault -> unplanned_stop.
* 10/11/12 Holding/Held/Unholding: INTERNAL conditions (jam, magazine refill, equipment fault) ->
  unplanned_stop.
* 2/7 Stopped/Stopping -> idle: in PackML a fault goes through Aborting/Aborted; Stopped follows an
  operator Stop command, so it is waiting, not a breakdown (it still counts against availability inside
  planned production time; it just does not count as a failure behind MTBF). Where a plant wants stops
  as downtime, the OPC UA preset takes ``values: {2: unplanned_stop, 7: unplanned_stop}``.
* 3/4/15/16/17/18 Starting/Idle/Resetting/Completing/Complete/Cleared -> idle (not producing, not
  broken, waiting for a command or an order).
* 0 Undefined -> offline (no usable data).
* Unit mode (``Status.UnitModeCurrent``): 2 Maintenance -> planned_stop whatever the state; 3 Manual ->
  setup, except that a fault stays unplanned_stop (Execute only counts as run time in Production mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from andon.events import MachineState

SUSPENDED = "suspended"  # a target resolved by the blocked/starved interlock flags
StateTarget = MachineState | Literal["suspended"]

STATE_NAMES: dict[int, str] = {
    0: "Undefined", 1: "Clearing", 2: "Stopped", 3: "Starting", 4: "Idle", 5: "Suspended", 6: "Execute",
    7: "Stopping", 8: "Aborting", 9: "Aborted", 10: "Holding", 11: "Held", 12: "Unholding", 13: "Suspending",
    14: "Unsuspending", 15: "Resetting", 16: "Completing", 17: "Complete", 18: "Cleared", 19: "Running",
}
_M = MachineState
STATE_TARGETS: dict[int, StateTarget] = {
    0: _M.OFFLINE,
    1: _M.UNPLANNED_STOP, 8: _M.UNPLANNED_STOP, 9: _M.UNPLANNED_STOP,
    10: _M.UNPLANNED_STOP, 11: _M.UNPLANNED_STOP, 12: _M.UNPLANNED_STOP,
    2: _M.IDLE, 7: _M.IDLE,
    3: _M.IDLE, 4: _M.IDLE, 15: _M.IDLE, 16: _M.IDLE, 17: _M.IDLE, 18: _M.IDLE,
    5: SUSPENDED, 13: SUSPENDED, 14: SUSPENDED,
    6: _M.RUNNING, 19: _M.RUNNING,
}
UNIT_MODE_PRODUCTION, UNIT_MODE_MAINTENANCE, UNIT_MODE_MANUAL = 1, 2, 3
UNIT_MODE_NAMES: dict[int, str] = {UNIT_MODE_PRODUCTION: "Production", UNIT_MODE_MAINTENANCE: "Maintenance",
                                   UNIT_MODE_MANUAL: "Manual"}
UNIT_MODE_STATES: dict[int, MachineState] = {UNIT_MODE_MAINTENANCE: _M.PLANNED_STOP, UNIT_MODE_MANUAL: _M.SETUP}


def resolve(target: StateTarget, mode_state: MachineState | None = None, *, blocked: bool = False,
            starved: bool = False, suspended_default: MachineState = MachineState.STARVED) -> MachineState:
    """A state-map target and the unit mode's state (None: production, or a mode without one) -> the
    Andon state: planned stop by mode first, then faults, then the mode, then the state itself."""
    if mode_state is MachineState.PLANNED_STOP:
        return mode_state
    if target is MachineState.UNPLANNED_STOP:
        return target
    if mode_state is not None:
        return mode_state
    if target == SUSPENDED:
        return MachineState.BLOCKED if blocked else MachineState.STARVED if starved else suspended_default
    return target  # type: ignore[return-value]


def packml_to_machine_state(
    state_number: int,
    unit_mode: int | None = None,
    *,
    blocked: bool = False,
    starved: bool = False,
    unit_mode_states: Mapping[int, MachineState] | None = None,
    suspended_without_flags: MachineState = MachineState.STARVED,
) -> MachineState:
    """PackML state number (+ unit mode, interlock flags) -> Andon state; an unknown number -> offline."""
    modes = UNIT_MODE_STATES if unit_mode_states is None else unit_mode_states
    mode_state = modes.get(unit_mode) if unit_mode is not None else None
    return resolve(STATE_TARGETS.get(state_number, MachineState.OFFLINE), mode_state, blocked=blocked,
                   starved=starved, suspended_default=suspended_without_flags)


__all__ = ["STATE_NAMES", "STATE_TARGETS", "SUSPENDED", "UNIT_MODE_STATES", "StateTarget",
           "packml_to_machine_state", "resolve"]
