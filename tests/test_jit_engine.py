"""The batched what-if engine (simulator.line_engine.departures_from_work, fold_stops) and the analytic
results it is checked against (field reference §5.4, §5.5)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.jit.analytic import (
    bernoulli_two_machine,
    departure_scv,
    effective_process,
    kingman_queue_time,
)
from simulator.distributions import Exponential
from simulator.line_engine import UNLIMITED, StationSpec, departures_from_work, fold_stops, simulate_throughput


def _reference(work: np.ndarray, caps: np.ndarray, blocking: str, start_full: bool) -> np.ndarray:
    """The tandem-queue recursion written out part by part, station by station (slow and obvious)."""
    parts, n = work.shape
    dep = np.zeros((n, parts))
    begun = np.zeros((n, parts))
    fill = np.zeros(n, dtype=int)
    if start_full:
        acc = 1
        fill[n - 1] = 1
        for i in range(n - 2, -1, -1):
            acc += 0 if caps[i] == UNLIMITED else caps[i] + (1 if blocking == "after_service" else 0)
            fill[i] = acc
    for k in range(parts):
        for i in range(n):
            start = max(dep[i - 1, k] if i else 0.0, dep[i, k - 1] if k else 0.0)
            w = 0.0 if k < fill[i] else work[k, i]
            limited = i < n - 1 and caps[i] != UNLIMITED
            if blocking == "before_service":
                if limited and k - caps[i] >= 0:
                    start = max(start, begun[i + 1, k - caps[i]])
                begun[i, k] = start
                dep[i, k] = start + w
            else:
                dep[i, k] = start + w
                if limited and k - caps[i] - 1 >= 0:
                    dep[i, k] = max(dep[i, k], dep[i + 1, k - caps[i] - 1])
    return dep[n - 1]


@pytest.mark.parametrize("blocking", ["after_service", "before_service"])
@pytest.mark.parametrize("start_full", [False, True])
def test_batched_recursion_equals_the_part_by_part_recursion(blocking: str, start_full: bool) -> None:
    rng = np.random.default_rng(4)
    least = 1 if blocking == "before_service" else 0
    for _ in range(4):
        n, parts, cols = int(rng.integers(2, 6)), 200, 6
        caps = rng.integers(least, 6, size=(n - 1, cols))
        caps[rng.random(caps.shape) < 0.15] = UNLIMITED
        work = rng.exponential(1.0, (parts, n, cols)) + (rng.random((parts, n, cols)) < 0.03) * 25.0
        marks = [0, 7, parts // 2, parts - 1]
        got = departures_from_work(work, caps, marks=marks, blocking=blocking, start_full=start_full, chunk=16)
        for c in range(cols):
            want = _reference(work[:, :, c], caps[:, c], blocking, start_full)[marks]
            np.testing.assert_allclose(got[:, c], want, rtol=0, atol=1e-9)


def test_sources_share_work_between_columns() -> None:
    rng = np.random.default_rng(1)
    work = rng.exponential(1.0, (300, 3, 2))
    caps = np.array([[0, 3, 0, 3], [2, 2, 2, 2]])
    both = departures_from_work(work, caps, np.array([0, 0, 1, 1]), marks=[299])
    alone = departures_from_work(work[:, :, [0, 0, 1, 1]], caps, marks=[299])
    np.testing.assert_array_equal(both, alone)
    # A station can read another work column (a variant that changes one machine only).
    src = np.array([[0], [1], [0]])
    mixed = departures_from_work(work, caps[:, :1], src, marks=[299])
    spliced = work[:, :, :1].copy()
    spliced[:, 1, 0] = work[:, 1, 1]
    np.testing.assert_array_equal(mixed, departures_from_work(spliced, caps[:, :1], marks=[299]))


def test_fold_stops_puts_each_repair_into_the_part_running_at_its_instant() -> None:
    base = np.full((5, 1), 10.0)  # running clock: parts end at 10, 20, 30, 40, 50
    up = np.array([[15.0], [5.0], [30.0], [100.0]])  # stops at running instants 15, 20, 50, 150
    down = np.array([[3.0], [4.0], [7.0], [9.0]])
    extra = fold_stops(base, up, down)
    # 15 falls inside part 2 (10, 20); 20 is the instant part 2 ends, so the stop delays part 3 (as in
    # simulate_throughput); 50 ends part 5 and belongs to a sixth part that is not drawn.
    assert extra[:, 0].tolist() == [0.0, 3.0, 4.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="cover"):
        fold_stops(base, up[:2], down[:2])


@pytest.mark.parametrize(("p1", "p2", "n"), [(0.9, 0.9, 2), (0.8, 0.9, 3), (0.95, 0.85, 4)])
def test_two_machine_bernoulli_line_matches_li_meerkov(p1: float, p2: float, n: int) -> None:
    # A Bernoulli machine (makes a part in a slot with probability p when neither starved nor blocked)
    # needs a geometric number of slots per part; blocked before service with buffer N (Li & Meerkov).
    # Tolerance 0.004, at least 4 standard errors of the mean of 8 replications of 40,000 slots.
    rng = np.random.default_rng(12)
    parts, reps = 40_000, 8
    work = np.stack([rng.geometric(p, (parts, reps)).astype(float) for p in (p1, p2)], axis=1)
    caps = np.full((1, reps), n)
    t = departures_from_work(work, caps, marks=[999, parts - 1], blocking="before_service")
    rate = (parts - 1000) / (t[1] - t[0])
    sem = rate.std(ddof=1) / np.sqrt(reps)
    assert 4 * sem <= 0.004
    assert abs(rate.mean() - bernoulli_two_machine(p1, p2, n)) <= 0.004, (rate.mean(), sem)


def test_fast_recursion_agrees_with_simulate_throughput() -> None:
    # The same line (exponential running-clock failures, buffer 2, after-service blocking) through both
    # engines: their means agree within 4 combined standard errors (about 0.3 %).
    horizon, reps = 60_000.0, 12
    stations = [StationSpec(Exponential(mean=1.0), Exponential(mean=60), Exponential(mean=8)) for _ in range(3)]
    slow = simulate_throughput(stations, [2, 2], horizon, replications=reps, seed=2).throughput_per_s
    rng = np.random.default_rng(3)
    parts = int(horizon / 1.2)
    work = np.empty((parts, 3, reps))
    for i in range(3):
        base = rng.exponential(1.0, (parts, reps))
        n_stops = int(base.sum(axis=0).max() / 60 * 1.5) + 50
        up, down = rng.exponential(60, (n_stops, reps)), rng.exponential(8, (n_stops, reps))
        work[:, i, :] = base + fold_stops(base, up, down)
    t = departures_from_work(work, np.full((2, reps), 2), marks=[0, parts - 1])
    fast = (parts - 1) / (t[1] - t[0])
    se = np.sqrt(slow.var(ddof=1) / reps + fast.var(ddof=1) / reps)
    assert abs(slow.mean() - fast.mean()) <= 4 * se, (slow.mean(), fast.mean(), se)
    assert abs(slow.mean() / fast.mean() - 1) < 0.01


def test_kingman_worked_example() -> None:
    # Field reference §5.5: t0 = 1 min deterministic, MTTF 100 min, MTTR 10 min, cr = 1, arrivals every 1.5 min.
    a, te, ce_sq = effective_process(1.0, 0.0, [(1 / 100, 10.0, 1.0)])
    assert (a, te, ce_sq) == pytest.approx((0.909091, 1.1, 1.652893), abs=1e-6)
    u = te / 1.5
    ctq = kingman_queue_time(0.0, ce_sq, u, te)
    assert ctq == pytest.approx(2.5, abs=1e-9)
    assert (ctq + te) / 1.5 == pytest.approx(2.4, abs=1e-9)  # Little: WIP = TH x CT
    assert departure_scv(0.0, ce_sq, u) == pytest.approx(0.888889, abs=1e-6)
    assert kingman_queue_time(0.0, ce_sq, 1.0, te) is None
