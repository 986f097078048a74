"""Inputs of the PdM engine, reduced to fixed-width time bins per machine (ISO 13374 DA -> DM).

Raw telemetry is far too large to carry around (a line makes ~6 M samples a month), so everything is
first summarised into bins of ``bin_s`` seconds (10 min by default). The summary keeps what the feature
step needs and what sensor-fault detection needs, with the *clean* statistics computed only over values
that are inside the channel's physical range and not exactly zero (a broken wire reads 0 or the PLC's
out-of-range sentinel). The same summary is computed by SQL in ``andon.storage.pdm`` so that training on
months of history does not pull raw rows into Python; ``bin_telemetry`` here is its reference.

Frames (all timestamps UTC):

- ``bins``: machine, metric, bin_start, n, n_out_of_range, n_zero, n_clean, median, q60, q70, mean, std,
  rms, kurtosis, vmin, vmax (clean statistics NaN when n_clean == 0; quantiles interpolated linearly);
- ``activity``: machine, bin_start, running_s, product, micro_stops, fault_stops, warnings;
- ``failures``: machine, ts, repair_end, in_scope (failures the PdM engine is meant to foresee);
- ``production``: start, end of the site's production segments (the calendar, for hours ahead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CHANNELS = ("vibration_rms", "bearing_temp", "motor_current", "cycle_time")
# Physical ranges (exclusive of the bounds): outside them a sample is a sensor fault, not a reading.
DEFAULT_VALID_RANGES: dict[str, tuple[float, float]] = {
    "vibration_rms": (0.0, 100.0),
    "bearing_temp": (-40.0, 200.0),
    "motor_current": (0.0, 1000.0),
    "cycle_time": (0.0, 36000.0),
}
WARNING_PREFIX = "warning:"
BIN_COLUMNS = ["machine", "metric", "bin_start", "n", "n_out_of_range", "n_zero", "n_clean", "median", "q60", "q70",
               "mean", "std", "rms", "kurtosis", "vmin", "vmax"]
# Upper quantiles kept per bin: in a bin where the machine ran a share s of the time, the median of the
# running samples of a load-driven channel (idle readings are lower) is the (1 - s/2) quantile of all.
GATE_QUANTILES = (0.5, 0.6, 0.7)
ACTIVITY_COLUMNS = ["machine", "bin_start", "running_s", "product", "micro_stops", "fault_stops", "warnings"]


@dataclass
class FleetHistory:
    """Everything the features need, binned, for a set of machines over [start, end)."""

    start: pd.Timestamp
    end: pd.Timestamp
    bin_s: float
    machines: list[str]
    bins: pd.DataFrame
    activity: pd.DataFrame
    failures: pd.DataFrame
    production: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def grid(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start, self.end, freq=pd.Timedelta(seconds=self.bin_s), inclusive="left")


def floor_bins(ts: pd.Series | pd.DatetimeIndex, origin: pd.Timestamp, bin_s: float) -> np.ndarray:
    """Bin index of each timestamp (bins of bin_s seconds from origin)."""
    ns = pd.DatetimeIndex(ts).as_unit("ns").asi8
    return (ns - origin.as_unit("ns").value) // int(bin_s * 1e9)


def bin_telemetry(raw: pd.DataFrame, start: pd.Timestamp, bin_s: float,
                  valid_ranges: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Summarise raw samples (machine, ts, metric, value) into bins; the reference for the SQL version."""
    ranges = valid_ranges or DEFAULT_VALID_RANGES
    if raw.empty:
        return pd.DataFrame(columns=BIN_COLUMNS)
    machine = raw["machine"].astype("category")
    metric = raw["metric"].astype("category")
    frame = pd.DataFrame({
        "machine": machine.cat.codes.to_numpy(),
        "metric": metric.cat.codes.to_numpy(),
        "b": floor_bins(raw["ts"], start, bin_s),
        "value": raw["value"].to_numpy(dtype=float),
    })
    metric_names = [str(m) for m in metric.cat.categories]
    keep_metric = np.array([not m.startswith(WARNING_PREFIX) for m in metric_names], dtype=bool)
    frame = frame[keep_metric[frame["metric"].to_numpy()]].reset_index(drop=True)
    codes = frame["metric"].to_numpy()
    lo = np.array([ranges.get(m, (-np.inf, np.inf))[0] for m in metric_names], dtype=float)[codes]
    hi = np.array([ranges.get(m, (-np.inf, np.inf))[1] for m in metric_names], dtype=float)[codes]
    v = frame["value"].to_numpy()
    zero = v == 0.0
    out_of_range = ~zero & ((v <= lo) | (v >= hi))
    frame["zero"] = zero
    frame["oor"] = out_of_range
    keys = ["machine", "metric", "b"]
    counts = frame.groupby(keys, sort=True).agg(n=("value", "size"), n_out_of_range=("oor", "sum"),
                                                 n_zero=("zero", "sum"))
    clean = frame[~zero & ~out_of_range].copy()
    clean["sq"] = clean["value"] ** 2
    g = clean.groupby(keys, sort=True)
    stats = g.agg(n_clean=("value", "size"), median=("value", "median"), mean=("value", "mean"),
                  std=("value", "std"), ms=("sq", "mean"), vmin=("value", "min"),
                  vmax=("value", "max"))
    clean["dev4"] = (clean["value"] - g["value"].transform("mean")) ** 4
    m4 = clean.groupby(keys, sort=True)["dev4"].mean()
    upper = g["value"].quantile([0.6, 0.7]).unstack()
    stats["q60"] = upper[0.6]
    stats["q70"] = upper[0.7]
    stats["rms"] = np.sqrt(stats.pop("ms"))
    # Population standard deviation (ddof 0), as the SQL stddev_pop.
    k = stats["n_clean"].to_numpy(dtype=float)
    stats["std"] = (stats["std"] * np.sqrt(np.where(k > 1, (k - 1) / k, 0.0))).fillna(0.0)
    var = stats["std"] ** 2
    stats["kurtosis"] = np.where(var > 0, m4.reindex(stats.index).to_numpy() / np.where(var > 0, var, 1.0) ** 2,
                                 np.nan)
    out = counts.join(stats, how="left").reset_index()
    out["n_clean"] = out["n_clean"].fillna(0).astype(int)
    out["bin_start"] = start + pd.to_timedelta(out.pop("b").to_numpy() * int(bin_s * 1e9), unit="ns")
    out["machine"] = np.asarray([str(m) for m in machine.cat.categories], dtype=object)[out["machine"].to_numpy()]
    out["metric"] = np.asarray(metric_names, dtype=object)[out["metric"].to_numpy()]
    return out[BIN_COLUMNS]


def bin_activity(
    machines: Sequence[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    bin_s: float,
    intervals: pd.DataFrame,
    stops: pd.DataFrame,
    parts: pd.DataFrame,
    warnings: pd.DataFrame,
    small_stop_s: float,
) -> pd.DataFrame:
    """Per machine and bin: running seconds, the product being made, micro-stops, fault stops, warnings.

    intervals: machine, start, end, state. stops: machine, start, end, state, planned (bool).
    parts: machine, ts, product, total (parts completed). warnings: machine, ts (a warning or fault code
    that did not stop the machine).
    """
    grid = pd.date_range(start, end, freq=pd.Timedelta(seconds=bin_s), inclusive="left")
    nb = len(grid)
    step = int(bin_s * 1e9)
    origin = start.as_unit("ns").value
    rows = []
    for mid in machines:
        run = np.zeros(nb)
        iv = intervals[(intervals["machine"] == mid) & (intervals["state"] == "running")]
        if not iv.empty:
            a = pd.DatetimeIndex(iv["start"]).as_unit("ns").asi8 - origin
            b = pd.DatetimeIndex(iv["end"]).as_unit("ns").asi8 - origin
            run = _overlap_per_bin(a, b, nb, step)
        st = stops[(stops["machine"] == mid) & (stops["state"] == "unplanned_stop") & ~stops["planned"].astype(bool)]
        dur = (st["end"] - st["start"]).dt.total_seconds().to_numpy()
        idx = floor_bins(st["start"], start, bin_s)
        micro = _count_per_bin(idx[dur < small_stop_s], nb)
        faults = _count_per_bin(idx[dur >= small_stop_s], nb)
        w = warnings[warnings["machine"] == mid]
        warn = _count_per_bin(floor_bins(w["ts"], start, bin_s), nb)
        pr = parts[(parts["machine"] == mid) & parts["product"].notna()]
        product = np.full(nb, None, dtype=object)
        if not pr.empty:
            pidx = floor_bins(pr["ts"], start, bin_s)
            per_bin = (pd.DataFrame({"b": pidx, "product": pr["product"].to_numpy(),
                                     "n": pr["total"].to_numpy() if "total" in pr else 1})
                       .groupby(["b", "product"])["n"].sum().reset_index()
                       .sort_values(["b", "n"], ascending=[True, False]).drop_duplicates("b"))
            per_bin = per_bin[(per_bin["b"] >= 0) & (per_bin["b"] < nb)]
            product[per_bin["b"].to_numpy()] = per_bin["product"].to_numpy()
            # The product holds until the next part says otherwise (idle bins keep the last regime).
            product = pd.Series(product).ffill().bfill().to_numpy(dtype=object)
        rows.append(pd.DataFrame({"machine": mid, "bin_start": grid, "running_s": run, "product": product,
                                  "micro_stops": micro, "fault_stops": faults, "warnings": warn}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=ACTIVITY_COLUMNS)


def _count_per_bin(idx: np.ndarray, nb: int) -> np.ndarray:
    idx = idx[(idx >= 0) & (idx < nb)]
    return np.bincount(idx.astype(np.int64), minlength=nb).astype(np.int64)


def _overlap_per_bin(a: np.ndarray, b: np.ndarray, nb: int, step: int) -> np.ndarray:
    """Seconds of [a, b) intervals (ns from origin) falling into each bin, via a cumulative coverage curve."""
    edges = np.arange(nb + 1, dtype=np.int64) * step
    a = np.clip(a, 0, edges[-1])
    b = np.clip(b, 0, edges[-1])
    keep = b > a
    a, b = np.sort(a[keep]), np.sort(b[keep])
    # covered(x) = sum over intervals of clip(x - a, 0, b - a): evaluate at the edges with cumulative sums.
    ca = np.concatenate([[0], np.cumsum(a, dtype=np.float64)])
    cb = np.concatenate([[0], np.cumsum(b, dtype=np.float64)])
    na = np.searchsorted(a, edges, side="right")
    nbb = np.searchsorted(b, edges, side="right")
    covered = (na * edges.astype(np.float64) - ca[na]) - (nbb * edges.astype(np.float64) - cb[nbb])
    return np.diff(covered) / 1e9


def production_hours_ahead(production: pd.DataFrame, times: pd.DatetimeIndex, horizon_h: float) -> np.ndarray:
    """Production hours of the calendar inside [t, t + horizon) for each t."""
    if production.empty:
        return np.full(len(times), horizon_h)
    a = pd.DatetimeIndex(production["start"]).as_unit("ns").asi8.astype(np.float64)
    b = pd.DatetimeIndex(production["end"]).as_unit("ns").asi8.astype(np.float64)
    order = np.argsort(a)
    a, b = a[order], b[order]
    cum = np.concatenate([[0.0], np.cumsum(b - a)])

    def covered_until(x: np.ndarray) -> np.ndarray:
        k = np.searchsorted(a, x, side="right")
        full = cum[np.maximum(k - 1, 0)]
        part = np.where(k > 0, np.clip(x - a[np.maximum(k - 1, 0)], 0, (b - a)[np.maximum(k - 1, 0)]), 0.0)
        return np.where(k > 0, full + part, 0.0)

    t = pd.DatetimeIndex(times).as_unit("ns").asi8.astype(np.float64)
    return (covered_until(t + horizon_h * 3600e9) - covered_until(t)) / 3600e9


def history_from_truth(truth: Any, *, bin_s: float = 600.0, small_stop_s: float = 120.0,
                       machines: Sequence[str] | None = None, in_scope_modes: Sequence[str] = ("degradation",),
                       telemetry: pd.DataFrame | None = None) -> FleetHistory:
    """A simulator ground truth (duck-typed: its frames) as the engine's input.

    Only what a plant would have goes in: reported telemetry without the sensor-fault flags, states,
    parts, warning codes, the calendar, and failures with a flag saying which ones are in scope (the
    modes the plant wants foreseen: wear-out, not random breakdowns). ``telemetry`` replaces the truth's
    telemetry (tests inject degradation or faults that way).
    """
    start, end = pd.Timestamp(truth.meta["start"]), pd.Timestamp(truth.meta["end"])
    mids = list(machines or truth.meta["machines"])
    tele = truth.telemetry if telemetry is None else telemetry
    tele = tele[tele["machine_id"].isin(mids)]
    raw = pd.DataFrame({"machine": tele["machine_id"], "ts": tele["ts"], "metric": tele["metric"],
                        "value": tele["value"]}).reset_index(drop=True)
    bins = bin_telemetry(raw, start, bin_s)
    states = truth.states.rename(columns={"machine_id": "machine"})
    states = states[states["machine"].isin(mids)]
    stops = states[states["state"] != "running"].assign(planned=lambda d: d["state"] == "planned_stop")
    parts = truth.parts.rename(columns={"machine_id": "machine"}).assign(total=1)
    warnings = truth.warnings.rename(columns={"machine_id": "machine"})
    activity = bin_activity(mids, start, end, bin_s, states, stops, parts, warnings, small_stop_s)
    f = truth.failures[truth.failures["machine_id"].isin(mids)]
    failures = pd.DataFrame({"machine": f["machine_id"].to_numpy(), "ts": f["ts"].to_numpy(),
                             "repair_end": f["repair_end"].to_numpy(),
                             "in_scope": f["mode"].isin(list(in_scope_modes)).to_numpy()})
    cal = truth.calendar
    production = cal[cal["kind"] == "production"][["start", "end"]].reset_index(drop=True)
    return FleetHistory(start=start, end=end, bin_s=bin_s, machines=mids, bins=bins, activity=activity,
                        failures=failures, production=production, meta={"source": "simulator",
                                                                        "seed": truth.meta.get("seed")})
