"""Models (ISO 13374 HA and PA blocks), all scikit-learn Pipelines:

- ``health``: an unsupervised health score per machine from its own healthy baseline: robust z-scores
  of the wear-direction features (BaselineScaler fitted on the machine's healthy samples), only the
  upward part counted (wear raises vibration, temperature, current, cycle time, micro-stops), combined
  as a root mean square. Works for a machine that has never failed.
- ``classifier``: P(an in-scope failure within H hours), a gradient-boosted classifier whose every
  input is constrained to act monotonically upward (more wear evidence never lowers the probability),
  validated with GroupKFold by machine. Trained on the samples plus copies with the wear signals scaled
  down (``augment_gain``): another plant's sensors may show the same wear weaker than this fleet's did.
  Its inputs include, per channel, the running hours until the level reaches the level it had just
  before the training failures at its recent rate (``TimeToFailureLevel``): a degradation rate, so a
  slow and a fast wear at the same level are told apart. The same pipeline serves the act classifier
  ("fails within the act horizon", see engine.fit_model).
- ``rul``: remaining running hours to the failure, trained on samples that precede a failure.
- ``weibull``: the age-based hazard of in-scope failures (running hours since the last repair), fitted
  on the fleet's times to failure with the right-censored survivors, used as a prior input.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from analytics.pdm.data import CHANNELS
from analytics.pdm.features import LEVEL_FEATURES, SHORT_TREND_FEATURES, TREND_FEATURES

HEALTH_FEATURES = [*LEVEL_FEATURES, "micro_ratio", "warn_rate_h"]
TIME_TO_FAILURE_LEVEL = [f"{c}_ttf_h" for c in CHANNELS]
MODEL_FEATURES = [*LEVEL_FEATURES, *SHORT_TREND_FEATURES, *TREND_FEATURES, "micro_ratio", "warn_rate_h",
                  "fault_rate_h", "health", "hazard", "age_h", "prod_ahead_h"]
# Inputs that fall as wear evidence rises (the rest rise with it).
FALLING_FEATURES = [*TIME_TO_FAILURE_LEVEL]
CLASSIFIER_FEATURES = [*MODEL_FEATURES, *TIME_TO_FAILURE_LEVEL]
# The act classifier ("fails within the act horizon"): production hours ahead over its own horizon.
ACT_FEATURES = [("prod_ahead_act_h" if f == "prod_ahead_h" else f) for f in CLASSIFIER_FEATURES]
Z_CLIP = 50.0


class Columns(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Selects named columns of a DataFrame as a float array (the first step of every pipeline)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns

    def fit(self, x: pd.DataFrame, y: Any = None) -> Columns:
        # A feature never observed in training (no such channel in this plant) is carried as 0, not NaN:
        # a column of nothing but NaN cannot be binned by the gradient boosting.
        self.empty_ = x.reindex(columns=self.columns).isna().all().to_numpy()
        return self

    def transform(self, x: pd.DataFrame) -> np.ndarray:
        out = x.reindex(columns=self.columns).to_numpy(dtype=float, copy=True)
        out[:, getattr(self, "empty_", np.zeros(len(self.columns), dtype=bool))] = 0.0
        return out


# Smallest scale of each health feature: a machine whose healthy signal is almost noise-free must not
# turn a 1 % baseline error into a 10-sigma excursion.
SCALE_FLOORS = {"vibration_rms_level": 0.03, "bearing_temp_level": 0.03, "motor_current_level": 0.01,
                "cycle_time_level": 0.01, "micro_ratio": 0.3, "warn_rate_h": 0.1}


class BaselineScaler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Robust z-scores against a healthy baseline: (x - median) / max(robust sigma, floor)."""

    def __init__(self, floors: list[float]) -> None:
        self.floors = floors

    def fit(self, x: np.ndarray, y: Any = None) -> BaselineScaler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            center = np.nanmedian(x, axis=0)
            q10, q90 = np.nanquantile(x, 0.1, axis=0), np.nanquantile(x, 0.9, axis=0)
        sigma = (q90 - q10) / 2.5631  # the 10-90 % range of a normal distribution is 2.563 sigma
        self.center_ = np.nan_to_num(center, nan=0.0)
        self.scale_ = np.maximum(np.nan_to_num(sigma, nan=0.0), np.asarray(self.floors, dtype=float))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center_) / self.scale_


def _upward_rms(z: np.ndarray) -> np.ndarray:
    up = np.clip(np.nan_to_num(z, nan=0.0), 0.0, Z_CLIP)
    return np.sqrt(np.mean(up**2, axis=1, keepdims=True))


def health_pipeline() -> Pipeline:
    return Pipeline([
        ("columns", Columns(HEALTH_FEATURES)),
        ("scale", BaselineScaler([SCALE_FLOORS[f] for f in HEALTH_FEATURES])),
        ("upward_rms", FunctionTransformer(_upward_rms)),
    ])


def fit_health(samples: pd.DataFrame, healthy: pd.Series) -> dict[str, Pipeline]:
    """One health pipeline per machine, fitted on its own healthy samples (all of them if none are)."""
    out: dict[str, Pipeline] = {}
    for mid, s in samples.groupby("machine"):
        h = s[healthy.loc[s.index]]
        h = h.dropna(subset=LEVEL_FEATURES, how="all")
        if len(h) < 20:
            h = s.dropna(subset=LEVEL_FEATURES, how="all")
        if len(h) < 5:
            continue
        pipe = health_pipeline()
        pipe.fit(h)  # NaN-aware: a feature never seen healthy gets center 0 and its floor as scale
        out[str(mid)] = pipe
    return out


def health_scores(pipes: dict[str, Pipeline], samples: pd.DataFrame, fallback: Pipeline | None = None) -> np.ndarray:
    out = np.full(len(samples), np.nan)
    pos = {i: k for k, i in enumerate(samples.index)}
    for mid, s in samples.groupby("machine"):
        pipe = pipes.get(str(mid), fallback)
        if pipe is None:
            continue
        out[[pos[i] for i in s.index]] = pipe.transform(s).ravel()
    return out


@dataclass(frozen=True)
class WeibullPrior:
    shape: float
    scale_h: float
    n_failures: int
    n_censored: int

    def probability(self, age_h: np.ndarray, ahead_h: np.ndarray) -> np.ndarray:
        """P(failure within the next ahead_h running hours | survived age_h)."""
        a = np.clip(np.asarray(age_h, dtype=float), 0.0, None)
        b = a + np.clip(np.asarray(ahead_h, dtype=float), 0.0, None)
        with np.errstate(invalid="ignore", over="ignore"):
            p = 1.0 - np.exp((a / self.scale_h) ** self.shape - (b / self.scale_h) ** self.shape)
        return np.where(np.isfinite(p), p, np.nan)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "scale_h": self.scale_h, "n_failures": self.n_failures,
                "n_censored": self.n_censored, "mean_life_h": self.scale_h * math.gamma(1 + 1 / self.shape)}


def fit_weibull(samples: pd.DataFrame, failures: pd.DataFrame) -> WeibullPrior | None:
    """Weibull of running hours from an in-scope repair to the next in-scope failure (complete), plus the
    survivors at the end of the data (right-censored). None with fewer than three complete lives."""
    complete, censored = [], []
    for _mid, s in samples.groupby("machine"):
        age = s["age_h"].to_numpy()
        rul = s["rul_h"].to_numpy()
        # A complete life: age at the sample just before a failure + its remaining running hours.
        ends = np.flatnonzero(np.isfinite(age) & np.isfinite(rul) & (np.roll(rul, -1) > rul + 1e-9))
        complete.extend(float(age[k] + rul[k]) for k in ends if age[k] + rul[k] > 0)
        if np.isfinite(age[-1]) and not np.isfinite(rul[-1]) and age[-1] > 0:
            censored.append(float(age[-1]))
    if len(complete) < 3:
        return None
    from reliability.Fitters import Fit_Weibull_2P

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = Fit_Weibull_2P(failures=complete, right_censored=censored or None, show_probability_plot=False,
                             print_results=False)
    return WeibullPrior(float(fit.beta), float(fit.alpha), len(complete), len(censored))


class TimeToFailureLevel(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Per channel, the running hours until its level reaches the level it had just before the failures
    seen in training, extrapolating the trend of the last ``slope_h`` running hours (a degradation rate,
    so a fast and a slow wear at the same level are told apart). Capped at ``cap_h``; 0 at or past the
    failure level; NaN without a level. Adds ``{channel}_ttf_h`` columns to the samples."""

    def __init__(self, slope_h: float = 12.0, last_h: float = 2.0, cap_h: float = 240.0) -> None:
        self.slope_h = slope_h
        self.last_h = last_h
        self.cap_h = cap_h

    def fit(self, x: pd.DataFrame, y: Any = None) -> TimeToFailureLevel:
        last = x["rul_h"].between(0.0, self.last_h) if "rul_h" in x else pd.Series(False, index=x.index)
        self.failure_levels_: dict[str, float] = {}
        for ch in CHANNELS:
            v = x.loc[last, f"{ch}_level"].dropna() if f"{ch}_level" in x else pd.Series(dtype=float)
            self.failure_levels_[ch] = float(v.median()) if len(v) >= 3 else float("nan")
        return self

    def transform(self, x: pd.DataFrame) -> pd.DataFrame:
        return x.assign(**{f"{ch}_ttf_h": self._hours(x, ch) for ch in CHANNELS})

    def _hours(self, x: pd.DataFrame, ch: str) -> np.ndarray:
        target = self.failure_levels_.get(ch, float("nan"))
        level = x[f"{ch}_level"].to_numpy(dtype=float) if f"{ch}_level" in x else np.full(len(x), np.nan)
        if not np.isfinite(target) or target <= 0:
            return np.full(len(x), np.nan)
        trend = x.get(f"{ch}_trend{self.slope_h:.0f}")
        slope = trend.to_numpy(dtype=float) / self.slope_h if trend is not None else np.full(len(x), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            hours = np.where(slope > 0, (target - level) / slope, self.cap_h)
        hours = np.clip(np.nan_to_num(hours, nan=self.cap_h), 0.0, self.cap_h)
        return np.where(np.isfinite(level), hours, np.nan)


def _monotone(features: list[str], rising: int) -> list[int]:
    return [-rising if f in FALLING_FEATURES else rising for f in features]


def classifier_pipeline(seed: int = 0, features: list[str] | None = None) -> Pipeline:
    cols = features or CLASSIFIER_FEATURES
    return Pipeline([
        ("time_to_failure_level", TimeToFailureLevel()),
        ("columns", Columns(cols)),
        ("model", HistGradientBoostingClassifier(
            max_iter=250, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40, l2_regularization=1.0,
            monotonic_cst=_monotone(cols, 1), random_state=seed)),
    ])


def rul_pipeline(seed: int = 0) -> Pipeline:
    # RUL falls as wear evidence rises: every input constrained downward, except the calendar.
    cst = _monotone(CLASSIFIER_FEATURES, -1)
    cst[CLASSIFIER_FEATURES.index("prod_ahead_h")] = 0
    return Pipeline([
        ("time_to_failure_level", TimeToFailureLevel()),
        ("columns", Columns(CLASSIFIER_FEATURES)),
        ("model", HistGradientBoostingRegressor(loss="absolute_error", max_iter=250, learning_rate=0.05,
                                                max_leaf_nodes=15, min_samples_leaf=20, monotonic_cst=cst,
                                                random_state=seed)),
    ])


@dataclass
class CrossValidation:
    """Out-of-fold predictions (every machine scored by a model that never saw it) and their folds."""

    probability: np.ndarray
    folds: int
    auc: float | None
    average_precision: float | None
    metrics: dict[str, Any] = field(default_factory=dict)


# Features whose size scales with how strongly wear shows in a plant's signals (sensor gains, mounting,
# machine type): a new plant's machines may show the same wear weaker or stronger.
GAIN_SCALED = [c for c in MODEL_FEATURES if c.endswith("_level") or "_trend" in c] + ["health"]


def augment_gain(samples: pd.DataFrame, labels: np.ndarray, factors: tuple[float, ...]
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """The training samples plus, per factor, a copy with every gain-scaled feature multiplied by it
    (same labels): the classifier learns that a failure can come with weaker (or stronger) signals than
    this plant's history showed, instead of keying on this fleet's absolute signal sizes."""
    if not factors:
        return samples, labels
    cols = [c for c in GAIN_SCALED if c in samples.columns]
    copies = [samples] + [samples.assign(**{c: samples[c] * f for c in cols}) for f in factors]
    return pd.concat(copies, ignore_index=True), np.concatenate([labels] * (1 + len(factors)))


def fit_classifier(samples: pd.DataFrame, labels: np.ndarray, seed: int = 0,
                   augment: tuple[float, ...] = (), features: list[str] | None = None) -> Pipeline:
    x, y = augment_gain(samples, labels, augment)
    return classifier_pipeline(seed, features).fit(x, y)


def grouped_oof(samples: pd.DataFrame, labels: np.ndarray, folds: int, seed: int = 0,
                augment: tuple[float, ...] = (), features: list[str] | None = None) -> CrossValidation:
    """GroupKFold by machine: one machine's history never helps predict itself (augmented copies of the
    training folds only; held-out machines are scored as they are)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    groups = samples["machine"].to_numpy()
    k = min(folds, len(np.unique(groups)))
    oof = np.full(len(samples), np.nan)
    if k < 2:
        return CrossValidation(oof, 0, None, None)
    for train_idx, test_idx in GroupKFold(n_splits=k).split(samples, labels, groups):
        y = labels[train_idx]
        if y.min() == y.max():
            oof[test_idx] = float(y.mean())
            continue
        pipe = fit_classifier(samples.iloc[train_idx], y, seed, augment, features)
        oof[test_idx] = pipe.predict_proba(samples.iloc[test_idx])[:, 1]
    ok = np.isfinite(oof)
    auc = ap = None
    if ok.any() and labels[ok].min() != labels[ok].max():
        auc = float(roc_auc_score(labels[ok], oof[ok]))
        ap = float(average_precision_score(labels[ok], oof[ok]))
    return CrossValidation(oof, k, auc, ap)
