"""The PdM model as one object: fit on a fleet's history, score any fleet's history.

``fit_model(history)`` computes features and labels, fits the per-machine health pipelines on healthy
samples, the Weibull prior, the classifier (with GroupKFold-by-machine out-of-fold predictions used to
measure it and to choose the act threshold) and the RUL regressor. It accepts several histories (other
plants, or simulated fleets with randomised wear and sensor parameters), and, when an act horizon shorter
than H is configured, also an act classifier for it, kept only if it warns better out of fold.
``PdmModel.score(history)`` returns every sample's probability, health, level and RUL;
``PdmModel.latest(history)`` one risk per machine with lead time, drivers in words and data-quality
issues. Pure: DataFrames in, results out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from analytics.pdm.data import FleetHistory
from analytics.pdm.evaluation import Evaluation, combine, evaluate
from analytics.pdm.features import (
    FeatureConfig,
    MachineBaseline,
    fleet_features,
    label_samples,
)
from analytics.pdm.models import (
    ACT_FEATURES,
    CLASSIFIER_FEATURES,
    HEALTH_FEATURES,
    WeibullPrior,
    fit_classifier,
    fit_health,
    fit_weibull,
    grouped_oof,
    health_pipeline,
    health_scores,
    rul_pipeline,
)
from analytics.pdm.risk import RiskThresholds, drivers, levels, wall_hours_for_running

# A sample this close before an in-scope failure is not "healthy" when fitting health baselines.
UNHEALTHY_BEFORE_FAILURE_H = 96.0


@dataclass(frozen=True)
class TrainConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    folds: int = 5
    seed: int = 0
    min_failures_supervised: int = 4  # in-scope failures needed before a classifier is trained
    healthy_quantile: float = 0.99  # health evidence threshold for act: this quantile of healthy samples
    max_premature_share: float = 0.15
    # Act thresholds tried out of fold. Not above 0.9: trained on one fleet, out-of-fold picked 0.95 and
    # then warned late on a fleet with weaker sensors (validation fleet seed 101: warned 0.53 against 0.76
    # with this grid); with several training fleets out-of-fold picks 0.8 either way.
    act_probabilities: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    act_persistences: tuple[int, ...] = (1, 2)  # consecutive samples (30 min apart) before act
    # Condition evidence needed for act, as multiples of the healthy quantile of the health score.
    act_health_multiples: tuple[float, ...] = (1.0, 2.0, 3.0)
    # Copies of the training samples with the wear signals scaled by these factors (see augment_gain).
    gain_augmentation: tuple[float, ...] = (0.7,)
    warmup_days: float = 7.0  # out-of-fold judging starts this late (as PdmModel.evaluate)
    # A failure is warned when its first alarm comes 4 h to this many hours ahead (the judging window,
    # independent of the classifier's horizon).
    warn_window_h: float = 24.0
    rul_within_h: float = 120.0


@dataclass
class PdmModel:
    config: TrainConfig
    thresholds: RiskThresholds
    baselines: dict[str, MachineBaseline]
    health: dict[str, Pipeline]
    pooled_health: Pipeline | None
    weibull: WeibullPrior | None
    classifier: Pipeline | None
    rul: Pipeline | None
    metrics: dict[str, Any] = field(default_factory=dict)
    train_start: pd.Timestamp | None = None
    train_end: pd.Timestamp | None = None
    # "Fails within the act horizon" (features.act_horizon_h): raises act. None when the H-hour classifier
    # warned better out of fold, when no act horizon is configured, and in models stored before it existed:
    # then the H-hour classifier raises act.
    act_classifier: Pipeline | None = None

    @property
    def horizon_h(self) -> float:
        return self.config.features.horizon_h

    # --- scoring -----------------------------------------------------------------------------------
    def features(self, history: FleetHistory) -> tuple[pd.DataFrame, pd.DataFrame]:
        samples, dq, _ = fleet_features(history, self.config.features, self.baselines)
        return samples, dq

    def score(self, history: FleetHistory, samples: pd.DataFrame | None = None) -> pd.DataFrame:
        """Every sample of the history with health, hazard, probability, level and predicted RUL."""
        if samples is None:
            samples, _ = self.features(history)
        return self.score_samples(samples)

    def score_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        s = samples.copy()
        s["health"] = health_scores(self.health, s, self.pooled_health)
        s["hazard"] = (self.weibull.probability(s["age_h"].to_numpy(), s["prod_ahead_h"].to_numpy())
                       if self.weibull else np.nan)
        if self.classifier is not None:
            p = self.classifier.predict_proba(s)[:, 1]
        else:
            p = fallback_probability(s["health"].to_numpy(), s["hazard"].to_numpy(), s["prod_ahead_h"].to_numpy(),
                                     self.horizon_h)
        s["probability"] = p
        act = getattr(self, "act_classifier", None)
        s["act_probability"] = act.predict_proba(s)[:, 1] if act is not None else p
        s["level"] = levels(s["act_probability"].to_numpy(), s["health"].to_numpy(), self.thresholds,
                            s["machine"].to_numpy(), watch_probability=p)
        s["rul_pred_h"] = np.clip(self.rul.predict(s), 0.0, None) if self.rul is not None else np.nan
        return s

    def latest(self, history: FleetHistory) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        """One risk per machine at the end of the history, ranked by probability; and the scored samples."""
        samples, dq = self.features(history)
        scored = self.score_samples(samples)
        out = []
        end = history.end
        for mid, s in scored.groupby("machine", sort=False):
            row = s.iloc[-1]
            z = self.feature_z(str(mid), s.iloc[[-1]])
            lead = None
            if row["level"] != "ok" and np.isfinite(row["rul_pred_h"]):
                wall = wall_hours_for_running(np.array([row["rul_pred_h"]]), pd.DatetimeIndex([row["ts"]]),
                                              history.production, np.array([row["running_share_24h"]]))[0]
                lead = None if not np.isfinite(wall) else float(wall)
            issues = dq[(dq["machine"] == mid) & (dq["end"] > end - pd.Timedelta(hours=24))]
            out.append({
                "machine": str(mid),
                "ts": row["ts"],
                "probability": float(row["probability"]),
                "act_probability": float(row["act_probability"]),
                "level": str(row["level"]),
                "health": None if not np.isfinite(row["health"]) else float(row["health"]),
                "lead_time_h": lead,
                "rul_running_h": None if not np.isfinite(row["rul_pred_h"]) else float(row["rul_pred_h"]),
                "drivers": drivers(row, z) if row["level"] != "ok" or row["health"] >= 1.0 else [],
                "product": row["product"],
                "data_quality": [
                    {"channel": r.channel, "kind": r.kind, "start": r.start.isoformat(), "end": r.end.isoformat(),
                     "bins": int(r.bins)} for r in issues.itertuples()
                ],
            })
        # Ranked by how soon (the act classifier's probability), then by the H-hour probability.
        out.sort(key=lambda r: (-r["act_probability"], -r["probability"]))
        return out, scored

    def feature_z(self, machine: str, rows: pd.DataFrame) -> dict[str, float]:
        pipe = self.health.get(machine, self.pooled_health)
        if pipe is None:
            return {}
        z = pipe[:-1].transform(rows)[0]
        return {f: float(v) for f, v in zip(HEALTH_FEATURES, z, strict=True) if np.isfinite(v)}

    def evaluate(self, history: FleetHistory, *, warmup_days: float = 7.0, scored: pd.DataFrame | None = None
                 ) -> tuple[Evaluation, pd.DataFrame]:
        """Score a fleet with known failures and measure against them (from warmup_days on)."""
        if scored is None:
            scored = self.score(history)
        scored = label_samples(scored, history.failures, self.horizon_h)
        start = history.start + pd.Timedelta(days=warmup_days)
        ev = evaluate(scored, history.failures, release_p=self.thresholds.release_probability, start=start,
                      end=history.end, horizon_h=getattr(self.config, "warn_window_h", 24.0),
                      release_column="act_probability", rank_column="act_probability")
        return ev, scored

    def summary(self) -> dict[str, Any]:
        return {
            "horizon_h": self.horizon_h,
            "thresholds": self.thresholds.to_dict(),
            "weibull": self.weibull.to_dict() if self.weibull else None,
            "supervised": self.classifier is not None,
            "machines": sorted(self.health),
            "metrics": self.metrics,
        }


def fallback_probability(health: np.ndarray, hazard: np.ndarray, prod_ahead_h: np.ndarray, horizon_h: float
                         ) -> np.ndarray:
    """Without enough failure history: condition evidence through a logistic curve, scaled by the share
    of the horizon the plant produces, combined with the age-based hazard where one is known."""
    h = np.nan_to_num(health, nan=0.0)
    cond = 1.0 / (1.0 + np.exp(-(h - 4.0)))
    cond = cond * np.clip(np.nan_to_num(prod_ahead_h, nan=horizon_h) / max(horizon_h * 0.5, 1e-9), 0.0, 1.0)
    hz = np.nan_to_num(hazard, nan=0.0)
    return 1.0 - (1.0 - cond) * (1.0 - 0.5 * hz)


def healthy_mask(labelled: pd.DataFrame) -> pd.Series:
    htf = labelled["hours_to_failure"]
    return (~labelled["in_repair"]) & ~(htf.notna() & (htf <= UNHEALTHY_BEFORE_FAILURE_H))


def fit_model(history: FleetHistory | Sequence[FleetHistory], config: TrainConfig | None = None) -> PdmModel:
    """Fit on one fleet's history, or on several (other plants, or simulated fleets with other wear and
    sensor parameters: the models then cannot key on one fleet's signal sizes). Machine ids must be
    unique across the histories."""
    cfg = config or TrainConfig()
    fc = cfg.features
    histories = [history] if isinstance(history, FleetHistory) else list(history)
    parts, baselines = [], {}
    for h in histories:
        s, _dq, b = fleet_features(h, fc)
        parts.append(label_samples(s, h.failures, fc.horizon_h, fc.act_horizon_h))
        baselines.update(b)
    lab = pd.concat(parts, ignore_index=True)
    failures = pd.concat([h.failures for h in histories], ignore_index=True)
    healthy = healthy_mask(lab)
    health = fit_health(lab, healthy)
    pooled = _pooled_health(lab, healthy)
    lab["health"] = health_scores(health, lab, pooled)
    weibull = fit_weibull(lab, failures)
    lab["hazard"] = weibull.probability(lab["age_h"].to_numpy(), lab["prod_ahead_h"].to_numpy()) if weibull else np.nan
    act_health = float(np.nanquantile(lab.loc[healthy, "health"], cfg.healthy_quantile)) if healthy.any() else 3.0
    act_health = max(act_health, 2.0)
    thresholds = RiskThresholds(act_health=act_health, watch_health=0.6 * act_health)
    train = lab[~lab["in_repair"]].reset_index(drop=True)
    y = train["label"].to_numpy(dtype=int)
    n_fail = int(failures["in_scope"].astype(bool).sum())
    metrics: dict[str, Any] = {"samples": len(train), "positives": int(y.sum()), "in_scope_failures": n_fail,
                               "machines": sum(len(h.machines) for h in histories), "fleets": len(histories),
                               "act_health": act_health}
    y_act = train["label_act"].to_numpy(dtype=int)
    classifier = act_classifier = rul = None
    if n_fail >= cfg.min_failures_supervised and y.min() != y.max():
        # Which classifier raises act: the H-hour one, or one for the shorter act horizon (sharper in time,
        # but with fewer positives to learn from): the one whose out-of-fold predictions (machines scored by
        # models that never saw them) warn more failures 4-24 h ahead, with its thresholds chosen there.
        candidates = [(fc.horizon_h, y, CLASSIFIER_FEATURES)]
        if fc.act_horizon_h and fc.act_horizon_h != fc.horizon_h and y_act.min() != y_act.max():
            candidates.insert(0, (fc.act_horizon_h, y_act, ACT_FEATURES))
        best = None
        for horizon, labels, features in candidates:
            cv = grouped_oof(train, labels, cfg.folds, cfg.seed, cfg.gain_augmentation, features)
            oof = train.assign(probability=cv.probability, act_probability=cv.probability)
            th, cv_eval = choose_thresholds(oof, histories, thresholds, cfg)
            metrics.setdefault("act_candidates", {})[f"{horizon:g}h"] = {
                "cv_auc": cv.auc, "warned_share": cv_eval["warned_share"],
                "premature_share": cv_eval["premature_share"], "selection_score": cv_eval["selection_score"]}
            if best is None or cv_eval["selection_score"] > best[0] + 1e-9:
                best = (cv_eval["selection_score"], horizon, labels, features, cv, th, cv_eval)
        assert best is not None
        _score, act_horizon, act_labels, act_features, cv, thresholds, cv_eval = best
        metrics.update({"act_horizon_h": act_horizon, "cv_folds": cv.folds, "cv_auc": cv.auc,
                        "cv_average_precision": cv.average_precision, "cv": cv_eval})
        classifier = fit_classifier(train, y, cfg.seed, cfg.gain_augmentation)
        if act_horizon != fc.horizon_h:
            act_classifier = fit_classifier(train, act_labels, cfg.seed, cfg.gain_augmentation, act_features)
        has_rul = train["rul_h"].between(0, cfg.rul_within_h) & (train["health"] >= thresholds.watch_health)
        if has_rul.sum() >= 50:
            rul = rul_pipeline(cfg.seed).fit(train[has_rul], train.loc[has_rul, "rul_h"].to_numpy())
    else:
        metrics["note"] = (f"{n_fail} in-scope failures: below {cfg.min_failures_supervised}, no supervised model; "
                           "risk from the health score and the age-based hazard")
        oof = train.assign(probability=fallback_probability(train["health"].to_numpy(), train["hazard"].to_numpy(),
                                                            train["prod_ahead_h"].to_numpy(), fc.horizon_h))
        oof["level"] = levels(oof["probability"].to_numpy(), oof["health"].to_numpy(), thresholds,
                              oof["machine"].to_numpy())
        metrics["cv"] = _eval_dict(oof, histories, thresholds, cfg.warn_window_h, cfg.warmup_days)
    return PdmModel(cfg, thresholds, baselines, health, pooled, weibull, classifier, rul, metrics,
                    min(h.start for h in histories), max(h.end for h in histories), act_classifier)


def _pooled_health(lab: pd.DataFrame, healthy: pd.Series) -> Pipeline | None:
    h = lab[healthy].dropna(subset=[c for c in HEALTH_FEATURES if c.endswith("_level")], how="all")
    if len(h) < 20:
        return None
    return health_pipeline().fit(h)


def _eval_dict(scored: pd.DataFrame, histories: Sequence[FleetHistory], th: RiskThresholds, horizon_h: float,
               warmup_days: float = 0.0, ranking: bool = True) -> dict[str, Any]:
    # The same convention as PdmModel.evaluate: failures in the first days (before the machines' own
    # baselines exist) are not judged; at most a quarter of a short history is given to warm-up.
    evs = []
    for h in histories:
        warmup = min(pd.Timedelta(days=warmup_days), (h.end - h.start) / 4)
        mine = scored[scored["machine"].isin(h.machines)] if len(histories) > 1 else scored
        column = "act_probability" if "act_probability" in mine else "probability"
        evs.append(evaluate(mine, h.failures, release_p=th.release_probability, start=h.start + warmup,
                            end=h.end, horizon_h=horizon_h,
                            release_column=column, rank_column=column, ranking=ranking))
    return combine(evs).to_dict()


def choose_thresholds(oof: pd.DataFrame, histories: Sequence[FleetHistory], base: RiskThresholds, cfg: TrainConfig
                      ) -> tuple[RiskThresholds, dict[str, Any]]:
    """The act probability, persistence and condition evidence that warn most failures 4-24 h ahead with
    few premature first alarms and few false alarms, judged on out-of-fold predictions (machines scored by
    models that never saw them). Ties go to the earlier candidate in the grid."""
    best: tuple[float, RiskThresholds, dict[str, Any]] | None = None
    machine = oof["machine"].to_numpy()
    for act_p, persistence, mult in itertools.product(cfg.act_probabilities, cfg.act_persistences,
                                                      cfg.act_health_multiples):
        th = replace(base, act_probability=act_p, watch_probability=min(0.2, act_p / 2),
                     release_probability=act_p * 0.6, act_persistence=persistence,
                     act_health=max(base.act_health * mult, 2.0))
        scored = oof.assign(level=levels(oof["probability"].to_numpy(), oof["health"].to_numpy(), th, machine))
        ev = _eval_dict(scored, histories, th, cfg.warn_window_h, cfg.warmup_days, ranking=False)
        warned = ev["warned_share"] if math.isfinite(ev["warned_share"]) else 0.0
        score = warned - 2.0 * max(ev["premature_share"] - cfg.max_premature_share, 0.0) \
            - 0.5 * ev["false_alarms_per_machine_week"]
        if best is None or score > best[0] + 1e-9:
            best = (score, th, ev)
    assert best is not None
    th = best[1]
    full = _eval_dict(oof.assign(level=levels(oof["probability"].to_numpy(), oof["health"].to_numpy(), th, machine)),
                      histories, th, cfg.warn_window_h, cfg.warmup_days)
    return best[1], full | {"selection_score": best[0], "act_probability": best[1].act_probability,
                               "act_persistence": best[1].act_persistence, "act_health": best[1].act_health}
