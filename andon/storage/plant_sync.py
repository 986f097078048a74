"""Sync the plant model into the database, and read it back.

The file is the source of truth until someone edits the model through the API: every sync stores a
version (source, checksum, whole model as JSON). At start-up the file is synced only if it changed since
it was last synced, so an edit made through the API is not overwritten by an unchanged file.
Machines and reasons that leave the model are retired, never deleted: their history stays readable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from andon.plant import PlantModel


@dataclass(frozen=True)
class MachineRef:
    num: int
    id: str
    line_id: str
    ideal_cycle_s: float
    products: dict[str, float]


def model_checksum(model: PlantModel) -> str:
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()


def sync_plant_model(conn: psycopg.Connection, model: PlantModel, source: str, force: bool = False) -> int | None:
    """Write the model into the plant tables; returns the new version, or None if nothing changed."""
    digest = model_checksum(model)
    with conn.transaction():
        conn.execute("lock table plant_model_versions in exclusive mode")
        if not force:
            last_same_source = conn.execute(
                "select sha256 from plant_model_versions where source = %s order by version desc limit 1",
                (source,),
            ).fetchone()
            if last_same_source and last_same_source[0] == digest:
                return None
        _write_tables(conn, model)
        version = conn.execute(
            "insert into plant_model_versions (source, sha256, model) values (%s, %s, %s) returning version",
            (source, digest, Jsonb(json.loads(model.model_dump_json()))),
        ).fetchone()[0]
        # Ideal cycle times may have changed: recompute all rollups.
        conn.execute(
            "insert into rollup_dirty (machine, from_ts, to_ts) "
            "select num, 'epoch'::timestamptz, '9999-12-31'::timestamptz from machines where not retired"
        )
    return version


def _write_tables(conn: psycopg.Connection, model: PlantModel) -> None:
    site_ids, line_ids, machine_ids = [], [], []
    for site in model.sites:
        site_ids.append(site.id)
        conn.execute(
            "insert into sites (id, name, timezone, calendar, retired) values (%s, %s, %s, %s, false) "
            "on conflict (id) do update set name = excluded.name, timezone = excluded.timezone, "
            "calendar = excluded.calendar, retired = false",
            (site.id, site.name, site.timezone, Jsonb(json.loads(site.calendar.model_dump_json()))),
        )
        for line in site.lines:
            line_ids.append(line.id)
            conn.execute(
                "insert into lines (id, site_id, name, takt_time_s, demand_per_shift, retired) "
                "values (%s, %s, %s, %s, %s, false) on conflict (id) do update set site_id = excluded.site_id, "
                "name = excluded.name, takt_time_s = excluded.takt_time_s, "
                "demand_per_shift = excluded.demand_per_shift, retired = false",
                (line.id, site.id, line.name, line.takt_time_s, line.demand_per_shift),
            )
            for pos, m in enumerate(line.machines_in_order, start=1):
                machine_ids.append(m.id)
                buf = m.buffer_after
                conn.execute(
                    "insert into machines (id, line_id, name, position, ideal_cycle_s, products, buffer_capacity, "
                    "buffer_normal_fill, fault_map, retired) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, false) "
                    "on conflict (id) do update set line_id = excluded.line_id, name = excluded.name, "
                    "position = excluded.position, ideal_cycle_s = excluded.ideal_cycle_s, "
                    "products = excluded.products, buffer_capacity = excluded.buffer_capacity, "
                    "buffer_normal_fill = excluded.buffer_normal_fill, fault_map = excluded.fault_map, "
                    "retired = false",
                    (
                        m.id, line.id, m.name, pos, m.ideal_cycle_s, Jsonb(m.products),
                        buf.capacity if buf else None, buf.normal_fill if buf else None, Jsonb(m.fault_map),
                    ),
                )
    reason_codes = []
    for cat in model.reasons:
        for r in cat.reasons:
            reason_codes.append(r.code)
            conn.execute(
                "insert into reasons (code, category, name, planned, failure, loss, retired) "
                "values (%s, %s, %s, %s, %s, %s, false) on conflict (code) do update set "
                "category = excluded.category, name = excluded.name, planned = excluded.planned, "
                "failure = excluded.failure, loss = excluded.loss, retired = false",
                (r.code, cat.category, r.name, r.planned, r.failure, r.loss.value),
            )
    conn.execute("update machines set retired = true where not (id = any(%s))", (machine_ids,))
    conn.execute("update lines set retired = true where not (id = any(%s))", (line_ids,))
    conn.execute("update sites set retired = true where not (id = any(%s))", (site_ids,))
    conn.execute("update reasons set retired = true where not (code = any(%s))", (reason_codes,))


def current_plant_model(conn: psycopg.Connection) -> PlantModel | None:
    row = conn.execute("select model from plant_model_versions order by version desc limit 1").fetchone()
    return PlantModel.model_validate(row[0]) if row else None


def plant_versions(conn: psycopg.Connection, limit: int = 100) -> list[dict]:
    rows = conn.execute(
        "select version, loaded_at, source, sha256 from plant_model_versions order by version desc limit %s",
        (limit,),
    ).fetchall()
    return [{"version": v, "loaded_at": t, "source": s, "sha256": h} for v, t, s, h in rows]


def latest_version(conn: psycopg.Connection) -> int | None:
    return conn.execute("select max(version) from plant_model_versions").fetchone()[0]


def machine_refs(conn: psycopg.Connection, include_retired: bool = False) -> dict[str, MachineRef]:
    rows = conn.execute(
        "select num, id, line_id, ideal_cycle_s, products from machines"
        + ("" if include_retired else " where not retired")
    ).fetchall()
    return {r[1]: MachineRef(r[0], r[1], r[2], r[3], dict(r[4] or {})) for r in rows}
