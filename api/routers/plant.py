"""The plant model: read for viewers, replaced (validated, versioned) by admins."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Body, Depends

from andon.plant import PlantModel, PlantModelError, validate_plant_data
from andon.storage import plant_sync
from andon.storage.rollups import PlantContext
from api.deps import AppState, Principal, admin, app_state, get_conn, get_plant, viewer

router = APIRouter(prefix="/api/v1", tags=["plant"])


@router.get("/plant", summary="The whole plant model (sites, lines, machines, buffers, calendars, reasons)")
def get_plant_model(_: Principal = Depends(viewer), ctx: PlantContext = Depends(get_plant)) -> dict[str, Any]:
    return ctx.model.model_dump(mode="json")


@router.put("/plant", summary="Replace the plant model (validated, stored as a new version)")
def put_plant_model(
    body: dict[str, Any] = Body(...),
    who: Principal = Depends(admin),
    conn: psycopg.Connection = Depends(get_conn),
    state: AppState = Depends(app_state),
) -> dict[str, Any]:
    try:
        model = validate_plant_data(body, "request body")
    except PlantModelError as exc:
        raise ValueError(str(exc)) from None
    version = plant_sync.sync_plant_model(conn, model, f"api:{who.name}", force=True)
    conn.commit()
    state.invalidate_plant()
    return {"version": version}


@router.get("/plant/versions", summary="Plant model versions: when, from where")
def plant_versions(_: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_conn)) -> list[dict]:
    return plant_sync.plant_versions(conn)


@router.get("/lines", summary="Lines with their machines in flow order")
def lines(_: Principal = Depends(viewer), ctx: PlantContext = Depends(get_plant)) -> list[dict[str, Any]]:
    model: PlantModel = ctx.model
    out = []
    for site in model.sites:
        for line in site.lines:
            out.append({
                "id": line.id, "name": line.name, "site": site.id, "timezone": site.timezone,
                "takt_time_s": line.takt_time_s, "demand_per_shift": line.demand_per_shift,
                "machines": [m.model_dump(mode="json") for m in line.machines_in_order],
            })
    return out


@router.get("/reasons", summary="The reason-code tree")
def reasons(_: Principal = Depends(viewer), ctx: PlantContext = Depends(get_plant)) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in ctx.model.reasons]
