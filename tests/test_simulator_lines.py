"""Line throughput against known results for two-machine lines (field-reference.md §5.4).

Tolerances: each test runs R independent replications and asserts |mean - exact| <= tol, where tol is
fixed in advance and the run length is chosen so that tol >= 4 standard errors of the mean (checked in
the test too, so a tolerance that stopped being honest fails loudly instead of passing by luck).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from andon.plant import PlantModel
from simulator.config import SimulationConfig
from simulator.distributions import Exponential, Geometric
from simulator.line_engine import StationSpec, simulate_throughput
from simulator.simulation import simulate


def bernoulli_pr(p1: float, p2: float, n: int) -> float:
    """Li & Meerkov two-machine Bernoulli line, blocked before service, buffer N."""
    if p1 == p2:
        q = (1 - p1) / (n + 1 - p1)
    else:
        a = p1 * (1 - p2) / (p2 * (1 - p1))
        q = (1 - p1) * (1 - a) / (1 - (p1 / p2) * a**n)
    return p2 * (1 - q)


def geometric_pr(p1: float, r1: float, p2: float, r2: float, n: int) -> float:
    """Li & Meerkov two-machine geometric line (time-dependent failures, blocked before service)."""
    e2 = r2 / (r2 + p2)
    if n == 1:
        b2 = r1 + r2 - r1 * r2 - p2 * r1
        q = p1 * b2 / ((r1 + r2 - r1 * r2) * (r1 + p1))
        return e2 * (1 - q)
    a1 = p1 + p2 - p1 * p2 - r1 * p2
    a2 = p1 + p2 - p1 * p2 - r2 * p1
    b1 = r1 + r2 - r1 * r2 - p1 * r2
    b2 = r1 + r2 - r1 * r2 - p2 * r1
    s = a2 * b1 / (a1 * b2)
    den = (p1 * r2 * a1 * a2 * b2 * (p2 + b2)
           + p1 * r1 * r2 * a2 * (b2**2 + p2 * (a1 + b1) * (a2 + 2 * b2))
           + sum(p1 * p2 * r1 * r2 * (a2 + b2) ** 3 * s ** (k - 1) for k in range(2, n))
           + p2 * r1 * a1 * b2 * (r2 * (a1 + b1) + a2 * (p1 + r1)) * s ** (n - 1))
    q = p1 * a1 * a2 * b2**2 * (r2 + p2) / den
    return e2 * (1 - q)


def _check(rates: np.ndarray, exact: float, tol: float) -> None:
    mean = float(rates.mean())
    sem = float(rates.std(ddof=1) / np.sqrt(rates.size))
    assert tol >= 4 * sem, f"tolerance {tol} is under 4 standard errors ({sem:.5f}): run longer"
    assert abs(mean - exact) <= tol, f"simulated {mean:.5f} vs exact {exact:.6f} (sem {sem:.5f}, tol {tol})"


def test_closed_forms_match_the_reference_values() -> None:
    # The published [DER] values of field-reference.md §5.4: guards the formulas used below.
    assert bernoulli_pr(0.9, 0.9, 2) == pytest.approx(0.857143, abs=1e-6)
    assert bernoulli_pr(0.8, 0.9, 3) == pytest.approx(0.791536, abs=1e-6)
    assert bernoulli_pr(0.95, 0.85, 4) == pytest.approx(0.849287, abs=1e-6)
    e = 0.1 / 0.11
    assert geometric_pr(0.01, 0.1, 0.01, 0.1, 10) / e == pytest.approx(0.9405, abs=5e-5)


@pytest.mark.parametrize(("p1", "p2", "n"), [(0.9, 0.9, 2), (0.8, 0.9, 3)])
def test_bernoulli_line(p1: float, p2: float, n: int) -> None:
    # A Bernoulli machine is up in each slot with probability p independently of the last slot: a
    # geometric up time with failure probability 1-p and repair probability p, on the wall clock.
    slots = 60_000
    stations = [StationSpec(1.0, Geometric(p=1 - p), Geometric(p=p)) for p in (p1, p2)]
    res = simulate_throughput(stations, [n], slots, replications=8, seed=11, blocking="before_service",
                              failure_clock="scheduled")
    _check(res.parts / slots, bernoulli_pr(p1, p2, n), tol=0.003)


def test_geometric_line_buffer_of_one_mttr() -> None:
    slots = 80_000
    stations = [StationSpec(1.0, Geometric(p=0.01), Geometric(p=0.1)) for _ in range(2)]
    res = simulate_throughput(stations, [10], slots, replications=16, seed=5, blocking="before_service",
                              failure_clock="scheduled")
    e = 0.1 / 0.11
    _check(res.parts / slots / e, geometric_pr(0.01, 0.1, 0.01, 0.1, 10) / e, tol=0.008)


def test_infinite_buffer_limit_is_the_worse_machine() -> None:
    # Running-time failures, exponential up/down; e1 = 100/110, e2 = 50/60 < e1.
    horizon = 100_000.0
    stations = [StationSpec(1.0, Exponential(mean=100), Exponential(mean=10)),
                StationSpec(1.0, Exponential(mean=50), Exponential(mean=10))]
    res = simulate_throughput(stations, [None], horizon, replications=8, seed=3)
    _check(res.parts / horizon, min(100 / 110, 50 / 60), tol=0.008)
    # Swapped, the worse machine is first and the second only waits for it.
    res = simulate_throughput(stations[::-1], [None], horizon, replications=8, seed=4)
    _check(res.parts / horizon, min(100 / 110, 50 / 60), tol=0.008)


def test_zero_buffer_limit_operation_dependent() -> None:
    # Before-service blocking with N = 1: the upstream machine starts a part only when the downstream
    # one takes the previous -- a synchronous line. Running-time failures cannot happen while waiting,
    # so PR = 1 / (1 + p1/r1 + p2/r2) (the overlap of two repairs in one cycle, ~(p)^2, is negligible).
    horizon = 100_000.0
    stations = [StationSpec(1.0, Exponential(mean=100), Exponential(mean=10)),
                StationSpec(1.0, Exponential(mean=80), Exponential(mean=12))]
    res = simulate_throughput(stations, [1], horizon, replications=8, seed=8, blocking="before_service")
    _check(res.parts / horizon, 1 / (1 + 10 / 100 + 12 / 80), tol=0.006)


def test_deterministic_line_exact_count() -> None:
    # No failures: the first part leaves after 1 + 2 + 1.5 s, then one every 2 s (the slowest machine).
    res = simulate_throughput([StationSpec(1.0), StationSpec(2.0), StationSpec(1.5)], [0, 0], 1000.0,
                              replications=3, seed=0)
    assert res.parts.tolist() == [int((1000.0 - 4.5) // 2) + 1] * 3
    # Before-service blocking with scheduled clock and no failures gives the same count.
    res2 = simulate_throughput([StationSpec(1.0), StationSpec(2.0), StationSpec(1.5)], [1, 1], 1000.0,
                               seed=0, blocking="before_service", failure_clock="scheduled")
    assert res2.parts.tolist() == res.parts.tolist()[:1]


def test_bigger_buffers_never_hurt_and_seed_reproduces() -> None:
    stations = [StationSpec(Exponential(mean=1.0), Exponential(mean=60), Exponential(mean=8)) for _ in range(3)]
    a = simulate_throughput(stations, [2, 2], 20_000.0, replications=4, seed=9)
    b = simulate_throughput(stations, [2, 2], 20_000.0, replications=4, seed=9)
    assert np.array_equal(a.parts_per_station, b.parts_per_station)
    c = simulate_throughput(stations, [2, 2], 20_000.0, replications=4, seed=10)
    assert not np.array_equal(a.parts_per_station, c.parts_per_station)
    big = simulate_throughput(stations, [20, 20], 20_000.0, replications=4, seed=9)
    assert big.mean_per_hour > a.mean_per_hour


def _two_machine_plant(capacity: int) -> PlantModel:
    return PlantModel.model_validate({
        "sites": [{"id": "s", "lines": [{"id": "l", "takt_time_s": 60, "machines": [
            {"id": "A", "ideal_cycle_time_s": 60, "buffer_after": {"capacity": capacity, "normal_fill": 0},
             "fault_map": {"E1*": "broken"}},
            {"id": "B", "ideal_cycle_time_s": 60, "fault_map": {"E1*": "broken"}},
        ]}]}],
        "reasons": [{"category": "c", "reasons": [{"code": "broken", "failure": True, "loss": "breakdowns"}]}],
    })


def test_detailed_engine_agrees_with_fast_engine() -> None:
    # The plant-driven engine with every other effect switched off is the same line as the fast engine:
    # after-service blocking, running-time exponential failures, 24/7 calendar.
    capacity = 2
    plain = {"cycle_noise_cv": 0.0, "slow_cycles": {"probability": 0.0}, "micro_stops": {"rate_per_h": 0},
             "quality": {"scrap_probability": 0.0, "startup_reject_probability": 0.0},
             "failures": {"time_between": {"dist": "exponential", "mean": 60, "unit": "min"},
                          "repair": {"dist": "exponential", "mean": 10, "unit": "min"}},
             "telemetry": {"enabled": False}}
    cfg = SimulationConfig.model_validate({"defaults": plain, "line": {"initial_fill": "empty"}})
    days = 20
    rates = []
    for seed in range(6):
        truth = simulate(_two_machine_plant(capacity), cfg, seed=seed, start=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                         duration=dt.timedelta(days=days), telemetry=False)
        rates.append((truth.parts["machine_id"] == "B").sum() / (days * 86400))
    detailed = np.asarray(rates)
    # Repairs shorter than the small-stop threshold are lengthened to it in the detailed engine.
    repair = Exponential(mean=600)
    floored = _Floored(repair, 120.0)
    fast = simulate_throughput([StationSpec(60.0, Exponential(mean=3600), floored)] * 2, [capacity], days * 86400.0,
                               replications=12, seed=1)
    f = fast.throughput_per_s
    se = np.sqrt(detailed.var(ddof=1) / detailed.size + f.var(ddof=1) / f.size)
    assert abs(detailed.mean() - f.mean()) <= max(4 * se, 1e-9), (detailed.mean(), f.mean(), se)
    assert abs(detailed.mean() / f.mean() - 1) < 0.01


class _Floored:
    def __init__(self, inner: Exponential, floor_s: float) -> None:
        self.inner, self.floor = inner, floor_s

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(self.inner.sample(rng, n), self.floor)

    def mean_s(self) -> float:
        return self.inner.mean_s()
