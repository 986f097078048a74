"""Live machine states."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Depends

from andon.storage import queries
from andon.storage.rollups import PlantContext
from api.deps import Principal, get_conn, get_plant, viewer

router = APIRouter(prefix="/api/v1", tags=["machines"])


def _records(df) -> list[dict[str, Any]]:
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") and v == v else (None if v != v else v)) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


@router.get("/states", summary="Current state of every machine (offline past its heartbeat)")
def states(_: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_conn),
           ctx: PlantContext = Depends(get_plant)) -> list[dict[str, Any]]:
    return _records(queries.current_states(conn, ctx))


@router.get("/lines/{line_id}/states", summary="Current state of each machine of a line, in flow order")
def line_states(line_id: str, _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_conn),
                ctx: PlantContext = Depends(get_plant)) -> list[dict[str, Any]]:
    ids = [m.id for m in ctx.model.line(line_id).machines_in_order]
    df = queries.current_states(conn, ctx)
    return _records(df[df["machine"].isin(ids)])
