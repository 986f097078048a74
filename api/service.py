"""Glue between storage and the analytics core for the API: load the frames for a window, call the
pure functions, shape the answers. No SQL here (storage has it) and no arithmetic (analytics has it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pandas as pd
import psycopg
from fastapi.responses import Response

import analytics
from analytics.line import LineBasis
from andon.plant import Line
from andon.storage import queries
from andon.storage.rollups import PlantContext


def policy(ctx: PlantContext) -> analytics.OeePolicy:
    return analytics.OeePolicy.from_settings(ctx.model.settings)


def line_or_404(ctx: PlantContext, line_id: str) -> Line:
    try:
        return ctx.model.line(line_id)
    except KeyError:
        raise KeyError(f"line {line_id!r}") from None


def machine_ids_or_404(ctx: PlantContext, ids: list[str]) -> list[str]:
    unknown = [i for i in ids if i not in ctx.by_id]
    if unknown:
        raise KeyError(f"machine {unknown[0]!r}")
    return ids


def tz_of_line(ctx: PlantContext, line_id: str):
    return ctx.model.site_of_line(line_id).tz


def tz_of_machine(ctx: PlantContext, machine_id: str):
    return ctx.model.site_of_machine(machine_id).tz


def grain_for(bucket: str | None) -> str | None:
    """The coarsest stored rows that still answer the buckets exactly."""
    return {None: "day", "day": "day", "week": "day", "shift": "shift", "hour": None}[bucket]


def load(conn: psycopg.Connection, ctx: PlantContext, machine_ids: list[str], start: dt.datetime,
         end: dt.datetime, now: dt.datetime, with_stops: bool = True, grain: str | None = None
         ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    queries.ensure_fresh(conn, ctx, now)
    periods = queries.periods(conn, ctx, machine_ids, start, end, now=now, grain=grain)
    stops = queries.stops(conn, ctx, machine_ids, start, end) if with_stops else None
    return periods, stops


def oee_answer(periods: pd.DataFrame, stops: pd.DataFrame | None, ctx: PlantContext, now: dt.datetime,
               bucket: str | None, tz) -> dict[str, Any]:
    pol = policy(ctx)
    total = analytics.compute_oee(periods, stops, pol, now)
    out: dict[str, Any] = {"oee": total.to_dict()}
    if bucket:
        out["buckets"] = [b.to_dict() for b in analytics.oee_series(periods, stops, pol, bucket, str(tz), now)]
    return out


def line_oee_answer(periods: pd.DataFrame, stops: pd.DataFrame | None, intervals: pd.DataFrame | None,
                    ctx: PlantContext, line: Line, basis: LineBasis, bucket: str | None, tz, now: dt.datetime
                    ) -> dict[str, Any]:
    """The figures of the line OEE endpoint from its periods (and, for short windows, the raw state
    intervals for the starved/blocked attribution); the benchmark's raw-events reference calls it too."""
    pol = policy(ctx)
    # One ledger for the line figures, the per-machine roll-up and the buckets.
    ledger = analytics.build_ledger(periods, stops, pol, now)
    result = analytics.line_oee(periods, stops, pol, analytics.LineSpec.from_line(line), intervals, basis, now,
                                ledger=ledger)
    # Each machine's own OEE is in the line result; rolled up in machine id order (oee_by's order).
    machines = sorted(result.contributions, key=lambda c: c.machine)
    out: dict[str, Any] = {
        "line_oee": result.to_dict(),
        "machines_rolled_up": analytics.rollup(c.oee for c in machines).to_dict(),
    }
    if bucket:
        out["buckets"] = [b.to_dict() for b in analytics.oee_series(periods, stops, pol, bucket, str(tz), now,
                                                                     ledger=ledger)]
    return out


def _json_default(value: object) -> object:
    # orjson writes datetime, date and numpy scalars itself; pd.Timestamp (a datetime subclass) comes here.
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(content: dict[str, Any]) -> Response:
    """A large answer (a year of buckets) as JSON, written by orjson: the same document FastAPI's generic
    encoder would give for these types (times as ISO 8601, floats in their shortest exact form), without
    walking every value in Python first."""
    body = orjson.dumps(content, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json")
