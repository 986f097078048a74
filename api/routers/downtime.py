"""Downtime: the stop list (paginated), stops waiting for a reason, Pareto tables; maintainers set a
reason and comment or split a stop into two causes (audited)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pandas as pd
import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

import analytics
from andon.storage import downtime
from andon.storage.rollups import PlantContext
from api import service, windows
from api.deps import AppState, Principal, app_state, get_conn, get_plant, get_read_conn, maintainer, viewer

router = APIRouter(prefix="/api/v1/downtime", tags=["downtime"])


def _scope(ctx: PlantContext, line: str | None, machine: str | None) -> tuple[list[str], object]:
    if machine:
        service.machine_ids_or_404(ctx, [machine])
        return [machine], service.tz_of_machine(ctx, machine)
    if line:
        ln = service.line_or_404(ctx, line)
        return [m.id for m in ln.machines_in_order], service.tz_of_line(ctx, line)
    ids = [m.id for m in ctx.model.machines()]
    return ids, ctx.model.sites[0].tz


def _json(v: Any) -> Any:
    if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if hasattr(v, "item"):
        return v.item()
    return v


def _records(df: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    cols = [c for c in columns if c in df.columns]
    return [{c: _json(r[c]) for c in cols} for r in df[cols].to_dict("records")]


STOP_FIELDS = ["stop_id", "machine", "start_ts", "end_ts", "ongoing", "duration_s", "window_s", "scheduled_s", "state",
               "reason_code", "category", "loss", "stop_class", "needs_reason", "fault_code", "comment", "manual",
               "set_by", "set_at", "shift_key"]


@router.get("", summary="Stops in a window, newest first (paginated)")
def list_stops(
    line: str | None = None, machine: str | None = None, start: str | None = None, end: str | None = None,
    window: str | None = Query(None, description="today, yesterday, week, 8h, 7d ..."),
    unassigned: bool = Query(False, description="only stops that need a reason"),
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    ids, tz = _scope(ctx, line, machine)
    now = dt.datetime.now(dt.UTC)
    a, b = windows.resolve(start, end, window or (None if start else "24h"), tz, now, windows.MAX_LIST_DAYS)
    periods, stops = service.load(conn, ctx, ids, a, b, now)
    frame = analytics.stop_list(stops, service.policy(ctx), a, b, now, periods)
    if unassigned:
        frame = analytics.unassigned_stops(frame)
    else:
        frame = frame.sort_values("start_ts", ascending=False, kind="stable")
    page = frame.iloc[offset: offset + limit]
    return {"start": a, "end": b, "total": len(frame), "limit": limit, "offset": offset,
            "stops": _records(page, STOP_FIELDS)}


@router.get("/pareto", summary="Pareto of stop time by reason, category, machine or shift")
def pareto(
    by: Literal["reason", "category", "machine", "shift", "state", "stop_class"] = "reason",
    line: str | None = None, machine: str | None = None, start: str | None = None, end: str | None = None,
    window: str | None = None,
    include_small_stops: bool = Query(True, description="include stops below the small-stop threshold"),
    include_planned: bool = Query(False, description="include planned stops (setups, planned maintenance)"),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    ids, tz = _scope(ctx, line, machine)
    now = dt.datetime.now(dt.UTC)
    a, b = windows.resolve(start, end, window or (None if start else "7d"), tz, now)
    periods, stops = service.load(conn, ctx, ids, a, b, now)
    frame = analytics.stop_list(stops, service.policy(ctx), a, b, now, periods)
    classes = ("breakdown",) + (("small_stop",) if include_small_stops else ()) + (
        ("planned",) if include_planned else ())
    # Stop time inside scheduled time only: idling through a break is not a loss.
    frame = frame[frame["scheduled_s"] > 0]
    table = analytics.pareto(frame, by, measure="scheduled_s", stop_classes=classes)
    return {"start": a, "end": b, "by": by, "stop_classes": list(classes),
            "rows": _records(table, ["key", "count", "duration_s", "share", "cumulative_share"])}


class StopEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason_code: str | None = Field(default=None, max_length=64, description="null clears the manual reason")
    comment: str | None = Field(default=None, max_length=2000)


@router.patch("/{stop_id}", summary="Set the reason and/or comment of a stop (maintainer; audited)")
def edit_stop(stop_id: int, body: StopEdit, who: Principal = Depends(maintainer),
              conn: psycopg.Connection = Depends(get_conn)) -> dict[str, Any]:
    fields = body.model_fields_set
    if not fields:
        raise ValueError("give reason_code and/or comment")
    downtime.set_reason(
        conn, stop_id, who.name,
        reason_code=body.reason_code if "reason_code" in fields else downtime.UNSET,
        comment=body.comment if "comment" in fields else downtime.UNSET,
    )
    conn.commit()
    return {"stop_id": stop_id, "audit": downtime.audit(conn, stop_id)}


class StopSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: dt.datetime = Field(description="where the second cause begins (ISO 8601 with zone)")
    reason_before: str | None = Field(default=None, max_length=64)
    reason_after: str | None = Field(default=None, max_length=64)


@router.post("/{stop_id}/split", summary="Split a stop into two causes at a time (maintainer; audited)")
def split_stop(stop_id: int, body: StopSplit, who: Principal = Depends(maintainer),
               conn: psycopg.Connection = Depends(get_conn), state: AppState = Depends(app_state)) -> dict[str, Any]:
    ctx = state.plant(conn)
    first, second = downtime.split_stop(conn, ctx, stop_id, body.at, who.name)
    if body.reason_before:
        downtime.set_reason(conn, first, who.name, reason_code=body.reason_before)
    if body.reason_after:
        downtime.set_reason(conn, second, who.name, reason_code=body.reason_after)
    conn.commit()
    return {"parts": [first, second]}


@router.get("/{stop_id}/audit", summary="Who changed what on a stop, and when")
def stop_audit(stop_id: int, _: Principal = Depends(viewer),
               conn: psycopg.Connection = Depends(get_read_conn)) -> list[dict[str, Any]]:
    return downtime.audit(conn, stop_id)
