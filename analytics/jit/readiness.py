"""JIT readiness of a line: which buffers can go, which must stay, and what to fix first.

``assess(setup, inputs)`` runs the whole analysis on measured inputs (no I/O):

1. a station model per machine (``analytics.jit.model``: resampled or fitted, stated per machine);
2. the recommendation: marginal-gain search for the smallest buffers keeping the line at or above the
   target share of demand with the stated confidence (``analytics.jit.whatif``), re-checked on
   independent, longer replications;
3. curves: throughput against the size of each link, the other links at today's sizes;
4. cross-checks against analytic limits (no buffers, unlimited buffers), Little's law and Kingman;
5. blockers: for each machine, what halving its MTTR, its failures or its micro-stops is worth --
   screened by the throughput gain at the recommended buffers, the biggest levers then re-searched for
   the buffer they free;
6. the verdict: READY (the recommended buffers are at or near zero), REDUCE (smaller than today's), or
   NOT_READY (the target needs at least today's buffers, or cannot be reached by buffers at all).

THE LINE MODEL (stated in every answer): the machines in flow order with a finite buffer after each;
a customer pulls one part per takt after the last machine and does not wait -- a takt without a part is
lost (a JIT customer line stops); the last link is the finished-goods buffer before the customer.
Machines are blocked after service (a machine with a full buffer after it holds its finished part),
their stops run on the running clock (a starved or blocked machine does not fail), buffers start full.
Planned stops (setups, planned maintenance, breaks) are left out: takt is taken to be set on the time
left after them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from analytics.jit import analytic
from analytics.jit.inputs import MachineInputs
from analytics.jit.model import Improvement, StationModel, WorkSet, draw_work, station_model
from analytics.jit.whatif import DEFAULT_LADDER, Estimates, Scenario, evaluate, grow, trim, trim_many

Verdict = Literal["READY", "REDUCE", "NOT_READY"]
LARGE_BUFFER_PARTS = 1000  # stands in for "unlimited" when the line's capacity exceeds demand
LINE_MODEL = (
    "Serial line, machines in flow order, a finite buffer after each; a customer pulls one part per takt "
    "after the last machine and does not wait (a takt without a part is lost); blocking after service; "
    "own stops on the running clock (starved or blocked machines do not fail); buffers start full; planned "
    "stops left out (takt is set on the time left after them)."
)


@dataclass(frozen=True)
class LineSetup:
    """What the plant model says about the line: machines in flow order, takt, buffers today."""

    line_id: str
    machines: tuple[str, ...]
    ideal_cycle_s: Mapping[str, float]
    takt_s: float
    takt_basis: str  # how the takt was obtained
    shift_s: float  # production time of an average shift (stops per shift)
    current_buffers: tuple[int, ...]  # per link: after machine j; the last is finished goods

    def __post_init__(self) -> None:
        if len(self.current_buffers) != len(self.machines):
            raise ValueError("one buffer per machine (the last is the finished-goods buffer)")
        if not self.takt_s > 0:
            raise ValueError("takt must be > 0")

    @property
    def links(self) -> list[dict[str, str | None]]:
        out: list[dict[str, str | None]] = []
        for j, m in enumerate(self.machines):
            nxt = self.machines[j + 1] if j + 1 < len(self.machines) else None
            out.append({"after": m, "before": nxt,
                        "name": f"{m} -> {nxt}" if nxt else f"{m} -> customer (finished goods)"})
        return out

    @classmethod
    def from_plant(cls, line: Any, site: Any) -> LineSetup:
        """From ``andon.plant`` Line and Site objects (duck-typed to keep the core free of the plant model)."""
        ordered = line.machines_in_order
        shift_s = _mean_shift_s(site)
        if line.takt_time_s is not None:
            takt, basis = float(line.takt_time_s), "takt_time_s from the plant model"
        else:
            takt = shift_s / float(line.demand_per_shift)
            basis = (f"demand_per_shift {line.demand_per_shift:g} over an average shift of "
                     f"{shift_s / 3600:.2f} h of production time")
        buffers = tuple(int(m.buffer_after.capacity) if m.buffer_after is not None else 0 for m in ordered)
        return cls(line.id, tuple(m.id for m in ordered), {m.id: m.ideal_cycle_s for m in ordered}, takt, basis,
                   shift_s, buffers)


def _mean_shift_s(site: Any) -> float:
    shifts = list(site.calendar.shifts)
    if not shifts:
        return 8 * 3600.0
    total = 0.0
    for s in shifts:
        length = _span_s(s.start, s.end)
        length -= sum(_span_s(b.start, b.end) for b in s.breaks)
        total += length
    return total / len(shifts)


def _span_s(a: Any, b: Any) -> float:
    sa = a.hour * 3600 + a.minute * 60 + a.second
    sb = b.hour * 3600 + b.minute * 60 + b.second
    return float((sb - sa) % 86400 or 86400)


@dataclass(frozen=True)
class ReadinessSettings:
    # Few long replications rather than many short ones: a line whose machines are only a little faster
    # than takt refills its buffers slowly, so buffer levels need tens of hours to forget the full start
    # (the warm-up, left out of every figure); short replications overstate what buffers achieve.
    search_reps: int = 12
    search_hours: float = 180.0  # production hours per replication in the search, warm-up included
    search_warmup_hours: float = 80.0
    verify_reps: int = 16
    verify_hours: float = 300.0
    verify_warmup_hours: float = 100.0
    curve_sizes: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50)
    near_zero: int = 2  # READY when every link's recommended size is at most this many parts
    ladder: tuple[int, ...] = DEFAULT_LADDER  # candidate sizes, in simulated units
    scan_blockers: int = 6  # biggest levers (by throughput gain) for which the freed buffer is measured
    refine_blockers: int = 2  # of those, re-searched link by link
    min_unit_s: float = 15.0  # parts are simulated in groups when the takt is shorter than this
    max_units_per_rep: int = 24000
    min_samples_to_resample: int = 30

    def group_for(self, takt_s: float) -> int:
        return max(1, math.ceil(self.min_unit_s / takt_s - 1e-9))

    def units_per_rep(self, hours: float, takt_s: float) -> int:
        g = self.group_for(takt_s)
        return int(min(max(hours * 3600.0 / (takt_s * g), 300), self.max_units_per_rep))

    def search_work(self, models: Sequence[StationModel], takt_s: float, seed: int,
                    variants: Sequence[Mapping[str, Improvement]] = ()) -> WorkSet:
        return self._work(models, takt_s, self.search_hours, self.search_warmup_hours, self.search_reps,
                          np.random.SeedSequence([seed, 1]), variants)

    def verify_work(self, models: Sequence[StationModel], takt_s: float, seed: int,
                    variants: Sequence[Mapping[str, Improvement]] = ()) -> WorkSet:
        return self._work(models, takt_s, self.verify_hours, self.verify_warmup_hours, self.verify_reps,
                          np.random.SeedSequence([seed, 2]), variants)

    def _work(self, models: Sequence[StationModel], takt_s: float, hours: float, warmup_hours: float, reps: int,
              seed: np.random.SeedSequence, variants: Sequence[Mapping[str, Improvement]]) -> WorkSet:
        g = self.group_for(takt_s)
        units = self.units_per_rep(hours, takt_s)
        warmup = int(units * min(warmup_hours / hours, 0.8))
        return draw_work(models, takt_s, units, reps, seed, variants, group=g, warmup=warmup)


@dataclass(frozen=True)
class Blocker:
    machine: str
    improvement: str  # mttr_halved | failures_halved | micro_stops_halved
    text: str
    throughput_gain: float  # at the reference buffers, paired difference
    throughput_gain_ci: float
    buffer_freed: int | None  # parts, when re-searched
    share: float | None  # buffer_freed / recommended total
    needed_total: int | None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class Readiness:
    setup: LineSetup
    target: float
    confidence: float
    seed: int
    verdict: Verdict
    summary: str
    machines: tuple[MachineInputs, ...]
    models: tuple[StationModel, ...]
    recommended: tuple[int, ...]  # parts per link
    reached: bool
    recommended_point: dict[str, float]
    current_point: dict[str, float]
    zero_point: dict[str, float]
    unlimited_point: dict[str, float]
    curves: list[dict[str, Any]]
    blockers: list[Blocker]
    kingman: list[analytic.KingmanStation]
    cross_checks: list[dict[str, Any]]
    search_path: list[dict[str, Any]]
    simulation: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        per_machine = [m.to_dict(self.setup.shift_s) for m in self.machines]
        availabilities = [m.availability for m in self.machines if m.availability is not None]
        stops = [m.stops_per_shift(self.setup.shift_s) or 0.0 for m in self.machines]
        return {
            "line": {
                "availability_series": float(np.prod(availabilities)) if availabilities else None,
                "stops_per_shift": float(sum(stops)),
                "kingman_queue_parts": _sum_or_none([k.queue_parts for k in self.kingman]),
            },
            "machines": per_machine,
            "kingman": [k.to_dict() for k in self.kingman],
        }

    def evidence_summary(self) -> dict[str, str]:
        ev = self.evidence()
        machines = ev["machines"]
        out: dict[str, str] = {}
        a = ev["line"]["availability_series"]
        worst = min((m for m in machines if m["availability"] is not None), key=lambda m: m["availability"],
                    default=None)
        if a is not None:
            out["Availability"] = (f"line {a:.1%} if every own stop stopped the line; weakest "
                                   f"{worst['machine']} {worst['availability']:.1%}" if worst else f"{a:.1%}")
        with_bd = [m for m in machines if m["breakdowns"]["count"]]
        if with_bd:
            low = min(with_bd, key=lambda m: m["breakdowns"]["mtbf_h"])
            out["MTBF"] = f"shortest {low['breakdowns']['mtbf_h']:.1f} running h ({low['machine']})"
            long = max(with_bd, key=lambda m: m["breakdowns"]["mttr_p90_min"] or 0)
            b = long["breakdowns"]
            out["MTTR"] = (f"longest repairs at {long['machine']}: median {b['mttr_median_min']:.1f} min, "
                           f"90th percentile {b['mttr_p90_min']:.1f} min")
        else:
            out["MTBF"] = "no breakdown in the window"
        out["Stops per shift"] = f"{ev['line']['stops_per_shift']:.1f} own stops across the line (micro-stops included)"
        cvs = [(m["cycle"]["cv"], m["machine"]) for m in machines if m["cycle"]["cv"] is not None]
        if cvs:
            cv, who = max(cvs)
            out["Cycle-time variation"] = f"CV up to {cv:.2f} ({who})"
        kq = ev["line"]["kingman_queue_parts"]
        out["Kingman"] = ("queue in front of the machines at takt pace: "
                          + (f"{kq:.1f} parts on average" if kq is not None else "unbounded (a machine below takt)"))
        today = sum(self.setup.current_buffers)
        out["Throughput today"] = _fmt_point(self.current_point) + f" of demand with today's {today} parts"
        out["Without buffers"] = _fmt_point(self.zero_point) + " of demand"
        out["Model"] = f"takt {self.setup.takt_s:g} s ({self.setup.takt_basis}); " + self.simulation["summary"]
        return out

    def to_dict(self) -> dict[str, Any]:
        links = self.setup.links
        current_total = sum(self.setup.current_buffers)
        rec_total = sum(self.recommended)
        freed = current_total - rec_total
        return {
            "line": self.setup.line_id,
            "verdict": self.verdict,
            "summary": self.summary,
            "target": self.target,
            "confidence": self.confidence,
            "takt_s": self.setup.takt_s,
            "takt_basis": self.setup.takt_basis,
            "model": LINE_MODEL,
            "simulation": self.simulation,
            "links": links,
            "recommendation": {
                "reached": self.reached,
                "links": [{"after": lk["after"], "name": lk["name"], "current": c, "recommended": r}
                          for lk, c, r in zip(links, self.setup.current_buffers, self.recommended, strict=True)],
                "total_current": current_total,
                "total_recommended": rec_total,
                "inventory_freed": freed,
                # Little's law at takt: a part of buffer is one takt of lead time.
                "lead_time_freed_s": freed * self.setup.takt_s,
                **self.recommended_point,
            },
            "current": {"total": current_total, **self.current_point},
            "curves": self.curves,
            "curves_others_at": "current",
            "blockers": [b.to_dict() for b in self.blockers],
            "evidence": self.evidence(),
            "evidence_summary": self.evidence_summary(),
            "inputs": {st.machine: st.describe() | {"notes": list(st.notes)} for st in self.models},
            "cross_checks": self.cross_checks,
            "search_path": self.search_path,
            "notes": self.notes,
        }


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(v for v in values if v is not None))


def _fmt_point(p: Mapping[str, float]) -> str:
    return f"{p['throughput_fraction']:.1%} ({p['ci_low']:.1%}-{p['ci_high']:.1%})"


# --- the analysis --------------------------------------------------------------------------------------


KAIZEN = (
    ("mttr_halved", "repairs", lambda m: Improvement(m, mttr_factor=0.5), "breakdowns"),
    ("failures_halved", "failures", lambda m: Improvement(m, failure_rate_factor=0.5), "breakdowns"),
    ("micro_stops_halved", "micro-stops", lambda m: Improvement(m, micro_stop_rate_factor=0.5), "micro_stops"),
)


def assess(setup: LineSetup, inputs: Sequence[MachineInputs], *, target: float = 0.99, confidence: float = 0.9,
           seed: int = 0, settings: ReadinessSettings | None = None) -> Readiness:
    """The JIT readiness of a line from its machines' measured inputs (see the module docstring)."""
    settings = settings or ReadinessSettings()
    _check_target(target, confidence)
    by_id = {m.machine: m for m in inputs}
    missing = [m for m in setup.machines if m not in by_id]
    if missing:
        raise ValueError(f"no measured inputs for {missing}")
    ordered = [by_id[m] for m in setup.machines]
    models = [station_model(m, settings.min_samples_to_resample) for m in ordered]
    g = settings.group_for(setup.takt_s)
    to_units = _units(g)
    variants: list[dict[str, Improvement]] = []
    variant_keys: list[tuple[str, str, str]] = []
    for st in models:
        for key, noun, make, attr in KAIZEN:
            if getattr(st, attr) is not None:
                variants.append({st.machine: make(st.machine)})
                variant_keys.append((st.machine, key, noun))
    ladder = settings.ladder
    ws = settings.search_work(models, setup.takt_s, seed, variants)
    # 1. Recommendation on the search replications.
    grown = grow(ws, target, confidence, ladder=ladder)
    best = trim(ws, grown.buffers, target, confidence, ladder=ladder) if grown.reached else grown
    path = [*grown.path, *best.path[1:]] if grown.reached else list(grown.path)
    # 2. Re-check on independent, longer replications (with today's, none and unlimited for the checks).
    wv = settings.verify_work(models, setup.takt_s, seed)
    current_units = tuple(to_units(b) for b in setup.current_buffers)
    # The unlimited-buffer limit is a steady state: a line with capacity above demand would pile up
    # finished goods without end (stand-in: very large buffers, full); one below demand drains them
    # (unlimited buffers, starting empty).
    capacity = analytic.unlimited_buffer_fraction(models, setup.takt_s)
    huge = (LARGE_BUFFER_PARTS // g,) * len(current_units) if capacity >= 1.0 else (None,) * len(current_units)
    checks = [Scenario(best.buffers), Scenario(current_units), Scenario((0,) * len(current_units)),
              Scenario(huge)]
    ev = evaluate(wv, checks, confidence=confidence)
    recommended_units = best.buffers
    reached = grown.reached and ev.low(0) >= target
    notes: list[str] = []
    rec_point = ev.point(0)
    if grown.reached and not reached:
        more = grow(wv, target, confidence, start=best.buffers, ladder=ladder)
        notes.append("the independent re-check fell short of the target; the search continued on it")
        path.extend(more.path)
        recommended_units, reached = more.buffers, more.reached
        rec_point = {"throughput_fraction": more.throughput_fraction, "ci_low": more.ci_low,
                     "ci_high": more.ci_high}
    recommended = tuple(u * g for u in recommended_units)
    # 3. Curves: one link at a time, the others at today's sizes.
    curves = _curves(ws, setup, current_units, recommended, settings, confidence, g)
    # 4. Blockers.
    blockers = _blockers(ws, variant_keys, recommended_units, reached, target, confidence, ladder, settings, g)
    # 5. Analytic cross-checks and the verdict.
    kingman = analytic.kingman_line(models, setup.takt_s)
    cross = _cross_checks(models, setup, ev, recommended, kingman)
    verdict, summary = _verdict(setup, recommended, reached, target, confidence, blockers, settings, ladder, g)
    summary += f" Today's buffers give {_fmt_point(ev.point(1))} of demand."
    simulation = {
        "engine": "simulator.line_engine.departures_from_work (max-plus recursion, common random numbers)",
        "search": {"replications": settings.search_reps, "hours_per_replication": ws.parts * ws.takt_s / 3600,
                   "warmup_hours": ws.warmup * ws.takt_s / 3600, "seed": [seed, 1]},
        "verification": {"replications": settings.verify_reps, "hours_per_replication": wv.parts * wv.takt_s / 3600,
                         "warmup_hours": wv.warmup * wv.takt_s / 3600, "seed": [seed, 2]},
        "parts_per_simulated_unit": g,
        "ladder_parts": [x * g for x in ladder],
        "evaluations": grown.evaluations + (best.evaluations if best is not grown else 0),
        "summary": (f"{settings.verify_reps} independent replications of "
                    f"{wv.parts * wv.takt_s / 3600:.0f} production hours (the first "
                    f"{wv.warmup * wv.takt_s / 3600:.0f} h left out) for the recommendation and today's buffers, "
                    f"{settings.search_reps} x {ws.parts * ws.takt_s / 3600:.0f} h in the search, curves and "
                    f"blockers; {confidence:.0%} confidence intervals"),
    }
    return Readiness(
        setup=setup, target=target, confidence=confidence, seed=seed, verdict=verdict, summary=summary,
        machines=tuple(ordered), models=tuple(models), recommended=recommended, reached=reached,
        recommended_point=rec_point, current_point=ev.point(1), zero_point=ev.point(2),
        unlimited_point=ev.point(3), curves=curves, blockers=blockers, kingman=kingman, cross_checks=cross,
        search_path=[{"buffers": [b * g for b in s.buffers], "throughput_fraction": s.throughput_fraction,
                      "ci_low": s.ci_low, "move": s.move} for s in path],
        simulation=simulation, notes=notes,
    )


def _check_target(target: float, confidence: float) -> None:
    if not 0 < target <= 1:
        raise ValueError("target is a share of demand in (0, 1]")
    if not 0.5 <= confidence < 1:
        raise ValueError("confidence must be in [0.5, 1)")


def _units(group: int):
    def to_units(parts: int | None) -> int | None:
        return None if parts is None else int(parts) // group
    return to_units


def _curves(ws: WorkSet, setup: LineSetup, current: tuple[int | None, ...], recommended: tuple[int, ...],
            settings: ReadinessSettings, confidence: float, g: int) -> list[dict[str, Any]]:
    scenarios: list[Scenario] = []
    owners: list[tuple[int, int]] = []
    for j in range(len(current)):
        sizes = sorted({*settings.curve_sizes, setup.current_buffers[j], recommended[j]})
        for size in sizes:
            buffers = list(current)
            buffers[j] = size // g
            owners.append((j, size))
            scenarios.append(Scenario(tuple(buffers)))
    est = evaluate(ws, scenarios, confidence=confidence)
    curves = []
    for j, link in enumerate(setup.links):
        points = [{"buffer": size, **est.point(i)} for i, (owner, size) in enumerate(owners) if owner == j]
        curves.append({"link": link["name"], "after": link["after"], "current": setup.current_buffers[j],
                       "recommended": recommended[j], "points": points})
    return curves


SHRINK = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)


def _blockers(ws: WorkSet, keys: Sequence[tuple[str, str, str]], reference: tuple[int, ...], reached: bool,
              target: float, confidence: float, ladder: Sequence[int], settings: ReadinessSettings,
              g: int) -> list[Blocker]:
    """Screen every kaizen variant by its throughput gain at the reference buffers (one batch); for the
    biggest levers measure the buffer they free: the recommended allocation shrunk in proportion until the
    improved line just keeps the target (one batch), then, for the very biggest, re-searched link by link
    (trim) from there."""
    if not keys:
        return []
    scenarios = [Scenario(reference, 0)] + [Scenario(reference, v + 1) for v in range(len(keys))]
    est = evaluate(ws, scenarios, confidence=confidence)
    gains = [est.diff(v + 1, 0) for v in range(len(keys))]
    order = sorted(range(len(keys)), key=lambda v: -gains[v][0])
    total = sum(reference) * g
    needed: dict[int, tuple[int, ...]] = {}
    if reached and total > 0:
        scanned = [v for v in order[: settings.scan_blockers] if gains[v][0] > 0]
        shrunk = sorted({_shrink(reference, f, ladder) for f in SHRINK}, key=sum, reverse=True)
        scan = [Scenario(b, v + 1) for v in scanned for b in shrunk]
        scan_est = evaluate(ws, scan, confidence=confidence) if scan else None
        for k, v in enumerate(scanned):
            best = reference
            for j, b in enumerate(shrunk):
                assert scan_est is not None
                if scan_est.low(k * len(shrunk) + j) >= target and sum(b) < sum(best):
                    best = b
            needed[v] = best
        refine = sorted(scanned, key=lambda v: sum(needed[v]))[: settings.refine_blockers]
        if refine:
            results = trim_many(ws, [(v + 1, needed[v]) for v in refine], target, confidence, ladder=ladder,
                                max_rounds=6)
            for v, res in zip(refine, results, strict=True):
                if sum(res.buffers) < sum(needed[v]):
                    needed[v] = res.buffers
    out = []
    for v in range(len(keys)):
        machine, key, noun = keys[v]
        gain, hw = gains[v]
        what = {"mttr_halved": "halving its MTTR", "failures_halved": "halving its failures",
                "micro_stops_halved": "halving its micro-stops"}[key]
        if v in needed:
            need = sum(needed[v]) * g
            buffer_freed = total - need
            share = buffer_freed / total
            text = (f"{machine}'s {noun} drive {share:.0%} of the needed buffer: {what} frees "
                    f"{buffer_freed} of {total} parts")
            out.append(Blocker(machine, key, text, gain, hw, buffer_freed, share, need))
        else:
            where = "the recommended buffers" if reached else "the largest buffers tried"
            text = f"{what} ({machine}) changes throughput at {where} by {100 * gain:+.2f} points"
            out.append(Blocker(machine, key, text, gain, hw, None, None, None))
    out.sort(key=lambda b: (-(b.buffer_freed if b.buffer_freed is not None else -1), -b.throughput_gain))
    return out


def _shrink(buffers: tuple[int, ...], factor: float, ladder: Sequence[int]) -> tuple[int, ...]:
    """Each link scaled by ``factor`` and rounded up to the ladder."""
    out = []
    for b in buffers:
        want = b * factor
        out.append(min((x for x in ladder if x >= want - 1e-9), default=b) if b > 0 else 0)
    return tuple(min(x, b) for x, b in zip(out, buffers, strict=True))


def _cross_checks(models: Sequence[StationModel], setup: LineSetup, ev: Estimates, recommended: tuple[int, ...],
                  kingman: Sequence[analytic.KingmanStation]) -> list[dict[str, Any]]:
    zero = analytic.zero_buffer_fraction(models, setup.takt_s)
    unlimited = analytic.unlimited_buffer_fraction(models, setup.takt_s)
    kq = _sum_or_none([k.queue_parts for k in kingman])
    return [
        {"name": "zero-buffer limit", "analytic": zero, **ev.point(2),
         "note": "every own stop stops the line: 1 / (1 + sum_i rate_i x cycle_i x MTTR_i / takt); the analytic "
                 "value ignores the cycle slack that absorbs part of short stops, so the simulation may be higher"},
        {"name": "unlimited-buffer limit", "analytic": unlimited, **ev.point(3),
         "note": "min(1, min_i availability_i x takt / cycle_i); simulated with unlimited buffers starting empty "
                 f"when the capacity is below demand, else with {LARGE_BUFFER_PARTS} parts per link starting full"},
        {"name": "Little's law", "analytic": sum(recommended) * setup.takt_s,
         "note": "recommended buffer in parts x takt = the lead time (s) it adds at takt pace (WIP = TH x CT)"},
        {"name": "Kingman", "analytic": kq,
         "note": "mean queue (parts) in front of the machines with unlimited buffers at takt pace: "
                 "the order of magnitude of the inventory the line's variability calls for"},
    ]


def _verdict(setup: LineSetup, recommended: tuple[int, ...], reached: bool, target: float, confidence: float,
             blockers: Sequence[Blocker], settings: ReadinessSettings, ladder: Sequence[int],
             g: int) -> tuple[Verdict, str]:
    current = sum(setup.current_buffers)
    total = sum(recommended)
    top = blockers[0] if blockers else None
    lever = f" First rock to remove: {top.text}." if top is not None else ""
    aim = f"{target:.1%} of demand with {confidence:.0%} confidence"
    if not reached:
        return "NOT_READY", (f"NOT READY: no buffer allocation up to {max(ladder) * g} parts per link reaches {aim}; "
                             f"the machines' reliability, not the buffers, limits the line.{lever}")
    if all(b <= settings.near_zero for b in recommended):
        return "READY", (f"READY: {aim} with {total} parts of buffer in total (today {current}); "
                         f"every link can go to {settings.near_zero} parts or less.{lever}")
    if total < current:
        return "REDUCE", (f"REDUCE: {aim} needs {total} parts of buffer (today {current}): {current - total} parts "
                          f"can go.{lever}")
    return "NOT_READY", (f"NOT READY: {aim} needs {total} parts of buffer, today's {current} are not enough."
                         f"{lever}")


# --- what-if --------------------------------------------------------------------------------------------


def what_if(setup: LineSetup, inputs: Sequence[MachineInputs], *, buffers: Sequence[int] | None = None,
            improvements: Sequence[Improvement] = (), target: float = 0.99, confidence: float = 0.9, seed: int = 0,
            recommend: bool = True, settings: ReadinessSettings | None = None) -> dict[str, Any]:
    """Predicted throughput for given buffer sizes (default today's) with and without improvements
    (paired: common random numbers), and the buffers recommended for the improved line."""
    settings = settings or ReadinessSettings()
    _check_target(target, confidence)
    by_id = {m.machine: m for m in inputs}
    ordered = [by_id[m] for m in setup.machines]
    models = [station_model(m, settings.min_samples_to_resample) for m in ordered]
    combined: dict[str, Improvement] = {}
    for imp in improvements:
        if imp.machine not in by_id:
            raise KeyError(f"machine {imp.machine!r} is not on line {setup.line_id!r}")
        if imp.machine in combined:
            raise ValueError(f"give one improvement per machine ({imp.machine!r} repeats)")
        combined[imp.machine] = imp
    sizes = tuple(setup.current_buffers) if buffers is None else tuple(int(b) for b in buffers)
    if len(sizes) != len(setup.machines):
        raise ValueError(f"give {len(setup.machines)} buffer sizes, one after each machine (the last is finished "
                         f"goods), got {len(sizes)}")
    if any(b < 0 for b in sizes):
        raise ValueError("buffer sizes must be >= 0")
    g = settings.group_for(setup.takt_s)
    variants = [combined] if combined else []
    wv = settings.verify_work(models, setup.takt_s, seed, variants)
    units = tuple(b // g for b in sizes)
    scen = [Scenario(units, 0)] + ([Scenario(units, 1)] if combined else [])
    ev = evaluate(wv, scen, confidence=confidence)
    out: dict[str, Any] = {
        "line": setup.line_id,
        "target": target,
        "confidence": confidence,
        "takt_s": setup.takt_s,
        "model": LINE_MODEL,
        "buffers": [{"after": lk["after"], "name": lk["name"], "size": b}
                    for lk, b in zip(setup.links, sizes, strict=True)],
        "improvements": [imp.label for imp in improvements],
        "baseline": ev.point(0),
        "predicted": ev.point(len(scen) - 1),
    }
    if combined:
        gain, hw = ev.diff(1, 0)
        out["gain"] = {"throughput_fraction": gain, "ci_low": gain - hw, "ci_high": gain + hw}
    if recommend:
        ws = settings.search_work(models, setup.takt_s, seed, variants)
        variant = 1 if combined else 0
        grown = grow(ws, target, confidence, variant=variant, ladder=settings.ladder)
        best = trim(ws, grown.buffers, target, confidence, variant=variant, ladder=settings.ladder) \
            if grown.reached else grown
        check = evaluate(wv, [Scenario(best.buffers, variant)], confidence=confidence)
        rec = tuple(b * g for b in best.buffers)
        out["recommendation"] = {
            "reached": grown.reached and check.low(0) >= target,
            "links": [{"after": lk["after"], "name": lk["name"], "current": c, "recommended": r}
                      for lk, c, r in zip(setup.links, setup.current_buffers, rec, strict=True)],
            "total_current": sum(setup.current_buffers),
            "total_recommended": sum(rec),
            "inventory_freed": sum(setup.current_buffers) - sum(rec),
            **check.point(0),
        }
    return out


__all__ = ["LINE_MODEL", "Blocker", "LineSetup", "Readiness", "ReadinessSettings", "assess", "what_if"]
