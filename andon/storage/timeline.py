"""Pure helpers that turn raw events into per-period sums: the one computation behind both the stored
rollups and the live edges of a query, so a figure never depends on which of the two produced it.

Periods are the site's local hours cut at every calendar boundary (shift start/end, break, planned stop,
no-order exception). Any window aligned to hours, shifts or local days is a union of whole periods, so
it sums exactly; a window edge inside a period is handled by computing the partial period the same way.

The state timeline of a machine is piecewise constant: each state holds until the next state event.
Data older than the machine's horizon (last data seen + heartbeat timeout) is trusted; after it the
machine is "no data" (offline), never running or stopped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from andon.calendar import Segment, expand
from andon.events import STATE_CODES, MachineState
from andon.plant import Calendar, fault_reason

UTC = dt.UTC
N_STATES = len(STATE_CODES)
STATE_COLUMNS = [f"s_{s.value}" for s in MachineState]  # index i <-> state code i + 1
OFFLINE = STATE_CODES[MachineState.OFFLINE]
RUNNING = STATE_CODES[MachineState.RUNNING]
# A transition into running from one of these starts the startup window (startup rejects).
STARTUP_FROM = {STATE_CODES[s] for s in (MachineState.SETUP, MachineState.PLANNED_STOP, MachineState.IDLE,
                                           MachineState.OFFLINE)}


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.datetime
    end: dt.datetime
    calendar_kind: str
    shift_key: str | None


def local_hour_marks(tz: ZoneInfo, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """UTC instants strictly inside (start, end) where the local clock shows a whole hour."""
    out = []
    t = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    # Local whole hours fall at a fixed minute offset within each UTC hour (0, 30 or 45 for odd zones),
    # which can change only at a DST transition: test every quarter hour of UTC.
    while t < end:
        for q in (0, 15, 30, 45):
            u = t + dt.timedelta(minutes=q)
            if start < u < end:
                loc = u.astimezone(tz)
                if loc.minute == 0 and loc.second == 0:
                    out.append(u)
        t += dt.timedelta(hours=1)
    return out


def period_grid(calendar: Calendar, tz: ZoneInfo | str, start: dt.datetime, end: dt.datetime) -> list[Period]:
    if isinstance(tz, str):
        tz = ZoneInfo(tz)
    segments: list[Segment] = expand(calendar, tz, start, end)
    hours = local_hour_marks(tz, start, end)
    out: list[Period] = []
    hi = 0
    for seg in segments:
        while hi < len(hours) and hours[hi] <= seg.start:
            hi += 1
        a = seg.start
        while hi < len(hours) and hours[hi] < seg.end:
            out.append(Period(a, hours[hi], seg.kind, seg.shift_key))
            a = hours[hi]
            hi += 1
        out.append(Period(a, seg.end, seg.kind, seg.shift_key))
    return out


def _secs(t: dt.datetime, base: dt.datetime) -> float:
    return (t - base).total_seconds()


def integrate(
    periods: list[Period],
    state_ts: list[dt.datetime],
    state_codes: list[int],
    initial_state: int | None,
    horizon: dt.datetime | None,
    count_ts: list[dt.datetime],
    count_total: list[int],
    count_reject: list[int],
    count_ideal: list[float],
    startup_window_s: float = 0.0,
    startup_since: dt.datetime | None = None,
) -> np.ndarray:
    """Per-period sums. Returns an array [n_periods, N_STATES + 4]: seconds per state code (1..8), then
    total count, reject count, startup rejects and ideal time.

    state_ts/state_codes: state events inside (periods[0].start, periods[-1].end), sorted by time.
    initial_state: the state holding at periods[0].start (None: no data yet, offline).
    horizon: data after this instant is unknown (offline); None means no limit.
    startup_since: the time the running interval holding at the window start began after a startup
    transition, if any (so a window edge inside a startup window still classifies rejects correctly).
    """
    n = len(periods)
    out = np.zeros((n, N_STATES + 4))
    if n == 0:
        return out
    base = periods[0].start
    w_end = _secs(periods[-1].end, base)
    # Timeline breakpoints and the state holding from each breakpoint to the next.
    bp = [0.0]
    st = [initial_state if initial_state is not None else OFFLINE]
    # (t - base).total_seconds() inline in the per-event loops: the same float as _secs, without a call
    # per event.
    for t, code in zip(state_ts, state_codes, strict=True):
        x = (t - base).total_seconds()
        if x <= 0.0:
            st[-1] = code
            continue
        if x >= w_end:
            break
        if x == bp[-1]:
            st[-1] = code
        else:
            bp.append(x)
            st.append(code)
    if horizon is not None:
        h = _secs(horizon, base)
        if h < w_end:
            # Everything from the horizon on is "no data".
            keep = [i for i, x in enumerate(bp) if x < h] or [0]
            bp = [bp[i] for i in keep]
            st = [st[i] for i in keep]
            if h <= 0:
                st = [OFFLINE]
                bp = [0.0]
            else:
                bp.append(h)
                st.append(OFFLINE)
    bp_arr = np.array([*bp, w_end])
    st_arr = np.array(st)
    durations = np.diff(bp_arr)
    p_start = np.array([_secs(p.start, base) for p in periods])
    p_end = np.array([_secs(p.end, base) for p in periods])
    for code in range(1, N_STATES + 1):
        mask = st_arr == code
        if not mask.any():
            continue
        cum = np.concatenate([[0.0], np.cumsum(durations * mask)])
        out[:, code - 1] = np.interp(p_end, bp_arr, cum) - np.interp(p_start, bp_arr, cum)
    if count_ts:
        ct = np.array([(t - base).total_seconds() for t in count_ts])
        # A count belongs to the period containing its timestamp: [start, end).
        idx = np.searchsorted(p_end, ct, side="right")
        ok = (idx < n) & (ct >= 0)
        if ok.any():
            np.add.at(out[:, N_STATES], idx[ok], np.asarray(count_total)[ok])
            np.add.at(out[:, N_STATES + 1], idx[ok], np.asarray(count_reject)[ok])
            np.add.at(out[:, N_STATES + 3], idx[ok], np.asarray(count_ideal)[ok])
            if startup_window_s > 0:
                # Startup windows: after each transition into running from setup/planned/idle/offline.
                starts = [
                    bp_arr[i] for i in range(1, len(st)) if st[i] == RUNNING and st[i - 1] in STARTUP_FROM
                ]
                if startup_since is not None:
                    starts.insert(0, _secs(startup_since, base))
                if starts:
                    s_arr = np.array(sorted(starts))
                    j = np.searchsorted(s_arr, ct, side="right") - 1
                    in_startup = (j >= 0) & (ct - s_arr[np.clip(j, 0, None)] < startup_window_s)
                    sel = ok & in_startup
                    np.add.at(out[:, N_STATES + 2], idx[sel], np.asarray(count_reject)[sel])
    return out


@dataclass(frozen=True, slots=True)
class Stop:
    start: dt.datetime
    end: dt.datetime | None
    state: int
    fault_code: str | None
    reason_code: str | None


STOP_CODES = {STATE_CODES[s] for s in (MachineState.IDLE, MachineState.PLANNED_STOP, MachineState.SETUP,
                                        MachineState.UNPLANNED_STOP)}


def derive_stops(
    state_ts: list[dt.datetime],
    state_codes: list[int],
    fault_codes: list[str | None],
    reason_codes: list[str | None],
    horizon: dt.datetime | None,
    splits: list[dt.datetime] | None = None,
) -> list[Stop]:
    """Maximal runs of one stop state (idle, planned stop, setup, unplanned stop). Repeated events of the
    same state extend the stop and keep the first-out fault code; a stop still going on at the horizon
    ends there if data stopped coming (the rest is "no data"), else stays open (end None). A manual split
    point inside a stop cuts it in two (a person said it had two causes)."""
    stops: list[Stop] = []
    cur: Stop | None = None
    for t, code, fault, reason in zip(state_ts, state_codes, fault_codes, reason_codes, strict=True):
        if cur is not None and code == cur.state:
            if cur.fault_code is None and fault:
                cur = Stop(cur.start, None, cur.state, fault, cur.reason_code or reason)
            continue
        if cur is not None:
            stops.append(Stop(cur.start, t, cur.state, cur.fault_code, cur.reason_code))
            cur = None
        if code in STOP_CODES:
            cur = Stop(t, None, code, fault, reason)
    if cur is not None:
        end = horizon if horizon is not None and horizon > cur.start else None
        stops.append(Stop(cur.start, end, cur.state, cur.fault_code, cur.reason_code))
    if not splits:
        return stops
    out: list[Stop] = []
    cuts = sorted(splits)
    for stop in stops:
        a = stop.start
        for c in cuts:
            if a < c and (stop.end is None or c < stop.end):
                out.append(Stop(a, c, stop.state, stop.fault_code, stop.reason_code))
                a = c
        out.append(Stop(a, stop.end, stop.state, stop.fault_code, stop.reason_code))
    return out


def map_fault(fault_map: dict[str, str], fault_code: str | None, reason_code: str | None,
              known_reasons: frozenset[str] | None = None) -> str | None:
    """The reason for a stop from what the PLC said: an explicit reason code of the plant's tree first,
    then the fault code through the machine's fault map. A reason code the tree does not know is
    ignored, not passed on."""
    if reason_code and (known_reasons is None or reason_code in known_reasons):
        return reason_code
    return fault_reason(fault_map, fault_code) if fault_code else None



STOP_CLASSES = ("planned", "small", "breakdown")
PLANNED_STATE_CODES = {STATE_CODES[MachineState.PLANNED_STOP], STATE_CODES[MachineState.SETUP]}


def stop_class(state: int, reason_planned: bool | None, duration_s: float, small_stop_threshold_s: float) -> int:
    """0 planned, 1 small stop, 2 breakdown. A stop is planned by its reason when it has one, else by its
    state (planned stop, setup); an unplanned stop is small when its FULL duration is below the threshold
    (so the class never depends on the query window)."""
    planned = reason_planned if reason_planned is not None else state in PLANNED_STATE_CODES
    if planned:
        return 0
    return 1 if duration_s < small_stop_threshold_s else 2


def integrate_spans(periods: list[Period], spans: list[tuple[dt.datetime, dt.datetime, int]], n_classes: int
                    ) -> np.ndarray:
    """Seconds of each class inside each period, for non-overlapping spans (start, end, class)."""
    out = np.zeros((len(periods), n_classes))
    if not periods or not spans:
        return out
    base = periods[0].start
    p_start = np.array([_secs(p.start, base) for p in periods])
    p_end = np.array([_secs(p.end, base) for p in periods])
    for k in range(n_classes):
        mine = sorted((_secs(a, base), _secs(b, base)) for a, b, c in spans if c == k and b > a)
        if not mine:
            continue
        s = np.array([a for a, _ in mine])
        e = np.array([b for _, b in mine])
        length = e - s
        cum = np.concatenate([[0.0], np.cumsum(length)])

        def covered(t: np.ndarray, s: np.ndarray = s, length: np.ndarray = length, cum: np.ndarray = cum
                    ) -> np.ndarray:
            j = np.searchsorted(s, t, side="right") - 1
            jj = np.clip(j, 0, None)
            part = np.clip(t - s[jj], 0.0, length[jj])
            return np.where(j >= 0, cum[jj] + part, 0.0)

        out[:, k] = covered(p_end) - covered(p_start)
    return out
