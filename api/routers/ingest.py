"""HTTP ingest for gateways that can only POST: a batch of canonical events in JSON.

The event objects are the MQTT JSON ones (README: "MQTT JSON topics") plus ``machine_id``. The body is
bounded (4 MiB, 10,000 events); each event is validated on its own, so the answer lists exactly which
events were rejected and why, and the good ones are stored. Counter readings become deltas against the
newest stored reading of the same gateway and machine, under a per-machine lock, so several API
processes behind a load balancer still count every part once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request

from andon.events import CounterTracker, ProductionCount
from andon.storage import queries
from andon.storage.writer import EventWriter
from api.deps import AppState, Principal, app_state, gateway
from api.ratelimit import TokenBuckets
from collector import mqtt_json
from collector.base import Rejection

router = APIRouter(prefix="/api/v1", tags=["ingest"])
MAX_BODY_BYTES = mqtt_json.MAX_BATCH_BYTES
MAX_EVENTS = mqtt_json.MAX_BATCH_EVENTS


def _limiter(request: Request) -> TokenBuckets:
    lim = getattr(request.app.state, "ingest_limiter", None)
    if lim is None:
        settings = request.app.state.settings
        lim = request.app.state.ingest_limiter = TokenBuckets(settings.ingest_rate_per_s, settings.ingest_burst)
    return lim


def _writer(state: AppState) -> EventWriter:
    w = getattr(state, "writer", None)
    if w is None:
        w = state.writer = EventWriter(state.pool)
    return w


@router.post("/ingest", summary="Ingest a batch of events (gateway key); answers which were rejected and why",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["events"],
                 "properties": {"events": {"type": "array", "maxItems": MAX_EVENTS, "items": {"type": "object"}}}}}}}})
async def ingest(request: Request, who: Principal = Depends(gateway),
                 state: AppState = Depends(app_state)) -> dict[str, Any]:
    wait = _limiter(request).take(who.key_id)
    if wait > 0:
        raise HTTPException(429, f"too many requests from this key; retry in {wait:.1f} s",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body of {declared} bytes exceeds {MAX_BODY_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"events"} or not isinstance(data["events"], list):
        raise HTTPException(422, 'body must be {"events": [...]} and nothing else')
    events = data["events"]
    if not events or len(events) > MAX_EVENTS:
        raise HTTPException(422, f"events: give 1 to {MAX_EVENTS} events, got {len(events)}")
    source_id = f"http:{who.name}"
    return await asyncio.to_thread(_store, state, source_id, events)


def _store(state: AppState, source_id: str, events: list[Any]) -> dict[str, Any]:
    with state.pool.connection() as conn:
        ctx = state.plant(conn)
        known = set(ctx.by_id)
        tracker = CounterTracker()
        decoder = mqtt_json.JsonDecoder(source_id, known_machines=known, counters=tracker)
        accepted, rejected, baselines = [], [], 0
        with conn.transaction():
            restored: set[str] = set()
            for i, raw in enumerate(events):
                counter_machine = None
                if isinstance(raw, dict) and raw.get("kind") == "counter" and raw.get("machine_id") in known:
                    counter_machine = raw["machine_id"]
                    if counter_machine not in restored:
                        last = queries.lock_and_last_counter(conn, source_id, counter_machine)
                        if last is not None:
                            tracker.restore(source_id, counter_machine, last[0], last[1], last[2])
                        restored.add(counter_machine)
                had_baseline = counter_machine is not None and tracker.has_baseline(source_id, counter_machine)
                item = decoder.decode_event(raw, f"events[{i}]")
                if item is None and counter_machine is not None and not had_baseline:
                    # The first reading ever of this gateway's counter: store it as a zero-part row so the
                    # next request (maybe served by another process) continues from it.
                    baselines += 1
                    ts = mqtt_json.parse_timestamp(raw["ts"])
                    accepted.append(ProductionCount(counter_machine, ts, 0, 0, source_id,
                                                    total_counter=raw["processed"],
                                                    reject_counter=raw.get("defective", 0)))
                elif item is None:
                    pass  # an unchanged or older counter reading: nothing to count
                elif isinstance(item, Rejection):
                    rejected.append({"index": i, "reason": item.reason})
                    item.topic = "http"
                else:
                    accepted.append(item)
            result = _writer(state).write(accepted, conn=conn)
            if rejected:
                now = dt.datetime.now(dt.UTC)
                queries.dead_letters(conn, [(now, source_id, "http", r["reason"][:2000],
                                             json.dumps(events[r["index"]], default=str)[:65536].encode())
                                            for r in rejected])
    return {"received": len(events), "stored": result.total_inserted, "duplicates": result.duplicates,
            "counter_baselines": baselines, "rejected": rejected}
