"""OEE (OEE.com / Vorne definitions), TEEP, the time waterfall, the six big losses and the ISO 22400-2 view.

All figures are derived from an ``OeeTotals`` (summed seconds and counts), so any roll-up is a sum of
totals followed by one derivation: never an average of percentages.

Definitions (OEE.com, field reference §1.1)::

    PPT   planned production time  = running + small stops + breakdowns + setup + starved + blocked
    Run   run time                 = running + small stops   (small stops are a performance loss)
    A     availability             = Run / PPT
    P     performance              = ideal time / Run, ideal time = sum(ideal cycle time x count)
                                     (capped at 1 and flagged; the uncapped value is reported too)
    Q     quality                  = good / total
    OEE                            = fully productive time / PPT = A x P x Q
    U     utilization              = PPT / observed time, observed time = all time - no data
    TEEP                           = OEE x U = fully productive time / observed time

PPT = 0 convention: every ratio whose denominator is zero is ``None`` (JSON null, "undefined"), never
0 or 1; the summed times and counts are still reported and roll up normally. So a machine that was not
scheduled has OEE null, and a scheduled machine that never ran has availability 0 and OEE 0 with
performance null.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analytics.buckets import BUCKETS, Bucket, assign_buckets
from analytics.ledger import LEDGER_COLUMNS, OeePolicy, OeeTotals, build_ledger

# A ratio above 1 by less than this is rounding of float seconds, not a wrong ideal cycle time.
_RATIO_TOLERANCE = 1e-9

FLAG_PERFORMANCE_CAPPED = "performance_capped"  # ideal time > run time: ideal cycle time too long?
FLAG_NO_PPT = "no_planned_production_time"  # PPT = 0: ratios undefined
FLAG_NO_DATA = "no_data_in_planned_time"  # offline time inside the schedule was left out of PPT
FLAG_UNSCHEDULED_PRODUCTION = "unscheduled_production"  # ran outside the schedule; added to PPT
FLAG_COUNTS_WITHOUT_RUN = "counts_without_run_time"  # parts counted but no run time at all


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


@dataclass(frozen=True, slots=True)
class WaterfallStep:
    name: str
    seconds: float
    kind: str  # "level" (time remaining) or "loss" (time lost between two levels)
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "kind": self.kind, "details": dict(self.details)}


@dataclass(frozen=True, slots=True)
class SixBigLosses:
    """Seconds lost to each of Nakajima's six big losses (OEE.com grouping), plus the line losses.

    Quality losses are in seconds of ideal time of the rejected parts; their counts are given too.
    Starved and blocked time is reported apart: OEE.com would book it under unplanned stops, but it is
    the line's loss, caused by a neighbour, not this machine's breakdown.
    """

    breakdowns_s: float
    setup_adjustments_s: float
    small_stops_s: float
    slow_cycles_s: float
    production_rejects_s: float
    startup_rejects_s: float
    production_reject_count: float
    startup_reject_count: float
    starved_s: float
    blocked_s: float

    def to_dict(self) -> dict[str, float]:
        return {
            "breakdowns_s": self.breakdowns_s,
            "setup_adjustments_s": self.setup_adjustments_s,
            "small_stops_s": self.small_stops_s,
            "slow_cycles_s": self.slow_cycles_s,
            "production_rejects_s": self.production_rejects_s,
            "startup_rejects_s": self.startup_rejects_s,
            "production_reject_count": self.production_reject_count,
            "startup_reject_count": self.startup_reject_count,
            "line_losses": {"starved_s": self.starved_s, "blocked_s": self.blocked_s},
        }


@dataclass(frozen=True, slots=True)
class IsoView:
    """ISO 22400-2:2014 KPIs (formulas as in the hsu-aut ISO22400-2 ontology). NOT the OEE.com figures.

    Differences from OEE.com: minor stoppages are delays (ADET) and so an availability loss;
    effectiveness is not capped at 100 %; planned down time (PDOT: planned maintenance, calendar planned
    stops) is outside planned busy time regardless of the plant's OEE.com setting, while setup (ASUT)
    stays inside it.
    """

    label: str
    pbt_s: float  # planned busy time = APT + ASUT + ADET + ADOT
    apt_s: float  # actual production time (running)
    asut_s: float  # actual unit setup time
    adet_s: float  # actual unit delay time: faults, minor stoppages, starved, blocked
    adot_s: float  # actual unit down time: idle, available but not running
    pdot_s: float  # planned down time
    availability: float | None  # APT / PBT
    effectiveness: float | None  # PRU x PQ / APT, unclipped
    quality_ratio: float | None  # GQ / PQ
    oee_index: float | None
    technical_efficiency: float | None  # APT / (APT + ADET)
    nee_index: float | None  # AUPT / PBT x effectiveness x quality ratio
    setup_rate: float | None  # ASUT / AUPT
    allocation_efficiency: float | None  # AUBT / PBT
    utilization_efficiency: float | None  # APT / AUBT

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class OeeResult:
    totals: OeeTotals
    planned_production_time_s: float
    run_time_s: float
    net_run_time_s: float
    fully_productive_time_s: float
    observed_time_s: float
    good_count: float
    availability: float | None
    performance: float | None  # capped at 1 (OEE.com)
    performance_uncapped: float | None
    quality: float | None
    oee: float | None
    utilization: float | None
    teep: float | None
    availability_excluding_line_losses: float | None  # run / (PPT - starved - blocked)
    data_coverage: float | None  # share of scheduled time with data
    waterfall: tuple[WaterfallStep, ...]
    six_big_losses: SixBigLosses
    iso22400: IsoView
    flags: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "availability": self.availability,
            "performance": self.performance,
            "performance_uncapped": self.performance_uncapped,
            "quality": self.quality,
            "oee": self.oee,
            "utilization": self.utilization,
            "teep": self.teep,
            "availability_excluding_line_losses": self.availability_excluding_line_losses,
            "data_coverage": self.data_coverage,
            "planned_production_time_s": self.planned_production_time_s,
            "run_time_s": self.run_time_s,
            "net_run_time_s": self.net_run_time_s,
            "fully_productive_time_s": self.fully_productive_time_s,
            "observed_time_s": self.observed_time_s,
            "total_count": self.totals.total_count,
            "good_count": self.good_count,
            "reject_count": self.totals.reject_count,
            "flags": list(self.flags),
            "waterfall": [s.to_dict() for s in self.waterfall],
            "six_big_losses": self.six_big_losses.to_dict(),
            "iso22400": self.iso22400.to_dict(),
            "totals": self.totals.to_dict(),
        }


def oee_from_totals(t: OeeTotals) -> OeeResult:
    """Derive every OEE figure from summed seconds and counts."""
    ppt = t.running_s + t.small_stop_s + t.breakdown_s + t.setup_s + t.starved_s + t.blocked_s
    run = t.running_s + t.small_stop_s
    observed = t.all_time_s - t.no_data_s
    performance_uncapped = _ratio(t.ideal_time_s, run)
    net_run = min(t.ideal_time_s, run)
    performance_loss = run - net_run
    # Small stops are measured; slow cycles are what is left of the performance loss. When the machine
    # ran faster than ideal the small stops are limited to the loss so the waterfall still adds up.
    small_loss = min(t.small_stop_s, performance_loss)
    slow_loss = performance_loss - small_loss
    good = t.total_count - t.reject_count
    if t.total_count > 0:
        fully_productive = net_run * good / t.total_count
        startup_loss = net_run * t.startup_rejects / t.total_count
        production_reject_loss = net_run * (t.reject_count - t.startup_rejects) / t.total_count
    else:
        fully_productive = startup_loss = production_reject_loss = 0.0
    quality_loss = net_run - fully_productive

    flags: list[str] = []
    if ppt <= 0:
        flags.append(FLAG_NO_PPT)
    if performance_uncapped is not None and performance_uncapped > 1 + _RATIO_TOLERANCE:
        flags.append(FLAG_PERFORMANCE_CAPPED)
    if t.no_data_s > 0:
        flags.append(FLAG_NO_DATA)
    if t.unscheduled_running_s > 0:
        flags.append(FLAG_UNSCHEDULED_PRODUCTION)
    if run <= 0 and t.total_count > 0:
        flags.append(FLAG_COUNTS_WITHOUT_RUN)

    performance = None if performance_uncapped is None else min(performance_uncapped, 1.0)
    schedule_loss = t.unscheduled_s + t.planned_stop_excluded_s
    waterfall = (
        WaterfallStep("all_time", t.all_time_s, "level"),
        WaterfallStep("no_data", t.no_data_s, "loss"),
        WaterfallStep("observed_time", observed, "level"),
        WaterfallStep(
            "schedule_loss",
            schedule_loss,
            "loss",
            {"not_scheduled_s": t.unscheduled_s, "planned_stops_excluded_s": t.planned_stop_excluded_s},
        ),
        WaterfallStep("planned_production_time", ppt, "level"),
        WaterfallStep(
            "availability_loss",
            ppt - run,
            "loss",
            {
                "breakdowns_s": t.breakdown_s,
                "setup_adjustments_s": t.setup_s,
                "starved_s": t.starved_s,
                "blocked_s": t.blocked_s,
            },
        ),
        WaterfallStep("run_time", run, "level"),
        WaterfallStep(
            "performance_loss", performance_loss, "loss", {"small_stops_s": small_loss, "slow_cycles_s": slow_loss}
        ),
        WaterfallStep("net_run_time", net_run, "level"),
        WaterfallStep(
            "quality_loss",
            quality_loss,
            "loss",
            {"production_rejects_s": production_reject_loss, "startup_rejects_s": startup_loss},
        ),
        WaterfallStep("fully_productive_time", fully_productive, "level"),
    )
    six = SixBigLosses(
        breakdowns_s=t.breakdown_s,
        setup_adjustments_s=t.setup_s,
        small_stops_s=small_loss,
        slow_cycles_s=slow_loss,
        production_rejects_s=production_reject_loss,
        startup_rejects_s=startup_loss,
        production_reject_count=t.reject_count - t.startup_rejects,
        startup_reject_count=t.startup_rejects,
        starved_s=t.starved_s,
        blocked_s=t.blocked_s,
    )
    return OeeResult(
        totals=t,
        planned_production_time_s=ppt,
        run_time_s=run,
        net_run_time_s=net_run,
        fully_productive_time_s=fully_productive,
        observed_time_s=observed,
        good_count=good,
        availability=_ratio(run, ppt),
        performance=performance,
        performance_uncapped=performance_uncapped,
        quality=_ratio(good, t.total_count),
        oee=_ratio(fully_productive, ppt),
        utilization=_ratio(ppt, observed),
        teep=_ratio(fully_productive, observed),
        availability_excluding_line_losses=_ratio(run, ppt - t.starved_s - t.blocked_s),
        data_coverage=_ratio(ppt + t.planned_stop_excluded_s, ppt + t.planned_stop_excluded_s + t.no_data_s),
        waterfall=waterfall,
        six_big_losses=six,
        iso22400=iso_view(t),
        flags=tuple(flags),
    )


def iso_view(t: OeeTotals) -> IsoView:
    pbt = t.iso_apt_s + t.iso_asut_s + t.iso_adet_s + t.iso_adot_s
    aupt = t.iso_apt_s + t.iso_asut_s
    aubt = aupt + t.iso_adet_s
    availability = _ratio(t.iso_apt_s, pbt)
    effectiveness = _ratio(t.ideal_time_s, t.iso_apt_s)
    quality_ratio = _ratio(t.total_count - t.reject_count, t.total_count)
    parts = (availability, effectiveness, quality_ratio)
    oee_index = None if None in parts else availability * effectiveness * quality_ratio  # type: ignore[operator]
    nee_basis = _ratio(aupt, pbt)
    nee = (
        None
        if nee_basis is None or effectiveness is None or quality_ratio is None
        else nee_basis * effectiveness * quality_ratio
    )
    return IsoView(
        label="ISO 22400-2:2014 (availability = APT/PBT, effectiveness unclipped)",
        pbt_s=pbt,
        apt_s=t.iso_apt_s,
        asut_s=t.iso_asut_s,
        adet_s=t.iso_adet_s,
        adot_s=t.iso_adot_s,
        pdot_s=t.iso_pdot_s,
        availability=availability,
        effectiveness=effectiveness,
        quality_ratio=quality_ratio,
        oee_index=oee_index,
        technical_efficiency=_ratio(t.iso_apt_s, t.iso_apt_s + t.iso_adet_s),
        nee_index=nee,
        setup_rate=_ratio(t.iso_asut_s, aupt),
        allocation_efficiency=_ratio(aubt, pbt),
        utilization_efficiency=_ratio(t.iso_apt_s, aubt),
    )


def compute_oee(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    now: dt.datetime | None = None,
) -> OeeResult:
    """OEE of all the periods given (one machine, a line's machines, a shift, any window)."""
    return oee_from_totals(OeeTotals.from_ledger(build_ledger(periods, stops, policy, now)))


def rollup(items: Iterable[OeeResult | OeeTotals]) -> OeeResult:
    """Roll up machines, lines, shifts or sites: sum their times and counts, then derive once."""
    total = OeeTotals()
    for item in items:
        total = total + (item.totals if isinstance(item, OeeResult) else item)
    return oee_from_totals(total)


def oee_by(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    by: str | Sequence[str],
    now: dt.datetime | None = None,
    *,
    ledger: pd.DataFrame | None = None,
) -> dict[Any, OeeResult]:
    """OEE per group of any period column(s), e.g. ``"machine"`` or ``"shift_key"``.

    ``ledger``: ``build_ledger(periods, stops, policy, now)`` when the caller already has it (then
    periods, stops and now are not read again)."""
    if ledger is None:
        ledger = build_ledger(periods, stops, policy, now)
    keys = [by] if isinstance(by, str) else list(by)
    sums = ledger.groupby(keys, dropna=False, sort=True)[list(LEDGER_COLUMNS)].sum()
    return {key: oee_from_totals(totals) for key, totals in OeeTotals.per_group(sums).items()}


@dataclass(frozen=True, slots=True)
class OeeBucket:
    bucket: Bucket
    result: OeeResult

    def to_dict(self) -> dict[str, Any]:
        return {**self.bucket.to_dict(), **self.result.to_dict()}


def oee_series(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    bucket: str,
    tz: str,
    now: dt.datetime | None = None,
    *,
    ledger: pd.DataFrame | None = None,
) -> list[OeeBucket]:
    """OEE in time buckets: ``hour``, ``shift``, ``day`` or ``week`` (day and week in the site's local
    time zone ``tz``; weeks start on Monday). Each bucket is the sum of the periods inside it, so the
    buckets of a day sum to the day. Periods without a shift are left out of ``shift`` buckets.
    ``ledger`` as in ``oee_by``.
    """
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {BUCKETS}, got {bucket!r}")
    if ledger is None:
        ledger = build_ledger(periods, stops, policy, now)
    if ledger.empty:
        return []
    # Bucket keys from the time columns alone (not a copy of the whole ledger); shift buckets leave out
    # the rows without a shift.
    keyed, buckets = assign_buckets(ledger[["period_start", "period_end", "shift_key"]], bucket, tz)
    values = ledger[list(LEDGER_COLUMNS)]
    if len(keyed) != len(values):
        values = values.loc[keyed.index]
    # Group by integer codes of the keys (cheaper than by the keys themselves; the same rows, same sums).
    codes, keys = pd.factorize(keyed["bucket_key"].to_numpy(), sort=True)
    sums = values.groupby(codes, sort=True).sum()
    series = [OeeBucket(buckets[keys[code]], oee_from_totals(t)) for code, t in OeeTotals.per_group(sums).items()]
    return sorted(series, key=lambda b: b.bucket.start)
