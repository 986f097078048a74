"""Scenario evaluation (buffer sizes x variants, many at once) and the buffer recommendation search.

A scenario is a buffer size per link plus a variant (0: the line as measured, else a set of
improvements). All scenarios evaluated against one ``WorkSet`` share its draws (common random numbers),
so the difference between two scenarios is measured replication by replication (paired), not blurred
by different luck. Every figure comes with a confidence interval over the independent replications
(Student t).

The recommendation is a marginal-gain allocation across links (never one link at a time in isolation):
starting from no buffers at all, each round evaluates raising every link by one rung of a size
ladder, and takes the move with the largest throughput gain per unit of buffer (when far from the
target, several non-competing moves at once, each counted at half its gain so the round does not
overshoot); once the lower confidence bound reaches the target, a trim phase lowers any link whose
reduction keeps the bound at or above the target, smallest loss per unit freed first. Then the result
is re-checked on independent, longer replications, and raised further there if it falls short.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from analytics.jit.model import WorkSet
from simulator.line_engine import UNLIMITED, departures_from_work

DEFAULT_LADDER = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300)
MEMORY_BUDGET_BYTES = 96 * 1024 * 1024

Buffers = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    buffers: Buffers  # per link; None = unlimited
    variant: int = 0


@dataclass(frozen=True)
class Estimates:
    """Throughput fraction of demand per scenario and replication, with CI helpers."""

    fractions: np.ndarray  # (scenarios, reps)
    confidence: float
    ceiling: float | None = None  # a fraction of demand cannot exceed 1: intervals are cut there

    @property
    def reps(self) -> int:
        return int(self.fractions.shape[1])

    def _t(self) -> float:
        return float(stats.t.ppf(0.5 + self.confidence / 2, self.reps - 1)) if self.reps > 1 else float("inf")

    def mean(self, i: int) -> float:
        return float(self.fractions[i].mean())

    def half_width(self, i: int) -> float:
        x = self.fractions[i]
        return self._t() * float(x.std(ddof=1)) / math.sqrt(x.size) if x.size > 1 else float("inf")

    def low(self, i: int) -> float:
        return float(self.mean(i) - self.half_width(i))

    def high(self, i: int) -> float:
        high = float(self.mean(i) + self.half_width(i))
        return min(high, self.ceiling) if self.ceiling is not None else high

    def diff(self, i: int, j: int) -> tuple[float, float]:
        """Mean of the paired difference i - j and its CI half width (common random numbers)."""
        d = self.fractions[i] - self.fractions[j]
        hw = self._t() * float(d.std(ddof=1)) / math.sqrt(d.size) if d.size > 1 else float("inf")
        return float(d.mean()), hw

    def point(self, i: int) -> dict[str, float]:
        return {"throughput_fraction": self.mean(i), "ci_low": self.low(i), "ci_high": self.high(i)}


def evaluate(workset: WorkSet, scenarios: Sequence[Scenario], *, confidence: float = 0.9,
             warmup_fraction: float = 0.05) -> Estimates:
    """Throughput per scenario and replication, as a fraction of demand (paced line) or parts per
    second (a line without customer, ``workset.takt_s == 0``). Buffers start full; the work set's
    warm-up (else ``warmup_fraction`` of the parts) is left out."""
    n_links = workset.stations - 1
    for sc in scenarios:
        if len(sc.buffers) != n_links:
            raise ValueError(f"a scenario needs {n_links} buffer sizes, got {len(sc.buffers)}")
        if any(b is not None and b < 0 for b in sc.buffers):
            raise ValueError("buffer sizes must be >= 0")
    reps = workset.reps
    parts = workset.parts
    k0 = workset.warmup if workset.warmup > 0 else max(int(parts * warmup_fraction), 1)
    k1 = parts - 1
    out = np.empty((len(scenarios), reps))
    order = sorted(range(len(scenarios)), key=lambda s: _largest(scenarios[s].buffers))
    width = workset.stations + 2
    start = 0
    while start < len(order):
        # Grow the batch while the ring of departure times stays within the memory budget.
        stop = start + 1
        while stop < len(order):
            biggest = _largest(scenarios[order[stop]].buffers)
            cost = (2 * (biggest + 2) + 2 + 256) * width * (stop + 1 - start) * reps * 8
            if cost > MEMORY_BUDGET_BYTES:
                break
            stop += 1
        batch = order[start:stop]
        caps = np.empty((n_links, len(batch) * reps), dtype=np.int64)
        src = np.empty((workset.stations, len(batch) * reps), dtype=np.int64)
        for j, s in enumerate(batch):
            sc = scenarios[s]
            caps[:, j * reps:(j + 1) * reps] = np.array(
                [UNLIMITED if b is None else int(b) for b in sc.buffers], dtype=np.int64)[:, None]
            src[:, j * reps:(j + 1) * reps] = workset.sources(sc.variant)
        times = departures_from_work(workset.work, caps, src, marks=[k0, k1], start_full=True, chunk=256)
        rate = (k1 - k0) / (times[1] - times[0])
        if workset.takt_s:
            rate = rate * workset.takt_s
        for j, s in enumerate(batch):
            out[s] = rate[j * reps:(j + 1) * reps]
        start = stop
    return Estimates(out, confidence, 1.0 if workset.takt_s else None)


def _largest(buffers: Buffers) -> int:
    return max((b for b in buffers if b is not None), default=0)


# --- the search ------------------------------------------------------------------------------------------


def rung_above(size: int, ladder: Sequence[int], steps: int = 1) -> int | None:
    higher = [x for x in ladder if x > size]
    return higher[steps - 1] if len(higher) >= steps else None


def rung_below(size: int, ladder: Sequence[int]) -> int | None:
    lower = [x for x in ladder if x < size]
    return lower[-1] if lower else None


@dataclass(frozen=True)
class SearchStep:
    buffers: tuple[int, ...]
    throughput_fraction: float
    ci_low: float
    move: str


@dataclass(frozen=True)
class SearchResult:
    buffers: tuple[int, ...]
    reached: bool
    throughput_fraction: float
    ci_low: float
    ci_high: float
    evaluations: int
    path: tuple[SearchStep, ...]


def _with(buffers: tuple[int, ...], link: int, size: int) -> tuple[int, ...]:
    out = list(buffers)
    out[link] = size
    return tuple(out)


def grow(workset: WorkSet, target: float, confidence: float, *, start: tuple[int, ...] | None = None,
         variant: int = 0, ladder: Sequence[int] = DEFAULT_LADDER, max_rounds: int = 60,
         fixed: Sequence[bool] | None = None) -> SearchResult:
    """Marginal-gain allocation: raise links until the lower confidence bound reaches ``target``."""
    n_links = workset.stations - 1
    buffers = tuple(start) if start is not None else (0,) * n_links
    frozen = tuple(fixed) if fixed is not None else (False,) * n_links
    path: list[SearchStep] = []
    evaluations = 0
    for _ in range(max_rounds):
        candidates: list[tuple[int, tuple[int, ...]]] = []
        for link in range(n_links):
            if frozen[link]:
                continue
            size = rung_above(buffers[link], ladder, 1)
            if size is not None:
                candidates.append((link, _with(buffers, link, size)))
        est = evaluate(workset, [Scenario(buffers, variant)] + [Scenario(c, variant) for _, c in candidates],
                       confidence=confidence)
        evaluations += 1 + len(candidates)
        if est.low(0) >= target:
            path.append(SearchStep(buffers, est.mean(0), est.low(0), "target reached"))
            return SearchResult(buffers, True, est.mean(0), est.low(0), est.high(0), evaluations, tuple(path))
        scored = []
        for idx, (link, cand) in enumerate(candidates, start=1):
            gain, _hw = est.diff(idx, 0)
            units = sum(cand) - sum(buffers)
            scored.append((gain / units, gain, link, cand, idx))
        scored.sort(key=lambda x: -x[0])
        if not scored or scored[0][1] <= 0:
            path.append(SearchStep(buffers, est.mean(0), est.low(0), "no move raises throughput"))
            return SearchResult(buffers, False, est.mean(0), est.low(0), est.high(0), evaluations, tuple(path))
        best = scored[0]
        new = best[3]
        moved = {best[2]}
        # The margin the mean still has to gain: the target plus the current CI half width.
        gap = target + est.half_width(0) - est.mean(0)
        gained = best[1]
        for eff, gain, link, cand, _idx in scored[1:]:
            if link in moved or eff <= 0 or gained + 0.5 * gain > 0.5 * gap:
                continue
            new = _with(new, link, cand[link])
            moved.add(link)
            gained += 0.5 * gain
        path.append(SearchStep(buffers, est.mean(0), est.low(0), _describe_move(buffers, new)))
        buffers = new
    est = evaluate(workset, [Scenario(buffers, variant)], confidence=confidence)
    evaluations += 1
    ok = est.low(0) >= target
    return SearchResult(buffers, ok, est.mean(0), est.low(0), est.high(0), evaluations, tuple(path))


def trim(workset: WorkSet, buffers: tuple[int, ...], target: float, confidence: float, *, variant: int = 0,
         ladder: Sequence[int] = DEFAULT_LADDER, max_rounds: int = 40) -> SearchResult:
    """Lower links one rung at a time while the lower confidence bound stays at or above ``target``."""
    return trim_many(workset, [(variant, buffers)], target, confidence, ladder=ladder, max_rounds=max_rounds)[0]


def trim_many(workset: WorkSet, starts: Sequence[tuple[int, tuple[int, ...]]], target: float, confidence: float,
              *, ladder: Sequence[int] = DEFAULT_LADDER, max_rounds: int = 40) -> list[SearchResult]:
    """``trim`` for several (variant, buffers) at once: each round is one batched evaluation."""
    current = [tuple(b) for _, b in starts]
    variants = [v for v, _ in starts]
    active = [True] * len(starts)
    last: list[tuple[float, float, float]] = [(float("nan"),) * 3] * len(starts)
    paths: list[list[SearchStep]] = [[] for _ in starts]
    evaluations = [0] * len(starts)
    for _ in range(max_rounds):
        scenarios: list[Scenario] = []
        owners: list[tuple[int, int, tuple[int, ...]]] = []  # (start index, scenario index, buffers)
        heads: dict[int, int] = {}
        for s, buffers in enumerate(current):
            if not active[s]:
                continue
            heads[s] = len(scenarios)
            scenarios.append(Scenario(buffers, variants[s]))
            for link, size in enumerate(buffers):
                lower = rung_below(size, ladder)
                if lower is not None:
                    cand = _with(buffers, link, lower)
                    owners.append((s, len(scenarios), cand))
                    scenarios.append(Scenario(cand, variants[s]))
        if not scenarios:
            break
        est = evaluate(workset, scenarios, confidence=confidence)
        for s, head in heads.items():
            evaluations[s] += 1 + sum(1 for o in owners if o[0] == s)
            last[s] = (est.mean(head), est.low(head), est.high(head))
            best: tuple[float, tuple[int, ...], int] | None = None
            for owner, idx, cand in owners:
                if owner != s or est.low(idx) < target:
                    continue
                loss = -est.diff(idx, head)[0]
                per_unit = loss / max(sum(current[s]) - sum(cand), 1)
                if best is None or per_unit < best[0]:
                    best = (per_unit, cand, idx)
            if best is None:
                active[s] = False
                paths[s].append(SearchStep(current[s], last[s][0], last[s][1], "no link can go lower"))
            else:
                paths[s].append(SearchStep(current[s], last[s][0], last[s][1], _describe_move(current[s], best[1])))
                current[s] = best[1]
                last[s] = (est.mean(best[2]), est.low(best[2]), est.high(best[2]))
        if not any(active):
            break
    results = []
    for s, buffers in enumerate(current):
        mean, low, high = last[s]
        results.append(SearchResult(buffers, low >= target, mean, low, high, evaluations[s], tuple(paths[s])))
    return results


def _describe_move(before: tuple[int, ...], after: tuple[int, ...]) -> str:
    moves = [f"link {k}: {a} -> {b}" for k, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    return "; ".join(moves) or "no change"
