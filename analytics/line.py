"""Serial lines: starved/blocked attribution to the neighbour that caused it, and line OEE.

Attribution rule: while a machine is starved, the cause is its upstream neighbour, unless that
neighbour was itself starved at the same instant, in which case the cascade is followed further
upstream, to the first machine that was not starved (whatever it was doing: down, in setup, slow, or
without data). Blocked is the mirror image, downstream. Starved at the first machine is caused by the
supply outside the line (``UPSTREAM_OF_LINE``); blocked at the last machine by ``DOWNSTREAM_OF_LINE``.

Line OEE: the line's output is the last station's output, measured against the line's ideal rate.
The ideal rate is the BOTTLENECK's by default (the slowest machine's ideal cycle time: what the line
could make at best), or the takt (``basis="takt"``: output against demand pace). The time model (PPT,
run time, stops) is the last station's, so line availability is the output station's availability
and line performance uses the line's ideal cycle time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from analytics.intervals import NS_PER_S, timestamp_ns, to_ns
from analytics.ledger import LEDGER_COLUMNS, STATES, OeePolicy, OeeTotals, build_ledger
from analytics.oee import OeeResult, oee_from_totals, oee_results
from andon.plant import Line

UPSTREAM_OF_LINE = "upstream_of_line"
DOWNSTREAM_OF_LINE = "downstream_of_line"
_STARVED = STATES.index("starved")
_BLOCKED = STATES.index("blocked")
_OFFLINE = STATES.index("offline")

LineBasis = Literal["bottleneck", "takt"]


@dataclass(frozen=True, slots=True)
class LineSpec:
    """A serial line: machine ids in flow order, their ideal cycle times, and the line's takt/demand."""

    line_id: str
    machines: tuple[str, ...]
    ideal_cycle_s: Mapping[str, float]
    takt_s: float | None = None
    demand_per_shift: float | None = None

    def __post_init__(self) -> None:
        if not self.machines:
            raise ValueError("a line needs at least one machine")
        missing = [m for m in self.machines if m not in self.ideal_cycle_s]
        if missing:
            raise ValueError(f"no ideal cycle time for {missing}")

    @classmethod
    def from_line(cls, line: Line) -> LineSpec:
        ordered = line.machines_in_order
        return cls(
            line_id=line.id,
            machines=tuple(m.id for m in ordered),
            ideal_cycle_s={m.id: m.ideal_cycle_s for m in ordered},
            takt_s=line.takt_time_s,
            demand_per_shift=line.demand_per_shift,
        )

    @property
    def bottleneck(self) -> str:
        """The machine with the longest ideal cycle time (first in flow order on a tie)."""
        return max(self.machines, key=lambda m: (self.ideal_cycle_s[m], -self.machines.index(m)))

    def line_ideal_cycle_s(self, basis: LineBasis = "bottleneck") -> float:
        if basis == "bottleneck":
            return float(self.ideal_cycle_s[self.bottleneck])
        if basis == "takt":
            if self.takt_s is None:
                raise ValueError(f"line {self.line_id!r} has no takt time")
            return float(self.takt_s)
        raise ValueError(f"basis must be 'bottleneck' or 'takt', got {basis!r}")


def _clip(
    frame: pd.DataFrame, start_col: str, end_col: str, lo: int | None, hi: int | None
) -> tuple[np.ndarray, np.ndarray]:
    start = to_ns(frame[start_col])
    end_series = frame[end_col]
    if end_series.isna().any():
        if hi is None:
            raise ValueError("an open interval (end NaT) needs window_end")
        end_series = end_series.fillna(pd.Timestamp(hi, tz="UTC"))
    end = to_ns(end_series)
    if lo is not None:
        start = np.maximum(start, lo)
    if hi is not None:
        end = np.minimum(end, hi)
    return start, end


def attribute_starved_blocked(
    intervals: pd.DataFrame,
    machine_order: Sequence[str],
    window_start: dt.datetime | None = None,
    window_end: dt.datetime | None = None,
    within: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Starved and blocked seconds of each machine, by the machine that caused them.

    ``intervals``: machine, start, end, state (one machine's intervals must not overlap). Time in no
    interval is offline. ``within`` (columns start, end) limits the count to those spans, e.g. the
    scheduled time. Returns columns affected, kind (starved | blocked), cause, cause_state, seconds.
    """
    columns = ["affected", "kind", "cause", "cause_state", "seconds"]
    order = list(machine_order)
    lo = timestamp_ns(window_start) if window_start is not None else None
    hi = timestamp_ns(window_end) if window_end is not None else None
    data = intervals[intervals["machine"].isin(order)]
    if data.empty:
        return pd.DataFrame(columns=columns)
    start, end = _clip(data, "start", "end", lo, hi)
    keep = end > start
    start, end = start[keep], end[keep]
    machine = data["machine"].to_numpy()[keep]
    state_code = pd.Categorical(data["state"].to_numpy()[keep], categories=STATES).codes
    cuts = np.unique(np.concatenate([start, end]))
    within_start = within_end = None
    if within is not None:
        within_start, within_end = _clip(within, "start", "end", lo, hi)
        ok = within_end > within_start
        sort = np.argsort(within_start[ok])
        within_start, within_end = within_start[ok][sort], within_end[ok][sort]
        inner = np.concatenate([within_start, within_end])
        inner = inner[(inner > cuts[0]) & (inner < cuts[-1])] if cuts.size else inner
        cuts = np.unique(np.concatenate([cuts, inner]))
    if cuts.size < 2:
        return pd.DataFrame(columns=columns)
    seg_start, seg_end = cuts[:-1], cuts[1:]
    seconds = (seg_end - seg_start) / NS_PER_S
    if within_start is not None and within_end is not None:
        pos = np.searchsorted(within_start, seg_start, side="right") - 1
        inside = (pos >= 0) & (within_end[np.maximum(pos, 0)] >= seg_end)
        seconds = np.where(inside, seconds, 0.0)

    n = len(order)
    states = np.full((n, seg_start.size), _OFFLINE, dtype=np.int64)
    for i, m in enumerate(order):
        mine = np.flatnonzero(machine == m)
        if mine.size == 0:
            continue
        srt = mine[np.argsort(start[mine], kind="stable")]
        s_m, e_m, c_m = start[srt], end[srt], state_code[srt]
        idx = np.searchsorted(s_m, seg_start, side="right") - 1
        covered = (idx >= 0) & (e_m[np.maximum(idx, 0)] > seg_start)
        states[i] = np.where(covered, c_m[np.maximum(idx, 0)], _OFFLINE)

    rows: list[pd.DataFrame] = []
    columns_idx = np.arange(seg_start.size)
    for i, m in enumerate(order):
        for kind, code, step in (("starved", _STARVED, -1), ("blocked", _BLOCKED, +1)):
            mask = (states[i] == code) & (seconds > 0)
            if not mask.any():
                continue
            cols = columns_idx[mask]
            cause = np.full(cols.size, i + step)
            # Follow the cascade through neighbours in the same state.
            while True:
                inside = (cause >= 0) & (cause < n)
                same = np.zeros(cols.size, dtype=bool)
                same[inside] = states[cause[inside], cols[inside]] == code
                if not same.any():
                    break
                cause = np.where(same, cause + step, cause)
            inside = (cause >= 0) & (cause < n)
            names = np.where(
                inside,
                np.array(order, dtype=object)[np.clip(cause, 0, n - 1)],
                UPSTREAM_OF_LINE if step < 0 else DOWNSTREAM_OF_LINE,
            )
            cause_states = np.where(
                inside,
                np.array(STATES, dtype=object)[states[np.clip(cause, 0, n - 1), cols]],
                None,
            )
            rows.append(
                pd.DataFrame(
                    {"affected": m, "kind": kind, "cause": names, "cause_state": cause_states, "seconds": seconds[cols]}
                )
            )
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.concat(rows, ignore_index=True)
    out["cause_state"] = out["cause_state"].fillna("external")
    return (
        out.groupby(["affected", "kind", "cause", "cause_state"], sort=True, as_index=False)["seconds"]
        .sum()
        .loc[:, columns]
    )


@dataclass(frozen=True, slots=True)
class MachineContribution:
    machine: str
    position: int  # 1-based, flow order
    ideal_cycle_s: float
    is_bottleneck: bool
    oee: OeeResult  # the machine's own OEE, with its own ideal cycle time
    own_stop_s: float  # breakdowns + setup + small stops of this machine inside PPT
    caused_starved_s: float  # starved time of downstream machines attributed to this machine
    caused_blocked_s: float  # blocked time of upstream machines attributed to this machine
    caused_output_starved_s: float  # of which: starved time of the output (last) station
    share_of_output_starved: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "position": self.position,
            "ideal_cycle_s": self.ideal_cycle_s,
            "is_bottleneck": self.is_bottleneck,
            "own_stop_s": self.own_stop_s,
            "caused_starved_s": self.caused_starved_s,
            "caused_blocked_s": self.caused_blocked_s,
            "caused_output_starved_s": self.caused_output_starved_s,
            "share_of_output_starved": self.share_of_output_starved,
            "oee": self.oee.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class LineOeeResult:
    line_id: str
    basis: str  # "bottleneck" or "takt": where the line's ideal rate comes from
    line_ideal_cycle_s: float
    bottleneck: str
    output_machine: str
    oee: OeeResult  # output station time model, line ideal cycle time
    contributions: tuple[MachineContribution, ...]
    attribution: pd.DataFrame  # affected, kind, cause, cause_state, seconds (empty without intervals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "basis": self.basis,
            "line_ideal_cycle_s": self.line_ideal_cycle_s,
            "bottleneck": self.bottleneck,
            "output_machine": self.output_machine,
            "oee": self.oee.to_dict(),
            "contributions": [c.to_dict() for c in self.contributions],
            "attribution": self.attribution.to_dict(orient="records"),
        }


def scheduled_spans(periods: pd.DataFrame, machine: str, policy: OeePolicy) -> pd.DataFrame:
    """The spans of a machine's periods that are scheduled production (for attribution ``within``)."""
    kinds = {"production"} | ({"planned_stop"} if policy.planned_stops_count_against_availability else set())
    mine = periods[(periods["machine"] == machine) & periods["calendar_kind"].isin(kinds)]
    return pd.DataFrame({"start": mine["period_start"], "end": mine["period_end"]})


def line_oee(
    periods: pd.DataFrame,
    stops: pd.DataFrame | None,
    policy: OeePolicy,
    line: LineSpec,
    intervals: pd.DataFrame | None = None,
    basis: LineBasis = "bottleneck",
    now: dt.datetime | None = None,
    *,
    ledger: pd.DataFrame | None = None,
) -> LineOeeResult:
    """Line OEE of a serial line and each machine's contribution.

    Line OEE = good parts out of the last station x the line's ideal cycle time / the last station's PPT
    (A and Q are the last station's; P uses the line's ideal cycle time, so a fast last station does not
    flatter the line). With ``intervals`` (raw state intervals of the line's machines over the same
    window) the starved/blocked time inside scheduled time is attributed to its cause. ``ledger``:
    ``build_ledger(periods, stops, policy, now)`` when the caller already has it.
    """
    if ledger is None:
        ledger = build_ledger(periods[periods["machine"].isin(line.machines)], stops, policy, now)
    else:
        mine = ledger["machine"].isin(line.machines)
        if not mine.all():
            ledger = ledger[mine]
    sums = OeeTotals.per_group(ledger.groupby("machine")[list(LEDGER_COLUMNS)].sum())
    per_machine = {m: sums.get(m, OeeTotals()) for m in line.machines}
    output = line.machines[-1]
    line_cycle = line.line_ideal_cycle_s(basis)
    out_totals = per_machine[output]
    line_totals = replace(out_totals, ideal_time_s=out_totals.total_count * line_cycle)

    attribution = pd.DataFrame(columns=["affected", "kind", "cause", "cause_state", "seconds"])
    if intervals is not None and len(periods):
        window_start = pd.Timestamp(periods["period_start"].min()).to_pydatetime()
        window_end = pd.Timestamp(periods["period_end"].max()).to_pydatetime()
        # The machines of a line share the site's calendar, so the output station's scheduled spans
        # are the line's.
        attribution = attribute_starved_blocked(
            intervals, line.machines, window_start, window_end, within=scheduled_spans(periods, output, policy)
        )
    output_starved = attribution[(attribution["affected"] == output) & (attribution["kind"] == "starved")]
    output_starved_total = float(output_starved["seconds"].sum())

    contributions = []
    machine_results = oee_results([per_machine[m] for m in line.machines])
    for position, (m, machine_oee) in enumerate(zip(line.machines, machine_results, strict=True), start=1):
        t = per_machine[m]
        if attribution.empty:  # (long windows: no attribution; skip a year of empty-frame lookups)
            contributions.append(MachineContribution(
                machine=m, position=position, ideal_cycle_s=float(line.ideal_cycle_s[m]),
                is_bottleneck=m == line.bottleneck, oee=machine_oee,
                own_stop_s=t.breakdown_s + t.setup_s + t.small_stop_s, caused_starved_s=0.0, caused_blocked_s=0.0,
                caused_output_starved_s=0.0, share_of_output_starved=None,
            ))
            continue
        caused = attribution[attribution["cause"] == m]
        caused_output = float(output_starved.loc[output_starved["cause"] == m, "seconds"].sum())
        contributions.append(
            MachineContribution(
                machine=m,
                position=position,
                ideal_cycle_s=float(line.ideal_cycle_s[m]),
                is_bottleneck=m == line.bottleneck,
                oee=machine_oee,
                own_stop_s=t.breakdown_s + t.setup_s + t.small_stop_s,
                caused_starved_s=float(caused.loc[caused["kind"] == "starved", "seconds"].sum()),
                caused_blocked_s=float(caused.loc[caused["kind"] == "blocked", "seconds"].sum()),
                caused_output_starved_s=caused_output,
                share_of_output_starved=caused_output / output_starved_total if output_starved_total > 0 else None,
            )
        )
    return LineOeeResult(
        line_id=line.line_id,
        basis=basis,
        line_ideal_cycle_s=line_cycle,
        bottleneck=line.bottleneck,
        output_machine=output,
        oee=oee_from_totals(line_totals),
        contributions=tuple(contributions),
        attribution=attribution,
    )
