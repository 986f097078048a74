"""Condition-monitoring signals generated from the line's truth, vectorised with numpy.

Given a machine's state intervals, its parts and its latent health, each channel is computed for all of
its sample times at once:

- ``vibration_rms`` (mm/s): base x product factor x (1 + k (1-h)^p) while running, a low idle level
  otherwise, multiplicative noise and rare spikes (ISO 10816-style broadband velocity);
- ``bearing_temp`` (degC): ambient daily cycle + first-order lag of (load heating + wear heating);
- ``motor_current`` (A): nominal x product factor + wear term while running, idle fraction otherwise;
- ``cycle_time`` (s): the last completed part's running time, so wear drift and slow cycles show.

Confounders: a product change moves vibration/current baselines (``product_factors``); planned stops
and breaks drop load; sensor faults (flat line, dropout, stuck value, out of range, clock jump) are
injected per channel and flagged in the ``sensor_fault`` column and the ``sensor_faults`` table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.config import Telemetry

CHANNEL_UNITS = {"vibration_rms": "mm/s", "bearing_temp": "degC", "motor_current": "A", "cycle_time": "s"}
CHANNELS = tuple(CHANNEL_UNITS)
SENSOR_FAULT_KINDS = ("", "flat_line", "dropout", "stuck", "out_of_range", "clock_jump")
OUT_OF_RANGE_VALUE = 32767.0  # the int16 sentinel many PLC analog inputs report on a broken wire


@dataclass
class MachineSignals:
    """What the generator needs to know about one machine (wall times: seconds since start)."""

    state_start: np.ndarray  # sorted starts of contiguous state intervals
    running: np.ndarray  # bool per interval
    part_done: np.ndarray  # completion times of parts, sorted
    part_cycle: np.ndarray  # running seconds of each part
    part_product: np.ndarray  # product index of each part
    ideal_cycle_s: float
    product_factors: np.ndarray  # per product index
    health: Callable[[np.ndarray], np.ndarray]  # wall seconds -> health in [0, 1]


@dataclass
class ChannelBlock:
    """Generated samples of one channel of one machine."""

    channel: str
    ts: np.ndarray  # reported wall seconds (clock jumps applied)
    true_ts: np.ndarray  # when the sample was really taken
    value: np.ndarray
    fault: np.ndarray  # int8 index into SENSOR_FAULT_KINDS


@dataclass
class FaultEpisode:
    channel: str
    kind: str
    start_s: float
    end_s: float
    offset_s: float = 0.0


def first_order_lag(x: np.ndarray, alpha: float, y0: float) -> np.ndarray:
    """y[n] = alpha y[n-1] + (1 - alpha) x[n], without a Python loop per sample.

    Blocks of B samples are filtered with one matrix product (lower-triangular powers of alpha); the
    block-to-block carry is a short recurrence over blocks.
    """
    n = x.size
    if n == 0:
        return x.copy()
    b = 64
    nb = -(-n // b)
    xp = np.zeros(nb * b)
    xp[:n] = x
    xp[n:] = x[-1]
    k = np.arange(b)
    powers = alpha ** (k[:, None] - k[None, :])
    kernel = np.where(k[:, None] >= k[None, :], (1.0 - alpha) * powers, 0.0)
    local = xp.reshape(nb, b) @ kernel.T  # response to the block's own input, zero initial state
    carry_gain = alpha ** (k + 1)  # how the state entering a block decays inside it
    ends = local[:, -1]
    ab = alpha**b
    state = np.empty(nb)
    s = y0
    for i in range(nb):
        state[i] = s
        s = ab * s + ends[i]
    y = local + state[:, None] * carry_gain[None, :]
    return y.ravel()[:n]


def _at(times: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the interval/event at or before each time (-1 before the first)."""
    return np.searchsorted(starts, times, side="right") - 1


def generate_machine(
    sig: MachineSignals,
    cfg: Telemetry,
    horizon_s: float,
    ambient_hour0: float,
    rng: np.random.Generator,
) -> tuple[list[ChannelBlock], list[FaultEpisode]]:
    """All channels of one machine over [0, horizon_s)."""
    blocks: list[ChannelBlock] = []
    episodes: list[FaultEpisode] = []
    temp_alpha_cache: dict[float, float] = {}
    for channel, every in cfg.rates_s.items():
        ts = np.arange(0.0, horizon_s, float(every))
        n = ts.size
        iv = _at(ts, sig.state_start)
        running = sig.running[np.clip(iv, 0, None)] & (iv >= 0)
        last_part = _at(ts, sig.part_done)
        if sig.part_product.size:
            prod = np.where(last_part >= 0, sig.part_product[np.clip(last_part, 0, None)], sig.part_product[0])
        else:  # no part made in the window (a weekend): the default product's baseline
            prod = np.zeros(n, dtype=int)
        pf = sig.product_factors[prod] if sig.product_factors.size else np.ones(n)
        h = sig.health(ts)
        wear = 1.0 - h
        if channel == "vibration_rms":
            level = np.where(running, cfg.vibration_base_mm_s * pf * (1.0 + cfg.vibration_gain
                                                                     * wear**cfg.vibration_power),
                             cfg.vibration_idle_mm_s)
            value = level * np.exp(rng.normal(0.0, cfg.vibration_noise_cv, n))
            spikes = rng.random(n) < cfg.spike_rate_per_h * every / 3600.0
            value = value + spikes * rng.uniform(2.0, 5.0, n) * cfg.vibration_base_mm_s
        elif channel == "bearing_temp":
            alpha = temp_alpha_cache.setdefault(every, math.exp(-every / cfg.temp_time_constant_s))
            heat = running * (cfg.temp_load_rise_c * pf + cfg.temp_health_rise_c * wear)
            hours = (ambient_hour0 + ts / 3600.0) % 24.0
            ambient = cfg.ambient_c + cfg.ambient_daily_amplitude_c * np.cos(2 * np.pi * (hours - 15.0) / 24.0)
            value = ambient + first_order_lag(heat, alpha, float(heat[0]) if n else 0.0)
            value = value + rng.normal(0.0, cfg.temp_noise_c, n)
        elif channel == "motor_current":
            value = np.where(running, cfg.current_nominal_a * pf + cfg.current_health_gain_a * wear,
                             cfg.current_nominal_a * cfg.current_idle_fraction)
            value = value + rng.normal(0.0, cfg.current_noise_a, n)
        else:  # cycle_time
            value = np.where(last_part >= 0, sig.part_cycle[np.clip(last_part, 0, None)], sig.ideal_cycle_s)
        value = np.maximum(value, 0.0)
        fault = np.zeros(n, dtype=np.int8)
        keep = np.ones(n, dtype=bool)
        reported = ts.copy()
        sf = cfg.sensor_faults
        for kind in sf.kinds:
            count = rng.poisson(sf.rate_per_30d * horizon_s / (30 * 86400.0))
            for _ in range(count):
                start = float(rng.uniform(0.0, horizon_s))
                dur = float(sf.duration.sample(rng, 1)[0])
                if kind == "out_of_range":
                    dur = every * int(rng.integers(1, 7))
                elif kind == "clock_jump":
                    dur *= 3
                end = min(start + dur, horizon_s)
                sel = (ts >= start) & (ts < end)
                offset = 0.0
                if kind == "flat_line":
                    value[sel] = 0.0
                elif kind == "stuck":
                    first = int(np.searchsorted(ts, start))
                    value[sel] = value[max(first - 1, 0)]
                elif kind == "out_of_range":
                    value[sel] = OUT_OF_RANGE_VALUE
                elif kind == "dropout":
                    keep &= ~sel
                elif kind == "clock_jump":
                    offset = float(sf.clock_jump_s * (1 if rng.random() < 0.5 else -1))
                    reported[sel] = ts[sel] + offset
                fault[sel] = SENSOR_FAULT_KINDS.index(kind)
                episodes.append(FaultEpisode(channel, kind, start, end, offset))
        blocks.append(ChannelBlock(channel, reported[keep], ts[keep], value[keep], fault[keep]))
    return blocks, episodes


def warning_events(
    running_s_per_step: np.ndarray, health: np.ndarray, cfg: Telemetry, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Warning codes as a non-homogeneous Poisson process on running time, thinned on a grid.

    Returns (indices of grid steps with a warning, code index per warning)."""
    w = cfg.warnings
    rate_per_s = (w.base_per_h + w.gain_per_h * (1.0 - health) ** w.power) / 3600.0
    p = 1.0 - np.exp(-rate_per_s * running_s_per_step)
    hits = np.flatnonzero(rng.random(p.size) < p)
    codes = rng.integers(0, len(w.codes), hits.size)
    return hits, codes
