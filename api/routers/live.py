"""Live updates for the andon board as server-sent events: machine states when they change, today's
OEE every 30 s, a keep-alive comment in between. (EventSource cannot send headers, so the key may come
as the ``key`` query parameter here.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

import analytics
from andon.storage import queries
from api import service, windows
from api.deps import AppState, Principal, app_state, viewer
from api.routers.machines import _records

router = APIRouter(prefix="/api/v1", tags=["live"])
STATE_INTERVAL_S = 1.0
OEE_INTERVAL_S = 30.0
KEEPALIVE_S = 15.0


def line_snapshot(state: AppState, line_id: str) -> list[dict[str, Any]]:
    with state.pool.connection() as conn:
        ctx = state.plant(conn)
        ids = [m.id for m in service.line_or_404(ctx, line_id).machines_in_order]
        df = queries.current_states(conn, ctx)
    return _records(df[df["machine"].isin(ids)])


def line_today(state: AppState, line_id: str) -> dict[str, Any]:
    """Today's OEE of the line (site's local day) and of each machine: the board's numbers."""
    now = dt.datetime.now(dt.UTC)
    with state.pool.connection() as conn:
        ctx = state.plant(conn)
        line = service.line_or_404(ctx, line_id)
        ids = [m.id for m in line.machines_in_order]
        a, b = windows.resolve(None, None, "today", service.tz_of_line(ctx, line_id), now)
        periods, stops = service.load(conn, ctx, ids, a, b, now, with_stops=False)
        pol = service.policy(ctx)
        result = analytics.line_oee(periods, stops, pol, analytics.LineSpec.from_line(line), None, "bottleneck", now)
    def factors(o: analytics.OeeResult) -> dict[str, Any]:
        return {k: getattr(o, k) for k in ("availability", "performance", "quality", "oee")} | {
            "good_count": o.good_count, "reject_count": o.totals.reject_count}
    return {"start": a.isoformat(), "end": b.isoformat(), "line": factors(result.oee),
            "machines": {c.machine: factors(c.oee) for c in result.contributions}}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/lines/{line_id}/live", summary="Server-sent events: machine states on change, OEE every 30 s")
async def live(line_id: str, request: Request, _: Principal = Depends(viewer),
               state: AppState = Depends(app_state)) -> StreamingResponse:
    first = await asyncio.to_thread(line_snapshot, state, line_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        last_states = first
        yield _sse("states", first)
        loop = asyncio.get_running_loop()
        next_oee = loop.time()
        last_sent = loop.time()
        while not await request.is_disconnected():
            now = loop.time()
            if now >= next_oee:
                try:
                    yield _sse("oee", await asyncio.to_thread(line_today, state, line_id))
                except Exception as exc:  # the board shows it; the stream goes on
                    yield _sse("error", {"detail": f"OEE unavailable: {exc}"})
                next_oee = now + OEE_INTERVAL_S
                last_sent = now
            snap = await asyncio.to_thread(line_snapshot, state, line_id)
            if snap != last_states:
                last_states = snap
                yield _sse("states", snap)
                last_sent = now
            elif now - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = now
            await asyncio.sleep(STATE_INTERVAL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
