"""The plant model: sites -> lines -> machines (ISA-95 order), shift calendars and the reason-code tree.

One YAML (or TOML) file is the source of truth for what the plant looks like. It is validated with
pydantic; a bad file fails fast with a message naming the file, the path inside it, the line where the
YAML has one, and what is wrong. The model is synced into the database (storage.plant_sync) so the API
can serve and edit it.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SixBigLoss(StrEnum):
    """Nakajima's six big losses, with OEE.com's grouping into the three factors."""

    BREAKDOWNS = "breakdowns"  # availability: unplanned stops
    SETUP_ADJUSTMENTS = "setup_adjustments"  # availability: planned stops
    SMALL_STOPS = "small_stops"  # performance
    SLOW_CYCLES = "slow_cycles"  # performance
    PRODUCTION_REJECTS = "production_rejects"  # quality
    STARTUP_REJECTS = "startup_rejects"  # quality


class PlantModelError(ValueError):
    """A plant model file that cannot be used; the message names the file, path, line and problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Buffer(_Model):
    """The buffer after a machine, in units (parts)."""

    capacity: int = Field(ge=0, le=1_000_000)
    normal_fill: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fill_within_capacity(self) -> Buffer:
        if self.normal_fill > self.capacity:
            raise ValueError(f"normal_fill ({self.normal_fill}) exceeds capacity ({self.capacity})")
        return self


class Machine(_Model):
    id: Identifier
    name: str = ""
    position: int | None = Field(default=None, ge=1, description="1-based place in the line; list order if absent")
    ideal_cycle_time_s: float | None = Field(default=None, gt=0, le=86_400)
    ideal_rate_per_min: float | None = Field(default=None, gt=0)
    # Per-product ideal cycle times for mixed-product lines (performance = sum(ICT x count) / run time).
    products: dict[str, Annotated[float, Field(gt=0, le=86_400)]] = Field(default_factory=dict)
    buffer_after: Buffer | None = None
    # Fault/stop codes the PLC reports, mapped to reason codes of the tree (exact code or "prefix*").
    fault_map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_ideal_speed(self) -> Machine:
        if self.ideal_cycle_time_s is None and self.ideal_rate_per_min is None:
            raise ValueError("give ideal_cycle_time_s or ideal_rate_per_min")
        if self.ideal_cycle_time_s is not None and self.ideal_rate_per_min is not None:
            ict_from_rate = 60.0 / self.ideal_rate_per_min
            if abs(ict_from_rate - self.ideal_cycle_time_s) > 1e-9 * max(1.0, ict_from_rate):
                raise ValueError("ideal_cycle_time_s and ideal_rate_per_min disagree; give only one")
        return self

    @property
    def ideal_cycle_s(self) -> float:
        """Ideal cycle time in seconds for the default product."""
        if self.ideal_cycle_time_s is not None:
            return self.ideal_cycle_time_s
        assert self.ideal_rate_per_min is not None
        return 60.0 / self.ideal_rate_per_min

    def ideal_cycle_for(self, product: str | None) -> float:
        if product and product in self.products:
            return self.products[product]
        return self.ideal_cycle_s


def fault_reason(fault_map: dict[str, str], fault_code: str) -> str | None:
    """A fault code's reason by a machine's fault map: exact entry first, else the longest matching
    "prefix*" rule, else None."""
    if fault_code in fault_map:
        return fault_map[fault_code]
    best: tuple[int, str] | None = None
    for pattern, reason in fault_map.items():
        if pattern.endswith("*") and fault_code.startswith(pattern[:-1]) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), reason)
    return best[1] if best else None


class Line(_Model):
    id: Identifier
    name: str = ""
    takt_time_s: float | None = Field(default=None, gt=0)
    demand_per_shift: float | None = Field(default=None, gt=0)
    machines: list[Machine] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Line:
        if self.takt_time_s is None and self.demand_per_shift is None:
            raise ValueError("give takt_time_s or demand_per_shift")
        positions = [m.position for m in self.machines if m.position is not None]
        if positions and len(positions) != len(self.machines):
            raise ValueError("give position for every machine of the line or for none")
        if positions and sorted(positions) != list(range(1, len(self.machines) + 1)):
            raise ValueError(f"positions must be 1..{len(self.machines)} without gaps or repeats, got {positions}")
        return self

    @property
    def machines_in_order(self) -> list[Machine]:
        if self.machines[0].position is None:
            return list(self.machines)
        return sorted(self.machines, key=lambda m: m.position or 0)


class Break(_Model):
    name: str = "break"
    start: dt.time
    end: dt.time


class Shift(_Model):
    name: Identifier
    start: dt.time
    end: dt.time  # an end at or before start means the shift ends the next day
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), description="weekdays on which the shift starts"
    )
    breaks: list[Break] = Field(default_factory=list)

    @field_validator("days")
    @classmethod
    def _unique_days(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("days repeat")
        return v


class CalendarException(_Model):
    """A one-off period in local time: no production (holiday, no order) or a planned stop inside a shift."""

    kind: Literal["no_order", "planned_stop"]
    start: dt.datetime
    end: dt.datetime
    name: str = ""
    reason: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> CalendarException:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("give start and end as local times of the site, without an offset")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Calendar(_Model):
    shifts: list[Shift] = Field(default_factory=list)
    exceptions: list[CalendarException] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Calendar:
        names = [s.name for s in self.shifts]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"shift names repeat: {sorted(dup)}")
        return self


class Site(_Model):
    id: Identifier
    name: str = ""
    timezone: str = "UTC"
    calendar: Calendar = Field(default_factory=Calendar)
    lines: list[Line] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)") from exc
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Reason(_Model):
    code: Identifier
    name: str = ""
    planned: bool = False
    failure: bool = False
    loss: SixBigLoss

    @model_validator(mode="after")
    def _consistent(self) -> Reason:
        if self.planned and self.failure:
            raise ValueError("a reason cannot be both planned and a failure")
        return self


class ReasonCategory(_Model):
    category: str = Field(min_length=1)
    reasons: list[Reason] = Field(min_length=1)


class PlantSettings(_Model):
    # OEE.com counts planned stops (setups, planned maintenance) as an availability loss; plants that
    # exclude them from planned production time set this to false.
    planned_stops_count_against_availability: bool = True
    small_stop_threshold_s: float = Field(default=120.0, gt=0)
    startup_window_s: float = Field(default=300.0, ge=0)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    # MTBF divisor: "failures" (operating time / FE, most tools) or "failures_plus_one" (ISO 22400 recall).
    mtbf_divisor: Literal["failures", "failures_plus_one"] = "failures"
    min_failure_duration_s: float = Field(default=120.0, ge=0)


class PlantModel(_Model):
    name: str = "plant"
    settings: PlantSettings = Field(default_factory=PlantSettings)
    sites: list[Site] = Field(min_length=1)
    reasons: list[ReasonCategory] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> PlantModel:
        seen: dict[str, str] = {}
        for kind, ids in (
            ("site", [s.id for s in self.sites]),
            ("line", [ln.id for s in self.sites for ln in s.lines]),
            ("machine", [m.id for s in self.sites for ln in s.lines for m in ln.machines]),
        ):
            for i in ids:
                if i in seen and seen[i] == kind:
                    raise ValueError(f"{kind} id {i!r} is used more than once")
                seen[i] = kind
        codes = [r.code for c in self.reasons for r in c.reasons]
        dup = sorted({c for c in codes if codes.count(c) > 1})
        if dup:
            raise ValueError(f"reason codes repeat: {dup}")
        known = set(codes)
        for site in self.sites:
            for line in site.lines:
                for m in line.machines:
                    for fault, reason in m.fault_map.items():
                        if reason not in known:
                            raise ValueError(
                                f"machine {m.id!r}: fault_map[{fault!r}] names unknown reason {reason!r}"
                            )
        return self

    # --- look-ups -------------------------------------------------------------------------------
    def machines(self) -> list[Machine]:
        return [m for s in self.sites for ln in s.lines for m in ln.machines_in_order]

    def machine(self, machine_id: str) -> Machine:
        for m in self.machines():
            if m.id == machine_id:
                return m
        raise KeyError(machine_id)

    def line(self, line_id: str) -> Line:
        for s in self.sites:
            for ln in s.lines:
                if ln.id == line_id:
                    return ln
        raise KeyError(line_id)

    def site_of_line(self, line_id: str) -> Site:
        for s in self.sites:
            if any(ln.id == line_id for ln in s.lines):
                return s
        raise KeyError(line_id)

    def line_of_machine(self, machine_id: str) -> Line:
        for s in self.sites:
            for ln in s.lines:
                if any(m.id == machine_id for m in ln.machines):
                    return ln
        raise KeyError(machine_id)

    def site_of_machine(self, machine_id: str) -> Site:
        return self.site_of_line(self.line_of_machine(machine_id).id)

    def reason(self, code: str) -> Reason:
        for c in self.reasons:
            for r in c.reasons:
                if r.code == code:
                    return r
        raise KeyError(code)

    def reason_category(self, code: str) -> str:
        for c in self.reasons:
            if any(r.code == code for r in c.reasons):
                return c.category
        raise KeyError(code)


# --- loading -------------------------------------------------------------------------------------------


def _yaml_line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line in the YAML source of the value at `loc`, or of its deepest existing parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_plant_model(text: str, source: str = "<plant model>", fmt: str = "yaml") -> PlantModel:
    root: yaml.Node | None = None
    try:
        if fmt == "toml":
            data = tomllib.loads(text)
        else:
            root = yaml.compose(text)
            data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlantModelError(f"{source}:{where}: not valid YAML: {exc.problem}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlantModelError(f"{source}: not valid TOML: {exc}") from exc
    return validate_plant_data(data, source, root)


def validate_plant_data(data: Any, source: str = "<plant model>", root: yaml.Node | None = None) -> PlantModel:
    """Validate already-parsed data (a YAML/TOML document or an API request body)."""
    if not isinstance(data, dict):
        raise PlantModelError(f"{source}: expected a mapping with 'sites' at the top level")
    try:
        return PlantModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _yaml_line_of(root, loc) if root is not None else None
            where = f" (line {line})" if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {_format_loc(loc)}{where}: {msg}")
        raise PlantModelError("\n".join(problems)) from None


def load_plant_model(path: str | Path) -> PlantModel:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlantModelError(f"{p}: cannot read plant model file: {exc.strerror}") from exc
    return parse_plant_model(text, str(p), "toml" if p.suffix.lower() == ".toml" else "yaml")
