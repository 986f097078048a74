"""Liveness and readiness probes: public by design (container and load-balancer probes carry no key) and
they reveal nothing but ok / not ok."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from andon.storage import db
from api.deps import AppState, app_state

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers")
def readyz(state: AppState = Depends(app_state)) -> JSONResponse:
    try:
        with state.pool.connection(timeout=2) as conn:
            db.ping(conn)
        return JSONResponse({"status": "ready"})
    except Exception:  # any failure means not ready; the detail goes to the log, not the probe
        return JSONResponse({"status": "database unavailable"}, status_code=503)
