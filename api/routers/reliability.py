"""Reliability per machine (failures, MTBF, MTTR, inherent availability, Weibull) and the shift report."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

import analytics
from analytics.machine_reliability import FailurePolicy
from andon.storage import queries
from andon.storage.rollups import PlantContext
from api import service, windows
from api.deps import Principal, get_plant, get_read_conn, viewer

router = APIRouter(prefix="/api/v1", tags=["reliability", "reports"])
RELIABILITY_MAX_DAYS = 400


@router.get("/machines/{machine_id}/reliability",
            summary="Failures, MTBF (divisor stated), MTTR, inherent availability and a Weibull fit")
def machine_reliability(
    machine_id: str, start: str | None = None, end: str | None = None,
    window: str | None = Query(None, description="named window, default 90d"),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    service.machine_ids_or_404(ctx, [machine_id])
    now = dt.datetime.now(dt.UTC)
    tz = service.tz_of_machine(ctx, machine_id)
    a, b = windows.resolve(start, end, window or (None if start else "90d"), tz, now, RELIABILITY_MAX_DAYS)
    queries.ensure_fresh(conn, ctx, now)
    intervals = queries.intervals(conn, ctx, [machine_id], a, b, now=now)
    stops = queries.stops(conn, ctx, [machine_id], a, b)
    pol = FailurePolicy.from_settings(ctx.model.settings)
    return analytics.machine_reliability(machine_id, intervals, stops, pol, a, b, now).to_dict()


@router.get("/lines/{line_id}/shift-report", summary="Target vs actual output per shift, OEE and top stops "
            "(JSON or CSV)")
def shift_report(
    line_id: str, start: str | None = None, end: str | None = None,
    window: str | None = Query(None, description="named window, default yesterday"),
    format: Literal["json", "csv"] = "json",
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> Any:
    line = service.line_or_404(ctx, line_id)
    ids = [m.id for m in line.machines_in_order]
    now = dt.datetime.now(dt.UTC)
    tz = service.tz_of_line(ctx, line_id)
    a, b = windows.resolve(start, end, window or (None if start else "yesterday"), tz, now, 62)
    periods, stops = service.load(conn, ctx, ids, a, b, now)
    rows = analytics.shift_report(periods, stops, service.policy(ctx), analytics.LineSpec.from_line(line), now)
    if format == "csv":
        csv = analytics.shift_report_frame(rows).to_csv(index=False)
        return Response(csv, media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="shift-report-{line_id}.csv"'})
    return {"line": line_id, "start": a, "end": b, "shifts": [r.to_dict() for r in rows]}
