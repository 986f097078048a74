"""OPC UA front-end of the line simulator: an asyncua server that looks like a line of PackML machines.

Each machine appears the way an OPC 30050 (PackML) machine exposes its PackTags, built as plain objects
and variables with the PackML browse names (the official nodeset is not loaded)::

    Objects/PackMLObjects/<machine_id>/
        Status/    StateCurrent (Int32 PackML state number), UnitModeCurrent (Int32), MachSpeed, CurMachSpeed
                   (Double), EquipmentBlocked, EquipmentStarved (Boolean)
        Admin/     ProdProcessedCount/{ID, Name, Unit, Count, AccCount}, ProdDefectiveCount/{...},
                   MachDesignSpeed (Double), StopReason/{ID (Int32), Value (Int32)}
        Telemetry/ vibration_rms, bearing_temp, motor_current, cycle_time, ... (Double)

``AccCount`` is the non-resetting counter (Int32 by the spec, two's complement wrap; ``counter_bits=16``
makes it an Int16 so that wrap can be exercised quickly). The optional *custom* layout is what a plain
PLC/gateway exposes, so that a collector needs an explicit node mapping::

    Objects/Line/<machine_id>/
        StateCode (custom enumeration AndonLineStateCode: 0 Off, 1 Running, 2 Idle, 3 Fault, 4 Starved,
                   5 Blocked, 6 Maintenance, 7 Setup), StateName (String),
        PartsTotal, PartsBad (UInt16 raw counters that wrap at 65536), FaultCode (String),
        <telemetry names> (Double)

The server is driven by plain async methods (``set_state``, ``set_flags``, ``add_parts``,
``set_telemetry`` and the batch ``apply``); every write carries a source timestamp (the caller's or now).
It knows nothing of the simulator core, which drives it through these methods.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.structures104 import new_enum
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

UTC = dt.UTC
NAMESPACE_URI = "urn:andon:simulator:opcua"
APPLICATION_URI = "urn:andon:simulator:server"
DEFAULT_TELEMETRY = ("vibration_rms", "bearing_temp", "motor_current", "cycle_time")

Layout = Literal["packml", "custom", "both"]
SecurityName = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]

_POLICY_TYPES: dict[str, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}

# PackML state numbers (ISA-TR88.00.02 / OPC 30050 StateNumber).
PACKML_STATES: dict[int, str] = {
    0: "Undefined", 1: "Clearing", 2: "Stopped", 3: "Starting", 4: "Idle", 5: "Suspended", 6: "Execute",
    7: "Stopping", 8: "Aborting", 9: "Aborted", 10: "Holding", 11: "Held", 12: "Unholding", 13: "Suspending",
    14: "Unsuspending", 15: "Resetting", 16: "Completing", 17: "Complete",
}
UNIT_MODE_PRODUCTION, UNIT_MODE_MAINTENANCE, UNIT_MODE_MANUAL = 1, 2, 3

# The custom layout's state enumeration (what a plain PLC program might use).
CUSTOM_STATE_NAMES = ("Off", "Running", "Idle", "Fault", "Starved", "Blocked", "Maintenance", "Setup")
CUSTOM_OFF, CUSTOM_RUNNING, CUSTOM_IDLE, CUSTOM_FAULT = 0, 1, 2, 3
CUSTOM_STARVED, CUSTOM_BLOCKED, CUSTOM_MAINTENANCE, CUSTOM_SETUP = 4, 5, 6, 7


def custom_code_for(packml_state: int, unit_mode: int, blocked: bool, starved: bool) -> int:
    """The custom layout's state code for a PackML state, as a simple PLC program would derive it."""
    if unit_mode == UNIT_MODE_MAINTENANCE:
        return CUSTOM_MAINTENANCE
    if unit_mode == UNIT_MODE_MANUAL:
        return CUSTOM_SETUP
    if packml_state == 6:
        return CUSTOM_RUNNING
    if packml_state in (5, 13, 14):
        return CUSTOM_BLOCKED if blocked and not starved else CUSTOM_STARVED
    if packml_state in (1, 8, 9, 10, 11, 12):
        return CUSTOM_FAULT
    if packml_state == 0:
        return CUSTOM_OFF
    return CUSTOM_IDLE


@dataclass(slots=True)
class _Var:
    nodeid: ua.NodeId
    vtype: ua.VariantType


@dataclass
class _MachineNodes:
    machine_id: str
    # PackML layout
    state: _Var | None = None
    unit_mode: _Var | None = None
    mach_speed: _Var | None = None
    cur_mach_speed: _Var | None = None
    blocked: _Var | None = None
    starved: _Var | None = None
    processed_count: _Var | None = None
    processed_acc: _Var | None = None
    defective_count: _Var | None = None
    defective_acc: _Var | None = None
    design_speed: _Var | None = None
    stop_reason_id: _Var | None = None
    stop_reason_value: _Var | None = None
    telemetry: dict[str, _Var] = field(default_factory=dict)
    # custom layout
    c_state: _Var | None = None
    c_state_name: _Var | None = None
    c_total: _Var | None = None
    c_bad: _Var | None = None
    c_fault: _Var | None = None
    c_telemetry: dict[str, _Var] = field(default_factory=dict)
    # simulated PLC memory: unbounded counters, the registers show them modulo their width
    processed: int = 0
    defective: int = 0
    job_processed: int = 0
    job_defective: int = 0
    packml_state: int = 4
    unit_mode_value: int = UNIT_MODE_PRODUCTION
    is_blocked: bool = False
    is_starved: bool = False
    stop_reason: int = 0
    # When the PLC last changed them: a restarted server shows these as the source timestamps.
    state_ts: dt.datetime | None = None
    counter_ts: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """One value for the batch interface ``apply``: a (machine, tag) pair in PackML terms."""

    machine_id: str
    tag: Literal["state", "unit_mode", "blocked", "starved", "stop_reason", "processed", "defective",
                 "mach_speed", "cur_mach_speed", "telemetry"]
    value: float | int | bool
    name: str = ""  # telemetry channel name


def _register(bits: int, signed: bool, value: int) -> int:
    """A counter value as the PLC register shows it: modulo 2**bits, two's complement when signed."""
    v = value % (1 << bits)
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _PasswordUserManager:
    """Username/password check for the server; anonymous sessions only when allowed."""

    def __init__(self, users: dict[str, str], allow_anonymous: bool) -> None:
        self._users = users
        self._allow_anonymous = allow_anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self._allow_anonymous else None
        if self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class SimOpcUaServer:
    """An asyncua server exposing simulated machines as PackML objects (and optionally custom nodes).

    ``port=0`` picks a free port at start; ``url`` is known after ``start()``. Certificates for the
    secured endpoints are generated at start into ``cert_dir`` (a temporary directory if not given) and
    reused when valid, so a restarted server keeps its identity.

    ``stop()`` followed by ``start()`` is a server restart while the PLC keeps running: counters, state
    and their timestamps live on in the PLC memory, and setters called while stopped change only that.

    Throughput: one server process writes ~13,000-26,000 values/s at a full core. For thousands of
    items per second run it in its own process, write in batches (``apply``, ``set_telemetry_many``)
    spread over the second, and call ``gc.freeze()`` after ``start()``: full GC passes over the large
    address space otherwise stall the process for up to ~0.5 s.
    """

    def __init__(
        self,
        machines: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        layout: Layout = "packml",
        telemetry: Sequence[str] = DEFAULT_TELEMETRY,
        security: Sequence[SecurityName] = ("None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"),
        cert_dir: Path | str | None = None,
        users: dict[str, str] | None = None,
        allow_anonymous: bool = True,
        counter_bits: Literal[16, 32] = 32,
        design_speed: float | dict[str, float] = 60.0,
        name: str = "Andon line simulator",
        subscriptions: bool = True,
    ) -> None:
        if not machines:
            raise ValueError("at least one machine")
        if len(set(machines)) != len(machines):
            raise ValueError("machine ids repeat")
        self.machine_ids = list(machines)
        self.host = host
        self.port = port
        self.layout = layout
        self.telemetry_names = list(telemetry)
        self.security = list(security)
        self._cert_dir_arg = Path(cert_dir) if cert_dir is not None else None
        self._tmp_cert_dir: tempfile.TemporaryDirectory[str] | None = None
        self.users = dict(users or {})
        self.allow_anonymous = allow_anonymous
        self.counter_bits = counter_bits
        self.design_speed = design_speed
        self.name = name
        # False: refuse CreateSubscription (BadTooManySubscriptions) like a server without subscriptions.
        self.subscriptions = subscriptions
        self.server: Server | None = None
        self.ns = 0
        # PLC memory outlives the OPC UA server: stop() and start() again model a server restart
        # while the machine keeps running, and setters called while stopped only change the memory.
        self._m: dict[str, _MachineNodes] = {mid: _MachineNodes(mid) for mid in self.machine_ids}
        self.certificate_path: Path | None = None
        self.private_key_path: Path | None = None
        self.writes = 0  # values written since start (for benchmarks)

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/andon/sim"

    @property
    def cert_dir(self) -> Path:
        if self._cert_dir_arg is not None:
            return self._cert_dir_arg
        if self._tmp_cert_dir is None:
            self._tmp_cert_dir = tempfile.TemporaryDirectory(prefix="andon-opcua-")
        return Path(self._tmp_cert_dir.name)

    async def start(self) -> None:
        if self.server is not None:
            raise RuntimeError("server already started")
        if self.port == 0:
            self.port = free_port(self.host)
        secured = [s for s in self.security if s != "None"]
        user_manager = _PasswordUserManager(self.users, self.allow_anonymous) if self.users else None
        server = Server(user_manager=user_manager)
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(self.name)
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([_POLICY_TYPES[s] for s in self.security])
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users else []
        if self.allow_anonymous or not self.users:
            tokens.insert(0, ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if secured:
            self.cert_dir.mkdir(parents=True, exist_ok=True)
            self.private_key_path = self.cert_dir / "server_key.pem"
            self.certificate_path = self.cert_dir / "server_cert.der"
            await setup_self_signed_certificate(
                self.private_key_path, self.certificate_path, APPLICATION_URI, socket.gethostname(),
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
                {"commonName": "Andon simulator", "organizationName": "Andon"},
            )
            await server.load_certificate(str(self.certificate_path))
            await server.load_private_key(str(self.private_key_path))
        if not self.subscriptions:
            server.iserver.max_subscriptions = 0
        self.ns = await server.register_namespace(NAMESPACE_URI)
        self.server = server
        await self._build()
        await server.start()
        log.info("OPC UA simulator listening on %s (%d machines, layout %s)", self.url, len(self._m), self.layout)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> SimOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._tmp_cert_dir is not None:
            self._tmp_cert_dir.cleanup()
            self._tmp_cert_dir = None

    # --- address space -------------------------------------------------------------------------------

    def _nid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)

    async def _var(self, parent: Node, path: str, name: str, value: Any, vtype: ua.VariantType,
                   datatype: ua.NodeId | None = None) -> _Var:
        nid = self._nid(f"{path}.{name}")
        if datatype is None:
            await parent.add_variable(nid, ua.QualifiedName(name, self.ns), ua.Variant(value, vtype))
        else:
            await parent.add_variable(nid, ua.QualifiedName(name, self.ns), ua.Variant(value, vtype),
                                      datatype=datatype)
        return _Var(nid, vtype)

    async def _obj(self, parent: Node, path: str, name: str, folder: bool = False) -> Node:
        nid = self._nid(f"{path}.{name}" if path else name)
        qn = ua.QualifiedName(name, self.ns)
        if folder:
            return await parent.add_folder(nid, qn)
        return await parent.add_object(nid, qn)

    def _design_speed(self, machine_id: str) -> float:
        if isinstance(self.design_speed, dict):
            return float(self.design_speed.get(machine_id, 60.0))
        return float(self.design_speed)

    async def _build(self) -> None:
        assert self.server is not None
        objects = self.server.nodes.objects
        cbits = self.counter_bits
        ctype = ua.VariantType.Int16 if cbits == 16 else ua.VariantType.Int32
        packml_root = line_root = None
        state_enum: Node | None = None
        if self.layout in ("packml", "both"):
            packml_root = await self._obj(objects, "", "PackMLObjects", folder=True)
        if self.layout in ("custom", "both"):
            line_root = await self._obj(objects, "", "Line", folder=True)
            state_enum = await new_enum(self.server, self.ns, "AndonLineStateCode", list(CUSTOM_STATE_NAMES))
        for mid in self.machine_ids:
            m = self._m[mid]
            if packml_root is not None:
                p = mid
                machine = await self._obj(packml_root, "", p)
                status = await self._obj(machine, p, "Status")
                sp = f"{p}.Status"
                m.state = await self._var(status, sp, "StateCurrent", 4, ua.VariantType.Int32)
                m.unit_mode = await self._var(status, sp, "UnitModeCurrent", UNIT_MODE_PRODUCTION,
                                              ua.VariantType.Int32)
                m.mach_speed = await self._var(status, sp, "MachSpeed", self._design_speed(mid),
                                               ua.VariantType.Double)
                m.cur_mach_speed = await self._var(status, sp, "CurMachSpeed", 0.0, ua.VariantType.Double)
                m.blocked = await self._var(status, sp, "EquipmentBlocked", False, ua.VariantType.Boolean)
                m.starved = await self._var(status, sp, "EquipmentStarved", False, ua.VariantType.Boolean)
                admin = await self._obj(machine, p, "Admin")
                ap = f"{p}.Admin"
                for attr, cname in (("processed", "ProdProcessedCount"), ("defective", "ProdDefectiveCount")):
                    cnode = await self._obj(admin, ap, cname)
                    cp = f"{ap}.{cname}"
                    await self._var(cnode, cp, "ID", 1, ua.VariantType.Int32)
                    await self._var(cnode, cp, "Name", "parts", ua.VariantType.String)
                    await self._var(cnode, cp, "Unit", "pcs", ua.VariantType.String)
                    setattr(m, f"{attr}_count", await self._var(cnode, cp, "Count", 0, ctype))
                    setattr(m, f"{attr}_acc", await self._var(cnode, cp, "AccCount", 0, ctype))
                m.design_speed = await self._var(admin, ap, "MachDesignSpeed", self._design_speed(mid),
                                                 ua.VariantType.Double)
                reason = await self._obj(admin, ap, "StopReason")
                m.stop_reason_id = await self._var(reason, f"{ap}.StopReason", "ID", 0, ua.VariantType.Int32)
                m.stop_reason_value = await self._var(reason, f"{ap}.StopReason", "Value", 0,
                                                      ua.VariantType.Int32)
                tele = await self._obj(machine, p, "Telemetry", folder=True)
                for name in self.telemetry_names:
                    m.telemetry[name] = await self._var(tele, f"{p}.Telemetry", name, 0.0, ua.VariantType.Double)
            if line_root is not None:
                assert state_enum is not None
                p = f"Line.{mid}"
                machine = await self._obj(line_root, "Line", mid)
                m.c_state = await self._var(machine, p, "StateCode", CUSTOM_IDLE, ua.VariantType.Int32,
                                            datatype=state_enum.nodeid)
                m.c_state_name = await self._var(machine, p, "StateName", CUSTOM_STATE_NAMES[CUSTOM_IDLE],
                                                 ua.VariantType.String)
                m.c_total = await self._var(machine, p, "PartsTotal", 0, ua.VariantType.UInt16)
                m.c_bad = await self._var(machine, p, "PartsBad", 0, ua.VariantType.UInt16)
                m.c_fault = await self._var(machine, p, "FaultCode", "", ua.VariantType.String)
                for name in self.telemetry_names:
                    m.c_telemetry[name] = await self._var(machine, p, name, 0.0, ua.VariantType.Double)
            # The registers show the PLC memory (it survives a server restart).
            await self._write(self._state_pairs(m), m.state_ts)
            await self._write(self._counter_pairs(m), m.counter_ts)

    def node_ids(self, machine_id: str) -> dict[str, str]:
        """Node ids (as strings) of one machine's variables, by role; handy for configs and tests."""
        m = self._machine(machine_id)
        out: dict[str, str] = {}
        for attr in ("state", "unit_mode", "mach_speed", "cur_mach_speed", "blocked", "starved",
                     "processed_acc", "defective_acc", "design_speed", "stop_reason_id",
                     "c_state", "c_state_name", "c_total", "c_bad", "c_fault"):
            var = getattr(m, attr)
            if var is not None:
                out[attr] = var.nodeid.to_string()
        for name, var in m.telemetry.items():
            out[f"telemetry.{name}"] = var.nodeid.to_string()
        for name, var in m.c_telemetry.items():
            out[f"c_telemetry.{name}"] = var.nodeid.to_string()
        return out

    # --- writing -------------------------------------------------------------------------------------

    def _machine(self, machine_id: str) -> _MachineNodes:
        try:
            return self._m[machine_id]
        except KeyError:
            raise KeyError(f"unknown machine {machine_id!r}") from None

    async def _write(self, pairs: Iterable[tuple[_Var | None, Any]], ts: dt.datetime | None) -> int:
        """Write values with one source timestamp; absent layouts (None nodes) are skipped.

        With the server stopped nothing is written (the PLC memory was already updated by the caller).
        """
        if self.server is None:
            return 0
        now = dt.datetime.now(UTC)
        source_ts = now if ts is None else ts.astimezone(UTC)
        iserver = self.server.iserver
        n = 0
        for var, value in pairs:
            if var is None:
                continue
            dv = ua.DataValue(ua.Variant(value, var.vtype), SourceTimestamp=source_ts, ServerTimestamp=now)
            # Straight to the address space: the same path as Server.write_attribute_value, minus a hop.
            await iserver.write_attribute_value(var.nodeid, dv)
            n += 1
        self.writes += n
        return n

    def _state_pairs(self, m: _MachineNodes) -> list[tuple[_Var | None, Any]]:
        code = custom_code_for(m.packml_state, m.unit_mode_value, m.is_blocked, m.is_starved)
        return [
            # Flags, mode and reason before the state: a reader that sees the new state sees its context.
            (m.blocked, m.is_blocked),
            (m.starved, m.is_starved),
            (m.unit_mode, m.unit_mode_value),
            (m.stop_reason_id, m.stop_reason),
            (m.stop_reason_value, m.stop_reason),
            (m.state, m.packml_state),
            (m.c_fault, str(m.stop_reason) if m.stop_reason else ""),
            (m.c_state_name, CUSTOM_STATE_NAMES[code]),
            (m.c_state, code),
        ]

    async def set_state(
        self,
        machine_id: str,
        packml_state: int,
        stop_reason_id: int | None = None,
        ts: dt.datetime | None = None,
        *,
        unit_mode: int | None = None,
        blocked: bool | None = None,
        starved: bool | None = None,
    ) -> None:
        """Set the PackML state (and optionally stop reason, unit mode, flags) with one source timestamp.

        A stop reason given is kept until changed; ``stop_reason_id=0`` clears it. Entering Execute
        clears it too, as PLCs reset the first-out reason when production resumes.
        """
        if packml_state not in PACKML_STATES:
            raise ValueError(f"not a PackML state number: {packml_state}")
        m = self._machine(machine_id)
        m.packml_state = packml_state
        if stop_reason_id is not None:
            m.stop_reason = stop_reason_id
        elif packml_state == 6:
            m.stop_reason = 0
        if unit_mode is not None:
            m.unit_mode_value = unit_mode
        if blocked is not None:
            m.is_blocked = blocked
        if starved is not None:
            m.is_starved = starved
        m.state_ts = ts or dt.datetime.now(UTC)
        await self._write(self._state_pairs(m), m.state_ts)

    async def set_flags(self, machine_id: str, blocked: bool, starved: bool, ts: dt.datetime | None = None) -> None:
        m = self._machine(machine_id)
        m.is_blocked, m.is_starved = blocked, starved
        m.state_ts = ts or dt.datetime.now(UTC)
        await self._write(self._state_pairs(m), m.state_ts)

    async def set_unit_mode(self, machine_id: str, unit_mode: int, ts: dt.datetime | None = None) -> None:
        m = self._machine(machine_id)
        m.unit_mode_value = unit_mode
        m.state_ts = ts or dt.datetime.now(UTC)
        await self._write(self._state_pairs(m), m.state_ts)

    async def set_custom_state(self, machine_id: str, code: int, fault_code: str = "",
                               ts: dt.datetime | None = None) -> None:
        """Write the custom layout's state code directly (codes outside the enumeration included)."""
        m = self._machine(machine_id)
        name = CUSTOM_STATE_NAMES[code] if 0 <= code < len(CUSTOM_STATE_NAMES) else f"Code{code}"
        await self._write([(m.c_fault, fault_code), (m.c_state_name, name), (m.c_state, code)], ts)

    def _counter_pairs(self, m: _MachineNodes) -> list[tuple[_Var | None, Any]]:
        bits = self.counter_bits
        return [
            (m.defective_count, _register(bits, True, m.job_defective)),
            (m.defective_acc, _register(bits, True, m.defective)),
            (m.processed_count, _register(bits, True, m.job_processed)),
            (m.processed_acc, _register(bits, True, m.processed)),
            (m.c_bad, _register(16, False, m.defective)),
            (m.c_total, _register(16, False, m.processed)),
        ]

    async def add_parts(self, machine_id: str, processed: int, defective: int = 0,
                        ts: dt.datetime | None = None) -> None:
        """Count parts: ``processed`` includes the ``defective`` ones (PackML: processed = good + defective)."""
        if processed < 0 or defective < 0 or defective > processed:
            raise ValueError("need 0 <= defective <= processed")
        m = self._machine(machine_id)
        m.processed += processed
        m.defective += defective
        m.job_processed += processed
        m.job_defective += defective
        m.counter_ts = ts or dt.datetime.now(UTC)
        await self._write(self._counter_pairs(m), m.counter_ts)

    async def set_counters(self, machine_id: str, processed: int, defective: int,
                           ts: dt.datetime | None = None) -> None:
        """Set the cumulative counters outright: a PLC restart (reset) or a preset before a wrap."""
        m = self._machine(machine_id)
        m.processed, m.defective = processed, defective
        m.job_processed, m.job_defective = processed, defective
        m.counter_ts = ts or dt.datetime.now(UTC)
        await self._write(self._counter_pairs(m), m.counter_ts)

    def counters(self, machine_id: str) -> tuple[int, int]:
        """The unbounded (processed, defective) totals behind the registers: ground truth for tests."""
        m = self._machine(machine_id)
        return m.processed, m.defective

    async def set_speed(self, machine_id: str, current: float, setpoint: float | None = None,
                        ts: dt.datetime | None = None) -> None:
        m = self._machine(machine_id)
        pairs: list[tuple[_Var | None, Any]] = [(m.cur_mach_speed, float(current))]
        if setpoint is not None:
            pairs.append((m.mach_speed, float(setpoint)))
        await self._write(pairs, ts)

    async def set_telemetry(self, machine_id: str, name: str, value: float, ts: dt.datetime | None = None) -> None:
        m = self._machine(machine_id)
        if name not in self.telemetry_names:
            raise KeyError(f"unknown telemetry channel {name!r}")
        await self._write([(m.telemetry.get(name), float(value)), (m.c_telemetry.get(name), float(value))], ts)

    async def set_telemetry_many(self, values: Iterable[tuple[str, str, float]],
                                 ts: dt.datetime | None = None) -> int:
        """Batch variant: (machine_id, channel, value) triples written with one source timestamp."""
        pairs: list[tuple[_Var | None, Any]] = []
        for machine_id, name, value in values:
            m = self._machine(machine_id)
            pairs.append((m.telemetry.get(name), float(value)))
            pairs.append((m.c_telemetry.get(name), float(value)))
        return await self._write(pairs, ts)

    async def apply(self, writes: Iterable[Write], ts: dt.datetime | None = None) -> None:
        """Batch variant of all setters: apply the writes to the PLC memory, then write once per machine."""
        touched_state: dict[str, _MachineNodes] = {}
        touched_count: dict[str, _MachineNodes] = {}
        pairs: list[tuple[_Var | None, Any]] = []
        for w in writes:
            m = self._machine(w.machine_id)
            match w.tag:
                case "state":
                    m.packml_state = int(w.value)
                    if m.packml_state == 6:
                        m.stop_reason = 0
                    touched_state[m.machine_id] = m
                case "unit_mode":
                    m.unit_mode_value = int(w.value)
                    touched_state[m.machine_id] = m
                case "blocked":
                    m.is_blocked = bool(w.value)
                    touched_state[m.machine_id] = m
                case "starved":
                    m.is_starved = bool(w.value)
                    touched_state[m.machine_id] = m
                case "stop_reason":
                    m.stop_reason = int(w.value)
                    touched_state[m.machine_id] = m
                case "processed":
                    m.processed += int(w.value)
                    m.job_processed += int(w.value)
                    touched_count[m.machine_id] = m
                case "defective":
                    m.defective += int(w.value)
                    m.job_defective += int(w.value)
                    touched_count[m.machine_id] = m
                case "mach_speed":
                    pairs.append((m.mach_speed, float(w.value)))
                case "cur_mach_speed":
                    pairs.append((m.cur_mach_speed, float(w.value)))
                case "telemetry":
                    pairs.append((m.telemetry.get(w.name), float(w.value)))
                    pairs.append((m.c_telemetry.get(w.name), float(w.value)))
        stamp = ts or dt.datetime.now(UTC)
        for m in touched_count.values():
            m.counter_ts = stamp
            pairs.extend(self._counter_pairs(m))
        for m in touched_state.values():
            m.state_ts = stamp
            pairs.extend(self._state_pairs(m))
        await self._write(pairs, stamp)


async def _main() -> None:  # pragma: no cover - manual use: python -m simulator.frontends.opcua_server
    import argparse

    ap = argparse.ArgumentParser(description="Serve idle simulated PackML machines over OPC UA")
    ap.add_argument("--machines", default="M1,M2,M3")
    ap.add_argument("--port", type=int, default=4840)
    ap.add_argument("--layout", choices=["packml", "custom", "both"], default="both")
    args = ap.parse_args()
    async with SimOpcUaServer(args.machines.split(","), port=args.port, layout=args.layout) as srv:
        print(srv.url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
