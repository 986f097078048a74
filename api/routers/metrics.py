"""Prometheus metrics of the API process (requests, latency, rollup refresh), behind a viewer key:
Prometheus sends it as a bearer token (``authorization: {credentials: <key>}`` in the scrape config)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from api.deps import Principal, viewer

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("andon_api_requests_total", "API requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("andon_api_request_seconds", "API request latency", ["method", "route"], registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10))
REFRESH_SECONDS = Histogram("andon_rollup_refresh_seconds", "background rollup refresh duration",
                            registry=REGISTRY)
REFRESH_ERRORS = Counter("andon_rollup_refresh_errors_total", "failed background rollup refreshes",
                         registry=REGISTRY)

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (viewer key)")
def metrics(_: Principal = Depends(viewer)) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        # The route template, not the raw path: bounded label values.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
        return response

    app.include_router(router)
