"""Predictive-maintenance risk: ranked risks of a line or site, one machine's risk with history and
drivers, and the model versions with their metrics (viewer role)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Query

from andon.storage import pdm as store
from andon.storage.rollups import PlantContext
from api import service, windows
from api.deps import Principal, get_plant, get_read_conn, viewer

router = APIRouter(prefix="/api/v1", tags=["risk"])
RISK_HISTORY_MAX_DAYS = 92


def _risk_view(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": r["machine"], "ts": r["ts"], "level": r["level"], "probability": r["probability"],
        "lead_time_h": r["lead_time_h"], "rul_running_h": r["rul_running_h"], "health": r["health"],
        "drivers": r["drivers"], "data_quality": r["data_quality"], "model_version": r["model_version"],
    }


def _scope_ids(ctx: PlantContext, line: str | None, site: str | None) -> list[str]:
    if (line is None) == (site is None):
        raise ValueError("give exactly one of line or site")
    if line is not None:
        return [m.id for m in service.line_or_404(ctx, line).machines_in_order if m.id in ctx.by_id]
    for s in ctx.model.sites:
        if s.id == site:
            return [m.id for ln in s.lines for m in ln.machines_in_order if m.id in ctx.by_id]
    raise KeyError(f"site {site!r}")


@router.get("/risk", summary="Machines of a line or site ranked by their latest risk of failing within H hours")
def ranked_risks(
    line: str | None = None, site: str | None = None,
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> list[dict[str, Any]]:
    ids = _scope_ids(ctx, line, site)
    risks = [_risk_view(r) for r in store.latest_risks(conn, ctx, ids)]
    order = {"act": 2, "watch": 1, "ok": 0}
    risks.sort(key=lambda r: (-order[r["level"]], -r["probability"], r["machine"]))
    return risks


@router.get("/machines/{machine_id}/risk", summary="One machine's latest risk, its history and alerts")
def machine_risk(
    machine_id: str, start: str | None = None, end: str | None = None,
    window: str | None = Query(None, description="named window for the history, default 7d"),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    service.machine_ids_or_404(ctx, [machine_id])
    now = dt.datetime.now(dt.UTC)
    a, b = windows.resolve(start, end, window or (None if start else "7d"), service.tz_of_machine(ctx, machine_id),
                           now, RISK_HISTORY_MAX_DAYS)
    latest = store.latest_risks(conn, ctx, [machine_id])
    history = store.risk_history(conn, ctx, machine_id, a, b)
    return {
        "machine": machine_id,
        "current": _risk_view(latest[0]) if latest else None,
        "history": [{"ts": h["ts"], "level": h["level"], "probability": h["probability"], "health": h["health"],
                     "lead_time_h": h["lead_time_h"], "drivers": h["drivers"]} for h in history],
        "alerts": store.alerts(conn, ctx, [machine_id]),
        "start": a, "end": b,
    }


@router.get("/pdm/models", summary="PdM model versions: status, training window and evaluation metrics")
def model_versions(
    scope: str | None = None,
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
) -> list[dict[str, Any]]:
    return store.list_models(conn, scope)
