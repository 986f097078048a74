"""Features per machine over rolling windows (ISO 13374 DM and SD blocks).

Per channel (vibration RMS, bearing temperature, motor current, cycle time), from the 10-minute bins:

- only bins in which the machine ran (>= 60 % of the bin; for vibration and current the level is the
  median of the running samples, see data.py) and whose samples pass the data-quality
  checks are used; the others are *invalid* for that channel. The checks: out-of-range samples, a flat
  line at zero, a stuck value (no change at all while running), dropout (far fewer samples than the
  channel's usual count), clock jump (far more: samples from another hour landed in the bin);
- ambient-driven channels (bearing temperature) first lose the fleet's common mode: the hall's daily
  temperature cycle moves every machine at once, wear moves one (``remove_common_mode``);
- the level is the bin's median, compared to the machine's own baseline *for the product it was making*
  (operating regime): ``level = median / baseline - 1``. The baseline of a (machine, channel, product)
  is a low quantile of the first ``baseline_running_h`` running hours of that product, so a product
  change moves the reference, not the deviation; until a product's baseline exists its levels are NaN;
- rolling over the last valid bins (windows in running hours, so weekends and breaks do not stretch
  them): level (median of the last ``level_window_h``), spread, RMS, kurtosis, and the trend = change
  of the level over the last 6, 12, 24 and 72 running hours;
- an in-scope failure ends the machine's current life: readings from before it never carry over (the
  rolling windows restart, and until the repaired machine has run again its levels are NaN), so a
  repaired machine is not scored on the wear it had before its repair.

Events: micro-stop rate over the last 8 running hours relative to the machine's baseline rate, warning
and fault-stop rates per running hour over the last 24 running hours. Age: running hours since the last
in-scope repair. Calendar: production hours in the next H hours (a machine cannot fail while the
plant is closed).

Data-quality issues are returned separately (``quality``): they never feed the risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analytics.pdm.data import CHANNELS, FleetHistory, floor_bins, production_hours_ahead

CHANNEL_WORDS = {"vibration_rms": "vibration RMS", "bearing_temp": "bearing temperature",
                 "motor_current": "motor current", "cycle_time": "cycle time"}
LOAD_GATED = ("vibration_rms", "motor_current")  # read low while the machine stands
# Channels that follow the hall's ambient (a daily cycle shared by every machine of the site): their
# common movement across the fleet is removed before levels are taken (see remove_common_mode).
AMBIENT_DRIVEN = ("bearing_temp",)
MIN_MACHINES_COMMON_MODE = 3
DQ_KINDS = ("out_of_range", "flat_line", "stuck", "dropout", "clock_jump")


@dataclass(frozen=True)
class FeatureConfig:
    bin_s: float = 600.0
    step_bins: int = 3  # one sample every 30 min
    horizon_h: float = 24.0
    # A shorter horizon for the act decision (None: the same as horizon_h). A classifier of "fails within
    # 14 h" is sharper in time than the 24 h one, so first alarms land inside the 4-24 h window more often,
    # but it has fewer positives to learn from: trained on one fleet it generalised worse to an unseen
    # fleet with weaker sensors, trained with randomised fleets better (bench/pdm.py). fit_model keeps
    # it only when its out-of-fold predictions warn better than the H-hour classifier's.
    act_horizon_h: float | None = None
    min_running_share: float = 0.6
    baseline_running_h: float = 24.0
    baseline_quantile: float = 0.25
    level_window_h: float = 2.0
    spread_window_h: float = 6.0
    micro_window_h: float = 8.0
    event_window_h: float = 24.0
    micro_baseline_h: float = 48.0
    dropout_share: float = 0.5
    clock_jump_share: float = 1.6


@dataclass
class MachineBaseline:
    """A machine's healthy reference: channel level per product, and its usual micro-stop rate."""

    levels: dict[str, dict[str, float]] = field(default_factory=dict)  # channel -> product -> median level
    rms: dict[str, dict[str, float]] = field(default_factory=dict)
    micro_rate_h: float | None = None
    established_at: dict[str, str] = field(default_factory=dict)  # product -> ISO time it was fixed


LEVEL_FEATURES = [f"{c}_level" for c in CHANNELS]
TREND_FEATURES = [f"{c}_trend24" for c in CHANNELS]
TREND72_FEATURES = [f"{c}_trend72" for c in CHANNELS]
SHORT_TREND_FEATURES = [f"{c}_trend{w}" for c in CHANNELS for w in (6, 12)]
SHAPE_FEATURES = [f"{c}_{k}" for c in CHANNELS for k in ("spread", "rms", "kurtosis")]
EVENT_FEATURES = ["micro_ratio", "warn_rate_h", "fault_rate_h"]
CONTEXT_FEATURES = ["age_h", "prod_ahead_h", "running_share_24h"]


def _product_key(p: object) -> str:
    return str(p) if p is not None and p == p else "*"


def _rolling(x: np.ndarray, w: int, min_periods: int, epoch: np.ndarray | None, how: str) -> np.ndarray:
    """Rolling statistic over the last w values, restarting wherever `epoch` changes."""
    series = pd.Series(x, dtype=float)
    if epoch is None or epoch.size == 0 or np.all(epoch == epoch[0]):
        return series.rolling(w, min_periods=min_periods).agg(how).to_numpy()
    rolled = series.groupby(epoch, sort=False).rolling(w, min_periods=min_periods).agg(how)
    return rolled.reset_index(level=0, drop=True).sort_index().to_numpy()


def _rolling_median(x: np.ndarray, w: int, min_periods: int, epoch: np.ndarray | None = None) -> np.ndarray:
    return _rolling(x, w, min_periods, epoch, "median")


def _rate(cum_x: np.ndarray, cum_run_h: np.ndarray, window_h: float) -> np.ndarray:
    """Events per running hour over the last window_h running hours (NaN with less than half of it)."""
    j = np.searchsorted(cum_run_h, cum_run_h - window_h, side="left")
    j = np.clip(j, 0, len(cum_run_h) - 1)
    hours = cum_run_h - cum_run_h[j]
    events = cum_x - cum_x[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hours >= window_h / 2, events / np.maximum(hours, 1e-9), np.nan)


def machine_features(
    history: FleetHistory, machine: str, cfg: FeatureConfig, baseline: MachineBaseline | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, MachineBaseline]:
    """Samples (every step_bins bins) of one machine, its data-quality episodes, and its baseline
    (the given one, completed with any product seen for the first time)."""
    grid = history.grid()
    nb = len(grid)
    bins_per_h = 3600.0 / cfg.bin_s
    act = history.activity[history.activity["machine"] == machine].set_index("bin_start").reindex(grid)
    running_s = act["running_s"].fillna(0.0).to_numpy()
    share = running_s / cfg.bin_s
    product = np.array([_product_key(p) for p in act["product"].to_numpy()], dtype=object)
    run_ok = share >= cfg.min_running_share
    cum_run_h = np.cumsum(running_s) / 3600.0
    base = baseline or MachineBaseline()
    base = MachineBaseline({k: dict(v) for k, v in base.levels.items()}, {k: dict(v) for k, v in base.rms.items()},
                           base.micro_rate_h, dict(base.established_at))
    mb = history.bins[history.bins["machine"] == machine]
    out: dict[str, np.ndarray] = {}
    dq_rows: list[tuple[str, str, pd.Timestamp, pd.Timestamp, int]] = []
    need_baseline = round(cfg.baseline_running_h * bins_per_h)
    level_w = max(round(cfg.level_window_h * bins_per_h), 1)
    spread_w = max(round(cfg.spread_window_h * bins_per_h), 2)
    lag6 = round(6 * bins_per_h)
    lag12 = round(12 * bins_per_h)
    lag24 = round(24 * bins_per_h)
    lag72 = round(72 * bins_per_h)
    t_end = grid + pd.Timedelta(seconds=cfg.bin_s)
    # The bin of the last in-scope failure at or before each bin (-1: none): readings from before a
    # failure describe the machine as it was before its repair, so they never carry over past it.
    f = history.failures[(history.failures["machine"] == machine) & history.failures["in_scope"].astype(bool)]
    fail_bin = np.sort(floor_bins(pd.DatetimeIndex(f["ts"]), grid[0], cfg.bin_s)) if len(f) \
        else np.array([], dtype=np.int64)
    last_fail = np.full(nb, -1, dtype=np.int64)
    if fail_bin.size:
        j = np.searchsorted(fail_bin, np.arange(nb), side="right") - 1
        last_fail = np.where(j >= 0, fail_bin[np.clip(j, 0, None)], -1)
    for ch in CHANNELS:
        cb = mb[mb["metric"] == ch].set_index("bin_start").reindex(grid)
        n = cb["n"].fillna(0).to_numpy(dtype=float)
        n_clean = cb["n_clean"].fillna(0).to_numpy(dtype=float)
        if not np.any(n > 0):
            for name in (f"{ch}_level", f"{ch}_trend6", f"{ch}_trend12", f"{ch}_trend24", f"{ch}_trend72",
                         f"{ch}_spread", f"{ch}_rms",
                         f"{ch}_kurtosis", f"{ch}_stale_h", f"{ch}_span72_h"):
                out[name] = np.full(nb, np.nan)
            continue
        expected = float(np.median(n[run_ok & (n > 0)])) if np.any(run_ok & (n > 0)) else float(np.median(n[n > 0]))
        flags = {
            "out_of_range": cb["n_out_of_range"].fillna(0).to_numpy() > 0,
            "flat_line": cb["n_zero"].fillna(0).to_numpy() > 0,
            "stuck": run_ok & (n_clean >= 3) & (cb["vmax"].to_numpy() == cb["vmin"].to_numpy()),
            "dropout": run_ok & (n < cfg.dropout_share * expected),
            "clock_jump": n > cfg.clock_jump_share * expected,
        }
        bad = np.zeros(nb, dtype=bool)
        for kind, flag in flags.items():
            bad |= flag
            dq_rows.extend(_episodes(machine, ch, kind, flag, grid, t_end))
        valid = run_ok & ~bad & (n_clean >= max(3.0, cfg.dropout_share * expected))
        med = cb["median"].to_numpy(dtype=float)
        if ch in LOAD_GATED:
            # Level of the running samples only: the (1 - share/2) quantile of the bin (see data.py).
            q = 1.0 - np.clip(share, cfg.min_running_share, 1.0) / 2.0
            q60, q70 = cb["q60"].to_numpy(dtype=float), cb["q70"].to_numpy(dtype=float)
            med = np.where(q <= 0.6, med + (q60 - med) * (q - 0.5) / 0.1, q60 + (q70 - q60) * (q - 0.6) / 0.1)
        rms = cb["rms"].to_numpy(dtype=float)
        ref = np.full(nb, np.nan)
        ref_rms = np.full(nb, np.nan)
        usable = np.zeros(nb, dtype=bool)
        levels = base.levels.setdefault(ch, {})
        rms_levels = base.rms.setdefault(ch, {})
        for prod in pd.unique(product):
            sel = product == prod
            if prod not in levels:
                idx = np.flatnonzero(sel & valid)
                if idx.size < need_baseline:
                    continue  # still learning this regime: no level for it yet
                first = idx[:need_baseline]
                levels[prod] = float(np.quantile(med[first], cfg.baseline_quantile))
                rms_levels[prod] = float(np.quantile(rms[first], cfg.baseline_quantile))
                base.established_at.setdefault(prod, t_end[first[-1]].isoformat())
                # Bins that made the baseline are not scored against it (they define it).
                sel = sel.copy()
                sel[: first[-1] + 1] = False
            ref[sel] = levels[prod]
            ref_rms[sel] = rms_levels.get(prod, levels[prod])
            usable |= sel
        ok = valid & usable & (ref > 0)
        vi = np.flatnonzero(ok)
        dev = med[vi] / ref[vi] - 1.0
        dev_rms = rms[vi] / ref_rms[vi] - 1.0
        epoch = last_fail[vi]  # rolling windows restart after each in-scope failure
        short = _rolling_median(dev, level_w, max(level_w // 3, 1), epoch)
        spread = _rolling(dev, spread_w, max(spread_w // 3, 2), epoch, "std")
        rms_short = _rolling_median(dev_rms, level_w, max(level_w // 3, 1), epoch)
        kurt = _rolling_median(cb["kurtosis"].to_numpy(dtype=float)[vi], level_w, max(level_w // 3, 1), epoch)
        pos = np.searchsorted(vi, np.arange(nb), side="right") - 1
        has = pos >= 0
        if vi.size:
            has &= vi[np.clip(pos, 0, None)] >= last_fail
        pc = np.clip(pos, 0, None)

        def at(values: np.ndarray, lag: int = 0, *, _pc: np.ndarray = pc, _has: np.ndarray = has) -> np.ndarray:
            k = _pc - lag
            ok_k = _has & (k >= 0)
            res = np.full(nb, np.nan)
            if values.size:
                res[ok_k] = values[np.clip(k, 0, None)][ok_k]
            return res

        lvl = at(short)
        out[f"{ch}_level"] = lvl
        out[f"{ch}_trend6"] = lvl - at(short, lag6)
        out[f"{ch}_trend12"] = lvl - at(short, lag12)
        out[f"{ch}_trend24"] = lvl - at(short, lag24)
        out[f"{ch}_trend72"] = lvl - at(short, lag72)
        out[f"{ch}_spread"] = at(spread)
        out[f"{ch}_rms"] = at(rms_short)
        out[f"{ch}_kurtosis"] = at(kurt)
        last_valid_bin = np.where(has, vi[pc] if vi.size else 0, -1)
        out[f"{ch}_stale_h"] = np.where(has, cum_run_h - cum_run_h[np.clip(last_valid_bin, 0, None)], np.nan)
        then72 = np.where(has & (pc - lag72 >= 0), vi[np.clip(pc - lag72, 0, None)] if vi.size else 0, -1)
        out[f"{ch}_span72_h"] = np.where(then72 >= 0, (np.arange(nb) - then72) * cfg.bin_s / 3600.0, np.nan)
    # Events over running time.
    micro = act["micro_stops"].fillna(0).to_numpy(dtype=float)
    warn = act["warnings"].fillna(0).to_numpy(dtype=float)
    faults = act["fault_stops"].fillna(0).to_numpy(dtype=float)
    cum_micro, cum_warn, cum_fault = np.cumsum(micro), np.cumsum(warn), np.cumsum(faults)
    if base.micro_rate_h is None:
        k = int(np.searchsorted(cum_run_h, cfg.micro_baseline_h))
        if k < nb:
            base.micro_rate_h = float(max(cum_micro[k], 1.0) / max(cum_run_h[k], 1e-9))
    micro_rate = _rate(cum_micro, cum_run_h, cfg.micro_window_h)
    out["micro_rate_h"] = micro_rate
    out["micro_ratio"] = micro_rate / base.micro_rate_h if base.micro_rate_h else np.full(nb, np.nan)
    out["warn_rate_h"] = _rate(cum_warn, cum_run_h, cfg.event_window_h)
    out["fault_rate_h"] = _rate(cum_fault, cum_run_h, cfg.event_window_h)
    # Age since the last in-scope repair (running hours); NaN until one has been seen.
    ends = np.sort(pd.DatetimeIndex(f["repair_end"]).as_unit("ns").asi8) if len(f) else np.array([], dtype=np.int64)
    tb = t_end.as_unit("ns").asi8
    k = np.searchsorted(ends, tb, side="right") - 1
    age = np.full(nb, np.nan)
    if ends.size:
        rep_bin = np.clip(((ends - grid[0].value) // int(cfg.bin_s * 1e9)).astype(np.int64), 0, nb - 1)
        seen = k >= 0
        age[seen] = cum_run_h[seen] - cum_run_h[rep_bin[np.clip(k, 0, None)][seen]]
    out["age_h"] = age
    out["prod_ahead_h"] = production_hours_ahead(history.production, t_end, cfg.horizon_h)
    out["prod_ahead_act_h"] = production_hours_ahead(history.production, t_end, cfg.act_horizon_h or cfg.horizon_h)
    day = round(24 * bins_per_h)
    cs = np.concatenate([[0.0], np.cumsum(running_s)])
    lo = np.clip(np.arange(1, nb + 1) - day, 0, None)
    out["running_share_24h"] = (cs[1:] - cs[lo]) / (np.minimum(np.arange(1, nb + 1), day) * cfg.bin_s)
    frame = pd.DataFrame(out)
    frame.insert(0, "ts", t_end)
    frame.insert(0, "machine", machine)
    frame["product"] = product
    frame["cum_run_h"] = cum_run_h
    sample = np.arange(cfg.step_bins - 1, nb, cfg.step_bins)
    samples = frame.iloc[sample].reset_index(drop=True)
    dq = pd.DataFrame(dq_rows, columns=["machine", "channel", "kind", "start", "end", "bins"])
    return samples, dq, base


def _episodes(machine: str, ch: str, kind: str, flag: np.ndarray, grid: pd.DatetimeIndex,
              t_end: pd.DatetimeIndex) -> list[tuple[str, str, pd.Timestamp, pd.Timestamp, int]]:
    if not flag.any():
        return []
    d = np.diff(np.concatenate([[0], flag.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(machine, ch, kind, grid[a], t_end[b - 1], int(b - a)) for a, b in zip(starts, ends, strict=True)]


def remove_common_mode(history: FleetHistory, cfg: FeatureConfig) -> pd.DataFrame:
    """The bins with the fleet's shared movement taken out of the ambient-driven channels.

    A bearing runs some degrees warmer on a hot afternoon on every machine of the hall at once; wear
    warms one machine. Per bin, the common mode is the median over the running machines (at least
    MIN_MACHINES_COMMON_MODE) of each machine's reading minus that machine's own median reading; it is
    subtracted from every machine's bin statistics. With fewer machines nothing is removed."""
    bins = history.bins
    if len(history.machines) < MIN_MACHINES_COMMON_MODE:
        return bins
    act = history.activity[["machine", "bin_start", "running_s"]]
    out = bins
    for ch in AMBIENT_DRIVEN:
        sel = (bins["metric"] == ch) & (bins["n_clean"] > 0)
        b = bins.loc[sel, ["machine", "bin_start", "median"]].merge(act, on=["machine", "bin_start"], how="left")
        b = b[b["running_s"].fillna(0.0) >= cfg.min_running_share * cfg.bin_s]
        if b.empty:
            continue
        centred = b["median"] - b.groupby("machine")["median"].transform("median")
        per_bin = centred.groupby(b["bin_start"]).agg(["median", "size"])
        common = per_bin.loc[per_bin["size"] >= MIN_MACHINES_COMMON_MODE, "median"]
        shift = bins.loc[sel, "bin_start"].map(common).fillna(0.0).to_numpy()
        if out is bins:
            out = bins.copy()
        for col in ("median", "q60", "q70", "mean", "vmin", "vmax"):
            out.loc[sel, col] = out.loc[sel, col].to_numpy() - shift
    return out


def fleet_features(
    history: FleetHistory, cfg: FeatureConfig, baselines: dict[str, MachineBaseline] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, MachineBaseline]]:
    """Samples of every machine, data-quality episodes, and the (completed) baselines."""
    history = replace(history, bins=remove_common_mode(history, cfg))
    frames, dqs, out = [], [], {}
    for mid in history.machines:
        s, dq, b = machine_features(history, mid, cfg, (baselines or {}).get(mid))
        frames.append(s)
        dqs.append(dq)
        out[mid] = b
    return (pd.concat(frames, ignore_index=True), pd.concat(dqs, ignore_index=True), out)


def label_samples(samples: pd.DataFrame, failures: pd.DataFrame, horizon_h: float,
                  act_horizon_h: float | None = None) -> pd.DataFrame:
    """Adds, per sample: the next in-scope failure time, the wall hours to it, whether it falls within
    the horizon (``label``) and within the act horizon (``label_act``), the running hours to it (RUL),
    and whether the machine is under repair (not scorable)."""
    out = samples.copy()
    out["next_failure"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
    out["hours_to_failure"] = np.nan
    out["rul_h"] = np.nan
    out["in_repair"] = False
    f = failures[failures["in_scope"].astype(bool)]
    for mid, idx in out.groupby("machine").groups.items():
        fm = f[f["machine"] == mid].sort_values("ts")
        if fm.empty:
            continue
        ts = pd.DatetimeIndex(out.loc[idx, "ts"]).as_unit("ns").asi8
        fts = pd.DatetimeIndex(fm["ts"]).as_unit("ns").asi8
        fend = pd.DatetimeIndex(fm["repair_end"]).as_unit("ns").asi8
        k = np.searchsorted(fts, ts, side="left")  # next failure at or after t
        has = k < fts.size
        nxt = np.where(has, fts[np.clip(k, 0, fts.size - 1)], 0)
        hours = np.where(has, (nxt - ts) / 3600e9, np.nan)
        prev = np.searchsorted(fts, ts, side="right") - 1
        in_rep = (prev >= 0) & (ts < fend[np.clip(prev, 0, None)])
        out.loc[idx, "hours_to_failure"] = hours
        out.loc[idx, "next_failure"] = pd.to_datetime(np.where(has, nxt, np.iinfo(np.int64).min), utc=True)
        out.loc[idx, "in_repair"] = in_rep
        # RUL in running hours: the machine's running clock at the failure minus now.
        cum = out.loc[idx, "cum_run_h"].to_numpy()
        fail_pos = np.searchsorted(ts, fts, side="left")
        cum_at_fail = np.where(fail_pos < ts.size, cum[np.clip(fail_pos, 0, ts.size - 1)], np.nan)
        out.loc[idx, "rul_h"] = np.where(has, cum_at_fail[np.clip(k, 0, fts.size - 1)] - cum, np.nan)
    out["label"] = (out["hours_to_failure"] > 0) & (out["hours_to_failure"] <= horizon_h)
    out["label_act"] = (out["hours_to_failure"] > 0) & (out["hours_to_failure"] <= (act_horizon_h or horizon_h))
    return out
