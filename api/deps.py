"""Shared API dependencies: the connection pool, the plant context, and API-key authentication."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from andon.storage import keys, plant_sync
from andon.storage.rollups import PlantContext, load_context

# Role ladder for people; gateways only ingest.
_RANK = {"viewer": 1, "maintainer": 2, "admin": 3}

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Andon API key")
bearer = HTTPBearer(auto_error=False, description="Andon API key as a bearer token")


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: str


class AppState:
    """What the app holds for its lifetime (one per process)."""

    def __init__(self, pool: ConnectionPool, read_pool: ConnectionPool | None = None) -> None:
        self.pool = pool
        self.read_pool = read_pool or pool
        self._ctx: PlantContext | None = None
        self._ctx_version: int | None = None
        self._ctx_checked = 0.0
        self._lock = threading.Lock()

    def plant(self, conn: psycopg.Connection) -> PlantContext:
        """The plant context, reloaded when a new plant model version appears (checked every 2 s)."""
        now = time.monotonic()
        if self._ctx is not None and now - self._ctx_checked < 2.0:
            return self._ctx
        version = plant_sync.latest_version(conn)
        with self._lock:
            if self._ctx is None or version != self._ctx_version:
                self._ctx = load_context(conn)
                self._ctx_version = version
            self._ctx_checked = now
            return self._ctx

    def invalidate_plant(self) -> None:
        with self._lock:
            self._ctx = None


def app_state(request: Request) -> AppState:
    return request.app.state.andon


def get_conn(state: AppState = Depends(app_state)) -> Iterator[psycopg.Connection]:
    with state.pool.connection() as conn:
        yield conn


def get_read_conn(state: AppState = Depends(app_state)) -> Iterator[psycopg.Connection]:
    """For read-only routes: the replica when one is configured."""
    with state.read_pool.connection() as conn:
        yield conn


def get_plant(conn: psycopg.Connection = Depends(get_conn), state: AppState = Depends(app_state)) -> PlantContext:
    return state.plant(conn)


def _authenticate(
    request: Request,
    header_key: str | None = Depends(api_key_header),
    bearer_cred: HTTPAuthorizationCredentials | None = Depends(bearer),
    state: AppState = Depends(app_state),
) -> Principal:
    token = header_key or (bearer_cred.credentials if bearer_cred else None) or request.query_params.get("key")
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "an API key is required (X-API-Key header)",
                            headers={"WWW-Authenticate": "Bearer"})
    with state.pool.connection() as conn:
        key = keys.verify_token(conn, token)
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key",
                                headers={"WWW-Authenticate": "Bearer"})
        keys.touch(conn, key.id)
    return Principal(key.id, key.name, key.role)


def require(role: str) -> Callable[..., Principal]:
    """Dependency: a key whose role is at least `role` (viewer < maintainer < admin), or exactly
    `gateway` for ingest routes."""

    def check(principal: Principal = Depends(_authenticate)) -> Principal:
        if role == "gateway":
            ok = principal.role in ("gateway", "admin")
        else:
            ok = _RANK.get(principal.role, 0) >= _RANK[role]
        if not ok:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"this needs a {role} key; the key '{principal.name}' has role {principal.role}")
        return principal

    check.__name__ = f"require_{role}"
    return check


viewer = require("viewer")
maintainer = require("maintainer")
admin = require("admin")
gateway = require("gateway")
