"""Shift report data: per shift, target versus actual output, OEE factors and the top stops.

Target: with a takt time, the whole takt cycles that fit into the shift's scheduled production time
(calendar ``production`` time: breaks, planned stops and no-order time are not available for output):
``floor(production seconds / takt)``. Without a takt, the line's ``demand_per_shift``. Actual output is
the last station's count (total and good). OEE is the line OEE (last station, line ideal cycle time,
see ``analytics.line``). Top stops are the reasons (per machine) with the most stop time inside the
shift, over all machines of the line.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from analytics.downtime import UNASSIGNED
from analytics.intervals import overlaps_with_periods, to_ns
from analytics.ledger import LEDGER_COLUMNS, OeePolicy, OeeTotals, build_ledger, classify_stops
from analytics.line import LineBasis, LineSpec
from analytics.oee import OeeResult, oee_from_totals


@dataclass(frozen=True, slots=True)
class TopStop:
    reason_code: str
    machine: str
    count: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason_code": self.reason_code,
            "machine": self.machine,
            "count": self.count,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True, slots=True)
class ShiftReportRow:
    shift_key: str
    start: dt.datetime
    end: dt.datetime
    production_time_s: float  # calendar production time of the shift
    target_count: float | None
    target_basis: str  # "takt" | "demand_per_shift" | "none"
    actual_total: float
    actual_good: float
    attainment: float | None  # actual good / target
    oee: OeeResult
    top_stops: tuple[TopStop, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "shift_key": self.shift_key,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "production_time_s": self.production_time_s,
            "target_count": self.target_count,
            "target_basis": self.target_basis,
            "actual_total": self.actual_total,
            "actual_good": self.actual_good,
            "attainment": self.attainment,
            "availability": self.oee.availability,
            "performance": self.oee.performance,
            "quality": self.oee.quality,
            "oee": self.oee.oee,
            "flags": list(self.oee.flags),
            "top_stops": [s.to_dict() for s in self.top_stops],
        }

    def to_flat_dict(self, top_n: int = 3) -> dict[str, Any]:
        """One flat row (for CSV): the figures and the first ``top_n`` stops as numbered columns."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("top_stops", "flags")}
        row["flags"] = ";".join(self.oee.flags)
        for i in range(top_n):
            stop = self.top_stops[i] if i < len(self.top_stops) else None
            row[f"top{i + 1}_reason"] = stop.reason_code if stop else None
            row[f"top{i + 1}_machine"] = stop.machine if stop else None
            row[f"top{i + 1}_duration_s"] = stop.duration_s if stop else None
        return row


def _target(line: LineSpec, production_s: float) -> tuple[float | None, str]:
    if line.takt_s:
        # A tiny tolerance so that 3600 s / 60 s is 60 even when the seconds came out as 3599.9999999.
        return float(math.floor(production_s / line.takt_s + 1e-9)), "takt"
    if line.demand_per_shift:
        return float(line.demand_per_shift), "demand_per_shift"
    return None, "none"


def shift_report(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    line: LineSpec,
    now: dt.datetime | None = None,
    top_n: int = 5,
    basis: LineBasis = "bottleneck",
) -> list[ShiftReportRow]:
    """One row per shift in the periods (periods without a shift are left out), in time order."""
    line_periods = periods[periods["machine"].isin(line.machines) & periods["shift_key"].notna()]
    if line_periods.empty:
        return []
    ledger = build_ledger(line_periods, stops, policy, now)
    output = line.machines[-1]
    out_ledger = ledger[ledger["machine"] == output]
    line_cycle = line.line_ideal_cycle_s(basis)
    sums = out_ledger.groupby("shift_key")[list(LEDGER_COLUMNS)].sum()
    spans = ledger.groupby("shift_key").agg(start=("period_start", "min"), end=("period_end", "max"))
    production = out_ledger[out_ledger["calendar_kind"] == "production"].groupby("shift_key")["all_time_s"].sum()
    top = _top_stops(ledger, stops, policy, now, top_n)
    rows = []
    for key, span in spans.sort_values("start").iterrows():
        totals = OeeTotals.from_row(sums.loc[key]) if key in sums.index else OeeTotals()
        totals = replace(totals, ideal_time_s=totals.total_count * line_cycle)
        production_s = float(production.get(key, 0.0))
        target, target_basis = _target(line, production_s)
        good = totals.total_count - totals.reject_count
        rows.append(
            ShiftReportRow(
                shift_key=str(key),
                start=span["start"].to_pydatetime(),
                end=span["end"].to_pydatetime(),
                production_time_s=production_s,
                target_count=target,
                target_basis=target_basis,
                actual_total=totals.total_count,
                actual_good=good,
                attainment=good / target if target else None,
                oee=oee_from_totals(totals),
                top_stops=top.get(key, ()),
            )
        )
    return rows


def _top_stops(
    ledger: pd.DataFrame, stops: pd.DataFrame | None, policy: OeePolicy, now: dt.datetime | None, top_n: int
) -> dict[Any, tuple[TopStop, ...]]:
    if stops is None or stops.empty or top_n <= 0:
        return {}
    classified = classify_stops(stops, policy, now if now is not None else ledger["period_end"].max())
    # Only stop time inside scheduled time is a loss worth ranking (an idle machine in a break is not).
    kinds = {"production"} | ({"planned_stop"} if policy.planned_stops_count_against_availability else set())
    ledger = ledger[ledger["calendar_kind"].isin(kinds)]
    pairs = overlaps_with_periods(
        classified["machine"].to_numpy(),
        to_ns(classified["start_ts"]),
        to_ns(classified["end_effective"]),
        ledger["machine"].to_numpy(),
        to_ns(ledger["period_start"]),
        to_ns(ledger["period_end"]),
    )
    if pairs.seconds.size == 0:
        return {}
    reasons = (
        classified["reason_code"] if "reason_code" in classified.columns else pd.Series(None, index=classified.index)
    )
    frame = pd.DataFrame(
        {
            "shift_key": ledger["shift_key"].to_numpy()[pairs.period_index],
            "stop": pairs.interval_index,
            "reason_code": reasons.astype(object).where(reasons.notna(), UNASSIGNED).to_numpy()[pairs.interval_index],
            "machine": classified["machine"].to_numpy()[pairs.interval_index],
            "seconds": pairs.seconds,
        }
    )
    grouped = (
        frame.groupby(["shift_key", "reason_code", "machine"])
        .agg(count=("stop", "nunique"), duration_s=("seconds", "sum"))
        .reset_index()
        .sort_values(
            ["shift_key", "duration_s", "count", "reason_code", "machine"],
            ascending=[True, False, False, True, True],
            kind="stable",
        )
    )
    out: dict[Any, tuple[TopStop, ...]] = {}
    for key, group in grouped.groupby("shift_key", sort=False):
        out[key] = tuple(
            TopStop(str(r.reason_code), str(r.machine), int(r.count), float(r.duration_s))
            for r in group.head(top_n).itertuples(index=False)
        )
    return out


def shift_report_frame(rows: list[ShiftReportRow], top_n: int = 3) -> pd.DataFrame:
    """The report as a flat table (one row per shift), for CSV export."""
    return pd.DataFrame([r.to_flat_dict(top_n) for r in rows])
