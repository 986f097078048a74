"""JIT readiness of a line (issue 7): which buffers can go, which must stay, and what to fix first.

``GET /lines/{line}/jit-readiness``: verdict, evidence, per-link throughput-versus-buffer curves, the
recommended buffers and the blockers ranked by impact, from the machines' own stops and cycles in the
window (default: the last 90 days). ``POST /lines/{line}/what-if``: the predicted throughput for given
buffer sizes and/or improvements (for example a halved MTTR on one machine), with the buffers the
improved line would need. Both simulate the line (seconds of CPU): the answer states how.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

import numpy as np
import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from analytics import jit
from andon.storage import queries
from andon.storage.rollups import PlantContext
from api import service, windows
from api.deps import Principal, get_plant, get_read_conn, viewer

router = APIRouter(prefix="/api/v1", tags=["jit"])
JIT_MAX_DAYS = 400
DEFAULT_WINDOW = "90d"
Precision = Literal["standard", "quick"]
QUICK = jit.ReadinessSettings(search_reps=12, search_hours=30.0, verify_reps=20, verify_hours=60.0,
                              refine_blockers=2)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: an undefined figure is null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _settings(precision: Precision) -> jit.ReadinessSettings:
    return QUICK if precision == "quick" else jit.ReadinessSettings()


def _measured(conn: psycopg.Connection, ctx: PlantContext, line_id: str, start: str | None, end: str | None,
              window: str | None) -> tuple[jit.LineSetup, list[jit.MachineInputs], dt.datetime, dt.datetime]:
    line = service.line_or_404(ctx, line_id)
    setup = jit.LineSetup.from_plant(line, ctx.model.site_of_line(line_id))
    now = dt.datetime.now(dt.UTC)
    tz = service.tz_of_line(ctx, line_id)
    a, b = windows.resolve(start, end, window or (None if start else DEFAULT_WINDOW), tz, now, JIT_MAX_DAYS)
    ids = list(setup.machines)
    queries.ensure_fresh(conn, ctx, now)
    intervals = queries.intervals(conn, ctx, ids, a, b, now=now)
    stops = queries.stops(conn, ctx, ids, a, b)
    counts = queries.counts(conn, ctx, ids, a, b)
    inputs = jit.measure_machines(ids, setup.ideal_cycle_s, intervals, stops, counts, a, b,
                                  ctx.model.settings.small_stop_threshold_s)
    if all(m.running_s <= 0 for m in inputs):
        raise ValueError(f"line {line_id!r} has no running time between {a.isoformat()} and {b.isoformat()}: "
                         "nothing to measure")
    return setup, inputs, a, b


@router.get("/lines/{line_id}/jit-readiness",
            summary="Can the line's buffers go? Verdict, evidence, throughput-vs-buffer curves, recommended "
                    "buffers and blockers ranked by impact")
def jit_readiness(
    line_id: str, start: str | None = None, end: str | None = None,
    window: str | None = Query(None, description="named window, default 90d"),
    target: float = Query(0.99, gt=0, le=1, description="share of demand to keep"),
    confidence: float = Query(0.9, ge=0.5, lt=1, description="confidence of the intervals and of the target check"),
    seed: int = Query(0, ge=0, description="random seed: the same seed and data give the same answer"),
    precision: Precision = Query("standard", description="quick: fewer and shorter replications"),
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    setup, inputs, a, b = _measured(conn, ctx, line_id, start, end, window)
    result = jit.assess(setup, inputs, target=target, confidence=confidence, seed=seed,
                        settings=_settings(precision))
    return _finite({"window": {"start": a, "end": b}, "seed": seed, "precision": precision, **result.to_dict()})


class ImprovementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine: str
    mttr_factor: float = Field(1.0, ge=0, le=10, description="0.5: MTTR halved")
    failure_rate_factor: float = Field(1.0, ge=0, le=10, description="0.5: failures halved")
    micro_stop_rate_factor: float = Field(1.0, ge=0, le=10, description="0.5: micro-stops halved")
    cycle_factor: float = Field(1.0, gt=0, le=10, description="cycle times x factor")


class WhatIfIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str | None = None
    end: str | None = None
    window: str | None = Field(None, description="named window for the measured inputs, default 90d")
    buffers: dict[str, int] = Field(default_factory=dict, description="buffer size after a machine (parts); "
                                    "machines not named keep today's size; the last machine's is finished goods")
    improvements: list[ImprovementIn] = Field(default_factory=list)
    target: float = Field(0.99, gt=0, le=1)
    confidence: float = Field(0.9, ge=0.5, lt=1)
    seed: int = Field(0, ge=0)
    recommend: bool = Field(True, description="also search the buffers the (improved) line needs")
    precision: Precision = "standard"


@router.post("/lines/{line_id}/what-if",
             summary="Predicted throughput for given buffer sizes and/or improvements, and the buffers the "
                     "improved line needs")
def what_if(
    line_id: str, body: WhatIfIn,
    _: Principal = Depends(viewer), conn: psycopg.Connection = Depends(get_read_conn),
    ctx: PlantContext = Depends(get_plant),
) -> dict[str, Any]:
    setup, inputs, a, b = _measured(conn, ctx, line_id, body.start, body.end, body.window)
    unknown = [m for m in body.buffers if m not in setup.machines]
    if unknown:
        raise KeyError(f"machine {unknown[0]!r} on line {line_id!r}")
    if any(v < 0 for v in body.buffers.values()):
        raise ValueError("buffer sizes must be >= 0")
    sizes = [body.buffers.get(m, cur) for m, cur in zip(setup.machines, setup.current_buffers, strict=True)]
    improvements = [jit.Improvement(**imp.model_dump()) for imp in body.improvements]
    answer = jit.what_if(setup, inputs, buffers=sizes, improvements=improvements, target=body.target,
                         confidence=body.confidence, seed=body.seed, recommend=body.recommend,
                         settings=_settings(body.precision))
    return _finite({"window": {"start": a, "end": b}, "seed": body.seed, "precision": body.precision, **answer})
