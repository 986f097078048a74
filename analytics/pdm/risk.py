"""One risk per machine (ISO 13374 AG block): probability, level, lead time and drivers in words.

Levels: ``act`` needs both a high probability of failing within H hours *and* condition evidence (the
machine's own health score well above its healthy baseline): an age-based hazard or a calendar alone
can never send a machine to ``act``, and neither can a data-quality problem (faulty samples are not
features). ``act`` may also require the condition to persist over consecutive samples. ``watch`` is a
moderate probability or a moderate health excursion. The thresholds (act probability, condition evidence,
persistence) are chosen at training time on grouped out-of-fold predictions and stored with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from analytics.pdm.data import CHANNELS
from analytics.pdm.features import CHANNEL_WORDS

LEVELS = ("ok", "watch", "act")
# Smallest deviation worth a word, per channel (relative to the baseline level).
NOTABLE = {"vibration_rms": 0.10, "bearing_temp": 0.08, "motor_current": 0.03, "cycle_time": 0.02}


@dataclass(frozen=True)
class RiskThresholds:
    act_probability: float = 0.5
    watch_probability: float = 0.2
    release_probability: float = 0.3
    act_health: float = 3.0  # condition evidence needed for act (robust z, root mean square of upward parts)
    watch_health: float = 2.0
    # Consecutive samples (of one machine) meeting the act condition before the level is act: one noisy
    # sample does not raise an alarm. 1: no persistence required.
    act_persistence: int = 1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def levels(probability: np.ndarray, health: np.ndarray, th: RiskThresholds,
           machine: np.ndarray | None = None, watch_probability: np.ndarray | None = None) -> np.ndarray:
    """Level of each sample. `probability` is the act classifier's (act at or above act_probability with
    condition evidence); `watch_probability` (default: the same) the one compared to watch_probability.
    With `machine` (samples in time order within each machine), act also needs the act condition to have
    held for ``act_persistence`` consecutive samples of that machine; before that the sample is at watch."""
    p = np.nan_to_num(np.asarray(probability, dtype=float), nan=0.0)
    pw = p if watch_probability is None else np.nan_to_num(np.asarray(watch_probability, dtype=float), nan=0.0)
    h = np.nan_to_num(np.asarray(health, dtype=float), nan=0.0)
    out = np.full(p.shape, "ok", dtype=object)
    out[(pw >= th.watch_probability) | (p >= th.watch_probability) | (h >= th.watch_health)] = "watch"
    cond = (p >= th.act_probability) & (h >= th.act_health)
    k = int(getattr(th, "act_persistence", 1))  # models stored before the field existed: 1
    if k > 1 and machine is not None and cond.size:
        cond = _persistent(cond, np.asarray(machine), k)
    out[cond] = "act"
    return out


def _persistent(cond: np.ndarray, machine: np.ndarray, k: int) -> np.ndarray:
    """True where `cond` has held for the last k samples of the same machine (runs reset per machine)."""
    new_machine = np.ones(cond.size, dtype=bool)
    new_machine[1:] = machine[1:] != machine[:-1]
    run = np.zeros(cond.size, dtype=np.int64)
    count = 0
    for i in range(cond.size):
        count = (0 if new_machine[i] else count) + 1 if cond[i] else 0
        run[i] = count
    return run >= k


def _pct(x: float) -> str:
    return f"{x * 100:.0f} %"


def _span(hours: float) -> str:
    if not np.isfinite(hours):
        return ""
    return f" over {hours / 24:.0f} days" if hours >= 36 else f" over {hours:.0f} h"


def drivers(row: pd.Series | dict[str, Any], z: dict[str, float] | None = None, limit: int = 3) -> list[str]:
    """The top reasons in words, strongest first ("vibration RMS up 40 % over 3 days; micro-stops doubled").

    `z` gives each feature's robust z-score against the machine's healthy baseline (how unusual it is);
    without it deviations are ranked by their size relative to the notable thresholds.
    """
    get = row.get
    found: list[tuple[float, str]] = []
    for ch in CHANNELS:
        level = get(f"{ch}_level")
        if level is None or not np.isfinite(level) or level < NOTABLE[ch]:
            continue
        trend = get(f"{ch}_trend72")
        span = get(f"{ch}_span72_h")
        words = CHANNEL_WORDS[ch]
        if trend is not None and np.isfinite(trend) and trend > NOTABLE[ch] / 2 and 1 + level - trend > 0:
            change = (1 + level) / (1 + level - trend) - 1
            text = f"{words} up {_pct(change)}{_span(float(span) if span is not None else np.nan)}"
        else:
            text = f"{words} {_pct(level)} above its baseline"
        if ch == "bearing_temp":
            text += " (same product)"
        strength = (z or {}).get(f"{ch}_level", level / NOTABLE[ch])
        found.append((float(strength), text))
    micro = get("micro_ratio")
    if micro is not None and np.isfinite(micro) and micro >= 1.5:
        text = "micro-stops doubled" if 1.8 <= micro < 2.5 else (
            f"micro-stops ×{micro:.1f}" if micro >= 2.5 else f"micro-stops up {_pct(micro - 1)}")
        found.append((float((z or {}).get("micro_ratio", micro)), text))
    warn = get("warn_rate_h")
    if warn is not None and np.isfinite(warn) and warn >= 0.15:
        found.append((float((z or {}).get("warn_rate_h", warn * 10)),
                      f"warning codes {warn:.1f} per running hour"))
    hazard = get("hazard")
    age = get("age_h")
    if hazard is not None and np.isfinite(hazard) and hazard >= 0.2 and age is not None and np.isfinite(age):
        found.append((1.0, f"{age:.0f} running hours since the last repair (age-based hazard {_pct(hazard)})"))
    found.sort(key=lambda x: -x[0])
    return [t for _, t in found[:limit]]


def wall_hours_for_running(rul_running_h: np.ndarray, times: pd.DatetimeIndex, production: pd.DataFrame,
                           running_share: np.ndarray, max_h: float = 336.0) -> np.ndarray:
    """Wall-clock hours until `rul_running_h` running hours have passed, from the production calendar
    and the machine's recent share of running time (None where beyond max_h)."""
    from analytics.pdm.data import production_hours_ahead

    hours = np.arange(1.0, max_h + 1.0)
    out = np.full(len(times), np.nan)
    share = np.clip(np.nan_to_num(np.asarray(running_share, dtype=float), nan=0.8), 0.2, 1.0)
    for k, t in enumerate(times):
        r = rul_running_h[k]
        if not np.isfinite(r):
            continue
        if r <= 0:
            out[k] = 0.0
            continue
        cum = np.array([production_hours_ahead(production, pd.DatetimeIndex([t]), h)[0] for h in (max_h,)])
        if cum[0] * share[k] < r:
            continue
        ahead = np.array([production_hours_ahead(production, pd.DatetimeIndex([t]), h)[0] for h in hours])
        idx = int(np.searchsorted(ahead * share[k], r))
        out[k] = float(hours[min(idx, hours.size - 1)])
    return out
