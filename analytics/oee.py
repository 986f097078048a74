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

import numpy as np
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


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is positive; NaN (undefined: None in results) elsewhere."""
    return np.divide(numerator, denominator, out=np.full(denominator.shape, np.nan), where=denominator > 0)


@dataclass(frozen=True, slots=True)
class WaterfallStep:
    name: str
    seconds: float
    kind: str  # "level" (time remaining) or "loss" (time lost between two levels)
    details: dict[str, float] = field(default_factory=dict)


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


@dataclass(frozen=True, slots=True)
class OeeResult:
    """Every OEE figure of one set of totals (a row of an ``OeeTable``, which also writes its dict)."""

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
    table_row: tuple[OeeTable, int] = field(compare=False, repr=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        table, row = self.table_row
        return table.row_dict(row)


_FLAGS = (FLAG_NO_PPT, FLAG_PERFORMANCE_CAPPED, FLAG_NO_DATA, FLAG_UNSCHEDULED_PRODUCTION, FLAG_COUNTS_WITHOUT_RUN)
_ISO_LABEL = "ISO 22400-2:2014 (availability = APT/PBT, effectiveness unclipped)"
# OeeResult's plain number fields (the rest are built from the nested dicts).
_RESULT_NUMBERS = (
    "planned_production_time_s", "run_time_s", "net_run_time_s", "fully_productive_time_s", "observed_time_s",
    "good_count", "availability", "performance", "performance_uncapped", "quality", "oee", "utilization", "teep",
    "availability_excluding_line_losses", "data_coverage",
)


class OeeTable:
    """The OEE figures of many sets of totals at once: row i is the ``OeeResult`` of ``totals[i]``.

    ``totals``: an (n, len(LEDGER_COLUMNS)) array of summed ledger columns (a group-by sum). The
    arithmetic runs once on numpy columns, a year of day buckets in one pass instead of a Python object
    per figure; numpy does the same IEEE double operations in the same order as plain Python floats, so
    the figures are the same numbers either way. ``to_dicts`` gives the JSON shape of every row without
    building the result objects; ``result(i)`` builds one.
    """

    def __init__(self, totals: np.ndarray) -> None:
        t = np.asarray(totals, dtype=float).reshape(-1, len(LEDGER_COLUMNS))
        c = dict(zip(LEDGER_COLUMNS, t.T, strict=True))
        ppt = c["running_s"] + c["small_stop_s"] + c["breakdown_s"] + c["setup_s"] + c["starved_s"] + c["blocked_s"]
        run = c["running_s"] + c["small_stop_s"]
        observed = c["all_time_s"] - c["no_data_s"]
        performance_uncapped = _ratios(c["ideal_time_s"], run)
        net_run = np.minimum(c["ideal_time_s"], run)
        performance_loss = run - net_run
        # Small stops are measured; slow cycles are what is left of the performance loss. When the machine
        # ran faster than ideal the small stops are limited to the loss so the waterfall still adds up.
        small_loss = np.minimum(c["small_stop_s"], performance_loss)
        total, rejects, startup = c["total_count"], c["reject_count"], c["startup_rejects"]
        good = total - rejects
        counted = total > 0
        per_part = np.where(counted, total, 1.0)  # (rows without parts lose nothing to quality)
        fully_productive = np.where(counted, net_run * good / per_part, 0.0)
        pbt = c["iso_apt_s"] + c["iso_asut_s"] + c["iso_adet_s"] + c["iso_adot_s"]
        aupt = c["iso_apt_s"] + c["iso_asut_s"]
        aubt = aupt + c["iso_adet_s"]
        effectiveness = _ratios(c["ideal_time_s"], c["iso_apt_s"])
        quality = _ratios(good, total)
        iso_availability = _ratios(c["iso_apt_s"], pbt)
        self._columns: dict[str, np.ndarray] = {
            **c,
            "planned_production_time_s": ppt,
            "run_time_s": run,
            "net_run_time_s": net_run,
            "fully_productive_time_s": fully_productive,
            "observed_time_s": observed,
            "good_count": good,
            "availability": _ratios(run, ppt),
            "performance": np.minimum(performance_uncapped, 1.0),
            "performance_uncapped": performance_uncapped,
            "quality": quality,
            "oee": _ratios(fully_productive, ppt),
            "utilization": _ratios(ppt, observed),
            "teep": _ratios(fully_productive, observed),
            "availability_excluding_line_losses": _ratios(run, ppt - c["starved_s"] - c["blocked_s"]),
            "data_coverage": _ratios(ppt + c["planned_stop_excluded_s"],
                                     ppt + c["planned_stop_excluded_s"] + c["no_data_s"]),
            "schedule_loss_s": c["unscheduled_s"] + c["planned_stop_excluded_s"],
            "availability_loss_s": ppt - run,
            "performance_loss_s": performance_loss,
            "small_loss_s": small_loss,
            "slow_loss_s": performance_loss - small_loss,
            "quality_loss_s": net_run - fully_productive,
            "startup_loss_s": np.where(counted, net_run * startup / per_part, 0.0),
            "production_reject_loss_s": np.where(counted, net_run * (rejects - startup) / per_part, 0.0),
            "production_reject_count": rejects - startup,
            "iso_pbt_s": pbt,
            "iso_availability": iso_availability,
            "iso_effectiveness": effectiveness,
            "iso_quality_ratio": quality,
            "iso_oee_index": iso_availability * effectiveness * quality,
            "iso_technical_efficiency": _ratios(c["iso_apt_s"], c["iso_apt_s"] + c["iso_adet_s"]),
            "iso_nee_index": _ratios(aupt, pbt) * effectiveness * quality,
            "iso_setup_rate": _ratios(c["iso_asut_s"], aupt),
            "iso_allocation_efficiency": _ratios(aubt, pbt),
            "iso_utilization_efficiency": _ratios(c["iso_apt_s"], aubt),
        }
        raised = (
            ppt <= 0,
            performance_uncapped > 1 + _RATIO_TOLERANCE,
            c["no_data_s"] > 0,
            c["unscheduled_running_s"] > 0,
            (run <= 0) & counted,
        )
        code = sum(mask.astype(np.int64) << k for k, mask in enumerate(raised))
        self._flag_code: list[int] = np.asarray(code, dtype=np.int64).tolist()
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self._flag_code)

    def _values(self) -> list[dict[str, Any]]:
        """Each row's figures as Python floats, None where undefined (NaN: a ratio over nothing)."""
        if self._rows is None:
            names = list(self._columns)
            lists = [[None if v != v else v for v in col.tolist()] for col in self._columns.values()]
            self._rows = [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]
        return self._rows

    def row_dict(self, i: int) -> dict[str, Any]:
        """Row i in the API's shape (a new dict each call)."""
        v = self._values()[i]
        return {
            "availability": v["availability"],
            "performance": v["performance"],
            "performance_uncapped": v["performance_uncapped"],
            "quality": v["quality"],
            "oee": v["oee"],
            "utilization": v["utilization"],
            "teep": v["teep"],
            "availability_excluding_line_losses": v["availability_excluding_line_losses"],
            "data_coverage": v["data_coverage"],
            "planned_production_time_s": v["planned_production_time_s"],
            "run_time_s": v["run_time_s"],
            "net_run_time_s": v["net_run_time_s"],
            "fully_productive_time_s": v["fully_productive_time_s"],
            "observed_time_s": v["observed_time_s"],
            "total_count": v["total_count"],
            "good_count": v["good_count"],
            "reject_count": v["reject_count"],
            "flags": [f for k, f in enumerate(_FLAGS) if self._flag_code[i] >> k & 1],
            "waterfall": [
                {"name": "all_time", "seconds": v["all_time_s"], "kind": "level", "details": {}},
                {"name": "no_data", "seconds": v["no_data_s"], "kind": "loss", "details": {}},
                {"name": "observed_time", "seconds": v["observed_time_s"], "kind": "level", "details": {}},
                {"name": "schedule_loss", "seconds": v["schedule_loss_s"], "kind": "loss",
                 "details": {"not_scheduled_s": v["unscheduled_s"],
                             "planned_stops_excluded_s": v["planned_stop_excluded_s"]}},
                {"name": "planned_production_time", "seconds": v["planned_production_time_s"], "kind": "level",
                 "details": {}},
                {"name": "availability_loss", "seconds": v["availability_loss_s"], "kind": "loss",
                 "details": {"breakdowns_s": v["breakdown_s"], "setup_adjustments_s": v["setup_s"],
                             "starved_s": v["starved_s"], "blocked_s": v["blocked_s"]}},
                {"name": "run_time", "seconds": v["run_time_s"], "kind": "level", "details": {}},
                {"name": "performance_loss", "seconds": v["performance_loss_s"], "kind": "loss",
                 "details": {"small_stops_s": v["small_loss_s"], "slow_cycles_s": v["slow_loss_s"]}},
                {"name": "net_run_time", "seconds": v["net_run_time_s"], "kind": "level", "details": {}},
                {"name": "quality_loss", "seconds": v["quality_loss_s"], "kind": "loss",
                 "details": {"production_rejects_s": v["production_reject_loss_s"],
                             "startup_rejects_s": v["startup_loss_s"]}},
                {"name": "fully_productive_time", "seconds": v["fully_productive_time_s"], "kind": "level",
                 "details": {}},
            ],
            "six_big_losses": {
                "breakdowns_s": v["breakdown_s"],
                "setup_adjustments_s": v["setup_s"],
                "small_stops_s": v["small_loss_s"],
                "slow_cycles_s": v["slow_loss_s"],
                "production_rejects_s": v["production_reject_loss_s"],
                "startup_rejects_s": v["startup_loss_s"],
                "production_reject_count": v["production_reject_count"],
                "startup_reject_count": v["startup_rejects"],
                "line_losses": {"starved_s": v["starved_s"], "blocked_s": v["blocked_s"]},
            },
            "iso22400": {
                "label": _ISO_LABEL,
                "pbt_s": v["iso_pbt_s"],
                "apt_s": v["iso_apt_s"],
                "asut_s": v["iso_asut_s"],
                "adet_s": v["iso_adet_s"],
                "adot_s": v["iso_adot_s"],
                "pdot_s": v["iso_pdot_s"],
                "availability": v["iso_availability"],
                "effectiveness": v["iso_effectiveness"],
                "quality_ratio": v["iso_quality_ratio"],
                "oee_index": v["iso_oee_index"],
                "technical_efficiency": v["iso_technical_efficiency"],
                "nee_index": v["iso_nee_index"],
                "setup_rate": v["iso_setup_rate"],
                "allocation_efficiency": v["iso_allocation_efficiency"],
                "utilization_efficiency": v["iso_utilization_efficiency"],
            },
            "totals": {name: v[name] for name in LEDGER_COLUMNS},
        }

    def to_dicts(self) -> list[dict[str, Any]]:
        return [self.row_dict(i) for i in range(len(self))]

    def result(self, i: int) -> OeeResult:
        d = self.row_dict(i)
        six = d["six_big_losses"]
        line_losses = six.pop("line_losses")
        return OeeResult(
            totals=OeeTotals(**d["totals"]),
            **{name: d[name] for name in _RESULT_NUMBERS},
            waterfall=tuple(WaterfallStep(**step) for step in d["waterfall"]),
            six_big_losses=SixBigLosses(**six, **line_losses),
            iso22400=IsoView(**d["iso22400"]),
            flags=tuple(d["flags"]),
            table_row=(self, i),
        )

    def results(self) -> list[OeeResult]:
        return [self.result(i) for i in range(len(self))]


def oee_results(totals: Sequence[OeeTotals]) -> list[OeeResult]:
    """``oee_from_totals`` of each, computed together."""
    return OeeTable(np.array([[getattr(t, name) for name in LEDGER_COLUMNS] for t in totals], dtype=float)).results()


def oee_from_totals(t: OeeTotals) -> OeeResult:
    """Derive every OEE figure from summed seconds and counts."""
    return oee_results([t])[0]


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
    table = OeeTable(sums[list(LEDGER_COLUMNS)].to_numpy(dtype=float))
    return dict(zip(sums.index, table.results(), strict=True))


@dataclass(frozen=True, slots=True)
class OeeBucket:
    """One bucket of a series: its figures are row ``row`` of the series' table (built as objects only
    when ``result`` is read; ``to_dict`` writes them straight from the table)."""

    bucket: Bucket
    table: OeeTable = field(repr=False)
    row: int

    @property
    def result(self) -> OeeResult:
        return self.table.result(self.row)

    def to_dict(self) -> dict[str, Any]:
        return {**self.bucket.to_dict(), **self.table.row_dict(self.row)}


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
    table = OeeTable(sums.to_numpy(dtype=float))
    series = [OeeBucket(buckets[keys[code]], table, i) for i, code in enumerate(sums.index)]
    return sorted(series, key=lambda b: b.bucket.start)
