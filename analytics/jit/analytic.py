"""Analytic results the simulation is checked against (field reference §5.3-§5.6).

* Kingman / VUT (Hopp & Spearman, Factory Physics eqs. 8.1-8.12): effective process time with preemptive
  outages, its squared CV, the queue time in front of each machine when parts arrive at takt, and the
  departure variability passed downstream by the linking equation. With several outage classes
  (breakdowns and micro-stops) the outage variance terms add:
  ``A = 1 / (1 + sum λ_c m_c)``, ``te = t0 / A``,
  ``σe² = σ0² / A² + t0 · sum λ_c (m_c² + σ_c²)``, ``ce² = σe² / te²`` (λ_c per running second) --
  with one class this is the reference's ``ce² = c0² + (1 + cr²) A (1 − A) mr / t0``.
* Little's law ``WIP = TH × CT``: parts of buffer are minutes of lead time at takt.
* Limits of a line paced by a customer at takt: no buffers -- every own stop of any machine stops the
  line, ``TH ≈ 1 / (1 + sum_i λ_i t_i E[D_i] / takt)`` (the operation-dependent zero-buffer formula of
  §5.4, with the failure clock advancing t_i per takt; it ignores the slack takt − t_i that absorbs part
  of each stop, so it is a lower estimate for lines with fast machines and short stops); unlimited
  buffers -- ``TH = min(1, min_i A_i · takt / t_i)``.
* Two-machine lines (Li & Meerkov; Buzacott; Gershwin): Bernoulli and geometric closed forms and the
  zero/infinite buffer limits, used by the tests to check the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from analytics.jit.model import StationModel


@dataclass(frozen=True, slots=True)
class KingmanStation:
    machine: str
    t0_s: float  # natural process time (mean cycle, scrap repeats included)
    c0_sq: float
    availability: float
    te_s: float
    ce_sq: float
    ca_sq: float
    utilization: float
    queue_time_s: float | None  # None when utilization >= 1 (the queue grows without bound)
    queue_parts: float | None  # Little: queue time / takt

    def to_dict(self) -> dict[str, float | str | None]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def effective_process(t0_s: float, c0_sq: float,
                      outages: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    """(A, te, ce²) for natural process time t0 (squared CV c0²) and outages given as (λ per running
    second, mean duration m, squared CV of the duration cr²)."""
    load = sum(lam * m for lam, m, _ in outages)
    a = 1.0 / (1.0 + load)
    te = t0_s / a
    var = c0_sq * t0_s**2 / a**2 + t0_s * sum(lam * m**2 * (1.0 + cr_sq) for lam, m, cr_sq in outages)
    return a, te, var / te**2


def kingman_queue_time(ca_sq: float, ce_sq: float, utilization: float, te_s: float) -> float | None:
    """Kingman's G/G/1 approximation of the mean time in queue; None at utilization >= 1."""
    if utilization >= 1.0:
        return None
    return (ca_sq + ce_sq) / 2.0 * utilization / (1.0 - utilization) * te_s


def departure_scv(ca_sq: float, ce_sq: float, utilization: float) -> float:
    """Linking equation (one server): cd² = u² ce² + (1 − u²) ca²."""
    u = min(utilization, 1.0)
    return u**2 * ce_sq + (1.0 - u**2) * ca_sq


def _outages(st: StationModel) -> list[tuple[float, float, float]]:
    out = []
    for model in (st.breakdowns, st.micro_stops):
        if model is None:
            continue
        d = model.down
        mean = d.mean
        values = getattr(d, "values", None)
        if values is not None and values.size > 1:
            cr_sq = float(values.var(ddof=1)) / mean**2
        elif hasattr(d, "log_sigma"):
            cr_sq = math.exp(d.log_sigma**2) - 1.0
        else:
            cr_sq = 1.0
        out.append((1.0 / model.mean_up_s, mean, cr_sq))
    return out


def _cycle_scv(st: StationModel) -> float:
    values = getattr(st.cycle, "values", None)
    if values is not None and values.size > 1:
        return float(values.var(ddof=1)) / float(values.mean()) ** 2
    cv = getattr(st.cycle, "cv", 0.0)
    return float(cv) ** 2


def kingman_line(stations: Sequence[StationModel], takt_s: float) -> list[KingmanStation]:
    """Kingman queue in front of each machine when the first is fed one part per takt (ca² = 0)."""
    out = []
    ca_sq = 0.0
    for st in stations:
        t0 = st.mean_cycle_s
        a, te, ce_sq = effective_process(t0, _cycle_scv(st), _outages(st))
        u = te / takt_s
        ctq = kingman_queue_time(ca_sq, ce_sq, u, te)
        out.append(KingmanStation(st.machine, t0, _cycle_scv(st), a, te, ce_sq, ca_sq, u, ctq,
                                  None if ctq is None else ctq / takt_s))
        ca_sq = departure_scv(ca_sq, ce_sq, u)
    return out


def zero_buffer_fraction(stations: Sequence[StationModel], takt_s: float) -> float:
    """Paced line without buffers: every own stop stops the line (see the module docstring)."""
    lost = 0.0
    for st in stations:
        for lam, m, _ in _outages(st):
            lost += lam * st.mean_cycle_s * m / takt_s
    return 1.0 / (1.0 + lost)


def unlimited_buffer_fraction(stations: Sequence[StationModel], takt_s: float) -> float:
    """Paced line with unlimited buffers: the customer's takt or the weakest machine's capacity."""
    worst = min(effective_process(st.mean_cycle_s, 0.0, _outages(st))[0] * takt_s / st.mean_cycle_s
                for st in stations)
    return min(1.0, worst)


# --- two-machine closed forms (field reference §5.4) -----------------------------------------------------


def bernoulli_two_machine(p1: float, p2: float, n: int) -> float:
    """Li & Meerkov: production rate of a two-machine Bernoulli line, blocked before service, buffer N."""
    if n < 1:
        raise ValueError("N >= 1")
    if p1 == p2:
        q = (1 - p1) / (n + 1 - p1)
    else:
        alpha = p1 * (1 - p2) / (p2 * (1 - p1))
        q = (1 - p1) * (1 - alpha) / (1 - (p1 / p2) * alpha**n)
    return p2 * (1 - q)


def zero_buffer_two_machine(mtbf1: float, mttr1: float, mtbf2: float, mttr2: float) -> float:
    """Operation-dependent failures, no buffer, unit cycles: PR = 1 / (1 + MTTR1/MTBF1 + MTTR2/MTBF2)."""
    return 1.0 / (1.0 + mttr1 / mtbf1 + mttr2 / mtbf2)


def infinite_buffer_two_machine(mtbf1: float, mttr1: float, mtbf2: float, mttr2: float) -> float:
    """Unlimited buffer: PR = min(e1, e2), e = MTBF / (MTBF + MTTR)."""
    return min(mtbf1 / (mtbf1 + mttr1), mtbf2 / (mtbf2 + mttr2))


def ride_through_parts(stop_s: float, takt_s: float) -> int:
    """§5.3: parts needed to ride through a stop of the given length at takt: ceil(D / takt)."""
    return math.ceil(stop_s / takt_s - 1e-12)
