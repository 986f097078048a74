"""Predictive maintenance, orchestrated: train and store models, score on a schedule, alert once.

- ``train(url_or_conn, scope=...)`` loads the scope's history from TimescaleDB (binned in SQL), fits
  the engine (analytics.pdm), evaluates it, and stores it as a new version with its metrics and training
  window. It is promoted only when its evaluation is not worse than the promoted version's on the same
  data; otherwise it is stored as 'rejected' with the reason.
- ``score(url_or_conn)`` scores every promoted scope's machines on the recent window, stores the risks,
  opens an alert when a machine crosses into "act" (at most one open alert per machine: the database
  enforces it) and closes it when the act probability falls below the release threshold. Webhooks are called
  once per alert (retried on failure up to ``webhook_max_attempts``, never re-sent once delivered).
- ``scoring_loop(stop_event, settings)`` is what the API service runs in a background thread.

Settings: environment ANDON_PDM_* (``PdmSettings``), e.g. ANDON_PDM_WEBHOOKS='["https://..."]',
ANDON_PDM_TARGET_FAULT_CODES='["E2*"]' (the failures to foresee; empty: every failure).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import pickle
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.pdm.data import FleetHistory, bin_activity
from analytics.pdm.engine import PdmModel, TrainConfig, fit_model
from analytics.pdm.features import FeatureConfig
from andon.calendar import expand
from andon.settings import Settings, get_settings
from andon.storage import db, queries
from andon.storage import pdm as store
from andon.storage.rollups import PlantContext, load_context

log = logging.getLogger(__name__)
UTC = dt.UTC


class PdmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANDON_PDM_", env_file=".env", extra="ignore")

    horizon_h: float = Field(default=24.0, gt=0, description="H of 'fails within H hours'")
    train_days: float = Field(default=90.0, gt=1)
    bin_s: float = Field(default=600.0, ge=60, le=3600)
    score_interval_s: float = Field(default=900.0, ge=10)
    score_window_days: float = Field(default=7.0, ge=2)
    webhooks: list[str] = Field(default_factory=list, description="URLs POSTed once per new alert")
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=3, ge=1)
    target_fault_codes: list[str] = Field(default_factory=list,
                                          description="fault codes (prefix* allowed) of in-scope failures")
    promote_tolerance: float = Field(default=0.02, ge=0)


# --- history from the database -------------------------------------------------------------------------


def scope_machines(ctx: PlantContext, scope: str) -> list[str]:
    """'line:<id>', 'site:<id>' or 'plant' -> machine ids in line order."""
    kind, _, ident = scope.partition(":")
    out = []
    for site in ctx.model.sites:
        if kind == "site" and site.id != ident:
            continue
        for line in site.lines:
            if kind == "line" and line.id != ident:
                continue
            out.extend(m.id for m in line.machines_in_order if m.id in ctx.by_id)
    if kind not in ("line", "site", "plant"):
        raise ValueError(f"scope must be line:<id>, site:<id> or plant, not {scope!r}")
    if not out:
        raise LookupError(f"no machines in {scope}")
    return out


def _matches(code: Any, patterns: Sequence[str]) -> bool:
    if code is None:
        return False
    return any(code == p or (p.endswith("*") and str(code).startswith(p[:-1])) for p in patterns)


def floor_time(t: dt.datetime, bin_s: float) -> dt.datetime:
    epoch = t.astimezone(UTC).timestamp()
    return dt.datetime.fromtimestamp(math.floor(epoch / bin_s) * bin_s, UTC)


def load_history(conn: psycopg.Connection, ctx: PlantContext, machine_ids: Sequence[str], start: dt.datetime,
                 end: dt.datetime, *, bin_s: float = 600.0, horizon_h: float = 24.0,
                 target_fault_codes: Sequence[str] = (), now: dt.datetime | None = None) -> FleetHistory:
    """The engine's input for [start, end) from the database (telemetry binned in SQL)."""
    start, end = floor_time(start, bin_s), floor_time(end, bin_s)
    now = now or end
    queries.ensure_fresh(conn, ctx, now)
    ids = list(machine_ids)
    bins = store.telemetry_bins(conn, ctx, ids, start, end, bin_s)
    iv = queries.intervals(conn, ctx, ids, start, end, now=now)
    st = queries.stops(conn, ctx, ids, start, end)
    st_frame = pd.DataFrame({"machine": st["machine"], "start": st["start_ts"],
                             "end": st["end_ts"].fillna(pd.Timestamp(now)), "state": st["state"],
                             "planned": st["planned"].fillna(False).astype(bool)})
    counts = queries.counts(conn, ctx, ids, start, end)
    warn = store.warnings(conn, ctx, ids, start, end)
    pset = ctx.model.settings
    activity = bin_activity(ids, pd.Timestamp(start), pd.Timestamp(end), bin_s, iv, st_frame, counts, warn,
                            pset.small_stop_threshold_s)
    dur = (st["end_ts"] - st["start_ts"]).dt.total_seconds()
    is_failure = (~st["planned"].fillna(False).astype(bool)) & (dur >= pset.min_failure_duration_s) & (
        st["failure"].fillna(False).astype(bool) | (st["reason_code"].isna() & (st["state"] == "unplanned_stop")))
    fail = st[is_failure & st["end_ts"].notna()]
    in_scope = [True] * len(fail) if not target_fault_codes else [
        _matches(c, target_fault_codes) for c in fail["fault_code"]]
    failures = pd.DataFrame({"machine": fail["machine"].to_numpy(), "ts": fail["start_ts"].to_numpy(),
                             "repair_end": fail["end_ts"].to_numpy(), "in_scope": np.asarray(in_scope, dtype=bool)})
    m0 = ctx.by_id[ids[0]]
    segs = expand(m0.calendar, m0.tz, start, end + dt.timedelta(hours=horizon_h))
    production = pd.DataFrame({"start": [s.start for s in segs if s.kind == "production"],
                               "end": [s.end for s in segs if s.kind == "production"]})
    for c in ("start", "end"):
        production[c] = pd.to_datetime(production[c], utc=True)
    return FleetHistory(start=pd.Timestamp(start), end=pd.Timestamp(end), bin_s=bin_s, machines=ids, bins=bins,
                        activity=activity, failures=failures, production=production, meta={"source": "database"})


@contextmanager
def _connection(url_or_conn: str | psycopg.Connection) -> Iterator[psycopg.Connection]:
    if isinstance(url_or_conn, psycopg.Connection):
        yield url_or_conn
        return
    with db.connect(url_or_conn) as conn:
        yield conn


# --- training ------------------------------------------------------------------------------------------


def model_quality(ev: dict[str, Any]) -> float:
    """One number to compare versions: early warnings count, premature and false alarms cost."""
    warned = ev.get("warned_share")
    warned = warned if isinstance(warned, float | int) and math.isfinite(warned) else 0.0
    return float(warned - (ev.get("premature_share") or 0.0) - 0.5 * (ev.get("false_alarms_per_machine_week") or 0.0))


@dataclass
class TrainReport:
    version: int
    status: str
    reason: str
    metrics: dict[str, Any]
    train_start: dt.datetime
    train_end: dt.datetime
    previous_version: int | None = None
    previous_quality: float | None = None
    quality: float | None = None
    lines: list[str] = field(default_factory=list)


def serialize(model: PdmModel) -> tuple[bytes, str]:
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, hashlib.sha256(blob).hexdigest()


def deserialize(blob: bytes, sha256: str) -> PdmModel:
    # The blob comes from our own database; the checksum catches a truncated or altered row.
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError("stored PdM model does not match its checksum")
    model = pickle.loads(blob)
    if not isinstance(model, PdmModel):
        raise TypeError("stored PdM model is not a PdmModel")
    return model


def train(url_or_conn: str | psycopg.Connection, *, scope: str, start: dt.datetime | None = None,
          end: dt.datetime | None = None, settings: PdmSettings | None = None, config: TrainConfig | None = None,
          force: bool = False) -> TrainReport:
    ps = settings or PdmSettings()
    cfg = config or TrainConfig(features=FeatureConfig(bin_s=ps.bin_s, horizon_h=ps.horizon_h))
    with _connection(url_or_conn) as conn:
        ctx = load_context(conn)
        ids = scope_machines(ctx, scope)
        end = end or dt.datetime.now(UTC)
        start = start or end - dt.timedelta(days=ps.train_days)
        history = load_history(conn, ctx, ids, start, end, bin_s=ps.bin_s, horizon_h=ps.horizon_h,
                               target_fault_codes=ps.target_fault_codes, now=end)
        model = fit_model(history, cfg)
        metrics = dict(model.metrics)
        quality = model_quality(metrics.get("cv", {}))
        metrics["quality"] = quality
        prev = store.promoted_model(conn, scope)
        status, reason, prev_quality = "promoted", "first model for this scope", None
        if prev is not None:
            prev_model = deserialize(prev[2], prev[3])
            prev_ev = prev_model.evaluate(history, warmup_days=0.0)[0].to_dict()
            prev_quality = model_quality(prev_ev)
            metrics["previous_on_same_window"] = {"version": prev[0], "quality": prev_quality, **prev_ev}
            if quality + ps.promote_tolerance < prev_quality and not force:
                status = "rejected"
                reason = (f"evaluation worse than version {prev[0]} on the same window "
                          f"(quality {quality:.3f} < {prev_quality:.3f})")
            else:
                reason = f"not worse than version {prev[0]} (quality {quality:.3f} vs {prev_quality:.3f})"
        blob, sha = serialize(model)
        params = {"horizon_h": ps.horizon_h, "bin_s": ps.bin_s, "target_fault_codes": ps.target_fault_codes,
                  "machines": ids, "thresholds": model.thresholds.to_dict(),
                  "weibull": model.weibull.to_dict() if model.weibull else None,
                  "supervised": model.classifier is not None}
        version = store.insert_model(conn, scope=scope, train_start=history.start.to_pydatetime(),
                                     train_end=history.end.to_pydatetime(), horizon_h=ps.horizon_h, status=status,
                                     status_reason=reason, metrics=_jsonable(metrics), params=_jsonable(params),
                                     pipeline=blob, sha256=sha)
        conn.commit()
    return TrainReport(version, status, reason, metrics, history.start.to_pydatetime(), history.end.to_pydatetime(),
                       prev[0] if prev else None, prev_quality, quality)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, pd.Timestamp | dt.datetime):
        return x.isoformat()
    return x


# --- scoring and alerts --------------------------------------------------------------------------------


def score(url_or_conn: str | psycopg.Connection, *, now: dt.datetime | None = None,
          settings: PdmSettings | None = None, scopes: Sequence[str] | None = None,
          client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Score every promoted scope at `now`; store risks, open/close alerts, deliver webhooks."""
    ps = settings or PdmSettings()
    now = now or dt.datetime.now(UTC)
    results: list[dict[str, Any]] = []
    with _connection(url_or_conn) as conn:
        ctx = load_context(conn)
        for scope in scopes or store.promoted_scopes(conn):
            found = store.promoted_model(conn, scope)
            if found is None:
                continue
            version, _metrics, blob, sha = found
            model = deserialize(blob, sha)
            ids = scope_machines(ctx, scope)
            history = load_history(conn, ctx, ids, now - dt.timedelta(days=ps.score_window_days), now,
                                   bin_s=model.config.features.bin_s, horizon_h=model.horizon_h,
                                   target_fault_codes=ps.target_fault_codes, now=now)
            risks, _ = model.latest(history)
            for r in risks:
                r["ts"] = r["ts"].to_pydatetime()
                r["model_version"] = version
            store.insert_risk_scores(conn, ctx, version, risks)
            for r in risks:
                if r["level"] == "act":
                    r["alert_id"] = store.open_alert(
                        conn, ctx, r["machine"], opened_at=r["ts"], model_version=version,
                        probability=r["probability"], lead_time_h=r["lead_time_h"], drivers=r["drivers"],
                        webhook_status="pending" if ps.webhooks else "none")
                elif r.get("act_probability", r["probability"]) < model.thresholds.release_probability:
                    # The probability that raised act (the act classifier's) also closes the alert.
                    store.close_alert(conn, ctx, r["machine"], r["ts"])
            conn.commit()
            results.extend(risks)
        deliver_alerts(conn, ps, client)
    return results


def deliver_alerts(conn: psycopg.Connection, ps: PdmSettings, client: httpx.Client | None = None) -> int:
    """POST every alert whose webhook is owed to each configured URL; returns how many were delivered."""
    if not ps.webhooks:
        return 0
    owed = store.claim_undelivered(conn, ps.webhook_max_attempts)
    conn.commit()
    if not owed:
        return 0
    own = client is None
    http = client or httpx.Client(timeout=ps.webhook_timeout_s)
    delivered = 0
    try:
        for alert in owed:
            payload = {"event": "andon.pdm.alert", **_jsonable(alert), "level": "act"}
            errors = []
            for url in ps.webhooks:
                try:
                    resp = http.post(url, json=payload, timeout=ps.webhook_timeout_s)
                    if resp.status_code >= 300:
                        errors.append(f"{url}: HTTP {resp.status_code}")
                except httpx.HTTPError as exc:
                    errors.append(f"{url}: {exc.__class__.__name__}: {exc}")
            store.mark_delivery(conn, alert["id"], not errors, "; ".join(errors) or None)
            conn.commit()
            delivered += not errors
            if errors:
                log.warning("PdM alert %s for %s: webhook failed (%s)", alert["id"], alert["machine"], errors)
    finally:
        if own:
            http.close()
    return delivered


def scoring_loop(stop_event: threading.Event, settings: Settings | None = None,
                 pdm_settings: PdmSettings | None = None) -> None:
    """Score every promoted scope now and then every ``score_interval_s`` until `stop_event` is set."""
    s = settings or get_settings()
    ps = pdm_settings or PdmSettings()
    while not stop_event.is_set():
        try:
            score(s.database_url, settings=ps)
        except Exception:
            log.exception("PdM scoring failed; retrying at the next interval")
        if stop_event.wait(ps.score_interval_s):
            break
