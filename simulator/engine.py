"""The detailed line engine: one run of a serial line with every cause recorded (production time).

Semantics (the rest of the team relies on these):

- Time is production time (see simulator.clock); outside production segments the line is frozen.
- Blocking after service: a machine that finishes a good part moves it into the buffer after it when
  there is room (capacity = plant ``buffer_after.capacity``, the downstream machine holds one more part
  in process); otherwise it keeps the part and is *blocked* until there is room. A machine waiting for a
  part is *starved*. The first machine always has raw material and the last is never blocked.
- A rejected part is removed at the machine that made it (it never enters the next buffer).
- Failure clock ``running`` (default): random failures and wear advance only with running time, so a
  starved, blocked or setting-up machine cannot fail; a failure interrupts the part in process, which
  resumes after the repair. ``scheduled``: the clock also runs while starved, blocked or in setup.
- Micro-stops are Poisson in running time; each is an ``unplanned_stop`` with fault code JAM (reason
  from the machine's fault_map), flagged ``small_stop``, and always shorter than the plant's
  small-stop threshold; failure repairs always last at least that threshold (and
  ``min_failure_duration_s``), so cause and duration agree on what is a small stop.
- Slow cycles are ``running`` time longer than ideal (performance loss, no state of their own).
- A product change at a machine starts a ``setup`` (reason changeover) before the first part of the new
  product.
- Startup parts: completed within ``startup_window_s`` of the machine restarting (start of a production
  run after a break or off-shift, end of a setup, end of a failure repair); they are rejected with the
  startup probability, other parts with the scrap probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from andon.events import STATE_CODES, MachineState
from andon.plant import Machine, PlantModel, fault_reason
from simulator.config import Degradation, MachineSim, SimulationConfig
from simulator.distributions import BlockDraws, UniformDraws

RUNNING = STATE_CODES[MachineState.RUNNING]
STARVED = STATE_CODES[MachineState.STARVED]
BLOCKED = STATE_CODES[MachineState.BLOCKED]
SETUP = STATE_CODES[MachineState.SETUP]
DOWN = STATE_CODES[MachineState.UNPLANNED_STOP]
INF = math.inf


@dataclass(frozen=True, slots=True)
class Cause:
    reason_code: str | None
    fault_code: str | None
    small_stop: bool = False
    failure_id: int = -1


def resolve_reason(machine: Machine, fault_code: str) -> str | None:
    """The plant fault_map's reason for a concrete code (the same rule the collectors apply)."""
    return fault_reason(machine.fault_map, fault_code)


def failure_codes(machine: Machine, micro_code: str) -> list[str]:
    """Concrete fault codes a machine can raise: each prefix pattern E1* gives E101..E103."""
    codes: list[str] = []
    for pattern in machine.fault_map:
        # Numeric patterns are aliases of the same faults for PLCs that report integer stop reasons
        # (OPC UA StopReason.ID): they add no new fault.
        if pattern == micro_code or pattern.rstrip("*").isdigit():
            continue
        if pattern.endswith("*"):
            codes.extend(f"{pattern[:-1]}0{k}" for k in (1, 2, 3))
        else:
            codes.append(pattern)
    return codes or ["FAULT"]


@dataclass
class Life:
    """One wear life of a machine on its failure clock: health 1 (or less after imperfect repair) until
    onset, then down to 0 at ``failure_fc``. ``grid_fc``/``grid_h`` describe the whole life."""

    start_fc: float
    onset_fc: float
    failure_fc: float
    grid_fc: np.ndarray
    grid_h: np.ndarray
    repaired_at_tau: float = INF  # production time at which this life's failure was repaired

    def health(self, fc: float) -> float:
        if fc <= self.onset_fc:
            return float(self.grid_h[0])
        return float(np.interp(fc, self.grid_fc, self.grid_h))


class Wear:
    def __init__(self, spec: Degradation, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.lives: list[Life] = []

    def new_life(self, start_fc: float, start_health: float, degrading: bool) -> Life:
        spec, rng = self.spec, self.rng
        onset = 0.0 if degrading else float(spec.onset.sample(rng, 1)[0])
        length = max(float(spec.duration.sample(rng, 1)[0]) * start_health, 60.0)
        o = start_fc + onset
        if spec.form == "exponential":
            u = np.linspace(0.0, 1.0, 65)
            a = spec.curvature
            h = start_health * (1.0 - np.expm1(a * u) / math.expm1(a))
            fc = o + u * length
        else:
            # Gamma process: independent gamma increments of damage; failure when damage reaches the
            # health there was. Mean damage rate start_health / length, total shape gamma_shape.
            steps = 256
            du = length / steps
            shape = spec.gamma_shape / steps
            scale = start_health / spec.gamma_shape
            dmg = np.cumsum(rng.gamma(shape, scale, steps))
            while dmg[-1] < start_health:
                dmg = np.concatenate([dmg, dmg[-1] + np.cumsum(rng.gamma(shape, scale, steps))])
            k = int(np.searchsorted(dmg, start_health))
            # Interpolate the crossing inside step k so the failure instant is not on the grid.
            prev = dmg[k - 1] if k else 0.0
            frac = (start_health - prev) / max(dmg[k] - prev, 1e-12)
            fc = o + np.concatenate([[0.0], (np.arange(1, k + 1)) * du, [(k + frac) * du]])
            h = start_health - np.concatenate([[0.0], dmg[:k], [start_health]])
            h = np.clip(h, 0.0, 1.0)
        grid_fc = np.concatenate([[start_fc], fc]) if onset > 0 else fc
        grid_h = np.concatenate([[start_health], h]) if onset > 0 else h
        life = Life(start_fc, o, float(fc[-1]), grid_fc, grid_h)
        self.lives.append(life)
        return life


@dataclass
class FailureRecord:
    failure_id: int
    machine: int
    tau: float  # production time of the failure
    repair_s: float  # production time the repair takes
    fault_code: str
    reason_code: str | None
    mode: str  # "random" | "degradation"
    onset_fc: float | None  # failure-clock value at wear onset (degradation failures)


@dataclass
class MachineRecords:
    """Raw records of one machine in production time, appended by the engine."""

    iv_a: list[float] = field(default_factory=list)
    iv_b: list[float] = field(default_factory=list)
    iv_state: list[int] = field(default_factory=list)
    iv_cause: list[int] = field(default_factory=list)  # index into LineEngine.causes, -1 none
    part_id: list[int] = field(default_factory=list)
    part_done: list[float] = field(default_factory=list)  # completion (production time)
    part_product: list[int] = field(default_factory=list)
    part_reject: list[bool] = field(default_factory=list)
    part_startup: list[bool] = field(default_factory=list)
    part_cycle: list[float] = field(default_factory=list)  # running seconds spent on the part


class _Station:
    """Mutable state of one machine in the engine."""

    def __init__(self, engine: LineEngine, idx: int, machine: Machine, sim: MachineSim,
                 rng: np.random.Generator) -> None:
        self.engine = engine
        self.idx = idx
        self.machine = machine
        self.sim = sim
        self.rng = rng
        self.rec = MachineRecords()
        plant = engine.plant
        self.ict = {p: machine.ideal_cycle_for(p) for p in engine.products}
        self.capacity: int | None = None
        self.fill = 0
        if machine.buffer_after is not None:
            self.capacity = machine.buffer_after.capacity
        # Inputs (machine > 0): arrival time, part id, product index.
        self.in_t: list[float] = []
        self.in_id: list[int] = []
        self.in_prod: list[int] = []
        self.dep: list[float] = []  # departure of each input (local index) from this machine
        self.next_in = 0
        self.free_at = 0.0
        self.pending: tuple[float, int] | None = None  # (finish time, good output index) while blocked
        self._pending_id = -1
        self._pending_prod = 0
        self.good_out = 0
        self.last_product: int | None = None
        self.restart_at = 0.0
        self.done = False
        # Clocks
        self.rho = 0.0  # running time
        self.fc = 0.0  # failure clock (== rho for the running clock)
        self.scheduled = sim.failures.clock == "scheduled"
        # Draws
        self.u = UniformDraws(rng)
        self.noise = BlockDraws(_Normal(), rng)
        self.changeover = BlockDraws(sim.changeover.duration, rng, 256)
        can_fail = not sim.never_fails
        self.random_failures = can_fail and sim.failures.enabled
        self.tbf = BlockDraws(sim.failures.time_between, rng, 256)
        self.ttr = BlockDraws(sim.failures.repair, rng, 256)
        self.min_repair = max(plant.settings.small_stop_threshold_s, plant.settings.min_failure_duration_s)
        self.next_random_fc = self.tbf.next() if self.random_failures else INF
        self.codes = sim.failures.fault_codes or failure_codes(machine, sim.micro_stops.code)
        micro_code = sim.micro_stops.code
        self.micro_cause = engine.cause(Cause(resolve_reason(machine, micro_code) or _reason_if(plant, "jam"),
                                              micro_code, small_stop=True))
        self.micro_max = min(sim.micro_stops.max_s, plant.settings.small_stop_threshold_s * 0.999)
        self.micro_min = min(sim.micro_stops.min_s, self.micro_max)
        self.wear: Wear | None = None
        self.life: Life | None = None
        if can_fail and sim.degradation.enabled:
            self.wear = Wear(sim.degradation, rng)
            self.life = self.wear.new_life(0.0, 1.0, degrading=False)
            self.wear_code = sim.degradation.fault_code or self.codes[0]
        self.next_micro_rho = self._micro_gap()
        self.setup_cause = engine.cause(Cause(_reason_if(plant, "changeover"), None))

    # --- draws ------------------------------------------------------------------------------------
    def health(self) -> float:
        return self.life.health(self.fc) if self.life is not None else 1.0

    def _micro_gap(self) -> float:
        ms = self.sim.micro_stops
        if ms.rate_per_h <= 0:
            return INF
        rate = ms.rate_per_h / 3600.0
        if self.life is not None:
            rate *= 1.0 + self.sim.degradation.micro_stop_gain * (1.0 - self.health())
        return self.rho - math.log(1.0 - self.u.next()) / rate

    def _next_failure_fc(self) -> tuple[float, bool]:
        wear_fc = self.life.failure_fc if self.life is not None else INF
        if wear_fc <= self.next_random_fc:
            return wear_fc, True
        return self.next_random_fc, False

    # --- recording --------------------------------------------------------------------------------
    def _iv(self, a: float, b: float, state: int, cause: int = -1) -> None:
        if b > a:
            r = self.rec
            r.iv_a.append(a)
            r.iv_b.append(b)
            r.iv_state.append(state)
            r.iv_cause.append(cause)

    def _fail(self, t: float, from_wear: bool) -> float:
        """A failure at production time t: record it, repair, renew; returns the repair end."""
        eng = self.engine
        repair = max(self.ttr.next(), self.min_repair)
        onset_fc: float | None = None
        if from_wear:
            assert self.life is not None and self.wear is not None
            code = self.wear_code
            onset_fc = self.life.onset_fc
        else:
            code = self.codes[int(self.u.next() * len(self.codes)) % len(self.codes)]
        reason = resolve_reason(self.machine, code)
        if reason is None:
            reason = _first_failure_reason(eng.plant)
        fid = len(eng.failures)
        eng.failures.append(FailureRecord(fid, self.idx, t, repair, code, reason,
                                          "degradation" if from_wear else "random", onset_fc))
        self._iv(t, t + repair, DOWN, eng.cause(Cause(reason, code, False, fid)))
        if from_wear:
            assert self.life is not None and self.wear is not None
            self.life.repaired_at_tau = t + repair
            spec = self.sim.degradation
            if spec.repair == "imperfect":
                self.life = self.wear.new_life(self.fc, spec.repair_effectiveness, degrading=True)
            else:
                self.life = self.wear.new_life(self.fc, 1.0, degrading=False)
        else:
            self.next_random_fc = self.fc + self.tbf.next()
        self.restart_at = t + repair
        return t + repair

    def work(self, t: float, amount: float, running: bool) -> float:
        """Do `amount` seconds of running (or setup) work from t; failures and jams interrupt it."""
        state = RUNNING if running else SETUP
        cause = -1 if running else self.setup_cause
        clock_runs = running or self.scheduled
        while True:
            nf, from_wear = self._next_failure_fc()
            dt_f = nf - self.fc if clock_runs else INF
            dt_m = self.next_micro_rho - self.rho if running else INF
            step = min(amount, dt_f, dt_m)
            self._iv(t, t + step, state, cause)
            t += step
            amount -= step
            if running:
                self.rho += step
            if clock_runs:
                self.fc += step
            if amount <= 0.0 and step < min(dt_f, dt_m):
                return t
            if dt_f <= dt_m:
                t = self._fail(t, from_wear)
            else:
                dur = self.micro_min + (self.micro_max - self.micro_min) * self.u.next()
                self._iv(t, t + dur, DOWN, self.micro_cause)
                t += dur
                self.next_micro_rho = self._micro_gap()
            if amount <= 0.0:
                return t

    def wait(self, t0: float, t1: float, state: int) -> float:
        """Starved or blocked from t0 to t1; with the scheduled clock the machine may fail meanwhile.
        Returns when the machine is ready to work again (after t1 if a repair outlasts the wait)."""
        if not self.scheduled:
            self._iv(t0, t1, state)
            return max(t0, t1)
        while t0 < t1:
            nf, from_wear = self._next_failure_fc()
            tf = t0 + (nf - self.fc)
            if tf >= t1:
                break
            self._iv(t0, tf, state)
            self.fc = nf
            t0 = self._fail(tf, from_wear)
        if t0 < t1:
            self._iv(t0, t1, state)
            self.fc += t1 - t0
        return max(t0, t1)

    # --- one part -------------------------------------------------------------------------------
    def process(self, arrival: float, part_id: int, product: int) -> tuple[float, bool]:
        """Process one part arriving at `arrival`; returns (finish time, rejected)."""
        eng = self.engine
        t = self.free_at
        if arrival > t:
            t = self.wait(t, arrival, STARVED)
        if self.last_product is not None and product != self.last_product:
            t = self.work(t, self.changeover.next(), running=False)
            self.restart_at = t
        self.last_product = product
        h = self.health()
        cycle = self.ict[eng.products[product]] * (1.0 + abs(self.noise.next()) * self.sim.cycle_noise_cv)
        slow = self.sim.slow_cycles
        if slow.probability > 0 and self.u.next() < slow.probability:
            cycle *= slow.factor_low + (slow.factor_high - slow.factor_low) * self.u.next()
        if self.life is not None:
            cycle *= 1.0 + self.sim.degradation.cycle_drift * (1.0 - h) ** 2
        rho0 = self.rho
        finish = self.work(t, cycle, running=True)
        since = max(self.restart_at, eng.clock.run_start_before(finish))
        startup = finish - since <= eng.plant.settings.startup_window_s
        q = self.sim.quality
        p_reject = q.startup_reject_probability if startup else q.scrap_probability
        reject = p_reject > 0 and self.u.next() < p_reject
        r = self.rec
        r.part_id.append(part_id)
        r.part_done.append(finish)
        r.part_product.append(product)
        r.part_reject.append(reject)
        r.part_startup.append(startup)
        r.part_cycle.append(self.rho - rho0)
        return finish, reject


class _Normal:
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal(n)


def _reason_if(plant: PlantModel, code: str) -> str | None:
    try:
        plant.reason(code)
    except KeyError:
        return None
    return code


def _first_failure_reason(plant: PlantModel) -> str | None:
    for cat in plant.reasons:
        for r in cat.reasons:
            if r.failure:
                return r.code
    return None


class LineEngine:
    """A serial line of the plant model, advanced in production time with ``run_until(tau)``."""

    def __init__(self, plant: PlantModel, line_id: str, config: SimulationConfig, seed: int, clock) -> None:
        self.plant = plant
        self.line = plant.line(line_id)
        self.config = config
        self.clock = clock
        machines = self.line.machines_in_order
        mix = config.line.product_mix
        products: list[str | None] = list(mix) if mix else [None]
        self.products = products
        self.mix_p = np.asarray([mix[p] for p in mix], dtype=float) / sum(mix.values()) if mix else np.ones(1)
        self.causes: list[Cause] = []
        self._cause_idx: dict[Cause, int] = {}
        self.failures: list[FailureRecord] = []
        root = np.random.SeedSequence(seed)
        flow_seed, self.telemetry_seed = root.spawn(2)
        rngs = [np.random.default_rng(s) for s in flow_seed.spawn(len(machines) + 1)]
        self.release_rng = rngs[-1]
        self.stations = [
            _Station(self, i, m, config.for_machine(m.id), rngs[i]) for i, m in enumerate(machines)
        ]
        self.stations[-1].capacity = None  # the last machine delivers to the customer: never blocked
        self.next_part_id = 0
        self._lot_left = 0
        self._lot_product = 0
        # Initial WIP: buffers at normal fill, parts of the first lot's product.
        first = self._release_product()
        self._lot_left += 1  # the peek above must not consume a part of the lot
        for st in self.stations[:-1]:
            buf = st.machine.buffer_after
            fill = buf.normal_fill if (buf is not None and config.line.initial_fill == "normal") else 0
            st.fill = fill
            nxt = self.stations[st.idx + 1]
            for _ in range(fill):
                nxt.in_t.append(0.0)
                nxt.in_id.append(self._new_id())
                nxt.in_prod.append(first)

    def open_state(self, idx: int) -> tuple[int, float] | None:
        """The state a machine is waiting in, not yet recorded (starved or blocked since a time)."""
        st = self.stations[idx]
        if st.pending is not None:
            return BLOCKED, st.pending[0]
        if st.idx > 0 and st.next_in >= len(st.in_t):
            return STARVED, st.free_at
        if st.idx > 0 and st.in_t[st.next_in] > st.free_at:
            return STARVED, st.free_at
        return None

    def cause(self, c: Cause) -> int:
        idx = self._cause_idx.get(c)
        if idx is None:
            idx = len(self.causes)
            self.causes.append(c)
            self._cause_idx[c] = idx
        return idx

    def _new_id(self) -> int:
        pid = self.next_part_id
        self.next_part_id += 1
        return pid

    def _release_product(self) -> int:
        if self._lot_left <= 0:
            lot = self.config.line.lot_size.sample(self.release_rng, 1)[0]
            self._lot_left = max(1, round(float(lot)))
            self._lot_product = int(self.release_rng.choice(len(self.products), p=self.mix_p))
        self._lot_left -= 1
        return self._lot_product

    # --- advancing --------------------------------------------------------------------------------
    def run_until(self, tau_limit: float) -> None:
        """Advance until every machine's next start is at or after `tau_limit` (or it has nothing to do)."""
        self.clock.extend_to_tau(tau_limit + 86400.0)
        progress = True
        while progress:
            progress = False
            for st in self.stations:
                if self._advance(st, tau_limit):
                    progress = True

    def _advance(self, st: _Station, limit: float) -> bool:
        moved = False
        stations = self.stations
        last = st.idx == len(stations) - 1
        while True:
            if st.pending is not None:
                finish, g = st.pending
                nxt = stations[st.idx + 1]
                need = g + st.fill - (st.capacity or 0) - 1
                if need >= 0 and need >= len(nxt.dep):
                    return moved  # blocked: waits for the downstream machine to free a place
                room = nxt.dep[need] if need >= 0 else 0.0
                leave = max(finish, room)
                ready = st.wait(finish, leave, BLOCKED) if leave > finish else finish
                st.dep.append(leave)
                nxt.in_t.append(leave)
                nxt.in_id.append(st._pending_id)
                nxt.in_prod.append(st._pending_prod)
                st.free_at = ready
                st.pending = None
                moved = True
            if st.free_at >= limit:
                return moved
            if st.idx == 0:
                arrival, pid, prod = 0.0, self._new_id(), self._release_product()
            else:
                j = st.next_in
                if j >= len(st.in_t):
                    return moved  # starved: nothing has arrived yet
                arrival, pid, prod = st.in_t[j], st.in_id[j], st.in_prod[j]
                if arrival >= limit and st.free_at < limit:
                    # The wait reaches past the limit; record it when the limit moves on.
                    return moved
            st.next_in += 1
            finish, reject = st.process(arrival, pid, prod)
            moved = True
            if reject or last:
                st.dep.append(finish)
                st.free_at = finish
                if last and not reject:
                    st.good_out += 1
                continue
            st.pending = (finish, st.good_out)
            st._pending_id = pid
            st._pending_prod = prod
            st.good_out += 1
