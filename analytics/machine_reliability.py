"""Reliability per machine: failures, MTBF, MTTR, inherent availability and a Weibull fit of TBF.

Definitions (stated, because tools disagree — field reference §2.3, §5.1, §5.2):

* A FAILURE is a stop that is not planned, lasts at least ``min_failure_duration_s`` (full duration),
  starts inside the window, and either has a reason classified as a failure, or — when
  ``unclassified_unplanned_are_failures`` (default True) — has no reason and is in the
  ``unplanned_stop`` (fault) state. Rationale for the default: a plant that has not yet entered reasons
  would otherwise show no failures and an infinite MTBF; an unexplained fault is more likely a failure
  than not. Idle without a reason (waiting) is never a failure; a reason with failure = false never is.
* OPERATING TIME is the time in the ``running`` state inside the window (IEC 60050-191 "operating time";
  repairs, planned stops, idle, starved, blocked and no-data time are not operating time).
* MTBF = mean OPERATING time between failures = operating time / FE (``mtbf_divisor="failures"``,
  most tools) or operating time / (FE + 1) (``"failures_plus_one"``: the FE failures split the observed
  operating time into FE + 1 intervals, the ISO 22400-2 reading and the getagility example). With no
  failure MTBF is None for the FE divisor (only a lower bound is known: the operating time).
  This MTBF is ISO/TR 12489's MTTF; ``mtbf_start_to_start_s`` gives the calendar-time alternative
  (mean time between failure starts, Point85 style), clearly separate.
* MTTR = mean full duration of the failures that have ended (an ongoing failure counts as a failure
  but not in MTTR: its repair time is not known yet).
* Inherent availability A_i = MTBF / (MTBF + MTTR).
* Weibull: times between failures are the operating time from the end of one failure to the start of
  the next (complete observations); the operating time from the end of the last failure to the window
  end is right-censored (the machine has survived that long). The operating time before the first
  failure in the window is left out of the fit: when the previous failure happened is unknown.
  Fitted by maximum likelihood with Fisher-matrix confidence bounds by the ``reliability`` package.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from analytics.intervals import NS_PER_S, timestamp_ns, to_ns
from analytics.ledger import OeePolicy, classify_stops
from analytics.running_clock import RunningClock
from andon.plant import PlantSettings

MtbfDivisor = Literal["failures", "failures_plus_one"]
MTBF_DEFINITIONS = {
    "failures": "MTBF = operating (running) time / number of failures",
    "failures_plus_one": "MTBF = operating (running) time / (number of failures + 1)  [ISO 22400-2 reading]",
}


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    min_failure_duration_s: float = 120.0
    mtbf_divisor: MtbfDivisor = "failures"
    unclassified_unplanned_are_failures: bool = True
    weibull_confidence: float = 0.95
    min_failures_for_weibull: int = 3  # complete times between failures needed before fitting

    @classmethod
    def from_settings(cls, settings: PlantSettings, **overrides: Any) -> FailurePolicy:
        return cls(
            min_failure_duration_s=settings.min_failure_duration_s,
            mtbf_divisor=settings.mtbf_divisor,
            **overrides,
        )


@dataclass(frozen=True, slots=True)
class WeibullFit:
    shape: float  # beta
    scale_s: float  # eta, seconds of operating time
    shape_lower: float
    shape_upper: float
    scale_lower_s: float
    scale_upper_s: float
    confidence: float
    n_failures: int
    n_censored: int
    reading: str  # early_life | random | wear_out
    reading_note: str
    method: str = "MLE, Fisher-matrix bounds (reliability.Fitters.Fit_Weibull_2P)"

    @property
    def mean_life_s(self) -> float:
        return self.scale_s * math.gamma(1.0 + 1.0 / self.shape)

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["mean_life_s"] = self.mean_life_s
        return out


@dataclass(frozen=True, slots=True)
class MachineReliability:
    machine: str
    window_start: dt.datetime
    window_end: dt.datetime
    failure_count: int
    operating_time_s: float
    mtbf_s: float | None
    mtbf_divisor: str
    mtbf_definition: str
    mttr_s: float | None
    inherent_availability: float | None
    mtbf_start_to_start_s: float | None
    repair_times_s: tuple[float, ...]
    times_between_failures_s: tuple[float, ...]
    censored_time_s: float | None
    weibull: WeibullFit | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "failure_count": self.failure_count,
            "operating_time_s": self.operating_time_s,
            "mtbf_s": self.mtbf_s,
            "mtbf_divisor": self.mtbf_divisor,
            "mtbf_definition": self.mtbf_definition,
            "mttr_s": self.mttr_s,
            "inherent_availability": self.inherent_availability,
            "mtbf_start_to_start_s": self.mtbf_start_to_start_s,
            "repair_times_s": list(self.repair_times_s),
            "times_between_failures_s": list(self.times_between_failures_s),
            "censored_time_s": self.censored_time_s,
            "weibull": self.weibull.to_dict() if self.weibull else None,
            "notes": list(self.notes),
        }


def select_failures(
    stops: pd.DataFrame,
    policy: FailurePolicy,
    window_start: dt.datetime,
    window_end: dt.datetime,
    now: dt.datetime | None = None,
) -> pd.DataFrame:
    """The stops that count as failures (see the module docstring), sorted by start."""
    classified = classify_stops(stops, OeePolicy(), now if now is not None else window_end)
    if classified.empty:
        return classified
    start = to_ns(classified["start_ts"])
    in_window = (start >= timestamp_ns(window_start)) & (start < timestamp_ns(window_end))
    failure_flag = classified["failure"] if "failure" in classified.columns else pd.Series(None, index=classified.index)
    flagged = pd.Series(np.equal(failure_flag.to_numpy(dtype=object), True).astype(bool), index=failure_flag.index)
    unclassified = failure_flag.isna() & (classified["state"] == "unplanned_stop")
    is_failure = flagged | (unclassified & policy.unclassified_unplanned_are_failures)
    chosen = (
        in_window
        & ~classified["is_planned"].to_numpy()
        & (classified["duration_s"].to_numpy() >= policy.min_failure_duration_s)
        & is_failure.to_numpy()
    )
    return classified[chosen].sort_values("start_ts", kind="stable").reset_index(drop=True)


def fit_weibull(failures_s: np.ndarray, censored_s: np.ndarray, confidence: float = 0.95) -> WeibullFit:
    """Two-parameter Weibull fit (MLE) with right-censoring, via the maintained ``reliability`` package.

    Fitted in hours (better conditioned), reported in seconds.
    """
    from reliability.Fitters import Fit_Weibull_2P  # slow import (matplotlib): only when fitting

    failures_h = [float(x) / 3600.0 for x in failures_s]
    censored_h = [float(x) / 3600.0 for x in censored_s if x > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = Fit_Weibull_2P(
            failures=failures_h,
            right_censored=censored_h or None,
            show_probability_plot=False,
            print_results=False,
            CI=confidence,
            method="MLE",
        )
    shape, lower, upper = float(fit.beta), float(fit.beta_lower), float(fit.beta_upper)
    if upper < 1.0:
        reading, note = "early_life", f"shape < 1 with {confidence:.0%} confidence: failure rate falls with age"
    elif lower > 1.0:
        reading, note = "wear_out", f"shape > 1 with {confidence:.0%} confidence: failure rate rises with age"
    else:
        reading, note = "random", "shape interval contains 1: consistent with a constant failure rate"
    return WeibullFit(
        shape=shape,
        scale_s=float(fit.alpha) * 3600.0,
        shape_lower=lower,
        shape_upper=upper,
        scale_lower_s=float(fit.alpha_lower) * 3600.0,
        scale_upper_s=float(fit.alpha_upper) * 3600.0,
        confidence=confidence,
        n_failures=len(failures_h),
        n_censored=len(censored_h),
        reading=reading,
        reading_note=note,
    )


def _machine_running_clock(intervals: pd.DataFrame, lo: int, hi: int) -> RunningClock:
    """The machine's running time inside [lo, hi) (an open last interval runs to hi)."""
    running = intervals[intervals["state"] == "running"]
    if not len(running):
        return RunningClock(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    end = to_ns(running["end"].fillna(pd.Timestamp(hi, tz="UTC")))
    return RunningClock(np.maximum(to_ns(running["start"]), lo), np.minimum(end, hi))


def machine_reliability(
    machine: str,
    intervals: pd.DataFrame,
    stops: pd.DataFrame,
    policy: FailurePolicy,
    window_start: dt.datetime,
    window_end: dt.datetime,
    now: dt.datetime | None = None,
    fit: bool = True,
) -> MachineReliability:
    """Failures, MTBF, MTTR, inherent availability and the Weibull fit of one machine over a window.

    ``intervals``: raw state intervals (machine, start, end, state); ``stops``: the stops frame.
    """
    lo, hi = timestamp_ns(window_start), timestamp_ns(window_end)
    clock = _machine_running_clock(intervals[intervals["machine"] == machine], lo, hi)
    mine = stops[stops["machine"] == machine] if len(stops) else stops
    failures = select_failures(mine, policy, window_start, window_end, now)
    fe = len(failures)
    operating = clock.total_s
    notes: list[str] = []
    if policy.mtbf_divisor == "failures":
        mtbf = operating / fe if fe else None
        if not fe:
            notes.append("no failures: MTBF undefined with the FE divisor (it exceeds the operating time)")
    elif policy.mtbf_divisor == "failures_plus_one":
        mtbf = operating / (fe + 1)
    else:
        raise ValueError(f"unknown mtbf_divisor {policy.mtbf_divisor!r}")
    ended = failures[~failures["ongoing"]] if fe else failures
    repairs = tuple(float(x) for x in ended["duration_s"]) if fe else ()
    mttr = float(np.mean(repairs)) if repairs else None
    if fe and len(ended) < fe:
        notes.append("an ongoing failure is counted as a failure but not in MTTR")
    availability = mtbf / (mtbf + mttr) if mtbf is not None and mttr is not None and mtbf + mttr > 0 else None
    starts = to_ns(failures["start_ts"]) if fe else np.zeros(0, dtype=np.int64)
    start_to_start = float(np.mean(np.diff(starts)) / NS_PER_S) if fe >= 2 else None

    tbf: list[float] = []
    censored: float | None = None
    if fe:
        ends = np.minimum(to_ns(failures["end_effective"]), hi)
        tbf = [float(x) for x in clock.at(starts[1:]) - clock.at(ends[:-1])]
        if not bool(failures["ongoing"].iloc[-1]) and ends[-1] < hi:
            censored = clock.total_s - clock.at(int(ends[-1]))
    else:
        censored = operating
    weibull = None
    if fit:
        complete = np.array([x for x in tbf if x > 0])
        if complete.size >= max(policy.min_failures_for_weibull, 2):
            weibull = fit_weibull(complete, np.array([censored] if censored else []), policy.weibull_confidence)
        else:
            notes.append(
                f"Weibull not fitted: {complete.size} complete times between failures, "
                f"{max(policy.min_failures_for_weibull, 2)} needed"
            )
    return MachineReliability(
        machine=machine,
        window_start=window_start,
        window_end=window_end,
        failure_count=fe,
        operating_time_s=operating,
        mtbf_s=mtbf,
        mtbf_divisor=policy.mtbf_divisor,
        mtbf_definition=MTBF_DEFINITIONS[policy.mtbf_divisor],
        mttr_s=mttr,
        inherent_availability=availability,
        mtbf_start_to_start_s=start_to_start,
        repair_times_s=repairs,
        times_between_failures_s=tuple(tbf),
        censored_time_s=censored,
        weibull=weibull,
        notes=tuple(notes),
    )
