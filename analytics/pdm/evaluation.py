"""How early and how often the risk engine is right, measured against ground-truth failure times.

Definitions (stated, because every paper counts differently):

- An *alarm episode* starts when a machine's level becomes ``act`` and lasts while its probability stays
  at or above the release threshold (hysteresis: one episode, not a flicker of many).
- For each in-scope failure, its *first alarm* is the first episode that starts after the previous
  in-scope repair of that machine (or the evaluation start) and before the failure. Its lead time is
  failure time minus episode start (wall-clock hours). The failure is *warned* when 4 h <= lead <= 24 h,
  *premature* when lead > 24 h, *late* when lead < 4 h, *missed* without any alarm.
  ``premature_share`` = premature first alarms / failures with a first alarm.
- An episode is a *false alarm* when no in-scope failure follows within 72 h of its start, *premature*
  when one follows but later than 24 h; both are counted per machine-week of scored time.
- Precision at k of daily rankings: at one snapshot per day, machines ranked by probability; the
  positives are machines with an in-scope failure in the next 24 h; k = min(k_max, number of positives)
  so that a day with one failing machine asks only for the top one. Days without a positive are skipped.
- RUL error: absolute error of the predicted remaining running hours on samples whose true RUL is at
  most ``rul_within_h`` running hours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

HOUR_NS = 3_600_000_000_000


@dataclass
class Evaluation:
    failures: int
    warned: int
    premature: int
    late: int
    missed: int
    warned_share: float
    premature_share: float
    median_lead_time_h: float | None
    episodes: int
    false_alarm_episodes: int
    premature_episodes: int
    machine_weeks: float
    false_alarms_per_machine_week: float
    premature_alarms_per_machine_week: float
    precision_at_k: float | None
    precision_days: int
    rul_mae_h: float | None
    rul_rmse_h: float | None
    rul_samples: int
    leads_h: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("leads_h")
        return d

    @classmethod
    def from_counts(cls, *, failures: int, warned: int, premature: int, late: int, missed: int, episodes: int,
                    false_alarm_episodes: int, premature_episodes: int, machine_weeks: float,
                    precision_at_k: float | None, precision_days: int, rul_mae_h: float | None,
                    rul_rmse_h: float | None, rul_samples: int, leads_h: list[float]) -> Evaluation:
        """The evaluation of these counts: the shares and rates derived from them (one rule for one fleet
        and for several combined)."""
        with_alarm = warned + premature + late
        return cls(
            failures=failures, warned=warned, premature=premature, late=late, missed=missed,
            warned_share=warned / failures if failures else float("nan"),
            premature_share=premature / with_alarm if with_alarm else 0.0,
            median_lead_time_h=float(np.median(leads_h)) if leads_h else None,
            episodes=episodes, false_alarm_episodes=false_alarm_episodes, premature_episodes=premature_episodes,
            machine_weeks=machine_weeks,
            false_alarms_per_machine_week=false_alarm_episodes / machine_weeks if machine_weeks else float("nan"),
            premature_alarms_per_machine_week=premature_episodes / machine_weeks if machine_weeks else float("nan"),
            precision_at_k=precision_at_k, precision_days=precision_days, rul_mae_h=rul_mae_h,
            rul_rmse_h=rul_rmse_h, rul_samples=rul_samples, leads_h=leads_h,
        )


def combine(evaluations: list[Evaluation]) -> Evaluation:
    """One evaluation of several fleets judged separately (each over its own period): counts add up, the
    shares and rates are recomputed from them, precision@k is the mean over all judged days."""
    if len(evaluations) == 1:
        return evaluations[0]
    total = {k: sum(getattr(e, k) for e in evaluations) for k in (
        "failures", "warned", "premature", "late", "missed", "episodes", "false_alarm_episodes",
        "premature_episodes", "precision_days", "rul_samples")}
    machine_weeks = float(sum(e.machine_weeks for e in evaluations))
    leads = [x for e in evaluations for x in e.leads_h]
    days = total["precision_days"]
    prec = (sum((e.precision_at_k or 0.0) * e.precision_days for e in evaluations) / days) if days else None
    rul_n = total["rul_samples"]

    def rul_mean(attr: str, power: float) -> float | None:
        if not rul_n:
            return None
        acc = sum((getattr(e, attr) or 0.0) ** power * e.rul_samples for e in evaluations) / rul_n
        return float(acc ** (1 / power))

    return Evaluation.from_counts(
        **total, machine_weeks=machine_weeks, precision_at_k=prec, rul_mae_h=rul_mean("rul_mae_h", 1.0),
        rul_rmse_h=rul_mean("rul_rmse_h", 2.0), leads_h=leads,
    )


def alarm_episodes(scored: pd.DataFrame, release_p: float, column: str = "probability") -> pd.DataFrame:
    """Episodes per machine from scored samples (machine, ts, level, and the probability `column` that
    raised act: the episode ends when it falls below release_p), in time order."""
    rows = []
    for mid, s in scored.sort_values("ts").groupby("machine", sort=False):
        level = s["level"].to_numpy()
        p = s[column].to_numpy()
        ts = pd.DatetimeIndex(s["ts"]).as_unit("ns").asi8  # integers: no Timestamp objects per sample
        inside = False
        start = None
        peak = 0.0
        for k in range(len(s)):
            if not inside and level[k] == "act":
                inside, start, peak = True, ts[k], p[k]
            elif inside:
                if p[k] < release_p:
                    rows.append((mid, start, ts[k], peak))
                    inside = False
                else:
                    peak = max(peak, p[k])
        if inside:
            rows.append((mid, start, ts[-1], peak))
    out = pd.DataFrame(rows, columns=["machine", "start", "end", "peak_probability"])
    for c in ("start", "end"):
        out[c] = pd.to_datetime(out[c].to_numpy(dtype=np.int64), unit="ns", utc=True)
    return out


def evaluate(
    scored: pd.DataFrame,
    failures: pd.DataFrame,
    *,
    release_p: float,
    start: pd.Timestamp,
    end: pd.Timestamp,
    horizon_h: float = 24.0,
    min_lead_h: float = 4.0,
    false_alarm_window_h: float = 72.0,
    k_max: int = 3,
    snapshot_hour_utc: int = 5,
    rul_within_h: float = 48.0,
    release_column: str = "probability",
    rank_column: str = "probability",
    ranking: bool = True,
) -> Evaluation:
    """Metrics of scored samples (machine, ts, level, probability[, rul_pred_h, rul_h]) over [start, end).

    Only in-scope failures inside [start, end) are judged; scored samples before `start` (warm-up) are
    ignored, so an alarm raised during warm-up cannot count as an early warning. ``ranking=False`` skips
    precision@k (it depends on the probabilities only, not on the act thresholds being searched).
    """
    scored = scored[(scored["ts"] >= start) & (scored["ts"] < end)]
    fin = failures[failures["in_scope"].astype(bool)].sort_values("ts")
    episodes = alarm_episodes(scored, release_p, release_column)
    warned = premature = late = missed = 0
    leads: list[float] = []
    judged = 0
    for mid, fm in fin.groupby("machine"):
        eps = episodes[episodes["machine"] == mid]
        prev_end = start
        for _, f in fm.iterrows():
            if f["ts"] < start or f["ts"] >= end:
                prev_end = max(prev_end, f["repair_end"])
                continue
            judged += 1
            cand = eps[(eps["start"] >= prev_end) & (eps["start"] < f["ts"])]
            if cand.empty:
                missed += 1
            else:
                lead = (f["ts"] - cand["start"].iloc[0]).total_seconds() / 3600.0
                leads.append(lead)
                if lead > horizon_h:
                    premature += 1
                elif lead < min_lead_h:
                    late += 1
                else:
                    warned += 1
            prev_end = f["repair_end"]
    false_eps = premature_eps = 0
    for _, ep in episodes.iterrows():
        fm = fin[(fin["machine"] == ep["machine"]) & (fin["ts"] > ep["start"])]
        nxt = (fm["ts"].min() - ep["start"]).total_seconds() / 3600.0 if len(fm) else np.inf
        if nxt > false_alarm_window_h:
            false_eps += 1
        elif nxt > horizon_h:
            premature_eps += 1
    machine_weeks = len(scored["machine"].unique()) * (end - start).total_seconds() / (7 * 86400.0)
    prec, days = precision_at_k(scored, fin, horizon_h=horizon_h, k_max=k_max, snapshot_hour_utc=snapshot_hour_utc,
                                rank_column=rank_column) if ranking else (None, 0)
    rul_mae = rul_rmse = None
    rul_n = 0
    if "rul_pred_h" in scored and "rul_h" in scored:
        sel = scored["rul_h"].between(0, rul_within_h) & scored["rul_pred_h"].notna()
        rul_n = int(sel.sum())
        if rul_n:
            err = scored.loc[sel, "rul_pred_h"] - scored.loc[sel, "rul_h"]
            rul_mae = float(err.abs().mean())
            rul_rmse = float(np.sqrt((err**2).mean()))
    return Evaluation.from_counts(
        failures=judged, warned=warned, premature=premature, late=late, missed=missed, episodes=len(episodes),
        false_alarm_episodes=false_eps, premature_episodes=premature_eps, machine_weeks=machine_weeks,
        precision_at_k=prec, precision_days=days, rul_mae_h=rul_mae, rul_rmse_h=rul_rmse, rul_samples=rul_n,
        leads_h=leads,
    )


def precision_at_k(scored: pd.DataFrame, failures_in_scope: pd.DataFrame, *, horizon_h: float, k_max: int,
                   snapshot_hour_utc: int, rank_column: str = "probability") -> tuple[float | None, int]:
    snaps = scored[(scored["ts"].dt.hour == snapshot_hour_utc) & (scored["ts"].dt.minute == 0)]
    values = []
    for t, day in snaps.groupby("ts"):
        soon = failures_in_scope[(failures_in_scope["ts"] > t)
                                 & (failures_in_scope["ts"] <= t + pd.Timedelta(hours=horizon_h))]
        positives = set(soon["machine"]) & set(day["machine"])
        if not positives:
            continue
        k = min(k_max, len(positives))
        top = day.sort_values([rank_column, "probability"], ascending=False, kind="stable")["machine"].head(k)
        values.append(len(set(top) & positives) / k)
    return (float(np.mean(values)) if values else None), len(values)


def act_during(scored: pd.DataFrame, windows: pd.DataFrame, *, margin_h: float = 0.0) -> pd.DataFrame:
    """Samples at level act that fall inside any window (machine or all machines: start, end)."""
    act = scored[scored["level"] == "act"]
    if act.empty or windows.empty:
        return act.iloc[0:0]
    hits = np.zeros(len(act), dtype=bool)
    ts = act["ts"]
    margin = pd.Timedelta(hours=margin_h)
    for _, w in windows.iterrows():
        sel = (ts >= w["start"] - margin) & (ts < w["end"] + margin)
        if "machine" in windows.columns and w.get("machine") is not None:
            sel &= act["machine"] == w["machine"]
        hits |= sel.to_numpy()
    return act[hits]
