"""OPC UA collector against the simulator's OPC UA server, both real asyncua on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asyncua import ua

from andon.events import MachineState, ProductionCount, StateChange, TelemetrySample
from collector.base import Rejection
from collector.opcua import (
    CounterNode,
    DiscoveryConfig,
    MachineMapping,
    OpcUaSource,
    OpcUaSourceConfig,
    SecurityConfig,
    StateMapping,
    TelemetryNode,
)
from simulator.frontends.opcua_server import SimOpcUaServer

UTC = dt.UTC
S = MachineState
pytestmark = pytest.mark.timeout(60)


class Follower:
    """Runs a source's event stream in the background and keeps everything it yields."""

    def __init__(self, source: OpcUaSource) -> None:
        self.source = source
        self.items: list[object] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.source.events():
            self.items.extend(batch)
            self._new.set()

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self._task.done():
                self._task.result()
                raise AssertionError("event stream ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}; have {self.items[-10:]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(left, 0.2))

    def states(self, machine: str) -> list[StateChange]:
        return [i for i in self.items if isinstance(i, StateChange) and i.machine_id == machine]

    def counts(self, machine: str) -> tuple[int, int]:
        pcs = [i for i in self.items if isinstance(i, ProductionCount) and i.machine_id == machine]
        return sum(p.total for p in pcs), sum(p.reject for p in pcs)

    def telemetry(self, machine: str, metric: str) -> list[TelemetrySample]:
        return [i for i in self.items
                if isinstance(i, TelemetrySample) and i.machine_id == machine and i.metric == metric]

    def rejections(self) -> list[Rejection]:
        return [i for i in self.items if isinstance(i, Rejection)]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.source.close()


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def packml_mapping(srv: SimOpcUaServer, machine: str, bits: int, signed: bool) -> MachineMapping:
    ids = srv.node_ids(machine)
    return MachineMapping(
        machine_id=machine,
        state=StateMapping(node=ids["state"], preset="packml", mode_node=ids["unit_mode"],
                           blocked_node=ids["blocked"], starved_node=ids["starved"]),
        processed=CounterNode(node=ids["processed_acc"], bits=bits, signed=signed),  # type: ignore[arg-type]
        defective=CounterNode(node=ids["defective_acc"], bits=bits, signed=signed),  # type: ignore[arg-type]
        stop_reason=ids["stop_reason_id"],
        telemetry=[TelemetryNode(name="bearing_temp", node=ids["telemetry.bearing_temp"], unit="degC")],
    )


async def drive_packml_scenario(srv: SimOpcUaServer, pause: float = 0.0) -> list[tuple[dt.datetime, S, str | None]]:
    """State and counter changes on M1; returns the expected state changes (after the initial idle)."""
    expected: list[tuple[dt.datetime, S, str | None]] = []

    async def state(packml: int, exp: S, fault: str | None = None, **kw: object) -> None:
        ts = now()
        await srv.set_state("M1", packml, ts=ts, **kw)  # type: ignore[arg-type]
        expected.append((ts, exp, fault))
        await asyncio.sleep(pause)

    async def parts(processed: int, defective: int) -> None:
        await srv.add_parts("M1", processed, defective, ts=now())
        await asyncio.sleep(pause)

    await state(6, S.RUNNING)
    await parts(5, 1)  # 65530 -> 65535 on an Int16 register (-6 -> -1)
    await parts(10, 0)  # wraps: register 9
    await state(5, S.STARVED, starved=True)
    ts = now()
    await srv.set_flags("M1", blocked=True, starved=False, ts=ts)
    expected.append((ts, S.BLOCKED, None))
    await asyncio.sleep(pause)
    await state(11, S.UNPLANNED_STOP, "17", stop_reason_id=17)
    await state(2, S.IDLE, None, stop_reason_id=0)
    await state(9, S.UNPLANNED_STOP, "42", stop_reason_id=42)
    ts = now()
    await srv.set_unit_mode("M1", 2, ts=ts)  # maintenance mode wins over the state
    expected.append((ts, S.PLANNED_STOP, "42"))
    await asyncio.sleep(pause)
    await state(6, S.RUNNING, unit_mode=1)
    await parts(3, 3)
    ts = now()
    await srv.set_counters("M1", 0, 0, ts=ts)  # PLC counter reset
    await asyncio.sleep(pause)
    await parts(7, 2)
    await state(13, S.BLOCKED, blocked=True, starved=False)
    # The PackML table shared with the Sparkplug host (collector/packml.py): both interlocks set -> blocked;
    # a fault in Manual mode stays a fault (Manual alone is setup). After a publishing interval: the state
    # node's queue (10 values) holds one interval's changes.
    await asyncio.sleep(0.2)
    await state(6, S.RUNNING)
    await state(5, S.BLOCKED, blocked=True, starved=True)
    await state(9, S.UNPLANNED_STOP, "7", stop_reason_id=7, unit_mode=3)
    await state(2, S.SETUP, None, stop_reason_id=0)
    return expected


# Parts made by the scenario (the reset itself makes none).
SCENARIO_TOTAL, SCENARIO_REJECT = 5 + 10 + 3 + 7, 1 + 3 + 2


async def test_packml_round_trip_states_counters_and_source_timestamps() -> None:
    async with SimOpcUaServer(["M1", "M2"], counter_bits=16) as srv:
        await srv.set_counters("M1", 65530, 10)
        cfg = OpcUaSourceConfig(
            id="opc-packml", url=srv.url, publishing_interval_ms=50, counter_settle_s=0.3,
            machines=[packml_mapping(srv, "M1", 16, True), packml_mapping(srv, "M2", 16, True)],
        )
        f = Follower(OpcUaSource(cfg))
        try:
            await f.wait(lambda: f.states("M1") and f.states("M2"), what="initial states")
            assert f.states("M1")[0].state == S.IDLE and f.states("M2")[0].state == S.IDLE
            expected = await drive_packml_scenario(srv)
            t_temp = now()
            await srv.set_telemetry("M1", "bearing_temp", 61.5, ts=t_temp)
            await f.wait(lambda: len(f.states("M1")) >= 1 + len(expected)
                         and f.counts("M1") == (SCENARIO_TOTAL, SCENARIO_REJECT), what="scenario")
            got = [(s.ts, s.state, s.fault_code) for s in f.states("M1")[1:]]
            assert got == expected  # same states, in order, with the source timestamps written
            assert len(f.states("M2")) == 1
            temp = f.telemetry("M1", "bearing_temp")[-1]
            assert (temp.ts, temp.value, temp.unit) == (t_temp, 61.5, "degC")
            assert f.rejections() == []
            assert f.source.stats.mode == "subscribe"
            await asyncio.sleep(0.5)  # nothing more arrives: no double counting after settling
            assert f.counts("M1") == (SCENARIO_TOTAL, SCENARIO_REJECT)
        finally:
            await f.stop()


async def test_custom_layout_with_custom_value_map_and_bad_input() -> None:
    async with SimOpcUaServer(["A", "B"], layout="custom", telemetry=["vibration_rms"]) as srv:
        a, b = srv.node_ids("A"), srv.node_ids("B")
        await srv.set_counters("A", 65534, 0)
        codes = {0: "offline", 1: "running", 2: "idle", 3: "unplanned_stop", 4: "starved", 5: "blocked",
                 6: "planned_stop", 7: "setup"}
        names = {"Running": "running", "Idle": "idle", "Fault": "fault", "Starved": "starved",
                 "Blocked": "blocked", "Maintenance": "planned", "Setup": "changeover", "Off": "offline"}
        cfg = OpcUaSourceConfig(id="opc-custom", url=srv.url, publishing_interval_ms=50, counter_settle_s=0.2,
                                machines=[
            MachineMapping(machine_id="A", state=StateMapping(node=a["c_state"], preset="custom", values=codes),
                           processed=CounterNode(node=a["c_total"], bits=16),
                           defective=CounterNode(node=a["c_bad"], bits=16), stop_reason=a["c_fault"],
                           telemetry=[TelemetryNode(name="vib", node=a["c_telemetry.vibration_rms"],
                                                    unit="mm/s")]),
            # The same kind of machine mapped through its state *names* (strings).
            MachineMapping(machine_id="B", state=StateMapping(node=b["c_state_name"], preset="custom",
                                                              values=names)),
        ])
        f = Follower(OpcUaSource(cfg))
        try:
            await f.wait(lambda: f.states("A") and f.states("B"), what="initial states")
            await srv.set_state("A", 6, ts=now())
            await srv.set_state("B", 5, blocked=True, ts=now())
            await srv.add_parts("A", 4, 1, ts=now())  # 65534 -> 2: wraps the UInt16
            await srv.set_state("A", 9, stop_reason_id=31, ts=now())
            await srv.set_custom_state("A", 99, ts=now())  # not in the value map
            await srv.set_unit_mode("B", 3, ts=now())
            await srv.set_state("A", 6, ts=now())
            await f.wait(lambda: len(f.states("A")) >= 4 and len(f.states("B")) >= 3
                         and f.counts("A") == (4, 1), what="custom states")
            assert [(s.state, s.fault_code) for s in f.states("A")] == [
                (S.IDLE, None), (S.RUNNING, None), (S.UNPLANNED_STOP, "31"), (S.RUNNING, None)]
            assert [s.state for s in f.states("B")] == [S.IDLE, S.BLOCKED, S.SETUP]
            rej = f.rejections()
            assert len(rej) == 1 and "99" in rej[0].reason and rej[0].topic == a["c_state"]

            # Bad status code on a telemetry node: rejected, and the next good value flows again.
            assert srv.server is not None
            node = ua.NodeId.from_string(a["c_telemetry.vibration_rms"])
            await srv.server.write_attribute_value(
                node, ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
            await f.wait(lambda: len(f.rejections()) == 2, what="bad status rejection")
            assert "BadSensorFailure" in f.rejections()[1].reason
            # A source timestamp a minute ahead of our clock: used as is, and flagged as clock skew.
            future = now() + dt.timedelta(seconds=60)
            await srv.set_telemetry("A", "vibration_rms", 2.5, ts=future)
            await f.wait(lambda: any(t.value == 2.5 for t in f.telemetry("A", "vib")), what="telemetry")
            assert f.telemetry("A", "vib")[-1].ts == future
            assert f.source.stats.skew_flags >= 1
        finally:
            await f.stop()


async def test_security_sign_and_encrypt_with_username(tmp_path: Path) -> None:
    async with SimOpcUaServer(["M1"], security=["Basic256Sha256_SignAndEncrypt"], cert_dir=tmp_path / "srv",
                              users={"andon": "s3cret"}, allow_anonymous=False) as srv:
        def config(password: str, mode: str = "SignAndEncrypt") -> OpcUaSourceConfig:
            return OpcUaSourceConfig(
                id="opc-sec", url=srv.url, publishing_interval_ms=50, reconnect_initial_s=0.2,
                security=SecurityConfig(mode=mode, client_certificate=tmp_path / "cli" / "cert.der",  # type: ignore[arg-type]
                                        client_private_key=tmp_path / "cli" / "key.pem",
                                        generate_client_certificate=True,
                                        server_certificate=srv.certificate_path,
                                        username="andon", password=password),  # type: ignore[arg-type]
                discover=DiscoveryConfig(),
            )

        report = await OpcUaSource(config("s3cret")).check()
        assert report.ok, report.detail
        assert report.machines == ["M1"] and report.extra["security"] == "SignAndEncrypt"
        assert not (await OpcUaSource(config("wrong")).check()).ok
        assert not (await OpcUaSource(config("s3cret", mode="Sign")).check()).ok  # endpoint not offered
        f = Follower(OpcUaSource(config("s3cret")))
        try:
            await f.wait(lambda: bool(f.states("M1")), what="initial state")
            ts = now()
            await srv.set_state("M1", 6, ts=ts)
            await srv.add_parts("M1", 3, 0, ts=now())
            await f.wait(lambda: len(f.states("M1")) == 2 and f.counts("M1") == (3, 0), what="secured events")
            assert f.states("M1")[1].ts == ts
        finally:
            await f.stop()


async def test_server_restart_reconnects_and_loses_no_parts(tmp_path: Path) -> None:
    srv = SimOpcUaServer(["M1", "M2"], cert_dir=tmp_path)
    await srv.start()
    cfg = OpcUaSourceConfig(id="opc-restart", url=srv.url, publishing_interval_ms=50, counter_settle_s=0.2,
                            reconnect_initial_s=0.2, reconnect_max_s=1.0, watchdog_interval_s=0.3,
                            request_timeout_s=1.0, discover=DiscoveryConfig())
    f = Follower(OpcUaSource(cfg))
    made = {"M1": [0, 0], "M2": [0, 0]}

    async def produce(n: int) -> None:
        for i in range(n):
            for m in made:
                d = 1 if i % 4 == 0 else 0
                await srv.add_parts(m, 2, d, ts=now())
                made[m][0] += 2
                made[m][1] += d
            await asyncio.sleep(0.02)

    try:
        await f.wait(lambda: bool(f.states("M1") and f.states("M2")), what="initial states")
        await srv.set_state("M1", 6, ts=now())
        await produce(10)
        await f.wait(lambda: f.counts("M1") == tuple(made["M1"]), what="counts before restart")
        await srv.stop()
        # The PLC keeps producing and changes state while its OPC UA server is down.
        await produce(10)
        t_down = now()
        await srv.set_state("M1", 11, stop_reason_id=5, ts=t_down)
        await asyncio.sleep(1.5)  # long enough for the client to notice and retry with backoff
        await srv.start()
        await f.wait(lambda: f.source.stats.connects >= 2, timeout=15, what="reconnect")
        await produce(10)  # after the restart: needs the re-created subscription
        t_after = now()
        await srv.set_state("M1", 6, ts=t_after)
        await f.wait(lambda: all(f.counts(m) == tuple(made[m]) for m in made)
                     and len(f.states("M1")) >= 4, timeout=15, what="counts after restart")
        assert [(s.state, s.ts) for s in f.states("M1")[1:]] == [
            (S.RUNNING, f.states("M1")[1].ts), (S.UNPLANNED_STOP, t_down), (S.RUNNING, t_after)]
        assert f.source.stats.connection_losses >= 1
        await asyncio.sleep(0.4)
        assert all(f.counts(m) == tuple(made[m]) for m in made)
        assert f.rejections() == []
    finally:
        await f.stop()
        await srv.stop()


async def test_polling_gives_the_same_events_as_subscriptions() -> None:
    async with SimOpcUaServer(["M1"], counter_bits=16) as srv:
        await srv.set_counters("M1", 65530, 10)
        mapping = [packml_mapping(srv, "M1", 16, True)]
        sub = Follower(OpcUaSource(OpcUaSourceConfig(id="sub", url=srv.url, mode="subscribe",
                                                     publishing_interval_ms=50, machines=mapping)))
        poll = Follower(OpcUaSource(OpcUaSourceConfig(id="poll", url=srv.url, mode="poll",
                                                      poll_interval_s=0.1, machines=mapping)))
        try:
            for f in (sub, poll):
                await f.wait(lambda f=f: bool(f.states("M1")), what="initial state")
            expected = await drive_packml_scenario(srv, pause=0.25)  # slower than the poll interval
            for f in (sub, poll):
                await f.wait(lambda f=f: len(f.states("M1")) >= 1 + len(expected)
                             and f.counts("M1") == (SCENARIO_TOTAL, SCENARIO_REJECT), what=f.source.source_id)
            assert [(s.ts, s.state, s.fault_code) for s in poll.states("M1")[1:]] == expected
            assert [(s.ts, s.state, s.fault_code) for s in sub.states("M1")] == \
                [(s.ts, s.state, s.fault_code) for s in poll.states("M1")]
            assert (sub.source.stats.mode, poll.source.stats.mode) == ("subscribe", "poll")
        finally:
            await sub.stop()
            await poll.stop()


async def test_auto_mode_falls_back_to_polling_when_subscriptions_are_refused() -> None:
    async with SimOpcUaServer(["M1"], subscriptions=False) as srv:
        await srv.set_counters("M1", 100, 5)
        src = OpcUaSource(OpcUaSourceConfig(id="auto", url=srv.url, poll_interval_s=0.1,
                                            discover=DiscoveryConfig()))
        # A restarted collector resumes from the last stored raw counters: parts made meanwhile count.
        src.restore_counters("M1", 90, 4, now() - dt.timedelta(minutes=5))
        f = Follower(src)
        try:
            await f.wait(lambda: bool(f.states("M1")) and f.counts("M1") == (10, 1), what="initial read")
            ts = now()
            await srv.set_state("M1", 6, ts=ts)
            await f.wait(lambda: len(f.states("M1")) == 2, what="polled change")
            assert f.states("M1")[1].ts == ts and f.source.stats.mode == "poll"
        finally:
            await f.stop()


async def test_discovery_finds_all_packml_machines(tmp_path: Path) -> None:
    machines = [f"L1-M{i}" for i in range(1, 7)]
    async with SimOpcUaServer(machines, layout="both", counter_bits=16, cert_dir=tmp_path / "srv") as srv:
        # Over a signed (not encrypted) channel, the server certificate taken from the endpoint.
        report = await OpcUaSource(OpcUaSourceConfig(id="disc", url=srv.url, discover=DiscoveryConfig(),
                                                     security=SecurityConfig(
            mode="Sign", client_certificate=tmp_path / "c.der", client_private_key=tmp_path / "k.pem",
            generate_client_certificate=True))).check()
        assert report.ok, report.detail
        assert report.extra["security"] == "Sign"
        assert report.machines == sorted(machines)
        for m in machines:
            nodes = report.extra["nodes"][m]
            ids = srv.node_ids(m)
            assert nodes["state"] == ids["state"] and nodes["processed"] == ids["processed_acc"]
            assert nodes["defective"] == ids["defective_acc"] and nodes["stop_reason"] == ids["stop_reason_id"]
            assert {"blocked", "starved", "mode", "telemetry.vibration_rms", "telemetry.cycle_time"} <= set(nodes)
        src = OpcUaSource(OpcUaSourceConfig(id="disc2", url=srv.url, discover=DiscoveryConfig(
            include=["L1-M2"], machine_ids={"L1-M2": "mill"})))
        report = await src.check()
        assert report.machines == ["mill"]
        counter = src.mappings[0].processed
        assert counter is not None and (counter.bits, counter.signed) == (16, True)  # from the Int16 type
        # Unknown to the plant model: reported, not followed.
        report = await OpcUaSource(OpcUaSourceConfig(id="disc3", url=srv.url, discover=DiscoveryConfig()),
                                   known_machines=machines[:5]).check()
        assert not report.ok and report.machines == sorted(machines[:5])


async def test_check_reports_unreachable_endpoint_and_missing_nodes() -> None:
    async with SimOpcUaServer(["M1"]) as srv:
        cfg = OpcUaSourceConfig(id="bad", url=srv.url, machines=[MachineMapping(
            machine_id="M1", state=StateMapping(node="ns=2;s=M1.Status.NoSuchNode"))])
        report = await OpcUaSource(cfg).check()
        assert not report.ok and "NoSuchNode" in report.extra["bad_nodes"][0]
        port = srv.port
    report = await OpcUaSource(OpcUaSourceConfig(id="down", url=f"opc.tcp://127.0.0.1:{port}/x",
                                                 request_timeout_s=1, discover=DiscoveryConfig())).check()
    assert not report.ok and "cannot connect" in report.detail


def test_value_map_config_validation() -> None:
    m = StateMapping(node="ns=2;s=x", preset="custom", values={1: "running", "Fault": "fault", 5: "suspended"})
    assert m.state_map() == {"1": S.RUNNING, "fault": S.UNPLANNED_STOP, "5": "suspended"}
    assert StateMapping(node="n", values={2: "unplanned_stop"}).state_map()["2"] == S.UNPLANNED_STOP
    with pytest.raises(ValueError):
        StateMapping(node="n", preset="custom")
    with pytest.raises(ValueError):
        StateMapping(node="n", preset="custom", values={1: "sleeping"})
    with pytest.raises(ValueError):
        SecurityConfig(mode="SignAndEncrypt")
    with pytest.raises(ValueError):
        OpcUaSourceConfig(id="x", url="opc.tcp://127.0.0.1:1")


async def test_unreachable_endpoint_turns_machines_to_no_data_until_it_answers(tmp_path: Path) -> None:
    srv = SimOpcUaServer(["M1", "M2"], cert_dir=tmp_path)
    await srv.start()
    cfg = OpcUaSourceConfig(id="opc-nodata", url=srv.url, publishing_interval_ms=50, reconnect_initial_s=0.2,
                            reconnect_max_s=0.5, watchdog_interval_s=0.3, request_timeout_s=1.0,
                            heartbeat_timeout_s=1.0, discover=DiscoveryConfig())
    f = Follower(OpcUaSource(cfg))
    try:
        await f.wait(lambda: bool(f.states("M1") and f.states("M2")), what="initial states")
        await srv.set_state("M1", 6, ts=now())
        await f.wait(lambda: f.states("M1")[-1].state == S.RUNNING, what="running")
        t_stop = now()
        await srv.stop()
        await f.wait(lambda: all(f.states(m)[-1].state == S.OFFLINE for m in ("M1", "M2")), timeout=10,
                     what="no data")
        offline = f.states("M1")[-1]
        # "No data" begins one heartbeat after the endpoint stopped answering, not when it was noticed.
        assert t_stop + dt.timedelta(seconds=0.9) <= offline.ts <= t_stop + dt.timedelta(seconds=3)
        await asyncio.sleep(0.5)
        assert [s.state for s in f.states("M1")].count(S.OFFLINE) == 1  # once, no storm
        await srv.start()
        t_back = now()
        # The state did not change during the outage: it is known again from the reconnect on.
        await f.wait(lambda: f.states("M1")[-1].state == S.RUNNING and f.states("M2")[-1].state != S.OFFLINE,
                     timeout=15, what="back")
        assert f.states("M1")[-1].ts >= t_back
    finally:
        await f.stop()
        await srv.stop()
