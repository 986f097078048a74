"""The Andon API (FastAPI): routers per resource under /api/v1, OpenAPI docs at /docs."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from andon import __version__
from andon.settings import Settings, get_settings
from andon.storage import db, rollups
from api import problems
from api.deps import AppState
from api.routers import downtime, health, ingest, jit, live, machines, metrics, oee, plant, reliability, risk
from dashboards import web

log = logging.getLogger(__name__)


def _refresher(state: AppState, stop: threading.Event, interval_s: float) -> None:
    """Keeps rollups and downtime current in the background (queries also refresh on demand)."""
    while not stop.wait(interval_s):
        try:
            with metrics.REFRESH_SECONDS.time(), state.pool.connection() as conn:
                rollups.refresh(conn, state.plant(conn))
        except Exception:
            metrics.REFRESH_ERRORS.inc()
            log.exception("rollup refresh failed; retrying")


def create_app(settings: Settings | None = None, refresh_interval_s: float = 5.0, score_risk: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with db.connect(settings.database_url) as conn:
            db.check_schema(conn)
        pool = db.make_pool(settings.database_url, settings.pool_min_size, settings.pool_max_size)
        read_pool = (db.make_pool(settings.database_read_url, settings.pool_min_size, settings.pool_max_size)
                     if settings.database_read_url else None)
        state = AppState(pool, read_pool)
        app.state.andon = state
        stop = threading.Event()
        workers = [threading.Thread(target=_refresher, args=(state, stop, refresh_interval_s), daemon=True,
                                    name="rollup-refresh")]
        if score_risk:
            from andon.pdm import scoring_loop

            workers.append(threading.Thread(target=scoring_loop, args=(stop, settings), daemon=True,
                                            name="pdm-scoring"))
        for w in workers:
            w.start()
        # Everything loaded at start-up (pandas, the plant, the pool) is long-lived: keep it out of the
        # collector's full passes, which otherwise stall requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=10)
            pool.close()
            if read_pool is not None:
                read_pool.close()

    app = FastAPI(title="Andon", version=__version__, lifespan=lifespan,
                  description="Equipment reliability, OEE and JIT readiness for Just-in-Time lines.")
    app.state.settings = settings
    problems.install(app)
    for r in (health.router, plant.router, machines.router, oee.router, downtime.router, reliability.router,
              live.router, ingest.router, jit.router, risk.router):
        app.include_router(r)
    metrics.install(app)
    web.install(app)
    return app
