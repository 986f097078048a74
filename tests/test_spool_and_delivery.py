"""Store-and-forward: the spool keeps order and survives crashes; with the database stopped mid-stream
(a real PostgreSQL cluster of the test's own) nothing is lost and nothing is stored twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import psycopg
import pytest

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from andon.storage import db, plant_sync
from andon.storage.writer import EventWriter
from collector.base import Batch, Rejection, Source
from collector.runtime import Delivery, run_source
from collector.spool import Spool, SpoolFull
from tests.pgcluster import TempCluster

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def batch(i: int, n: int = 50) -> list:
    out = []
    for j in range(n):
        ts = T0 + dt.timedelta(seconds=i * n + j)
        out.append(TelemetrySample("L1-M1", ts, "vibration_rms", float(j), "t", unit="mm/s", seq=f"{i}-{j}"))
    out.append(ProductionCount("L1-M1", T0 + dt.timedelta(seconds=i * n), 1, 0, "t", seq=f"c{i}"))
    out.append(StateChange("L1-M1", T0 + dt.timedelta(seconds=i * n), MachineState.RUNNING, "t", seq=f"s{i}"))
    return out


def test_spool_order_crash_recovery_and_bound(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        sp.append(batch(i, 3))
    first = sp.peek()
    assert [e.seq for e in first][:3] == ["0-0", "0-1", "0-2"]
    sp.commit()
    assert sp.peek()[0].seq == "1-0"
    sp.close()
    # "Crash": reopen; the uncommitted batch 1 is first again, and a torn record at the tail is dropped.
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")
    sp = Spool(tmp_path, max_bytes=1 << 20)
    got = []
    while (b := sp.peek()) is not None:
        got.append(b[0].seq)
        sp.commit()
    assert got == ["1-0", "2-0", "3-0", "4-0"]
    assert sp.empty()
    small = Spool(tmp_path / "small", max_bytes=2000)
    with pytest.raises(SpoolFull):
        for i in range(100):
            small.append(batch(i, 5))


def test_database_stopped_mid_stream_loses_and_doubles_nothing(tmp_path, demo_plant):
    cluster = TempCluster()
    try:
        url = cluster.url_for("andon")
        db.upgrade(url)
        with psycopg.connect(url) as conn:
            plant_sync.sync_plant_model(conn, demo_plant, "test")
            conn.commit()
        pool = db.make_pool(url, 1, 2, timeout=2.0)
        delivery = Delivery(EventWriter(pool), Spool(tmp_path / "spool"), pool)
        stop = threading.Event()
        drain = threading.Thread(target=delivery.drain_forever, args=(stop,), daemon=True)
        drain.start()
        sent = 0
        for i in range(10):
            delivery.deliver(batch(i), [])
            sent += len(batch(i))
        cluster.stop("immediate")
        t_down = time.monotonic()
        i = 10
        while time.monotonic() - t_down < 30:  # 30 s without a database, still receiving
            delivery.deliver(batch(i), [Rejection("t", "malformed payload", b"{")] if i == 12 else [])
            sent += len(batch(i))
            i += 1
            time.sleep(0.5)
        assert delivery.stats["spooled"] > 0
        cluster.start()
        for _ in range(5):  # a few more after the restart: they queue behind the spool, in order
            delivery.deliver(batch(i), [])
            sent += len(batch(i))
            i += 1
        deadline = time.monotonic() + 60
        while not delivery.spool.empty() and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        drain.join(timeout=10)
        assert delivery.spool.empty()
        # Replaying everything (as after a crash between write and commit) stores nothing new.
        for j in range(i):
            delivery.writer.write(batch(j))
        with psycopg.connect(url) as conn:
            stored = sum(conn.execute(f"select count(*) from {t}").fetchone()[0]
                         for t in ("telemetry", "count_events", "state_events"))
            seconds = conn.execute("select count(distinct ts) from telemetry").fetchone()[0]
        assert stored == sent
        assert seconds == i * 50  # no gap: every second of the stream is there
        pool.close()
    finally:
        cluster.destroy()


# --- the runtime's pipelining (collector.base.Batch) ------------------------------------------------------


class _SlowDelivery:
    """Stands in for Delivery: each deliver() blocks until the test lets it finish."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release: list[threading.Event] = []

    def deliver(self, events: list, rejections: list) -> None:
        gate = threading.Event()
        self.release.append(gate)
        seqs = ",".join(str(e.seq) for e in events)
        self.log.append(f"write {seqs}")
        assert gate.wait(10)
        self.log.append(f"durable {seqs}")


def _state(seq: int) -> StateChange:
    return StateChange("M1", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), MachineState.RUNNING, "t", seq=seq)


async def test_runtime_pipelines_batches_and_acknowledges_only_once_durable() -> None:
    delivery = _SlowDelivery()

    class Pipelined(Source):
        source_id = "t"

        async def events(self):  # type: ignore[override]
            for seq in (1, 2, 3):
                if seq > 1:
                    await asyncio.sleep(0.05)  # the first write starts meanwhile
                delivery.log.append(f"decoded {seq}")
                batch = Batch([_state(seq)], lambda seq=seq: delivery.log.append(f"ack {seq}"))
                yield batch
                if not batch.deferred:  # pragma: no cover - the runtime defers
                    delivery.log.append(f"ack {seq}")
            yield [_state(4)]  # a plain list: resumed only once durable
            delivery.log.append("resumed after 4")
            yield [_state(5)]

        async def check(self):  # type: ignore[override]
            raise NotImplementedError

    task = asyncio.create_task(run_source(Pipelined(), delivery))  # type: ignore[arg-type]

    async def until(entry: str) -> None:
        for _ in range(500):
            if entry in delivery.log:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{entry!r} never came: {delivery.log}")

    await until("write 1")
    await until("decoded 2")  # the next batch is decoded while batch 1 is being written
    await asyncio.sleep(0.15)
    assert "decoded 3" not in delivery.log  # ... and waits: the source's input piles up meanwhile
    assert not any(e.startswith("ack") for e in delivery.log)  # nothing acknowledged before durable
    for n, seqs in enumerate(["1", "2", "3", "4", "5"]):
        await until(f"write {seqs}")
        await asyncio.sleep(0.05)
        assert sum(e.startswith("write") for e in delivery.log) == n + 1  # one write at a time
        if seqs == "4":
            assert "resumed after 4" not in delivery.log  # a plain list: resumed only once durable
        delivery.release[n].set()
    await asyncio.wait_for(task, 5)
    log = delivery.log
    for n in (1, 2, 3):  # acknowledged once durable, in order
        assert log.index(f"durable {n}") < log.index(f"ack {n}") < log.index(f"durable {n + 1}")
    assert log.index("decoded 3") > log.index("durable 1")
    assert log.index("durable 4") < log.index("resumed after 4")


def test_batch_acknowledged_by_the_source_unless_deferred() -> None:
    acks: list[int] = []
    plain = Batch([_state(1)], lambda: acks.append(1))
    assert not plain.deferred and plain == [_state(1)]
    deferred = Batch([_state(2)], lambda: acks.append(2))
    ack = deferred.defer()
    assert deferred.deferred and acks == []
    ack()
    assert acks == [2]
    Batch([]).defer()()  # no acknowledgement attached: a no-op


async def test_runtime_write_error_ends_the_source_and_acknowledges_nothing() -> None:
    acks: list[int] = []

    class Failing:
        def deliver(self, events: list, rejections: list) -> None:
            time.sleep(0.1)
            raise RuntimeError("disk on fire")

    class Endless(Source):
        source_id = "t"

        async def events(self):  # type: ignore[override]
            seq = 0
            while True:
                seq += 1
                yield Batch([_state(seq)], lambda seq=seq: acks.append(seq))

        async def check(self):  # type: ignore[override]
            raise NotImplementedError

    with pytest.raises(RuntimeError, match="disk on fire"):
        await asyncio.wait_for(run_source(Endless(), Failing()), 5)  # type: ignore[arg-type]
    assert acks == []
