"""Fast throughput of a serial line with finite buffers, many replications at once (numpy only).

This is the engine the JIT what-if analysis reuses: no plant model, no calendar, no records, only
``simulate_throughput(stations, buffers, horizon_s, replications=...)``. Each station has a cycle time
(a number or a sampler), optional time-to-failure and time-to-repair samplers (numbers, arrays that are
resampled, or anything with ``sample(rng, n)``), and the buffers between stations have finite or
infinite (``None``) capacity.

How it runs. Part k leaves station i at ``D[i, k]``, given by the tandem-queue recursion

    start  S[i, k] = max(D[i-1, k], D[i, k-1])                       (part arrived, station free)
    finish C[i, k] = start + work, stretched over down time
    after-service blocking:  D[i, k] = max(C[i, k], D[i+1, k - b_i - 1])
    before-service blocking: start also waits for S[i+1, k - b_i];  D[i, k] = C[i, k]

Node (i, k) depends on (i-1, k), (i, k-1) and (i+1, k-b-1), so every node of the anti-diagonal
``m*k + i = L`` can be computed at once (m = 1, or 2 when a buffer is too small for that). The loop runs
over anti-diagonals; each step is a handful of numpy operations over all stations x all replications,
so R replications cost about as much as one. Only a ring of the last ``max(b) + 3`` parts is kept.

Failure clocks (``failure_clock``):
- ``"running"`` (default): the time to failure is running time; a station that is starved or blocked
  does not age and cannot fail. Gershwin calls this operation-dependent failures. Failures are folded
  into the work of the part in process (preempt-resume), so the repair delays exactly that part.
- ``"scheduled"``: the failure clock runs whenever the station is up, starved and blocked included (an
  alternating up/down process independent of the buffers; Gershwin's and Li–Meerkov's time-dependent
  failures). A station blocked after service hands its finished part on even while down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from simulator.distributions import Sampler, as_sampler

Blocking = Literal["after_service", "before_service"]
FailureClock = Literal["running", "scheduled"]
DurationLike = float | int | Sampler | np.ndarray | list[float]


@dataclass(frozen=True)
class StationSpec:
    """One station of the line. Durations in seconds; a failure needs both TTF and TTR."""

    cycle_time: DurationLike
    time_to_failure: DurationLike | None = None
    time_to_repair: DurationLike | None = None

    def __post_init__(self) -> None:
        if (self.time_to_failure is None) != (self.time_to_repair is None):
            raise ValueError("give both time_to_failure and time_to_repair, or neither")


@dataclass(frozen=True)
class ThroughputResult:
    """Parts finished by each station in [warmup_s, horizon_s), per replication."""

    parts_per_station: np.ndarray  # (replications, stations), int64
    window_s: float
    blocking: Blocking
    failure_clock: FailureClock
    buffers: tuple[int | None, ...] = field(default=())

    @property
    def parts(self) -> np.ndarray:
        """Parts that left the last station in the window, per replication."""
        return self.parts_per_station[:, -1]

    @property
    def throughput_per_s(self) -> np.ndarray:
        return self.parts / self.window_s

    @property
    def mean_per_hour(self) -> float:
        return float(self.throughput_per_s.mean() * 3600.0)

    @property
    def sem_per_hour(self) -> float:
        """Standard error of the mean over replications (nan with one replication)."""
        tp = self.throughput_per_s * 3600.0
        return float(tp.std(ddof=1) / np.sqrt(tp.size)) if tp.size > 1 else float("nan")


class _RunningFold:
    """Failures on the running-time clock folded into the work of the parts in process."""

    def __init__(self, ttf: Sampler, ttr: Sampler, rng: np.random.Generator, reps: int, cover_s: float) -> None:
        mean_up = _mean_of(ttf, rng)
        n = max(16, int(cover_s / max(mean_up, 1e-9) * 1.5) + 16)
        while True:
            up = ttf.sample(rng, reps * n).reshape(reps, n)
            if np.all(up.sum(axis=1) > cover_s) or n > 50_000_000 // max(reps, 1):
                break
            n *= 2
        self.epochs = np.cumsum(up, axis=1)  # failure instants on the running clock
        repairs = ttr.sample(rng, reps * n).reshape(reps, n)
        self.cum_repair = np.concatenate([np.zeros((reps, 1)), np.cumsum(repairs, axis=1)], axis=1)
        self.clock = np.zeros(reps)
        self.failures_before = np.zeros(reps, dtype=np.int64)

    def fold(self, work: np.ndarray) -> np.ndarray:
        """work (reps, k) of consecutive parts -> work plus the repairs that fall into each part."""
        clock_after = self.clock[:, None] + np.cumsum(work, axis=1)
        out = np.empty_like(work)
        for r in range(work.shape[0]):
            n_fail = np.searchsorted(self.epochs[r], clock_after[r], side="left")
            prev = np.concatenate([[self.failures_before[r]], n_fail[:-1]])
            cr = self.cum_repair[r]
            out[r] = work[r] + cr[n_fail] - cr[prev]
            self.failures_before[r] = n_fail[-1]
        self.clock = clock_after[:, -1]
        return out


class _ScheduledDowns:
    """Up/down periods on the wall clock for every (station, replication) row, with cursors."""

    def __init__(self, ttfs: list[Sampler | None], ttrs: list[Sampler | None], rngs: list[np.random.Generator],
                 reps: int, cover_s: float) -> None:
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        for ttf, ttr, rng in zip(ttfs, ttrs, rngs, strict=True):
            if ttf is None or ttr is None:
                rows.extend((np.zeros(0), np.zeros(0)) for _ in range(reps))
                continue
            cycle = _mean_of(ttf, rng) + _mean_of(ttr, rng)
            n = max(16, int(cover_s / max(cycle, 1e-9) * 1.5) + 16)
            while True:
                up = ttf.sample(rng, reps * n).reshape(reps, n)
                down = ttr.sample(rng, reps * n).reshape(reps, n)
                if np.all((up + down).sum(axis=1) > cover_s) or n > 50_000_000 // max(reps, 1):
                    break
                n *= 2
            rows.extend((up[r], down[r]) for r in range(reps))
        width = max(len(u) for u, _ in rows) + 1
        inf = np.inf
        self.start = np.full((len(rows), width), inf)
        self.end = np.full((len(rows), width), inf)
        self.up_before = np.full((len(rows), width), inf)  # available time reached when interval j starts
        self.down_before = np.zeros((len(rows), width))  # down time of intervals < j
        for row, (up, down) in enumerate(rows):
            n = len(up)
            cum_up = np.cumsum(up)
            cum_down = np.cumsum(down)
            excl_down = np.concatenate([[0.0], cum_down[:-1]]) if n else np.zeros(0)
            self.start[row, :n] = cum_up + excl_down
            self.end[row, :n] = cum_up + cum_down
            self.up_before[row, :n] = cum_up
            self.down_before[row, :n] = excl_down
            self.down_before[row, n:] = cum_down[-1] if n else 0.0
        self.cursor = np.zeros(len(rows), dtype=np.int64)

    def serve(self, rows: np.ndarray, start: np.ndarray, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(effective start, completion) of `work` begun at `start`; rows/start/work are flat arrays."""
        j = self.cursor[rows]
        while True:
            ended = self.end[rows, j] <= start
            if not ended.any():
                break
            j = j + ended
        inside = self.start[rows, j] <= start
        avail = np.where(inside, self.up_before[rows, j], start - self.down_before[rows, j])
        # A start that falls on the first instant of a down period waits for its end.
        eff_start = np.where(inside, self.end[rows, j], start)
        target = avail + work
        while True:
            crossed = self.up_before[rows, j] < target
            if not crossed.any():
                break
            j = j + crossed
        self.cursor[rows] = j
        finish = target + self.down_before[rows, j]
        return eff_start, np.maximum(finish, eff_start)


def _mean_of(sampler: Sampler, rng: np.random.Generator) -> float:
    mean = getattr(sampler, "mean_s", None)
    if callable(mean):
        return float(mean())
    return float(np.mean(sampler.sample(np.random.default_rng(rng.integers(2**63)), 4096)))


def simulate_throughput(
    stations: Sequence[StationSpec],
    buffers: Sequence[int | None],
    horizon_s: float,
    *,
    replications: int = 1,
    seed: int | np.random.SeedSequence | None = 0,
    blocking: Blocking = "after_service",
    failure_clock: FailureClock = "running",
    warmup_s: float = 0.0,
    chunk_parts: int = 2048,
) -> ThroughputResult:
    """Simulate `replications` independent runs of the line over [0, horizon_s) and count parts.

    ``buffers[i]`` is the capacity between station i and i+1 (``None``: unlimited). With after-service
    blocking it counts parts waiting between the stations (a blocked station holds one more finished
    part); with before-service blocking it also counts the part the upstream station is working on,
    so it must be >= 1 (Li–Meerkov's N). Raw material is always available and the last station is never
    blocked. Returns parts finished per station in [warmup_s, horizon_s).
    """
    n_st = len(stations)
    if n_st < 1:
        raise ValueError("need at least one station")
    if len(buffers) != n_st - 1:
        raise ValueError(f"{n_st} stations need {n_st - 1} buffers, got {len(buffers)}")
    if not 0 <= warmup_s < horizon_s:
        raise ValueError("need 0 <= warmup_s < horizon_s")
    if blocking not in ("after_service", "before_service"):
        raise ValueError(f"unknown blocking {blocking!r}")
    if failure_clock not in ("running", "scheduled"):
        raise ValueError(f"unknown failure clock {failure_clock!r}")
    caps: list[int | None] = []
    for b in buffers:
        if b is None or (isinstance(b, float) and np.isinf(b)):
            caps.append(None)
        elif int(b) < (1 if blocking == "before_service" else 0):
            raise ValueError(f"buffer capacity {b} too small for {blocking} blocking")
        else:
            caps.append(int(b))
    reps = int(replications)
    finite = [c for c in caps if c is not None]
    smallest = min(finite) if finite else 10**9
    # Anti-diagonal slope: the downstream look-back must land on an earlier diagonal.
    m = 1 if smallest >= (2 if blocking == "before_service" else 1) else 2
    depth = (max(finite) if finite else 0) + 3

    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rngs = [np.random.default_rng(s) for s in seq.spawn(n_st)]
    cycles = [as_sampler(s.cycle_time) for s in stations]
    ttfs = [None if s.time_to_failure is None else as_sampler(s.time_to_failure) for s in stations]
    ttrs = [None if s.time_to_repair is None else as_sampler(s.time_to_repair) for s in stations]
    cover = horizon_s * 1.05 + 1.0
    folds: list[_RunningFold | None] = [None] * n_st
    downs: _ScheduledDowns | None = None
    if failure_clock == "running":
        for i in range(n_st):
            ttf, ttr = ttfs[i], ttrs[i]
            if ttf is not None and ttr is not None:
                folds[i] = _RunningFold(ttf, ttr, rngs[i], reps, cover)
    elif any(t is not None for t in ttfs):
        downs = _ScheduledDowns(ttfs, ttrs, rngs, reps, cover)

    # Rows: 0 = raw material (always there at t=0), 1..n = stations, n+1 = sink (never blocks). The rings
    # are flat (slot * width + row, rep) so each gather is one fancy index.
    width = n_st + 2
    sink = n_st + 1
    depart = np.zeros((depth * width, reps))
    start_ring = np.zeros((depth * width, reps))
    chunk = max(int(chunk_parts), 4 * n_st)
    span = 2 * chunk
    work = np.zeros((span * width, reps))
    finish_ring = np.zeros((span * width, reps))
    look_row = np.array([sink if (i == n_st or caps[i - 1] is None) else i + 1 for i in range(1, n_st + 1)])
    look_back = np.array(
        [0 if (i == n_st or caps[i - 1] is None) else (caps[i - 1] + (1 if blocking == "after_service" else 0))
         for i in range(1, n_st + 1)]
    )
    all_rows = np.arange(1, n_st + 1)
    row_ids = np.arange(n_st)[:, None] * reps + np.arange(reps)[None, :]  # flat (station, rep) ids
    counts = np.zeros((reps, n_st), dtype=np.int64)
    counted = 0  # parts [0, counted) of every station are finished and counted
    generated = 0
    level = 0
    # Which stations sit on a diagonal depends only on level mod m once every station has started.
    patterns = {}
    for phase in range(m):
        sel = (phase - all_rows) % m == 0
        patterns[phase] = all_rows[sel]
    steady_from = m * 0 + n_st

    def count_done(upto: int) -> None:
        nonlocal counted
        if upto <= counted:
            return
        parts = np.arange(counted, upto)
        fin = finish_ring.reshape(span, width, reps)[parts % span][:, 1 : n_st + 1, :]
        counts[:] += ((fin >= warmup_s) & (fin < horizon_s)).sum(axis=0).T
        counted = upto

    while True:
        top_k = (level - 1) // m  # largest part index this diagonal touches
        if top_k >= generated:
            # Parts below `done` are finished at every station; count them before their slots are reused.
            done = max(0, (level - n_st - 1) // m)
            count_done(done)
            if done > 0:
                last = finish_ring.reshape(span, width, reps)[(done - 1) % span][1 : n_st + 1]
                if np.all(last >= horizon_s):
                    break
            for i in range(n_st):
                w = cycles[i].sample(rngs[i], reps * chunk).reshape(reps, chunk)
                fold = folds[i]
                if fold is not None:
                    w = fold.fold(w)
                slots = np.arange(generated, generated + chunk) % span
                work[slots * width + i + 1, :] = w.T
            generated += chunk
        if level >= steady_from:
            rows = patterns[level % m]
            ks = (level - rows) // m
        else:
            ks_all = level - all_rows
            sel = (ks_all >= 0) & (ks_all % m == 0)
            if not sel.any():
                level += 1
                continue
            rows = all_rows[sel]
            ks = ks_all[sel] // m
        here = (ks % depth) * width + rows
        begin = np.maximum(depart[here - 1], depart[((ks - 1) % depth) * width + rows])
        lr, lb = look_row[rows - 1], look_back[rows - 1]
        ahead = ((ks - lb) % depth) * width + lr
        if blocking == "before_service":
            begin = np.maximum(begin, start_ring[ahead])
        wslot = (ks % span) * width + rows
        w = work[wslot]
        if downs is not None:
            flat = row_ids[rows - 1].ravel()
            eff, finish = downs.serve(flat, begin.ravel(), w.ravel())
            eff, finish = eff.reshape(begin.shape), finish.reshape(begin.shape)
        else:
            eff, finish = begin, begin + w
        if blocking == "after_service":
            depart[here] = np.maximum(finish, depart[ahead])
        else:
            depart[here] = finish
            start_ring[here] = eff
        finish_ring[wslot] = finish
        level += 1
    return ThroughputResult(
        parts_per_station=counts,
        window_s=horizon_s - warmup_s,
        blocking=blocking,
        failure_clock=failure_clock,
        buffers=tuple(caps),
    )


# --- precomputed work, many scenarios at once ----------------------------------------------------------
#
# With running-clock failures the work of part k at station i (cycle plus every repair that falls into
# it) does not depend on the buffers, so it can be drawn once and reused by every scenario: common random
# numbers, and the what-if analysis of many buffer configurations becomes one max-plus recursion over
# columns (scenario x replication), each column with its own capacities.

UNLIMITED = -1  # capacity code for an unlimited buffer in ``departures_from_work``


def fold_stops(base_work: np.ndarray, up_s: np.ndarray, down_s: np.ndarray) -> np.ndarray:
    """Repair time that falls into each part when stops happen on the running clock.

    ``base_work``: (parts, reps) running seconds per part; ``up_s``/``down_s``: (stops, reps) running time
    before each stop and its duration. A stop whose running-clock instant falls inside a part delays that
    part (preempt-resume); one at the very instant a part ends delays the next part, as in
    ``simulate_throughput``. Returns (parts, reps) extra seconds. ``up_s`` must cover
    the total work of every replication (raise otherwise): a stop stream that ran out would silently
    make the tail of the run perfect.
    """
    parts, reps = base_work.shape
    if up_s.shape != down_s.shape or up_s.shape[1] != reps:
        raise ValueError("up_s and down_s need the shape (stops, reps) of the same replications")
    clock = np.cumsum(base_work, axis=0)
    epochs = np.cumsum(up_s, axis=0)
    if np.any(epochs[-1] < clock[-1]):
        raise ValueError("the stop stream does not cover the work; draw more stops")
    cum_down = np.concatenate([np.zeros((1, reps)), np.cumsum(down_s, axis=0)], axis=0)
    # One searchsorted over all replications: shift each replication's clock past the previous ones.
    span = float(max(clock[-1].max(), epochs[-1].max())) + 1.0
    shift = np.arange(reps, dtype=np.float64) * span
    n_before = np.searchsorted((epochs + shift).T.ravel(), (clock + shift).T.ravel(), side="left")
    n_before = n_before.reshape(reps, parts).T - np.arange(reps)[None, :] * epochs.shape[0]
    cols = np.broadcast_to(np.arange(reps), (parts, reps))
    through = cum_down[n_before, cols]
    return np.diff(np.concatenate([np.zeros((1, reps)), through], axis=0), axis=0)


def departures_from_work(
    work: np.ndarray,
    buffers: np.ndarray,
    sources: np.ndarray | None = None,
    *,
    marks: Sequence[int],
    blocking: Blocking = "after_service",
    start_full: bool = False,
    chunk: int = 512,
) -> np.ndarray:
    """Departure times from the last station of parts ``marks``, for many scenario columns at once.

    ``work``: (parts, stations, W) seconds, the work of each part at each station, for W work columns
    (for example work variant x replication). ``buffers``: (stations - 1, C) capacities per scenario
    column (``UNLIMITED`` for none), meaning what they mean in ``simulate_throughput``. ``sources``:
    (stations, C) or (C,), the work column each scenario column reads per station (default: column c
    reads work column c), so scenarios share draws (common random numbers) and a variant can replace the
    work of one station only. ``start_full``: every buffer is full at time 0 (the normal state of a pull
    line): the parts already in the line get zero work at the stations they have passed. Returns
    (len(marks), C) departure times, marks in ascending order.

    The recursion is the one of ``simulate_throughput``, run over anti-diagonals on strided views: per
    step about seven numpy calls over (stations on the diagonal) x (columns).
    """
    parts, n_st, n_work = work.shape
    if n_st < 2:
        raise ValueError("need at least two stations")
    caps = np.asarray(buffers, dtype=np.int64)
    if caps.ndim != 2 or caps.shape[0] != n_st - 1:
        raise ValueError(f"{n_st} stations need buffers of shape ({n_st - 1}, columns), got {caps.shape}")
    n_col = caps.shape[1]
    if sources is None:
        if n_work != n_col:
            raise ValueError("without sources the work needs one column per scenario column")
        src = np.broadcast_to(np.arange(n_col), (n_st, n_col))
    else:
        src = np.asarray(sources, dtype=np.int64)
        src = np.broadcast_to(src, (n_st, n_col)) if src.ndim == 1 else src
        if src.shape != (n_st, n_col) or src.min() < 0 or src.max() >= n_work:
            raise ValueError("sources must index the work columns, shape (stations, columns) or (columns,)")
    if blocking not in ("after_service", "before_service"):
        raise ValueError(f"unknown blocking {blocking!r}")
    least = 1 if blocking == "before_service" else 0
    if np.any((caps != UNLIMITED) & (caps < least)):
        raise ValueError(f"buffer capacity below {least} for {blocking} blocking")
    marks_arr = np.asarray(sorted({int(k) for k in marks}), dtype=np.int64)
    if marks_arr.size == 0 or marks_arr[0] < 0 or marks_arr[-1] >= parts:
        raise ValueError("marks must be part indices inside the work")
    finite = caps[caps != UNLIMITED]
    # Anti-diagonal slope: the downstream look-back must land on an earlier diagonal.
    m = 1 if (finite.min() if finite.size else 10**9) >= least + 1 else 2
    biggest = int(finite.max()) if finite.size else 0
    width = n_st + 2  # row 0 raw material (always 0), rows 1..n stations, row n+1 zeros (never blocks)
    stride = width * n_col
    depth = m * (biggest + 2) + 2
    n_slots = depth + max(int(chunk), 8)
    # Slot = diagonal + offset; the first `depth` slots stand for "before time 0" and stay zero, as do
    # the cells of parts with negative index, so no look-back needs a special case.
    dep = np.zeros((n_slots, width, n_col))
    begun = np.zeros((n_slots, width, n_col)) if blocking == "before_service" else None
    look_flat = (begun if begun is not None else dep).reshape(-1)
    work_flat = np.ascontiguousarray(work).reshape(-1)
    cols = np.arange(n_col)
    back = np.zeros((n_st, n_col), dtype=np.int64)  # look-back in diagonals per (station, column)
    look_row = np.full((n_st, n_col), n_st + 1, dtype=np.int64)  # the zero row when unlimited
    for i in range(n_st - 1):
        limited = caps[i] != UNLIMITED
        lb = caps[i] + 1 if blocking == "after_service" else caps[i]
        back[i] = np.where(limited, m * lb - 1, 0)
        look_row[i] = np.where(limited, i + 2, n_st + 1)
    fill = np.zeros((n_st, n_col), dtype=np.int64)
    if start_full:
        held = 1 if blocking == "after_service" else 0
        acc = np.ones(n_col, dtype=np.int64)
        fill[n_st - 1] = acc
        for i in range(n_st - 2, -1, -1):
            acc = acc + np.where(caps[i] == UNLIMITED, 0, caps[i] + held)
            fill[i] = acc
    max_fill = int(fill.max())

    # Phase p = diagonal mod m: rows p+1, p+1+m, ... are on the diagonal; row j of them holds part k0 - j.
    phases = []
    for p in range(m):
        a = p + 1
        rows = np.arange(a, n_st + 1, m)
        j = np.arange(rows.size)[:, None]
        w_tmpl = (-j * n_st + (rows - 1)[:, None]) * n_work + src[rows - 1]
        look_tmpl = -back[rows - 1] * stride + look_row[rows - 1] * n_col + cols[None, :]
        phases.append((a, rows, np.ascontiguousarray(w_tmpl), np.ascontiguousarray(look_tmpl), fill[rows - 1]))
    n_diag = m * (parts - 1) + n_st
    diag_of_mark = {int(m * k + n_st - 1): idx for idx, k in enumerate(marks_arr)}
    out = np.empty((marks_arr.size, n_col))
    offset = depth
    for diag in range(n_diag):
        slot = diag + offset
        if slot >= n_slots:
            dep[:depth] = dep[n_slots - depth:]
            if begun is not None:
                begun[:depth] = begun[n_slots - depth:]
            offset -= n_slots - depth
            slot = diag + offset
        a, rows, w_tmpl, look_tmpl, fill_rows = phases[diag % m]
        k0 = (diag - a + 1) // m
        if k0 - (rows.size - 1) < 0 or k0 >= parts:
            # Start-up and run-out: only rows whose part index lies in [0, parts).
            ks = k0 - np.arange(rows.size)
            ok = (ks >= 0) & (ks < parts)
            r, kk = rows[ok], ks[ok]
            begin = np.maximum(dep[slot - 1, r - 1], dep[slot - m, r])
            look = look_flat.take(look_tmpl[ok] + slot * stride)
            w = work_flat.take((kk * n_st + r - 1)[:, None] * n_work + src[r - 1])
            w = np.where(kk[:, None] < fill[r - 1], 0.0, w)
            if blocking == "after_service":
                dep[slot, r] = np.maximum(begin + w, look)
            else:
                begin = np.maximum(begin, look)
                begun[slot, r] = begin
                dep[slot, r] = begin + w
        else:
            sl = slice(a, n_st + 1, m)
            begin = np.maximum(dep[slot - 1, a - 1:n_st:m], dep[slot - m, sl])
            look = look_flat.take(look_tmpl + slot * stride)
            w = work_flat.take(w_tmpl + k0 * n_st * n_work)
            if k0 - (rows.size - 1) < max_fill:
                w = np.where((k0 - np.arange(rows.size))[:, None] < fill_rows, 0.0, w)
            if blocking == "after_service":
                begin += w
                np.maximum(begin, look, out=dep[slot, sl])
            else:
                np.maximum(begin, look, out=begin)
                begun[slot, sl] = begin
                np.add(begin, w, out=dep[slot, sl])
        hit = diag_of_mark.get(diag)
        if hit is not None:
            out[hit] = dep[slot, n_st]
    return out
