"""Real-time serve mode: a running ``LineSimulation`` drives the OPC UA server and the MQTT gateways.

    andon simulate --serve opcua|mqtt|both [--speed 60] [--start now-7d] [--sources-out sources.yaml]

``LiveRunner`` steps the simulation at real time (or ``speed`` x real time) in ticks of ``tick_s`` wall
seconds and publishes every state change, every part and every telemetry sample of the tick with its
exact simulated timestamp, in time order, through the front-end that owns the machine:

* ``opcua``: ``SimOpcUaServer``, PackML layout (StateCurrent, UnitModeCurrent, EquipmentBlocked/Starved,
  StopReason ID, ProdProcessed/DefectiveCount AccCount, CurMachSpeed, Telemetry/<channel>);
* ``sparkplug``: ``MqttGateway`` in Sparkplug B mode (one edge node, one device per machine, PackTags);
* ``json``: ``MqttGateway`` with Andon's JSON topics (``andon/v1/<machine>/state|count|telemetry``).

``--serve both`` splits the line so that every protocol is exercised and no machine is reported twice;
by default the first half of the machines goes to OPC UA, the last one to JSON and the rest to Sparkplug
(6 machines: L1-M1..M3 OPC UA, L1-M4..M5 Sparkplug B, L1-M6 JSON); ``split`` / ``--split`` overrides it.

Simulator states as PackML (the collectors map them back, collector/opcua.py and collector/sparkplug.py):

==================  ===============================================================
running             6 Execute, unit mode 1 Production
starved / blocked   5 Suspended + EquipmentStarved / EquipmentBlocked
unplanned_stop      9 Aborted (11 Held for a micro-stop), StopReason ID = the fault code
setup               unit mode 3 Manual, 4 Idle
planned_stop        unit mode 2 Maintenance, 2 Stopped
idle                4 Idle during a break, 2 Stopped outside shifts (no shift, no order)
==================  ===============================================================

OPC UA's StopReason ID is an Int32, so a fault code becomes a number (``stop_reason_id``): the digits of
a code like ``E101`` (101), a table entry for codes without digits (``JAM`` 900), else a stable hash.
Sparkplug carries the code as a String and JSON as ``fault_code`` (with the ``reason_code``).

History: ``start`` before ``live_from`` (default: now) fast-forwards the simulation to ``live_from``
WITHOUT publishing; ``LiveRunner.history`` is then the ``GroundTruth`` of [start, live_from) and
``write_history`` stores it straight into the database (``history_events`` gives the events). The PLC
counters start at the history's totals, so a collector's first reading is only a baseline.

Timestamps are simulated time. At ``speed`` 1 with the default ``live_from`` they are the wall clock; at a
higher speed they run ahead of it (tests use a ``live_from`` in the past and compare with the truth).
Telemetry is generated per tick from the same model as simulator.telemetry (health, load, product
factors, ambient cycle, first-order thermal lag); sensor-fault confounders are not injected live.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import yaml

from andon.events import STATE_BY_CODE, Event, MachineState
from andon.plant import PlantModel
from simulator.config import SimulationConfig
from simulator.frontends.mqtt_gateway import GatewayFaults, MqttGateway, MqttGatewayConfig
from simulator.frontends.opcua_server import SimOpcUaServer
from simulator.simulation import LineSimulation
from simulator.telemetry import CHANNEL_UNITS
from simulator.truth import GroundTruth, truth_to_events

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

UTC = dt.UTC
Protocol = Literal["opcua", "sparkplug", "json"]
PROTOCOLS: tuple[Protocol, ...] = ("opcua", "sparkplug", "json")
ServeMode = Literal["opcua", "mqtt", "both"]

DEFAULT_STOP_REASON_IDS: dict[str, int] = {"JAM": 900, "FAULT": 999}
HISTORY_SOURCE_ID = "sim-history"

# PackML unit modes and state numbers used here.
PRODUCTION, MAINTENANCE, MANUAL = 1, 2, 3
STOPPED, IDLE_STATE, SUSPENDED, EXECUTE, ABORTED, HELD = 2, 4, 5, 6, 9, 11


@dataclass(frozen=True, slots=True)
class PackML:
    state: int
    unit_mode: int = PRODUCTION
    blocked: bool = False
    starved: bool = False


def packml_for(state: MachineState, *, small_stop: bool = False, calendar_kind: str | None = None) -> PackML:
    """The PackML tags a PLC would show for a simulator state (see the module docstring)."""
    match state:
        case MachineState.RUNNING:
            return PackML(EXECUTE)
        case MachineState.STARVED:
            return PackML(SUSPENDED, starved=True)
        case MachineState.BLOCKED:
            return PackML(SUSPENDED, blocked=True)
        case MachineState.UNPLANNED_STOP:
            return PackML(HELD if small_stop else ABORTED)
        case MachineState.SETUP:
            return PackML(IDLE_STATE, MANUAL)
        case MachineState.PLANNED_STOP:
            return PackML(STOPPED, MAINTENANCE)
        case MachineState.IDLE:
            return PackML(IDLE_STATE if calendar_kind == "break" else STOPPED)
        case _:
            return PackML(0)


def stop_reason_id(fault_code: str | None, table: dict[str, int] | None = None) -> int:
    """OPC UA StopReason ID (Int32) for a fault code: table entry, else the code's digits, else a hash."""
    if not fault_code:
        return 0
    table = DEFAULT_STOP_REASON_IDS if table is None else table
    if fault_code in table:
        return table[fault_code]
    m = re.fullmatch(r"[A-Za-z_-]*(\d{1,9})", fault_code)
    if m and int(m.group(1)) > 0:
        return int(m.group(1))
    return 1_000_000 + zlib.crc32(fault_code.encode()) % 1_000_000


# --- options ---------------------------------------------------------------------------------------------


def default_split(machines: Sequence[str]) -> dict[str, Protocol]:
    """--serve both: first half OPC UA, the last machine JSON (from 3 machines on), the rest Sparkplug."""
    n = len(machines)
    n_json = 1 if n >= 3 else 0
    n_sparkplug = (n - n_json) // 2
    n_opcua = n - n_json - n_sparkplug
    out: dict[str, Protocol] = {}
    for k, mid in enumerate(machines):
        out[mid] = "opcua" if k < n_opcua else "sparkplug" if k < n_opcua + n_sparkplug else "json"
    return out


def parse_split(specs: Iterable[str], machines: Sequence[str]) -> dict[str, Protocol]:
    """``["opcua=L1-M1,L1-M2", "sparkplug=L1-M3", "json=L1-M4"]`` -> machine -> protocol.

    Every machine at most once; machines left out are not served."""
    out: dict[str, Protocol] = {}
    known = set(machines)
    for spec in specs:
        proto, sep, names = spec.partition("=")
        proto = proto.strip().lower()
        if not sep or proto not in PROTOCOLS:
            raise ValueError(f"bad split {spec!r}: use PROTOCOL=M1,M2 with PROTOCOL one of {', '.join(PROTOCOLS)}")
        for mid in (n.strip() for n in names.split(",")):
            if not mid:
                continue
            if mid not in known:
                raise ValueError(f"split {spec!r}: machine {mid!r} is not on the line ({', '.join(machines)})")
            if mid in out:
                raise ValueError(f"split: machine {mid!r} is given twice ({out[mid]} and {proto})")
            out[mid] = proto  # type: ignore[assignment]
    if not out:
        raise ValueError("the split names no machine")
    return {mid: out[mid] for mid in machines if mid in out}


@dataclass
class ServeOptions:
    """What to serve and where. ``start``/``live_from`` default to now; times must carry a zone."""

    serve: ServeMode = "both"
    mqtt_format: Literal["sparkplug", "json"] = "sparkplug"  # --serve mqtt
    split: dict[str, Protocol] | None = None  # --serve both; default: default_split
    seed: int = 7
    start: dt.datetime | None = None  # simulation start; before live_from: history, not published
    live_from: dt.datetime | None = None  # simulated time at which publishing starts (default: now)
    speed: float = 1.0
    tick_s: float = 0.2  # wall seconds per step
    line_id: str | None = None
    telemetry: bool = True
    history_telemetry: bool = True  # include telemetry in the history GroundTruth
    opcua_host: str = "127.0.0.1"
    opcua_port: int = 4840
    opcua_security: tuple[Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"], ...] = ("None",)
    opcua_cert_dir: Path | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    client_id_prefix: str = "andon-sim"  # gateway client ids: <prefix>-sparkplug, <prefix>-json
    sparkplug_group: str = "andon"
    sparkplug_edge: str = "sim-gateway"
    sparkplug_qos: Literal[0, 1] = 0
    faults: GatewayFaults = field(default_factory=GatewayFaults)  # MQTT fault injection
    stop_reason_ids: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_STOP_REASON_IDS))
    # Collector side of the sources file (sources_config): ids, MQTT session and Sparkplug host id.
    opcua_source_id: str = "sim-opcua"
    mqtt_source_id: str = "sim-mqtt"
    collector_client_id: str | None = None  # default andon-<mqtt_source_id>
    sparkplug_host_id: str = "andon"
    record: bool = False  # keep a log of what was published (tests)

    def __post_init__(self) -> None:
        if not self.speed > 0 or not math.isfinite(self.speed):
            raise ValueError("speed must be a positive number")
        if not self.tick_s > 0:
            raise ValueError("tick_s must be > 0")
        if self.serve not in ("opcua", "mqtt", "both"):
            raise ValueError(f"serve must be opcua, mqtt or both, not {self.serve!r}")
        for name in ("start", "live_from"):
            t = getattr(self, name)
            if t is not None and t.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone")
        if self.split is not None and self.serve != "both":
            raise ValueError("a split applies to --serve both only")

    def resolve_split(self, machines: Sequence[str]) -> dict[str, Protocol]:
        if self.serve == "opcua":
            return {m: "opcua" for m in machines}
        if self.serve == "mqtt":
            return {m: self.mqtt_format for m in machines}
        if self.split is None:
            return default_split(machines)
        unknown = sorted(set(self.split) - set(machines))
        if unknown:
            raise ValueError(f"split names machines not on the line: {', '.join(unknown)}")
        for mid, proto in self.split.items():
            if proto not in PROTOCOLS:
                raise ValueError(f"split: {mid}: unknown protocol {proto!r}")
        return {m: self.split[m] for m in machines if m in self.split}


def sources_config(options: ServeOptions, machines: Sequence[str], *, opcua_url: str | None = None) -> dict[str, Any]:
    """The collector sources file (collector.runtime) that reads exactly what ``options`` serves."""
    split = options.resolve_split(machines)
    used = set(split.values())
    sources: list[dict[str, Any]] = []
    if "opcua" in used:
        url = opcua_url or f"opc.tcp://{_connect_host(options.opcua_host)}:{options.opcua_port}/andon/sim"
        sources.append({"id": options.opcua_source_id, "type": "opcua", "url": url,
                        "discover": {"include": [m for m, p in split.items() if p == "opcua"]}})
    if used & {"sparkplug", "json"}:
        src: dict[str, Any] = {"id": options.mqtt_source_id, "type": "mqtt", "host": options.mqtt_host,
                               "port": options.mqtt_port}
        if options.collector_client_id:
            src["client_id"] = options.collector_client_id
        if options.mqtt_username is not None:
            src["username"] = options.mqtt_username
        src["json_topics"] = ["andon/v1/+/+"] if "json" in used else []
        if "sparkplug" in used:
            src["sparkplug"] = {"host_id": options.sparkplug_host_id, "groups": [options.sparkplug_group]}
        sources.append(src)
    return {"sources": sources}


def write_sources_file(path: Path, options: ServeOptions, machines: Sequence[str], *,
                       opcua_url: str | None = None) -> Path:
    data = sources_config(options, machines, opcua_url=opcua_url)
    header = ("# Collector sources for the simulated line served by `andon simulate --serve "
              f"{options.serve}` (written by simulator.serve).\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


# --- the runner ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """What a machine shows: state with cause; equal keys publish nothing."""

    state: MachineState
    reason: str | None = None
    fault: str | None = None
    small_stop: bool = False
    calendar_kind: str | None = None


@dataclass(slots=True)
class _TempLag:
    y: float | None = None


@dataclass
class _Machine:
    idx: int
    machine_id: str
    protocol: Protocol | None
    key: _Key | None = None
    timeline: list[tuple[float, bool]] = field(default_factory=list)  # (wall s, running) since the last step
    iv_next: int = 0  # next engine interval not yet turned into a change candidate
    processed: int = 0
    defective: int = 0
    last_product: int = 0
    last_cycle_s: float | None = None
    ideal_cycle_s: float = 60.0
    temp: dict[str, _TempLag] = field(default_factory=dict)
    rng: np.random.Generator | None = None


@dataclass
class ServeStats:
    steps: int = 0
    states: int = 0
    parts: int = 0
    telemetry: int = 0
    by_protocol: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PROTOCOLS})


@dataclass(frozen=True, slots=True)
class Published:
    """One published item (kept with ``record=True``)."""

    kind: Literal["state", "part", "telemetry"]
    machine_id: str
    ts: dt.datetime
    protocol: Protocol
    state: MachineState | None = None
    fault_code: str | None = None
    reject: bool = False
    metric: str | None = None
    value: float | None = None


class LiveRunner:
    """Steps a LineSimulation in real time and publishes it over OPC UA / MQTT (see the module docstring).

    Lifecycle: ``await start()`` (fast-forward the history, start the front-ends, publish the state at
    ``live_from``), ``await run(...)`` (step until stopped), ``await stop()`` (NDEATH, server stop).
    """

    def __init__(self, plant: PlantModel, config: SimulationConfig | None = None,
                 options: ServeOptions | None = None) -> None:
        self.plant = plant
        self.config = config or SimulationConfig()
        self.options = options or ServeOptions()
        opts = self.options
        now = dt.datetime.now(UTC)
        self.live_from = (opts.live_from or now).astimezone(UTC)
        self.start_at = (opts.start or self.live_from).astimezone(UTC)
        if self.start_at > self.live_from:
            raise ValueError("start must not be after live_from (the simulation cannot begin in the future)")
        self.sim = LineSimulation(plant, self.config, seed=opts.seed, start=self.start_at, line_id=opts.line_id)
        self.machines: list[str] = list(self.sim.machines)
        self.split = opts.resolve_split(self.machines)
        if not self.split:
            raise ValueError("no machine to serve")
        seeds = np.random.SeedSequence([opts.seed, 0x5E7E]).spawn(len(self.machines))
        self._m: list[_Machine] = []
        for i, mid in enumerate(self.machines):
            st = self.sim.engine.stations[i]
            first = self.sim.engine.products[0]
            self._m.append(_Machine(i, mid, self.split.get(mid), ideal_cycle_s=float(st.ict[first]),
                                    rng=np.random.default_rng(seeds[i])))
        self.history: GroundTruth | None = None
        self.opcua: SimOpcUaServer | None = None
        self.sparkplug: MqttGateway | None = None
        self.json: MqttGateway | None = None
        self.stats = ServeStats()
        self.published: list[Published] = []
        self._wall = 0.0  # simulated seconds since start_at, stepped to
        self._seg_starts: list[float] = []
        self._started = False
        self._stopped = False
        tz = ZoneInfo(self.sim.site.timezone)
        local = self.start_at.astimezone(tz)
        self._hour0 = local.hour + local.minute / 60 + local.second / 3600

    # --- properties ------------------------------------------------------------------------------------

    @property
    def sim_now(self) -> dt.datetime:
        """The simulated instant published up to (exclusive)."""
        return self.start_at + dt.timedelta(seconds=self._wall)

    def machines_on(self, protocol: Protocol) -> list[str]:
        return [m for m, p in self.split.items() if p == protocol]

    @property
    def opcua_url(self) -> str | None:
        return self.opcua.url if self.opcua is not None else None

    def sources_config(self) -> dict[str, Any]:
        return sources_config(self.options, self.machines, opcua_url=self.opcua_url)

    def write_sources(self, path: Path) -> Path:
        return write_sources_file(path, self.options, self.machines, opcua_url=self.opcua_url)

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fast-forward to live_from (history), start the front-ends, publish the current state."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        opts = self.options
        if self.live_from > self.start_at:
            self.history = await asyncio.to_thread(self._fast_forward)
        self._wall = (self.live_from - self.start_at).total_seconds()
        # Run the engine just past live_from so that what starts exactly then is known; those intervals
        # are the snapshot, not change candidates.
        tau = self.sim.clock.to_tau(self._wall)
        self.sim.engine.run_until(tau + 1e-6)
        for m in self._m:
            m.iv_next = bisect_right(self.sim.engine.stations[m.idx].rec.iv_a, tau)
        try:
            opcua_machines = self.machines_on("opcua")
            if opcua_machines:
                design = {mid: 60.0 / self._m[self.machines.index(mid)].ideal_cycle_s for mid in opcua_machines}
                self.opcua = SimOpcUaServer(opcua_machines, host=opts.opcua_host, port=opts.opcua_port,
                                            layout="packml", telemetry=tuple(CHANNEL_UNITS),
                                            security=opts.opcua_security, cert_dir=opts.opcua_cert_dir,
                                            design_speed=design, name="Andon line simulator (live)")
                await self.opcua.start()
            for proto in ("sparkplug", "json"):
                machines = self.machines_on(proto)  # type: ignore[arg-type]
                if not machines:
                    continue
                gw = MqttGateway(MqttGatewayConfig(
                    host=opts.mqtt_host, port=opts.mqtt_port, username=opts.mqtt_username,
                    password=opts.mqtt_password, mode=proto,  # type: ignore[arg-type]
                    client_id=f"{opts.client_id_prefix}-{proto}", group_id=opts.sparkplug_group,
                    edge_node_id=opts.sparkplug_edge, sparkplug_qos=opts.sparkplug_qos, machines=machines,
                    telemetry={m: dict(CHANNEL_UNITS) for m in machines} if opts.telemetry else {},
                    faults=opts.faults))
                await asyncio.to_thread(gw.start)
                if proto == "sparkplug":
                    self.sparkplug = gw
                else:
                    self.json = gw
            await self._publish_snapshot()
        except BaseException:
            await self.stop()
            raise

    def _fast_forward(self) -> GroundTruth:
        _, parts, _ = self.sim.advance_to(self.live_from)
        telemetry = self.options.history_telemetry
        if telemetry and not set(self.machines) <= set(parts["machine_id"]):
            # simulator.telemetry.generate_machine cannot handle a machine without any part (a history
            # that is all weekend): leave the history's telemetry out rather than fail.
            log.warning("history without telemetry: some machines made no part before %s", self.live_from)
            telemetry = False
        truth = self.sim.truth(self.live_from, telemetry=telemetry)
        for m in self._m:
            sel = parts[parts["machine_id"] == m.machine_id]
            m.processed = len(sel)
            m.defective = int(sel["reject"].sum())
            if len(sel):
                m.last_product = self.sim.engine.products.index(sel["product"].iloc[-1])
                m.last_cycle_s = float(sel["cycle_s"].iloc[-1])
        return truth

    async def _publish_snapshot(self) -> None:
        """The state every served machine is in at live_from, and the PLC counters."""
        ts = self.live_from
        for m in self._m:
            if m.protocol is None:
                continue
            key = self._key_at(m.idx, self._wall)
            m.key = key
            m.timeline = [(self._wall, key.state is MachineState.RUNNING)]
            await self._publish_state(m, key, ts)
            if m.protocol == "opcua":
                assert self.opcua is not None
                await self.opcua.set_counters(m.machine_id, m.processed, m.defective, ts=ts)
            elif m.protocol == "sparkplug":
                assert self.sparkplug is not None
                self.sparkplug.publish_counts(m.machine_id, m.processed, m.defective, ts=ts)

    async def run(self, *, until: dt.datetime | None = None, wall_seconds: float | None = None,
                  stop: asyncio.Event | None = None) -> None:
        """Step in real time (x speed) until the simulated time `until`, `wall_seconds` or `stop`."""
        if not self._started:
            await self.start()
        loop = asyncio.get_running_loop()
        wall0 = loop.time()
        sim0 = self._wall
        if self.options.live_from is None:
            # Following the wall clock: catch up with the time spent since live_from was taken (start-up,
            # the caller writing the history ...), so that at speed 1 the timestamps are the wall clock.
            sim0 = max(sim0, (dt.datetime.now(UTC) - self.start_at).total_seconds())
        end = (until.astimezone(UTC) - self.start_at).total_seconds() if until is not None else math.inf
        if wall_seconds is not None:
            end = min(end, sim0 + wall_seconds * self.options.speed)
        tick = self.options.tick_s
        while self._wall < end:
            if stop is not None and stop.is_set():
                break
            target = min(end, sim0 + (loop.time() - wall0) * self.options.speed)
            if target > self._wall:
                await self.step_to(target)
            if self._wall >= end:
                break
            wait = tick
            if end < math.inf:
                wait = min(wait, max(0.0, wall0 + (end - sim0) / self.options.speed - loop.time()))
            if stop is not None:
                try:
                    async with asyncio.timeout(max(wait, 0.001)):
                        await stop.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(max(wait, 0.001))
        self._flush()

    async def stop(self) -> None:
        """Stop the front-ends: the Sparkplug gateway sends its NDEATH, the OPC UA server closes."""
        if self._stopped:
            return
        self._stopped = True
        for gw in (self.sparkplug, self.json):
            if gw is not None:
                try:
                    await asyncio.to_thread(gw.stop)
                except Exception:  # a broker gone at shutdown must not block the rest
                    log.warning("MQTT gateway did not stop cleanly", exc_info=True)
        if self.opcua is not None:
            await self.opcua.__aexit__(None, None, None)

    async def __aenter__(self) -> LiveRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- stepping --------------------------------------------------------------------------------------

    async def step_to(self, t: dt.datetime | float) -> None:
        """Advance the simulation to `t` (datetime, or simulated seconds since start) and publish."""
        hi = (t.astimezone(UTC) - self.start_at).total_seconds() if isinstance(t, dt.datetime) else float(t)
        lo = self._wall
        if hi <= lo:
            return
        hi_dt = self.start_at + dt.timedelta(seconds=hi)
        _, parts, _ = self.sim.advance_to(hi_dt)
        clock = self.sim.clock
        tau_hi = clock.to_tau(hi)
        items: list[tuple[float, int, int, Any]] = []  # (wall s, order, machine idx, payload)
        # Calendar boundaries in [lo, hi): every machine may change there.
        seg_starts = self._segment_starts()
        k0 = bisect_right(seg_starts, lo) - 1
        calendar = [s for s in seg_starts[max(k0, 0):] if lo <= s < hi]
        for m in self._m:
            if m.protocol is None:
                continue
            cands: dict[float, float | None] = {s: None for s in calendar}
            rec = self.sim.engine.stations[m.idx].rec
            k1 = bisect_left(rec.iv_a, tau_hi)
            if k1 > m.iv_next:
                taus = np.asarray(rec.iv_a[m.iv_next:k1])
                for tau, w in zip(taus.tolist(), clock.to_wall(taus, at_end=False).tolist(), strict=True):
                    cands[w] = tau
                m.iv_next = k1
            open_state = self.sim.engine.open_state(m.idx)
            if open_state is not None and open_state[1] < tau_hi:
                w = float(clock.to_wall(np.asarray([open_state[1]]), at_end=False)[0])
                if w >= lo:
                    cands.setdefault(w, open_state[1])
            for w in sorted(cands):
                if w < hi:
                    items.append((w, 1, m.idx, ("state", cands[w])))
        if len(parts):
            base = self.start_at
            for mid, ts, reject, product, cycle in zip(parts["machine_id"], parts["ts"], parts["reject"],
                                                       parts["product"], parts["cycle_s"], strict=True):
                i = self.machines.index(mid)
                if self._m[i].protocol is None:
                    continue
                w = (ts.to_pydatetime() - base).total_seconds()
                items.append((w, 0, i, ("part", ts.to_pydatetime(), bool(reject), product, float(cycle))))
        if self.options.telemetry:
            for m in self._m:
                if m.protocol is None:
                    continue
                cfg = self.config.for_machine(m.machine_id).telemetry
                if not cfg.enabled:
                    continue
                for channel, every in cfg.rates_s.items():
                    k = math.ceil(lo / every - 1e-9)
                    while k * every < hi:
                        items.append((k * every, 2, m.idx, ("telemetry", channel, float(every))))
                        k += 1
        items.sort(key=lambda x: (x[0], x[1], x[2]))
        health_cache: dict[tuple[int, float], float] = {}
        tele = [(w, i) for w, _, i, p in items if p[0] == "telemetry"]
        for i in {i for _, i in tele}:
            ws = sorted({w for w, j in tele if j == i})
            for w, h in zip(ws, self.sim.health_at(i, np.asarray(ws)).tolist(), strict=True):
                health_cache[(i, w)] = h
        for m in self._m:
            m.timeline = m.timeline[-1:]
        for w, _, i, payload in items:
            m = self._m[i]
            match payload[0]:
                case "state":
                    key = self._key_at(i, w, payload[1])
                    if key != m.key:
                        m.key = key
                        m.timeline.append((w, key.state is MachineState.RUNNING))
                        await self._publish_state(m, key, self.start_at + dt.timedelta(seconds=w))
                case "part":
                    _, ts, reject, product, cycle = payload
                    await self._publish_part(m, ts, reject, product, cycle)
                case "telemetry":
                    _, channel, every = payload
                    value = self._sample(m, channel, every, w, health_cache.get((i, w), 1.0))
                    await self._publish_telemetry(m, channel, value, self.start_at + dt.timedelta(seconds=w))
        self._wall = hi
        self.stats.steps += 1

    def _segment_starts(self) -> list[float]:
        segs = self.sim.clock.segments
        if len(self._seg_starts) != len(segs):
            self._seg_starts = [s.start_s for s in segs]
        return self._seg_starts

    def _key_at(self, i: int, wall_s: float, tau: float | None = None) -> _Key:
        """What machine i shows at simulated second `wall_s` (calendar first, then the engine)."""
        clock = self.sim.clock
        clock.extend_to_wall(wall_s + 86400.0)
        starts = self._segment_starts()
        k = bisect_right(starts, wall_s) - 1
        seg = clock.segments[k] if k >= 0 else None
        if seg is not None and seg.kind != "production":
            if seg.kind == "planned_stop":
                return _Key(MachineState.PLANNED_STOP, self.sim._calendar_reason(seg.label), calendar_kind=seg.kind)
            return _Key(MachineState.IDLE, calendar_kind=seg.kind)
        if tau is None:
            tau = clock.to_tau(wall_s)
        engine = self.sim.engine
        rec = engine.stations[i].rec
        k = bisect_right(rec.iv_a, tau) - 1
        if k >= 0 and rec.iv_b[k] > tau:
            c = rec.iv_cause[k]
            cause = engine.causes[c] if c >= 0 else None
            return _Key(STATE_BY_CODE[rec.iv_state[k]], cause.reason_code if cause else None,
                        cause.fault_code if cause else None, bool(cause.small_stop) if cause else False)
        open_state = engine.open_state(i)
        code = open_state[0] if open_state is not None else STATE_CODE_STARVED
        return _Key(STATE_BY_CODE[code])

    # --- publishing ------------------------------------------------------------------------------------

    def _count(self, m: _Machine, kind: str) -> None:
        assert m.protocol is not None
        self.stats.by_protocol[m.protocol] += 1
        if kind == "state":
            self.stats.states += 1
        elif kind == "part":
            self.stats.parts += 1
        else:
            self.stats.telemetry += 1

    async def _publish_state(self, m: _Machine, key: _Key, ts: dt.datetime) -> None:
        pk = packml_for(key.state, small_stop=key.small_stop, calendar_kind=key.calendar_kind)
        fault = key.fault if key.state is MachineState.UNPLANNED_STOP else None
        mid = m.machine_id
        if m.protocol == "opcua":
            assert self.opcua is not None
            reason_id = stop_reason_id(fault, self.options.stop_reason_ids)
            await self.opcua.set_state(mid, pk.state, stop_reason_id=reason_id, ts=ts, unit_mode=pk.unit_mode,
                                       blocked=pk.blocked, starved=pk.starved)
            speed = 60.0 / m.ideal_cycle_s if key.state is MachineState.RUNNING else 0.0
            await self.opcua.set_speed(mid, speed, ts=ts)
        elif m.protocol == "sparkplug":
            assert self.sparkplug is not None
            self.sparkplug.publish_packml(mid, pk.state, unit_mode=pk.unit_mode, blocked=pk.blocked,
                                          starved=pk.starved, stop_reason=fault, ts=ts)
        elif m.protocol == "json":
            assert self.json is not None
            self.json.publish_state(mid, key.state, fault_code=fault, reason_code=key.reason, ts=ts)
        self._count(m, "state")
        if self.options.record:
            assert m.protocol is not None
            self.published.append(Published("state", mid, ts, m.protocol, state=key.state, fault_code=fault))

    async def _publish_part(self, m: _Machine, ts: dt.datetime, reject: bool, product: str | None,
                            cycle_s: float) -> None:
        m.processed += 1
        m.defective += int(reject)
        if product is not None and product in self.sim.engine.products:
            m.last_product = self.sim.engine.products.index(product)
        m.last_cycle_s = cycle_s
        mid = m.machine_id
        if m.protocol == "opcua":
            assert self.opcua is not None
            await self.opcua.add_parts(mid, 1, int(reject), ts=ts)
        elif m.protocol == "sparkplug":
            assert self.sparkplug is not None
            self.sparkplug.publish_counts(mid, m.processed, m.defective, ts=ts)
        elif m.protocol == "json":
            assert self.json is not None
            self.json.publish_count(mid, 1, int(reject), product=product, ts=ts)
        self._count(m, "part")
        if self.options.record:
            assert m.protocol is not None
            self.published.append(Published("part", mid, ts, m.protocol, reject=reject))

    async def _publish_telemetry(self, m: _Machine, channel: str, value: float, ts: dt.datetime) -> None:
        mid = m.machine_id
        unit = CHANNEL_UNITS.get(channel, "")
        if m.protocol == "opcua":
            assert self.opcua is not None
            await self.opcua.set_telemetry(mid, channel, value, ts=ts)
        elif m.protocol == "sparkplug":
            assert self.sparkplug is not None
            self.sparkplug.publish_telemetry(mid, channel, value, unit, ts=ts)
        elif m.protocol == "json":
            assert self.json is not None
            self.json.publish_telemetry(mid, channel, value, unit, ts=ts)
        self._count(m, "telemetry")
        if self.options.record:
            assert m.protocol is not None
            self.published.append(Published("telemetry", mid, ts, m.protocol, metric=channel, value=value))

    def _flush(self) -> None:
        for gw in (self.sparkplug, self.json):
            if gw is not None:
                gw.flush()

    # --- telemetry -------------------------------------------------------------------------------------

    def _running_at(self, m: _Machine, w: float) -> bool:
        running = m.timeline[0][1] if m.timeline else False
        for t, r in m.timeline:
            if t > w:
                break
            running = r
        return running

    def _sample(self, m: _Machine, channel: str, every: float, w: float, health: float) -> float:
        """One sample of one channel, the same model as simulator.telemetry.generate_machine."""
        cfg = self.config.for_machine(m.machine_id).telemetry
        rng = m.rng
        assert rng is not None
        running = self._running_at(m, w)
        product = self.sim.engine.products[m.last_product]
        pf = cfg.product_factors.get(product, 1.0) if product else 1.0
        wear = 1.0 - health
        if channel == "vibration_rms":
            level = (cfg.vibration_base_mm_s * pf * (1.0 + cfg.vibration_gain * wear ** cfg.vibration_power)
                     if running else cfg.vibration_idle_mm_s)
            value = level * math.exp(rng.normal(0.0, cfg.vibration_noise_cv))
            if rng.random() < cfg.spike_rate_per_h * every / 3600.0:
                value += rng.uniform(2.0, 5.0) * cfg.vibration_base_mm_s
        elif channel == "bearing_temp":
            heat = (cfg.temp_load_rise_c * pf + cfg.temp_health_rise_c * wear) if running else 0.0
            lag = m.temp.setdefault(channel, _TempLag())
            alpha = math.exp(-every / cfg.temp_time_constant_s)
            lag.y = heat if lag.y is None else alpha * lag.y + (1.0 - alpha) * heat
            hours = (self._hour0 + w / 3600.0) % 24.0
            ambient = cfg.ambient_c + cfg.ambient_daily_amplitude_c * math.cos(2 * math.pi * (hours - 15.0) / 24.0)
            value = ambient + lag.y + rng.normal(0.0, cfg.temp_noise_c)
        elif channel == "motor_current":
            value = (cfg.current_nominal_a * pf + cfg.current_health_gain_a * wear if running
                     else cfg.current_nominal_a * cfg.current_idle_fraction)
            value += rng.normal(0.0, cfg.current_noise_a)
        else:  # cycle_time
            value = m.last_cycle_s if m.last_cycle_s is not None else m.ideal_cycle_s
        return max(float(value), 0.0)


STATE_CODE_STARVED = next(code for code, st in STATE_BY_CODE.items() if st is MachineState.STARVED)


# --- history ---------------------------------------------------------------------------------------------


def history_events(truth: GroundTruth, *, source_id: str = HISTORY_SOURCE_ID, telemetry: bool = True,
                   count_batch_s: float | None = None) -> Iterator[Event]:
    """The history as canonical events (states, parts, telemetry), ready for the event writer."""
    return truth_to_events(truth, source_id=source_id, include_telemetry=telemetry, count_batch_s=count_batch_s)


def write_history(target: str | ConnectionPool, truth: GroundTruth, *, source_id: str = HISTORY_SOURCE_ID,
                  telemetry: bool = True, count_batch_s: float | None = None, batch: int = 50_000) -> int:
    """Store the history straight into the database (a URL or a psycopg pool); returns rows inserted.

    Idempotent: the events carry stable keys, so writing the same history twice stores it once."""
    from andon.storage import db
    from andon.storage.writer import EventWriter

    pool = db.make_pool(target, 1, 2) if isinstance(target, str) else target
    try:
        writer = EventWriter(pool)
        inserted = 0
        chunk: list[Event] = []
        for ev in history_events(truth, source_id=source_id, telemetry=telemetry, count_batch_s=count_batch_s):
            chunk.append(ev)
            if len(chunk) >= batch:
                inserted += writer.write(chunk).total_inserted
                chunk = []
        if chunk:
            inserted += writer.write(chunk).total_inserted
        return inserted
    finally:
        if isinstance(target, str):
            pool.close()


async def serve(plant: PlantModel, config: SimulationConfig | None, options: ServeOptions, *,
                stop: asyncio.Event, until: dt.datetime | None = None,
                sources_out: Path | None = None) -> LiveRunner:
    """Start, write the sources file if asked, run until `stop` is set (or `until`), then stop cleanly."""
    runner = LiveRunner(plant, config, options)
    await runner.start()
    try:
        if sources_out is not None:
            runner.write_sources(sources_out)
        await runner.run(until=until, stop=stop)
    finally:
        await runner.stop()
    return runner


__all__ = [
    "DEFAULT_STOP_REASON_IDS",
    "HISTORY_SOURCE_ID",
    "LiveRunner",
    "PackML",
    "Published",
    "ServeOptions",
    "ServeStats",
    "default_split",
    "history_events",
    "packml_for",
    "parse_split",
    "serve",
    "sources_config",
    "stop_reason_id",
    "write_history",
    "write_sources_file",
]
