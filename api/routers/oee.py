"""OEE for machines, lines and sites: a window or time buckets, with the waterfall, the six big losses
and the ISO 22400-2 view."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query

import analytics
from andon.storage import queries
from andon.storage.rollups import PlantContext
from api import service, windows
from api.deps import Principal, get_plant, get_read_conn, viewer

router = APIRouter(prefix="/api/v1", tags=["oee"])
Bucket = Literal["hour", "shift", "day", "week"]
ATTRIBUTION_MAX_DAYS = 31

START = Query(None, description="window start, ISO 8601 with zone")
END = Query(None, description="window end, ISO 8601 with zone (default now)")
WINDOW = Query(None, description="named window in the site's time zone: today, yesterday, week, 8h, 7d ...")
BUCKET = Query(None, description="also return a time series in these buckets")


@router.get("/machines/{machine_id}/oee", summary="OEE of one machine over a window, optionally in buckets")
def machine_oee(
    machine_id: str, start: str | None = START, end: str | None = END, window: str | None = WINDOW,
    bucket: Bucket | None = BUCKET, _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    service.machine_ids_or_404(ctx, [machine_id])
    now = dt.datetime.now(dt.UTC)
    tz = service.tz_of_machine(ctx, machine_id)
    a, b = windows.resolve(start, end, window, tz, now)
    periods, stops = service.load(conn, ctx, [machine_id], a, b, now, with_stops=False,
                                  grain=service.grain_for(bucket))
    return {"machine": machine_id, "start": a, "end": b, **service.oee_answer(periods, stops, ctx, now, bucket, tz)}


@router.get("/lines/{line_id}/oee", summary="Line OEE (last station vs the line's ideal rate), each machine's "
            "OEE and contribution, and the machines rolled up")
def line_oee(
    line_id: str, start: str | None = START, end: str | None = END, window: str | None = WINDOW,
    bucket: Bucket | None = BUCKET,
    basis: Literal["bottleneck", "takt"] = Query("bottleneck", description="line ideal rate from"),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    line = service.line_or_404(ctx, line_id)
    ids = [m.id for m in line.machines_in_order]
    now = dt.datetime.now(dt.UTC)
    tz = service.tz_of_line(ctx, line_id)
    a, b = windows.resolve(start, end, window, tz, now)
    with_attribution = b - a <= dt.timedelta(days=ATTRIBUTION_MAX_DAYS)
    # Attribution needs the fine periods (scheduled spans); long windows read coarser stored rows.
    grain = None if with_attribution else service.grain_for(bucket)
    periods, stops = service.load(conn, ctx, ids, a, b, now, with_stops=False, grain=grain)
    intervals = queries.intervals(conn, ctx, ids, a, b, now=now) if with_attribution else None
    figures = service.line_oee_answer(periods, stops, intervals, ctx, line, basis, bucket, tz, now)
    out: dict[str, Any] = {
        "line": line_id, "start": a, "end": b, "line_oee": figures["line_oee"],
        "machines_rolled_up": figures["machines_rolled_up"], "attribution_included": intervals is not None,
    }
    if bucket:
        out["buckets"] = figures["buckets"]
    return service.json_response(out)


@router.get("/sites/{site_id}/oee", summary="Every machine of a site rolled up (sums of times and counts)")
def site_oee(
    site_id: str, start: str | None = START, end: str | None = END, window: str | None = WINDOW,
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    site = next((s for s in ctx.model.sites if s.id == site_id), None)
    if site is None:
        raise KeyError(f"site {site_id!r}")
    now = dt.datetime.now(dt.UTC)
    a, b = windows.resolve(start, end, window, site.tz, now)
    ids = [m.id for line in site.lines for m in line.machines_in_order]
    periods, stops = service.load(conn, ctx, ids, a, b, now, with_stops=False, grain="day")
    pol = service.policy(ctx)
    by_line = {}
    for line in site.lines:
        mine = [m.id for m in line.machines]
        by_line[line.id] = analytics.compute_oee(periods[periods.machine.isin(mine)], None, pol, now).to_dict()
    return {"site": site_id, "start": a, "end": b, "oee": analytics.compute_oee(periods, stops, pol, now).to_dict(),
            "lines": by_line}
