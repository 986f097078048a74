"""Run a line of the plant model: fast (``simulate``) or stepped (``LineSimulation.advance_to``).

``simulate(plant, config, seed=, start=, duration=)`` runs the whole window as fast as it can and
returns the ``GroundTruth``. ``LineSimulation`` is the same engine driven in steps for a real-time
front-end: ``advance_to(t)`` returns the state intervals that began and the parts finished since the
previous call, and ``current_states(t)`` what every machine is doing at ``t``. Both give identical
records for the same seed: the engine only ever looks at production time, never at the wall clock.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from andon.events import STATE_BY_CODE, STATE_CODES, MachineState
from andon.plant import PlantModel
from simulator.clock import ProductionClock
from simulator.config import SimulationConfig
from simulator.engine import LineEngine
from simulator.telemetry import (
    CHANNEL_UNITS,
    SENSOR_FAULT_KINDS,
    MachineSignals,
    generate_machine,
    warning_events,
)
from simulator.truth import GroundTruth, normalize

UTC = dt.UTC
NS = 1_000_000_000
IDLE = STATE_CODES[MachineState.IDLE]
PLANNED = STATE_CODES[MachineState.PLANNED_STOP]
RUNNING = STATE_CODES[MachineState.RUNNING]
STARVED = STATE_CODES[MachineState.STARVED]
BLOCKED = STATE_CODES[MachineState.BLOCKED]
SETUP = STATE_CODES[MachineState.SETUP]
STATE_NAMES = {code: state.value for code, state in STATE_BY_CODE.items()}


def parse_duration(text: str) -> dt.timedelta:
    """'90m', '12h', '30d', '45s', '2w' (or a plain number of seconds) -> timedelta."""
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"bad duration {text!r}; use a number with s, m, h, d or w (90m, 12h, 30d)") from None
    if not value > 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return dt.timedelta(seconds=value)


def _pick_line(plant: PlantModel, line_id: str | None) -> str:
    if line_id is not None:
        plant.line(line_id)
        return line_id
    lines = [ln.id for s in plant.sites for ln in s.lines]
    if not lines:
        raise ValueError("the plant model has no line")
    return lines[0]


@dataclass
class _MachineFrame:
    """States of one machine as int64 ns arrays (start, end) plus codes, merged and contiguous."""

    start: np.ndarray
    end: np.ndarray
    state: np.ndarray
    cause: np.ndarray  # engine cause index, -1 none; calendar causes are -2 - calendar label index


class LineSimulation:
    """A line of the plant model, simulated from `start` on, advanced in steps or all at once."""

    def __init__(
        self,
        plant: PlantModel,
        config: SimulationConfig | None = None,
        *,
        seed: int,
        start: dt.datetime,
        line_id: str | None = None,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("start must carry a time zone")
        self.plant = plant
        self.config = config or SimulationConfig()
        self.seed = int(seed)
        self.line_id = _pick_line(plant, line_id)
        self.site = plant.site_of_line(self.line_id)
        self.start = start.astimezone(UTC)
        self.clock = ProductionClock(self.site.calendar, self.site.timezone, self.start)
        self.engine = LineEngine(plant, self.line_id, self.config, self.seed, self.clock)
        self.machines = [m.id for m in plant.line(self.line_id).machines_in_order]
        self._emitted_iv = [0] * len(self.machines)
        self._emitted_parts = [0] * len(self.machines)
        self._emitted_failures = 0
        self._stepped_to = 0.0
        self._seg_starts: list[float] = []

    # --- stepping -----------------------------------------------------------------------------------
    def _wall_s(self, t: dt.datetime) -> float:
        if t.tzinfo is None:
            raise ValueError("time must carry a time zone")
        return (t.astimezone(UTC) - self.start).total_seconds()

    def advance_to(self, t: dt.datetime) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Run the engine to wall time `t`; return (new state intervals, new parts, new failures).

        States are engine states (running, starved, blocked, setup, unplanned_stop) that began since the
        previous call; calendar states (idle, planned_stop) are not repeated here -- ask
        ``current_states``. Parts are those completed before `t`, failures those begun before `t`.
        """
        wall = self._wall_s(t)
        if wall < self._stepped_to:
            raise ValueError("cannot step backwards")
        self.clock.extend_to_wall(wall + 86400.0)
        tau = self.clock.to_tau(wall)
        self.engine.run_until(tau)
        rows_s, rows_p = [], []
        for i, st in enumerate(self.engine.stations):
            rec = st.rec
            k0 = self._emitted_iv[i]
            a = np.asarray(rec.iv_a[k0:])
            k1 = k0 + int(np.searchsorted(a, tau, side="left")) if a.size else k0
            if k1 > k0:
                rows_s.append(self._engine_states(i, k0, k1))
            self._emitted_iv[i] = k1
            p0 = self._emitted_parts[i]
            done = np.asarray(rec.part_done[p0:])
            p1 = p0 + int(np.searchsorted(done, tau, side="right")) if done.size else p0
            if p1 > p0:
                rows_p.append(self._parts(i, p0, p1, horizon_wall=wall))
            self._emitted_parts[i] = p1
        f0 = self._emitted_failures
        f1 = f0
        while f1 < len(self.engine.failures) and self.engine.failures[f1].tau < tau:
            f1 += 1
        failures = self._failures(f0, f1, wall)
        self._emitted_failures = f1
        self._stepped_to = wall
        states = pd.concat(rows_s, ignore_index=True) if rows_s else _empty_states()
        parts = pd.concat(rows_p, ignore_index=True) if rows_p else _empty_parts()
        states = states.sort_values(["start", "machine_id"], ignore_index=True)
        return normalize(states), normalize(parts), normalize(failures)

    def current_states(self, t: dt.datetime) -> dict[str, tuple[MachineState, str | None, str | None]]:
        """What each machine is doing at `t` (state, reason_code, fault_code); run the engine first."""
        wall = self._wall_s(t)
        self.clock.extend_to_wall(wall + 86400.0)
        k = bisect_right(self._segment_starts(), wall) - 1
        seg = self.clock.segments[k] if k >= 0 and wall < self.clock.segments[k].end_s else None
        out: dict[str, tuple[MachineState, str | None, str | None]] = {}
        if seg is not None and seg.kind != "production":
            state = MachineState.PLANNED_STOP if seg.kind == "planned_stop" else MachineState.IDLE
            reason = self._calendar_reason(seg.label) if seg.kind == "planned_stop" else None
            return {m: (state, reason, None) for m in self.machines}
        tau = self.clock.to_tau(wall)
        self.engine.run_until(tau)
        for i, st in enumerate(self.engine.stations):
            rec = st.rec
            k = bisect_right(rec.iv_a, tau) - 1
            if k >= 0 and rec.iv_b[k] > tau:
                c = rec.iv_cause[k]
                cause = self.engine.causes[c] if c >= 0 else None
                out[self.machines[i]] = (
                    STATE_BY_CODE[rec.iv_state[k]],
                    cause.reason_code if cause else None,
                    cause.fault_code if cause else None,
                )
            else:
                open_state = self.engine.open_state(i)
                code = open_state[0] if open_state else STARVED
                out[self.machines[i]] = (STATE_BY_CODE[code], None, None)
        return out

    def _segment_starts(self) -> list[float]:
        if len(self._seg_starts) != len(self.clock.segments):
            self._seg_starts = [seg.start_s for seg in self.clock.segments]
        return self._seg_starts

    # --- record conversion ------------------------------------------------------------------------
    def _calendar_reason(self, label: str) -> str | None:
        for exc in self.site.calendar.exceptions:
            if exc.kind == "planned_stop" and label in (exc.name, exc.reason, exc.kind):
                return exc.reason
        return None

    def _engine_states(self, i: int, k0: int, k1: int) -> pd.DataFrame:
        rec = self.engine.stations[i].rec
        a = np.asarray(rec.iv_a[k0:k1])
        b = np.asarray(rec.iv_b[k0:k1])
        owner, wa, wb = self.clock.split(a, b)
        state = np.asarray(rec.iv_state[k0:k1])[owner]
        cause = np.asarray(rec.iv_cause[k0:k1])[owner]
        return self._state_frame(i, _ns(wa), _ns(wb), state, cause)

    def _state_frame(self, i: int, start: np.ndarray, end: np.ndarray, state: np.ndarray,
                     cause: np.ndarray) -> pd.DataFrame:
        causes = self.engine.causes
        labels = self._calendar_labels
        reason = np.empty(cause.size, dtype=object)
        fault = np.empty(cause.size, dtype=object)
        small = np.zeros(cause.size, dtype=bool)
        fid = np.full(cause.size, -1, dtype=np.int64)
        for c in np.unique(cause):
            sel = cause == c
            if c >= 0:
                cz = causes[c]
                reason[sel], fault[sel], small[sel], fid[sel] = (cz.reason_code, cz.fault_code, cz.small_stop,
                                                                 cz.failure_id)
            elif c <= -2:
                reason[sel] = self._calendar_reason(labels[-2 - c])
        return pd.DataFrame({
            "machine_id": self.machines[i],
            "start": pd.to_datetime(self.start) + pd.to_timedelta(start, unit="ns"),
            "end": pd.to_datetime(self.start) + pd.to_timedelta(end, unit="ns"),
            "state": [STATE_NAMES[int(s)] for s in state] if state.size < 64 else
            pd.Series(state).map(STATE_NAMES).to_numpy(dtype=object),
            "reason_code": reason,
            "fault_code": fault,
            "small_stop": small,
            "failure_id": fid,
        })

    @property
    def _calendar_labels(self) -> list[str]:
        return [s.label for s in self.clock.segments]

    def _parts(self, i: int, p0: int, p1: int, horizon_wall: float) -> pd.DataFrame:
        st = self.engine.stations[i]
        rec = st.rec
        done = self.clock.to_wall(np.asarray(rec.part_done[p0:p1]), at_end=True)
        keep = done < horizon_wall
        product_idx = np.asarray(rec.part_product[p0:p1], dtype=np.int64)[keep]
        names = np.asarray(self.engine.products, dtype=object)
        ict = np.asarray([st.ict[p] for p in self.engine.products])
        reject = np.asarray(rec.part_reject[p0:p1], dtype=bool)[keep]
        startup = np.asarray(rec.part_startup[p0:p1], dtype=bool)[keep]
        reason = np.where(reject, np.where(startup, "startup-scrap", "scrap"), None)
        return pd.DataFrame({
            "part_id": np.asarray(rec.part_id[p0:p1], dtype=np.int64)[keep],
            "machine_id": self.machines[i],
            "ts": pd.to_datetime(self.start) + pd.to_timedelta(_ns(done[keep]), unit="ns"),
            "product": names[product_idx],
            "good": ~reject,
            "reject": reject,
            "startup": startup,
            "reason_code": reason,
            "cycle_s": np.asarray(rec.part_cycle[p0:p1])[keep],
            "ideal_cycle_s": ict[product_idx],
        })

    def _failures(self, f0: int, f1: int, horizon_wall: float) -> pd.DataFrame:
        rows = self.engine.failures[f0:f1]
        if not rows:
            return _empty_failures()
        tau = np.asarray([r.tau for r in rows])
        rep = np.asarray([r.repair_s for r in rows])
        ts = self.clock.to_wall(tau, at_end=False)
        end = self.clock.to_wall(tau + rep, at_end=True)
        onset = np.full(len(rows), np.nan)
        for k, r in enumerate(rows):
            if r.onset_fc is not None:
                onset[k] = self._fc_to_wall(r.machine, r.onset_fc)
        base = pd.to_datetime(self.start)
        frame = pd.DataFrame({
            "failure_id": [r.failure_id for r in rows],
            "machine_id": [self.machines[r.machine] for r in rows],
            "ts": base + pd.to_timedelta(_ns(ts), unit="ns"),
            "repair_end": base + pd.to_timedelta(_ns(end), unit="ns"),
            "repair_s": rep,
            "fault_code": [r.fault_code for r in rows],
            "reason_code": [r.reason_code for r in rows],
            "mode": [r.mode for r in rows],
            "degradation_onset": base + pd.to_timedelta(np.where(np.isnan(onset), np.nan, onset), unit="s"),
        })
        return frame[ts < horizon_wall].reset_index(drop=True)

    # --- failure clock ------------------------------------------------------------------------------
    def _clock_pieces(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Production-time pieces during which machine i's failure clock runs (start, end)."""
        st = self.engine.stations[i]
        rec = st.rec
        state = np.asarray(rec.iv_state)
        a = np.asarray(rec.iv_a)
        b = np.asarray(rec.iv_b)
        runs = state == RUNNING
        if st.scheduled:
            runs |= (state == STARVED) | (state == BLOCKED) | (state == SETUP)
        order = np.argsort(a[runs], kind="stable")
        return a[runs][order], b[runs][order]

    def _fc_to_tau(self, i: int, fc: np.ndarray) -> np.ndarray:
        a, b = self._clock_pieces(i)
        cum = np.concatenate([[0.0], np.cumsum(b - a)])
        j = np.clip(np.searchsorted(cum, fc, side="right") - 1, 0, max(a.size - 1, 0))
        if a.size == 0:
            return fc.copy()
        return a[j] + (fc - cum[j])

    def _fc_to_wall(self, i: int, fc: float) -> float:
        return float(self.clock.to_wall(self._fc_to_tau(i, np.asarray([fc])), at_end=False)[0])

    def _fc_at_tau(self, i: int, tau: np.ndarray) -> np.ndarray:
        a, b = self._clock_pieces(i)
        if a.size == 0:
            return np.zeros_like(tau)
        cum = np.concatenate([[0.0], np.cumsum(b - a)])
        j = np.searchsorted(a, tau, side="right") - 1
        jc = np.clip(j, 0, a.size - 1)
        fc = cum[jc] + np.clip(tau - a[jc], 0.0, b[jc] - a[jc])
        return np.where(j < 0, 0.0, fc)

    def health_at(self, i: int, wall_s: np.ndarray) -> np.ndarray:
        """Latent health of machine i at wall times (1 for machines without wear)."""
        st = self.engine.stations[i]
        if st.wear is None:
            return np.ones_like(wall_s, dtype=np.float64)
        tau = self.clock.to_tau_array(wall_s)
        fc = self._fc_at_tau(i, tau)
        lives = st.wear.lives
        repaired = np.asarray([life.repaired_at_tau for life in lives])
        # A life lasts until its failure is repaired: during the repair the machine is at health 0.
        which = np.searchsorted(repaired, tau, side="right")
        which = np.clip(which, 0, len(lives) - 1)
        out = np.empty_like(fc)
        for k in np.unique(which):
            sel = which == k
            life = lives[k]
            out[sel] = np.interp(np.maximum(fc[sel], life.grid_fc[0]), life.grid_fc, life.grid_h)
        return out

    # --- the whole run ------------------------------------------------------------------------------
    def truth(self, end: dt.datetime, *, telemetry: bool = True) -> GroundTruth:
        """Run to `end` and build the complete ground truth of [start, end)."""
        horizon = self._wall_s(end)
        if horizon <= 0:
            raise ValueError("end must be after start")
        self.clock.extend_to_wall(horizon + 86400.0)
        tau_end = self.clock.to_tau(horizon)
        self.engine.run_until(tau_end)
        frames = [self._machine_states(i, tau_end, horizon) for i in range(len(self.machines))]
        states = pd.concat(frames, ignore_index=True)
        parts = pd.concat([self._parts(i, 0, len(st.rec.part_done), horizon)
                           for i, st in enumerate(self.engine.stations)], ignore_index=True)
        failures = self._failures(0, len(self.engine.failures), horizon)
        calendar = self._calendar_frame(horizon)
        health, warnings, tele, faults = self._signals(states, parts, horizon, telemetry)
        settings = self.plant.settings
        meta = {
            "seed": self.seed,
            "start": self.start.isoformat(),
            "end": end.astimezone(UTC).isoformat(),
            "line_id": self.line_id,
            "site_id": self.site.id,
            "timezone": self.site.timezone,
            "machines": self.machines,
            "products": [p for p in self.engine.products if p is not None],
            "planned_stops_count_against_availability": settings.planned_stops_count_against_availability,
            "small_stop_threshold_s": settings.small_stop_threshold_s,
            "startup_window_s": settings.startup_window_s,
            "blocking": "after_service",
            "failure_clock": {m: self.config.for_machine(m).failures.clock for m in self.machines},
            "source_id": "sim",
        }
        return GroundTruth(states=normalize(states), parts=normalize(parts), failures=normalize(failures),
                           health=normalize(health), warnings=normalize(warnings), telemetry=tele,
                           sensor_faults=normalize(faults), calendar=normalize(calendar), meta=meta)

    def _machine_states(self, i: int, tau_end: float, horizon: float) -> pd.DataFrame:
        rec = self.engine.stations[i].rec
        a = np.asarray(rec.iv_a)
        b = np.asarray(rec.iv_b)
        state = np.asarray(rec.iv_state, dtype=np.int64)
        cause = np.asarray(rec.iv_cause, dtype=np.int64)
        open_state = self.engine.open_state(i)
        covered = float(b.max()) if b.size else 0.0
        if open_state is not None and open_state[1] < tau_end and covered < tau_end:
            a = np.append(a, max(open_state[1], covered))
            b = np.append(b, tau_end)
            state = np.append(state, open_state[0])
            cause = np.append(cause, -1)
        keep = a < tau_end
        a, b, state, cause = a[keep], np.minimum(b[keep], tau_end), state[keep], cause[keep]
        owner, wa, wb = self.clock.split(a, b)
        cal = [(k, s) for k, s in enumerate(self.clock.segments) if s.kind != "production" and s.start_s < horizon]
        ca = np.asarray([s.start_s for _, s in cal])
        cb = np.asarray([min(s.end_s, horizon) for _, s in cal])
        cs = np.asarray([PLANNED if s.kind == "planned_stop" else IDLE for _, s in cal], dtype=np.int64)
        cc = np.asarray([-2 - k for k, _ in cal], dtype=np.int64)
        start = np.concatenate([_ns(wa), _ns(ca)])
        stop = np.concatenate([_ns(np.minimum(wb, horizon)), _ns(cb)])
        st = np.concatenate([state[owner], cs])
        cz = np.concatenate([cause[owner], cc])
        order = np.argsort(start, kind="stable")
        start, stop, st, cz = start[order], stop[order], st[order], cz[order]
        keep = stop > start
        start, stop, st, cz = start[keep], stop[keep], st[keep], cz[keep]
        # Merge neighbours that are the same state for the same cause (one running spell, not one per part).
        new = np.ones(start.size, dtype=bool)
        new[1:] = (st[1:] != st[:-1]) | (cz[1:] != cz[:-1]) | (start[1:] != stop[:-1])
        first = np.flatnonzero(new)
        last = np.append(first[1:], start.size) - 1
        return self._state_frame(i, start[first], stop[last], st[first], cz[first])

    def _calendar_frame(self, horizon: float) -> pd.DataFrame:
        segs = [s for s in self.clock.segments if s.start_s < horizon]
        base = pd.to_datetime(self.start)
        return pd.DataFrame({
            "start": base + pd.to_timedelta(_ns(np.asarray([s.start_s for s in segs])), unit="ns"),
            "end": base + pd.to_timedelta(_ns(np.asarray([min(s.end_s, horizon) for s in segs])), unit="ns"),
            "kind": [s.kind for s in segs],
            "label": [s.label for s in segs],
        })

    def _signals(self, states: pd.DataFrame, parts: pd.DataFrame, horizon: float, with_telemetry: bool
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        base = pd.to_datetime(self.start)
        rngs = [np.random.default_rng(s) for s in self.engine.telemetry_seed.spawn(len(self.machines))]
        tz = ZoneInfo(self.site.timezone)
        local = self.start.astimezone(tz)
        hour0 = local.hour + local.minute / 60 + local.second / 3600
        h_rows, w_rows = [], []
        t_mid, t_metric, t_ts, t_true, t_val, t_fault = [], [], [], [], [], []
        f_rows = []
        names = list(CHANNEL_UNITS)
        s0 = states["start"].astype("int64").to_numpy()
        for i, mid in enumerate(self.machines):
            cfg = self.config.for_machine(mid).telemetry
            rng = rngs[i]
            grid = np.arange(0.0, horizon, cfg.health_interval_s)
            h = self.health_at(i, grid)
            h_rows.append(pd.DataFrame({"machine_id": mid, "ts": base + pd.to_timedelta(_ns(grid), unit="ns"),
                                        "health": h}))
            sel = (states["machine_id"] == mid).to_numpy()
            starts = (s0[sel] - base.value) / NS
            running = (states["state"].to_numpy()[sel] == MachineState.RUNNING.value)
            # Warnings need running seconds per grid step: the failure/wear clock's pace.
            tau = self.clock.to_tau_array(np.append(grid, horizon))
            run_fc = self._running_at_tau(i, tau)
            hits, codes = warning_events(np.diff(run_fc), h, cfg, rng)
            w_rows.append(pd.DataFrame({
                "machine_id": mid,
                "ts": base + pd.to_timedelta(_ns(grid[hits] + rng.uniform(0, cfg.health_interval_s, hits.size)),
                                             unit="ns"),
                "code": np.asarray(cfg.warnings.codes, dtype=object)[codes],
                "health": h[hits],
            }))
            if not with_telemetry or not cfg.enabled:
                continue
            psel = (parts["machine_id"] == mid).to_numpy()
            pdone = (parts["ts"].astype("int64").to_numpy()[psel] - base.value) / NS
            products = list(self.engine.products)
            prod_idx = pd.Categorical(parts["product"].to_numpy()[psel], categories=[
                p for p in products if p is not None]).codes if products != [None] else np.zeros(psel.sum(), int)
            factors = np.asarray([cfg.product_factors.get(p, 1.0) if p else 1.0 for p in products])
            sig = MachineSignals(
                state_start=starts,
                running=running,
                part_done=pdone,
                part_cycle=parts["cycle_s"].to_numpy()[psel],
                part_product=np.asarray(prod_idx, dtype=np.int64).clip(0),
                ideal_cycle_s=self.engine.stations[i].ict[products[0]],
                product_factors=factors,
                health=lambda w, i=i: self.health_at(i, w),
            )
            blocks, episodes = generate_machine(sig, cfg, horizon, hour0, rng)
            for blk in blocks:
                n = blk.ts.size
                t_mid.append(np.full(n, i, dtype=np.int16))
                t_metric.append(np.full(n, names.index(blk.channel), dtype=np.int8))
                t_ts.append(blk.ts)
                t_true.append(blk.true_ts)
                t_val.append(blk.value)
                t_fault.append(blk.fault)
            for ep in episodes:
                f_rows.append((mid, ep.channel, ep.kind, ep.start_s, ep.end_s, ep.offset_s))
        health = pd.concat(h_rows, ignore_index=True)
        warnings = pd.concat(w_rows, ignore_index=True).sort_values(["machine_id", "ts"], ignore_index=True)
        if t_ts:
            metric_codes = np.concatenate(t_metric)
            telemetry = pd.DataFrame({
                "machine_id": pd.Categorical.from_codes(np.concatenate(t_mid), categories=self.machines),
                "ts": base + pd.to_timedelta(_ns(np.concatenate(t_ts)), unit="ns"),
                "true_ts": base + pd.to_timedelta(_ns(np.concatenate(t_true)), unit="ns"),
                "metric": pd.Categorical.from_codes(metric_codes, categories=names),
                "value": np.concatenate(t_val),
                "unit": pd.Categorical.from_codes(metric_codes, categories=[CHANNEL_UNITS[c] for c in names]),
                "sensor_fault": pd.Categorical.from_codes(np.concatenate(t_fault), categories=SENSOR_FAULT_KINDS),
            })
        else:
            telemetry = _empty_telemetry()
        faults = pd.DataFrame(f_rows, columns=["machine_id", "metric", "kind", "start_s", "end_s", "offset_s"])
        faults = pd.DataFrame({
            "machine_id": faults["machine_id"].astype(object),
            "metric": faults["metric"].astype(object),
            "kind": faults["kind"].astype(object),
            "start": base + pd.to_timedelta(_ns(faults["start_s"].to_numpy(dtype=float)), unit="ns"),
            "end": base + pd.to_timedelta(_ns(faults["end_s"].to_numpy(dtype=float)), unit="ns"),
            "offset_s": faults["offset_s"].to_numpy(dtype=float),
        })
        return health, warnings, telemetry, faults

    def _running_at_tau(self, i: int, tau: np.ndarray) -> np.ndarray:
        """Running seconds of machine i up to each production time."""
        rec = self.engine.stations[i].rec
        state = np.asarray(rec.iv_state)
        a = np.asarray(rec.iv_a)[state == RUNNING]
        b = np.asarray(rec.iv_b)[state == RUNNING]
        if a.size == 0:
            return np.zeros_like(tau)
        cum = np.concatenate([[0.0], np.cumsum(b - a)])
        j = np.searchsorted(a, tau, side="right") - 1
        jc = np.clip(j, 0, a.size - 1)
        return np.where(j < 0, 0.0, cum[jc] + np.clip(tau - a[jc], 0.0, b[jc] - a[jc]))


def _ns(seconds: np.ndarray) -> np.ndarray:
    # Microseconds: what datetime and the database keep, so events and stored rows equal the truth.
    return np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64) * 1000


def _empty_states() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
        ("machine_id", object), ("start", "datetime64[ns, UTC]"), ("end", "datetime64[ns, UTC]"),
        ("state", object), ("reason_code", object), ("fault_code", object), ("small_stop", bool),
        ("failure_id", "int64")]})


def _empty_parts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
        ("part_id", "int64"), ("machine_id", object), ("ts", "datetime64[ns, UTC]"), ("product", object),
        ("good", bool), ("reject", bool), ("startup", bool), ("reason_code", object), ("cycle_s", float),
        ("ideal_cycle_s", float)]})


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
        ("failure_id", "int64"), ("machine_id", object), ("ts", "datetime64[ns, UTC]"),
        ("repair_end", "datetime64[ns, UTC]"), ("repair_s", float), ("fault_code", object),
        ("reason_code", object), ("mode", object), ("degradation_onset", "datetime64[ns, UTC]")]})


def _empty_telemetry() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
        ("machine_id", object), ("ts", "datetime64[ns, UTC]"), ("true_ts", "datetime64[ns, UTC]"),
        ("metric", object), ("value", float), ("unit", object), ("sensor_fault", object)]})


def simulate(
    plant: PlantModel,
    config: SimulationConfig | None = None,
    *,
    seed: int,
    start: dt.datetime,
    duration: dt.timedelta,
    line_id: str | None = None,
    telemetry: bool = True,
) -> GroundTruth:
    """Fast mode: simulate [start, start + duration) of one line and return its ground truth."""
    sim = LineSimulation(plant, config, seed=seed, start=start, line_id=line_id)
    return sim.truth(start + duration, telemetry=telemetry)
