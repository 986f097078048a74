"""Manual downtime edits: a person's reason and comment on a stop, and splitting one stop into two
causes. Every edit is audited (who, when, old and new value); both survive re-derivation of the stops."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from andon.storage import rollups

UNSET: Any = object()


class DowntimeEditError(ValueError):
    pass


def _stop(conn: psycopg.Connection, stop_id: int) -> tuple:
    row = conn.execute(
        "select id, machine, start_ts, end_ts, reason_code, comment from downtime where id = %s for update",
        (stop_id,),
    ).fetchone()
    if row is None:
        raise KeyError(f"stop {stop_id}")
    return row


def set_reason(conn: psycopg.Connection, stop_id: int, by: str, reason_code: str | None = UNSET,
               comment: str | None = UNSET) -> None:
    """Set (or clear with None) the manual reason and/or the comment of a stop."""
    with conn.transaction():
        sid, machine, start_ts, _, old_reason, old_comment = _stop(conn, stop_id)
        new_reason = old_reason if reason_code is UNSET else reason_code
        new_comment = old_comment if comment is UNSET else comment
        if new_reason is not None:
            ok = conn.execute("select not retired from reasons where code = %s", (new_reason,)).fetchone()
            if not ok or not ok[0]:
                raise DowntimeEditError(f"unknown reason code {new_reason!r}")
        if new_comment is not None and len(new_comment) > 2000:
            raise DowntimeEditError("comment longer than 2000 characters")
        conn.execute(
            "update downtime set reason_code = %s, comment = %s, set_by = %s, set_at = now() where id = %s",
            (new_reason, new_comment, by, sid),
        )
        # The stop's class (planned or not) may change with its reason: recompute its rollups.
        conn.execute(
            "insert into rollup_dirty (machine, from_ts, to_ts) select machine, start_ts, coalesce(end_ts, start_ts) "
            "from downtime where id = %s",
            (sid,),
        )
        conn.execute(
            "insert into downtime_audit (downtime_id, machine, start_ts, by, action, old_value, new_value) "
            "values (%s, %s, %s, %s, 'set_reason', %s, %s)",
            (sid, machine, start_ts, by, Jsonb({"reason_code": old_reason, "comment": old_comment}),
             Jsonb({"reason_code": new_reason, "comment": new_comment})),
        )


def split_stop(conn: psycopg.Connection, ctx: rollups.PlantContext, stop_id: int, at: dt.datetime, by: str,
               now: dt.datetime | None = None) -> tuple[int, int]:
    """Cut a stop in two at `at`; returns the ids of the two parts (the first keeps the stop's reason)."""
    if at.tzinfo is None:
        raise DowntimeEditError("the split time needs a time zone")
    now = now or dt.datetime.now(dt.UTC)
    with conn.transaction():
        sid, machine, start_ts, end_ts, _, _ = _stop(conn, stop_id)
        if not (start_ts < at < (end_ts or now)):
            raise DowntimeEditError(
                f"split time {at.isoformat()} is not inside the stop ({start_ts.isoformat()} .. "
                f"{(end_ts or now).isoformat()})"
            )
        conn.execute("insert into downtime_splits (machine, at, by) values (%s, %s, %s) on conflict do nothing",
                     (machine, at, by))
        conn.execute(
            "insert into downtime_audit (downtime_id, machine, start_ts, by, action, old_value, new_value) "
            "values (%s, %s, %s, %s, 'split', %s, %s)",
            (sid, machine, start_ts, by, Jsonb({"start_ts": start_ts.isoformat(),
                                                  "end_ts": end_ts.isoformat() if end_ts else None}),
             Jsonb({"split_at": at.isoformat()})),
        )
        conn.execute("insert into rollup_dirty (machine, from_ts, to_ts) values (%s, %s, %s)",
                     (machine, start_ts, at))
    rollups.refresh(conn, ctx, now=now)
    conn.commit()
    second = conn.execute("select id from downtime where machine = %s and start_ts = %s", (machine, at)).fetchone()
    first = conn.execute("select id from downtime where machine = %s and start_ts = %s",
                         (machine, start_ts)).fetchone()
    if second is None or first is None:  # pragma: no cover - derivation always yields both parts
        raise DowntimeEditError("the split did not produce two stops")
    return first[0], second[0]


def audit(conn: psycopg.Connection, stop_id: int) -> list[dict[str, Any]]:
    row = conn.execute("select machine, start_ts from downtime where id = %s", (stop_id,)).fetchone()
    if row is None:
        raise KeyError(f"stop {stop_id}")
    rows = conn.execute(
        "select at, by, action, old_value, new_value from downtime_audit where downtime_id = %s "
        "or (machine = %s and start_ts = %s) order by at, id",
        (stop_id, row[0], row[1]),
    ).fetchall()
    return [{"at": r[0], "by": r[1], "action": r[2], "old": r[3], "new": r[4]} for r in rows]
