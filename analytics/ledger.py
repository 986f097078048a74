"""The time ledger: every second of every period put into exactly one OEE class, plus the counts.

Everything else (OEE, waterfall, six big losses, ISO 22400 view, buckets, roll-ups) is derived from
SUMS of ledger columns, never from averaged percentages, so a day equals the sum of its hours and a
line or site equals the sum of its machines.

Rules (the semantics the rest of the package relies on)
--------------------------------------------------------
Calendar (from the period's ``calendar_kind``):

* ``production`` time is scheduled: it is planned production time (PPT) unless the machine has no data.
* ``planned_stop`` calendar time is scheduled when ``planned_stops_count_against_availability`` is true
  (OEE.com, the default): whatever the machine does there apart from running is a planned stop
  (setup and adjustments). When the setting is false it is a schedule loss, like a break.
* ``break``, ``no_order``, ``no_shift`` time is a schedule loss, except that time the machine actually
  ran there ("unscheduled production") is added to PPT and run time: the parts made then are counted,
  so the time that made them has to be counted too, or performance would exceed 100 %.

Machine states inside scheduled time:

* ``running`` is run time.
* ``offline`` ("no data") is never running and never stopped: it is taken out of PPT (and out of the
  observed time used for utilization and TEEP) and reported as ``no_data_s`` and as data coverage.
* ``starved`` / ``blocked`` are availability losses of the machine (OEE.com counts them as unplanned
  stops: the machine did not produce) but are kept in their own line-loss class, never mixed with the
  machine's own breakdowns, and are attributed to the neighbour that caused them (see ``line``).
* stop states (idle, planned_stop, setup, unplanned_stop) are classified stop by stop (see
  ``classify_stops``): planned -> setup and adjustments; unplanned and shorter than the small-stop
  threshold by FULL duration -> small stop (a performance loss: its seconds count as run time);
  unplanned otherwise -> breakdown. With the setting false, planned stop seconds leave PPT.

Counts (total, reject, startup rejects, ideal time) are always summed, whatever the calendar says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from analytics.intervals import overlaps_with_periods, timestamp_ns, to_ns
from andon.plant import PlantSettings

STATES = ("running", "idle", "starved", "blocked", "planned_stop", "setup", "unplanned_stop", "offline")
STATE_SECONDS_COLUMNS = tuple(f"s_{s}" for s in STATES)
STOP_STATES = ("idle", "planned_stop", "setup", "unplanned_stop")
PLANNED_STOP_STATES = frozenset({"planned_stop", "setup"})
COUNT_COLUMNS = ("total_count", "reject_count", "startup_rejects", "ideal_time_s")
# Optional period columns: stop seconds already classified planned / small stop / breakdown (storage's
# rollups carry them). Used when no stop list is given.
PRECLASSIFIED_COLUMNS = ("s_stop_planned", "s_stop_small", "s_stop_breakdown")
PERIOD_COLUMNS = (
    "machine",
    "period_start",
    "period_end",
    "calendar_kind",
    "shift_key",
    *STATE_SECONDS_COLUMNS,
    *COUNT_COLUMNS,
)
STOP_COLUMNS = ("machine", "stop_id", "start_ts", "end_ts", "state", "reason_code", "planned", "failure", "loss")
CALENDAR_KINDS = ("production", "break", "planned_stop", "no_order", "no_shift")

# Stop classes (how a stop's seconds count in OEE).
PLANNED = "planned"
SMALL_STOP = "small_stop"
BREAKDOWN = "breakdown"
STOP_CLASSES = (PLANNED, SMALL_STOP, BREAKDOWN)


@dataclass(frozen=True, slots=True)
class OeePolicy:
    """The plant settings the OEE arithmetic depends on."""

    planned_stops_count_against_availability: bool = True
    small_stop_threshold_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: PlantSettings) -> OeePolicy:
        return cls(
            planned_stops_count_against_availability=settings.planned_stops_count_against_availability,
            small_stop_threshold_s=settings.small_stop_threshold_s,
        )


def is_small_stop_duration(duration_s: float | np.ndarray, threshold_s: float) -> bool | np.ndarray:
    """The one definition used everywhere: a stop is small when its full duration is BELOW the threshold.

    A stop of exactly the threshold is not small; it needs a reason (OEE.com: "longer than two minutes").
    """
    return np.asarray(duration_s) < threshold_s


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")


def effective_end(stops: pd.DataFrame, now: dt.datetime | pd.Timestamp | None) -> pd.Series:
    """The stop's end, with an ongoing stop (end NaT) ending at ``now``."""
    end = stops["end_ts"]
    if end.isna().any():
        if now is None:
            raise ValueError("an ongoing stop (end_ts NaT) needs `now`")
        end = end.fillna(pd.Timestamp(now).tz_convert("UTC"))
    return end


@dataclass(frozen=True, slots=True)
class _StopArrays:
    ongoing: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray  # effective end: `now` for an ongoing stop
    duration_s: np.ndarray
    is_planned: np.ndarray
    stop_class: np.ndarray  # index into STOP_CLASSES


def _classify(stops: pd.DataFrame, policy: OeePolicy, now: dt.datetime | None) -> _StopArrays:
    end_ts = stops["end_ts"]
    ongoing = end_ts.isna().to_numpy()
    start_ns = to_ns(stops["start_ts"])
    if ongoing.any():
        if now is None:
            raise ValueError("an ongoing stop (end_ts NaT) needs `now`")
        end_ns = np.where(ongoing, timestamp_ns(now), to_ns(end_ts.fillna(stops["start_ts"])))
    else:
        end_ns = to_ns(end_ts)
    duration_s = (end_ns - start_ns) / 1e9
    planned_by_state = stops["state"].isin(PLANNED_STOP_STATES).to_numpy()
    if "planned" in stops.columns:
        # The reason's planned flag decides when the stop has a reason; otherwise the state does.
        flag = stops["planned"]
        has_flag = flag.notna().to_numpy()
        flag_true = np.equal(flag.to_numpy(dtype=object), True).astype(bool)
        is_planned = np.where(has_flag, flag_true, planned_by_state)
    else:
        is_planned = planned_by_state
    small = is_small_stop_duration(duration_s, policy.small_stop_threshold_s)
    stop_class = np.where(
        is_planned,
        STOP_CLASSES.index(PLANNED),
        np.where(small, STOP_CLASSES.index(SMALL_STOP), STOP_CLASSES.index(BREAKDOWN)),
    )
    return _StopArrays(ongoing, start_ns, end_ns, duration_s, np.asarray(is_planned, dtype=bool), stop_class)


def classify_stops(stops: pd.DataFrame, policy: OeePolicy, now: dt.datetime | None = None) -> pd.DataFrame:
    """The stops with their full duration and OEE class.

    Added columns: ``end_effective`` (``now`` for an ongoing stop), ``ongoing``, ``duration_s`` (full
    duration, end - start, never clipped: the small-stop test must not depend on the query window),
    ``is_planned`` (the reason's ``planned`` flag when the stop has a reason, else the state: planned_stop
    and setup are planned) and ``stop_class`` (planned | small_stop | breakdown). An ongoing stop is
    classified by its duration so far, so an ongoing short stop is provisionally a small stop.
    """
    _require(stops, ("machine", "start_ts", "end_ts", "state"), "stops")
    out = stops.copy()
    arrays = _classify(out, policy, now)
    out["ongoing"] = arrays.ongoing
    out["end_effective"] = pd.to_datetime(arrays.end_ns, utc=True)
    out["duration_s"] = arrays.duration_s
    out["is_planned"] = arrays.is_planned
    out["stop_class"] = np.array(STOP_CLASSES, dtype=object)[arrays.stop_class] if len(out) else []
    return out


def _stop_seconds_by_class(
    periods: pd.DataFrame, stops: pd.DataFrame, policy: OeePolicy, now: dt.datetime | None
) -> np.ndarray:
    """Seconds of each period in (stop state, stop class), consistent with the period's state seconds.

    The period's state seconds are the truth (they sum to the period length). Stop rows are clipped to
    each period; where they cover less than the state time (a stop missing from the list) the rest gets
    the state's default class (planned for planned_stop/setup, breakdown otherwise); where they claim
    more (inconsistent inputs) they are scaled down to the state time, so nothing is counted twice.
    """
    n = len(periods)
    result = np.zeros((n, len(STOP_STATES), len(STOP_CLASSES)))
    if stops is not None and len(stops):
        _require(stops, ("machine", "start_ts", "end_ts", "state"), "stops")
        arrays = _classify(stops, policy, now)
        state_idx = pd.Categorical(stops["state"], categories=STOP_STATES).codes.astype(np.int64)
        keep = state_idx >= 0
        pairs = overlaps_with_periods(
            stops["machine"].to_numpy()[keep],
            arrays.start_ns[keep],
            arrays.end_ns[keep],
            periods["machine"].to_numpy(),
            to_ns(periods["period_start"]),
            to_ns(periods["period_end"]),
        )
        cells = len(STOP_STATES) * len(STOP_CLASSES)
        flat = (
            pairs.period_index * cells
            + state_idx[keep][pairs.interval_index] * len(STOP_CLASSES)
            + arrays.stop_class[keep][pairs.interval_index]
        )
        result += np.bincount(flat, weights=pairs.seconds, minlength=n * cells).reshape(result.shape)
    for k, state in enumerate(STOP_STATES):
        state_seconds = periods[f"s_{state}"].to_numpy(dtype=float)
        claimed = result[:, k, :].sum(axis=1)
        over = claimed > state_seconds
        if over.any():
            scale = np.where(over, state_seconds / np.where(claimed > 0, claimed, 1.0), 1.0)
            result[:, k, :] *= scale[:, None]
        residual = np.maximum(state_seconds - result[:, k, :].sum(axis=1), 0.0)
        default_class = STOP_CLASSES.index(PLANNED if state in PLANNED_STOP_STATES else BREAKDOWN)
        result[:, k, default_class] += residual
    return result


# Ledger columns: seconds unless named *_count / *_rejects.
LEDGER_TIME_COLUMNS = (
    "all_time_s",
    "unscheduled_s",  # break / no order / no shift time, minus unscheduled running
    "planned_stop_excluded_s",  # planned stops left out of PPT (setting false)
    "no_data_s",  # offline inside scheduled time
    "running_s",  # producing (includes unscheduled_running_s)
    "unscheduled_running_s",
    "small_stop_s",
    "breakdown_s",
    "setup_s",  # planned stops inside PPT (setup and adjustments)
    "starved_s",
    "blocked_s",
    # ISO 22400-2 elements, from machine states (independent of the OEE.com setting)
    "iso_apt_s",
    "iso_asut_s",
    "iso_adet_s",
    "iso_adot_s",
    "iso_pdot_s",
)
LEDGER_COLUMNS = (*LEDGER_TIME_COLUMNS, *COUNT_COLUMNS)


def build_ledger(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    now: dt.datetime | None = None,
) -> pd.DataFrame:
    """The periods with the ledger columns added (see the module docstring for the rules).

    ``now`` ends ongoing stops; by default the latest period end.
    """
    _require(periods, PERIOD_COLUMNS, "periods")
    p = periods.reset_index(drop=True)
    if now is None and len(p):
        now = pd.Timestamp(p["period_end"].max())
    if stops is not None and len(stops) and now is not None:
        timestamp_ns(now)  # validates the time zone
    if stops is None and all(c in p.columns for c in PRECLASSIFIED_COLUMNS):
        # Storage's rollups already split each period's stop seconds into classes by the same rule
        # (the stop's reason, else its state; small by full duration): no stop list needed, which is
        # what makes a year of OEE cheap.
        planned_stop_s, small_s, breakdown_s = (p[c].to_numpy(dtype=float) for c in PRECLASSIFIED_COLUMNS)
    else:
        by_class = _stop_seconds_by_class(p, stops if stops is not None else pd.DataFrame(), policy, now)
        planned_stop_s = by_class[:, :, STOP_CLASSES.index(PLANNED)].sum(axis=1)
        small_s = by_class[:, :, STOP_CLASSES.index(SMALL_STOP)].sum(axis=1)
        breakdown_s = by_class[:, :, STOP_CLASSES.index(BREAKDOWN)].sum(axis=1)

    def col(name: str) -> np.ndarray:
        return p[name].to_numpy(dtype=float)

    running, offline = col("s_running"), col("s_offline")
    starved, blocked = col("s_starved"), col("s_blocked")
    idle, planned_state, setup_state, unplanned_state = (
        col("s_idle"),
        col("s_planned_stop"),
        col("s_setup"),
        col("s_unplanned_stop"),
    )
    # Grouped rows (storage's day/shift grain) cover non-contiguous periods: they carry their length.
    if "period_s" in p.columns:
        all_time = p["period_s"].to_numpy(dtype=float)
    else:
        all_time = (to_ns(p["period_end"]) - to_ns(p["period_start"])) / 1e9
    kind = p["calendar_kind"].to_numpy()
    unknown = set(pd.unique(kind)) - set(CALENDAR_KINDS)
    if unknown:
        raise ValueError(f"unknown calendar_kind {sorted(map(str, unknown))}")
    count_planned = policy.planned_stops_count_against_availability
    production = kind == "production"
    calendar_planned = kind == "planned_stop"
    scheduled_planned = calendar_planned & count_planned
    unscheduled = ~(production | scheduled_planned)
    zero = np.zeros(len(p))

    ledger: dict[str, np.ndarray] = {}
    ledger["all_time_s"] = all_time
    ledger["running_s"] = running
    ledger["unscheduled_running_s"] = np.where(unscheduled, running, zero)
    ledger["unscheduled_s"] = np.where(unscheduled, all_time - running, zero)
    ledger["no_data_s"] = np.where(unscheduled, zero, offline)
    ledger["small_stop_s"] = np.where(production, small_s, zero)
    ledger["breakdown_s"] = np.where(production, breakdown_s, zero)
    ledger["starved_s"] = np.where(production, starved, zero)
    ledger["blocked_s"] = np.where(production, blocked, zero)
    # In a calendar planned stop everything but running and no data is the planned stop itself.
    calendar_planned_stop_s = all_time - running - offline
    if count_planned:
        ledger["setup_s"] = np.where(
            production, planned_stop_s, np.where(scheduled_planned, calendar_planned_stop_s, zero)
        )
        ledger["planned_stop_excluded_s"] = zero
    else:
        ledger["setup_s"] = zero
        ledger["planned_stop_excluded_s"] = np.where(production, planned_stop_s, zero)

    # ISO 22400-2 view, state based: PDOT is planned down time (calendar planned stops and the
    # planned_stop state), ASUT setup, ADET unplanned delays (faults incl. minor stoppages, starved,
    # blocked), ADOT idle (available but not running with orders). APT includes unscheduled running.
    iso_scheduled = production | calendar_planned
    ledger["iso_apt_s"] = running
    ledger["iso_asut_s"] = np.where(production, setup_state, zero)
    ledger["iso_adet_s"] = np.where(production, unplanned_state + starved + blocked, zero)
    ledger["iso_adot_s"] = np.where(production, idle, zero)
    ledger["iso_pdot_s"] = np.where(production, planned_state, np.where(iso_scheduled, calendar_planned_stop_s, zero))
    base = p.drop(columns=[c for c in (*LEDGER_TIME_COLUMNS, *PRECLASSIFIED_COLUMNS, "period_s") if c in p.columns])
    base = base.astype(dict.fromkeys(COUNT_COLUMNS, float))
    # The ledger columns built as one block (not inserted one by one): group sums then run once over it.
    return pd.concat([base, pd.DataFrame({c: ledger[c] for c in LEDGER_TIME_COLUMNS}, index=p.index)], axis=1)


@dataclass(frozen=True, slots=True)
class OeeTotals:
    """Summed seconds and counts of a ledger: the only thing roll-ups ever add."""

    all_time_s: float = 0.0
    unscheduled_s: float = 0.0
    planned_stop_excluded_s: float = 0.0
    no_data_s: float = 0.0
    running_s: float = 0.0
    unscheduled_running_s: float = 0.0
    small_stop_s: float = 0.0
    breakdown_s: float = 0.0
    setup_s: float = 0.0
    starved_s: float = 0.0
    blocked_s: float = 0.0
    iso_apt_s: float = 0.0
    iso_asut_s: float = 0.0
    iso_adet_s: float = 0.0
    iso_adot_s: float = 0.0
    iso_pdot_s: float = 0.0
    total_count: float = 0.0
    reject_count: float = 0.0
    startup_rejects: float = 0.0
    ideal_time_s: float = 0.0

    def __add__(self, other: OeeTotals) -> OeeTotals:
        if not isinstance(other, OeeTotals):
            return NotImplemented
        return OeeTotals(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: object) -> OeeTotals:
        # Lets sum() start from 0.
        if other == 0:
            return self
        if isinstance(other, OeeTotals):
            return other + self
        return NotImplemented

    @classmethod
    def from_ledger(cls, ledger: pd.DataFrame) -> OeeTotals:
        sums = ledger[list(LEDGER_COLUMNS)].sum(axis=0)
        return cls(**{name: float(sums[name]) for name in LEDGER_COLUMNS})

    @classmethod
    def from_row(cls, row: pd.Series | dict[str, Any]) -> OeeTotals:
        return cls(**{name: float(row[name]) for name in LEDGER_COLUMNS})

    @classmethod
    def per_group(cls, sums: pd.DataFrame) -> dict[Any, OeeTotals]:
        """Totals per index label of a frame of summed ledger columns (a groupby sum)."""
        values = sums[list(LEDGER_COLUMNS)].to_numpy(dtype=float)
        return {
            key: cls(**dict(zip(LEDGER_COLUMNS, map(float, row), strict=True)))
            for key, row in zip(sums.index, values, strict=True)
        }

    def to_dict(self) -> dict[str, float]:
        # Not dataclasses.asdict: it deep-copies field by field, slow for a year of buckets.
        return {name: getattr(self, name) for name in LEDGER_COLUMNS}
