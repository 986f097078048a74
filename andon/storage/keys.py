"""API keys: created with a role, stored hashed, looked up by their public prefix, revocable."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg

ROLES = ("gateway", "viewer", "maintainer", "admin")


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    role: str
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used: dt.datetime | None


def _hash(secret: str) -> str:
    # Secrets are 256-bit random tokens, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(conn: psycopg.Connection, name: str, role: str) -> tuple[ApiKey, str]:
    """Returns the key record and the token, which is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not name.strip():
        raise ValueError("a key needs a name")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = conn.execute(
        "insert into api_keys (name, role, prefix, secret_hash) values (%s, %s, %s, %s) "
        "returning id, name, role, prefix, created_at, revoked_at, last_used",
        (name.strip(), role, prefix, _hash(secret)),
    ).fetchone()
    return ApiKey(*row), f"andon_{prefix}_{secret}"


def list_keys(conn: psycopg.Connection) -> list[ApiKey]:
    rows = conn.execute(
        "select id, name, role, prefix, created_at, revoked_at, last_used from api_keys order by id"
    ).fetchall()
    return [ApiKey(*r) for r in rows]


def revoke_key(conn: psycopg.Connection, prefix_or_id: str) -> bool:
    cur = conn.execute(
        "update api_keys set revoked_at = now() where revoked_at is null and (prefix = %s or id::text = %s)",
        (prefix_or_id, prefix_or_id),
    )
    return cur.rowcount > 0


def verify_token(conn: psycopg.Connection, token: str) -> ApiKey | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "andon" or not parts[1] or not parts[2] or len(token) > 200:
        return None
    row = conn.execute(
        "select id, name, role, prefix, created_at, revoked_at, last_used, secret_hash from api_keys "
        "where prefix = %s",
        (parts[1],),
    ).fetchone()
    if row is None or row[5] is not None or not hmac.compare_digest(row[7], _hash(parts[2])):
        return None
    return ApiKey(*row[:7])


def touch(conn: psycopg.Connection, key_id: int) -> None:
    conn.execute(
        "update api_keys set last_used = now() where id = %s and (last_used is null or last_used < now() - "
        "interval '1 minute')",
        (key_id,),
    )
