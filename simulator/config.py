"""Simulation parameters (config/simulation.yaml): defaults plus per-machine overrides, pydantic-validated.

The plant model says what the line is (machines, ideal cycle times, buffers, calendar, reasons); this
file says how it misbehaves. ``defaults`` applies to every machine; ``machines: {<machine id>: {...}}``
overrides any part of it for one machine (mappings are merged key by key, so an override only names
what changes). Durations are distribution specs (see simulator.distributions) with a unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.distributions import DurationSpec, Exponential, Lognormal, Weibull


class SimulationConfigError(ValueError):
    """A simulation parameter file that cannot be used; the message names the file and the problem."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlowCycles(_M):
    """A share of cycles takes longer than ideal by a uniform factor (performance loss, state running)."""

    probability: float = Field(default=0.03, ge=0, le=1)
    factor_low: float = Field(default=1.1, ge=1)
    factor_high: float = Field(default=1.6, ge=1)


class Failures(_M):
    enabled: bool = True
    # "running": the failure clock advances only while the machine runs (cannot fail starved, blocked,
    # in setup or outside shifts) -- the default. "scheduled": it advances whenever the machine is up in
    # production time, starved and blocked included (Gershwin's time-dependent failures).
    clock: Literal["running", "scheduled"] = "running"
    time_between: DurationSpec = Weibull(shape=1.2, scale=30, unit="h")
    repair: DurationSpec = Lognormal(median=12, sigma=0.7, unit="min")
    # Fault codes drawn for random failures; default: one concrete code per non-JAM fault_map pattern.
    fault_codes: list[str] | None = None


class MicroStops(_M):
    """Short jams: Poisson in running time, duration uniform in [min_s, max_s], below the small-stop threshold."""

    rate_per_h: float = Field(default=2.0, ge=0)
    min_s: float = Field(default=10.0, gt=0)
    max_s: float = Field(default=90.0, gt=0)
    code: str = "JAM"

    @model_validator(mode="after")
    def _ordered(self) -> MicroStops:
        if self.max_s < self.min_s:
            raise ValueError("max_s must be >= min_s")
        return self


class Changeover(_M):
    duration: DurationSpec = Lognormal(median=15, sigma=0.3, unit="min")


class Quality(_M):
    scrap_probability: float = Field(default=0.01, ge=0, le=1)
    startup_reject_probability: float = Field(default=0.06, ge=0, le=1)


class Degradation(_M):
    """Latent health 1 -> 0 after a random onset; the machine fails (degradation fault) when it reaches 0."""

    enabled: bool = False
    form: Literal["exponential", "gamma"] = "exponential"
    # Running time (failure-clock time) from a renewal to the onset of wear, and from onset to failure.
    onset: DurationSpec = Weibull(shape=2.0, scale=200, unit="h")
    duration: DurationSpec = Lognormal(median=60, sigma=0.3, unit="h")
    curvature: float = Field(default=3.0, gt=0)  # exponential form: h = 1 - (e^(a u/L) - 1)/(e^a - 1)
    gamma_shape: float = Field(default=30.0, gt=0)  # gamma process: total shape over one mean life
    fault_code: str | None = None  # default: the machine's first non-JAM fault_map pattern
    repair: Literal["as_good_as_new", "imperfect"] = "as_good_as_new"
    repair_effectiveness: float = Field(default=0.7, gt=0, le=1)  # imperfect: health after repair
    cycle_drift: float = Field(default=0.15, ge=0)  # cycle x (1 + k (1-h)^2)
    micro_stop_gain: float = Field(default=2.0, ge=0)  # micro-stop rate x (1 + g (1-h))


class Warnings(_M):
    """Warning codes: a non-homogeneous Poisson process, rate base + gain (1-h)^power per running hour."""

    base_per_h: float = Field(default=0.02, ge=0)
    gain_per_h: float = Field(default=1.5, ge=0)
    power: float = Field(default=2.0, gt=0)
    codes: list[str] = Field(default_factory=lambda: ["W-VIB", "W-TEMP", "W-CURR"], min_length=1)


class SensorFaults(_M):
    """Confounders in the signals: episodes per channel, Poisson over wall time."""

    rate_per_30d: float = Field(default=0.5, ge=0)  # per channel and kind
    kinds: list[Literal["flat_line", "dropout", "stuck", "out_of_range", "clock_jump"]] = Field(
        default_factory=lambda: ["flat_line", "dropout", "stuck", "out_of_range", "clock_jump"]
    )
    duration: DurationSpec = Lognormal(median=40, sigma=0.8, unit="min")
    clock_jump_s: float = Field(default=3600.0, gt=0)


class Telemetry(_M):
    enabled: bool = True
    # Sampling interval per channel in seconds; a channel left out is not generated.
    rates_s: dict[Literal["vibration_rms", "bearing_temp", "motor_current", "cycle_time"], float] = Field(
        default_factory=lambda: {"vibration_rms": 10.0, "bearing_temp": 10.0, "motor_current": 10.0, "cycle_time": 10.0}
    )
    vibration_base_mm_s: float = Field(default=1.8, gt=0)
    vibration_idle_mm_s: float = Field(default=0.3, ge=0)
    vibration_gain: float = Field(default=4.0, ge=0)  # x (1 + k (1-h)^p)
    vibration_power: float = Field(default=2.0, gt=0)
    vibration_noise_cv: float = Field(default=0.08, ge=0)
    spike_rate_per_h: float = Field(default=0.2, ge=0)
    ambient_c: float = 22.0
    ambient_daily_amplitude_c: float = Field(default=4.0, ge=0)
    temp_load_rise_c: float = Field(default=18.0, ge=0)
    temp_health_rise_c: float = Field(default=25.0, ge=0)
    temp_time_constant_s: float = Field(default=1200.0, gt=0)
    temp_noise_c: float = Field(default=0.3, ge=0)
    current_nominal_a: float = Field(default=12.0, gt=0)
    current_idle_fraction: float = Field(default=0.15, ge=0, le=1)
    current_health_gain_a: float = Field(default=4.0, ge=0)
    current_noise_a: float = Field(default=0.2, ge=0)
    # Baseline multiplier per product (vibration and current): a product change moves the baseline.
    product_factors: dict[str, float] = Field(default_factory=dict)
    health_interval_s: float = Field(default=60.0, gt=0)
    warnings: Warnings = Field(default_factory=Warnings)
    sensor_faults: SensorFaults = Field(default_factory=SensorFaults)


class MachineSim(_M):
    never_fails: bool = False  # no random failures and no degradation (a confounder for PdM)
    cycle_noise_cv: float = Field(default=0.01, ge=0)  # cycle = ICT x (1 + |N(0, cv)|): never faster than ideal
    slow_cycles: SlowCycles = Field(default_factory=SlowCycles)
    failures: Failures = Field(default_factory=Failures)
    micro_stops: MicroStops = Field(default_factory=MicroStops)
    changeover: Changeover = Field(default_factory=Changeover)
    quality: Quality = Field(default_factory=Quality)
    degradation: Degradation = Field(default_factory=Degradation)
    telemetry: Telemetry = Field(default_factory=Telemetry)


class LineSim(_M):
    # Product mix: share of lots per product; empty = the machines' single default product.
    product_mix: dict[str, float] = Field(default_factory=dict)
    lot_size: DurationSpec = Exponential(mean=400)  # parts per lot (unit-less: read as a count)
    blocking: Literal["after_service"] = "after_service"
    initial_fill: Literal["normal", "empty"] = "normal"  # buffers start at normal_fill or empty

    @model_validator(mode="after")
    def _mix(self) -> LineSim:
        if any(v < 0 for v in self.product_mix.values()) or (
            self.product_mix and sum(self.product_mix.values()) <= 0
        ):
            raise ValueError("product_mix shares must be >= 0 with a positive sum")
        return self


class SimulationConfig(_M):
    defaults: MachineSim = Field(default_factory=MachineSim)
    machines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    line: LineSim = Field(default_factory=LineSim)

    @model_validator(mode="after")
    def _overrides_valid(self) -> SimulationConfig:
        for mid in self.machines:
            self.for_machine(mid)  # raises with the machine's problem
        return self

    def for_machine(self, machine_id: str) -> MachineSim:
        override = self.machines.get(machine_id)
        if not override:
            return self.defaults
        merged = _deep_merge(self.defaults.model_dump(), override)
        try:
            return MachineSim.model_validate(merged)
        except ValidationError as exc:
            msgs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"machines.{machine_id}: {msgs}") from None


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        # A distribution spec is replaced whole: merging weibull fields into a lognormal makes no sense.
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "dist" not in value:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_simulation_config(text: str, source: str = "<simulation config>") -> SimulationConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SimulationConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SimulationConfigError(f"{source}: expected a mapping at the top level")
    try:
        return SimulationConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{source}: {loc}: {err['msg'].removeprefix('Value error, ')}")
        raise SimulationConfigError("\n".join(problems)) from None


def load_simulation_config(path: str | Path | None) -> SimulationConfig:
    """The file's configuration, or all defaults when `path` is None."""
    if path is None:
        return SimulationConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulationConfigError(f"{p}: cannot read simulation config: {exc.strerror}") from exc
    return parse_simulation_config(text, str(p))
