"""Station models of the what-if (from measured inputs) and their work draws with common random numbers.

Each machine becomes a station whose work per part is: a cycle time, repeated when the part is scrapped
(a scrapped part costs the machine another cycle; upstream machines are not asked for the replacement,
which at scrap rates of a few percent changes nothing measurable), plus the duration of every own stop
that falls into the part on the running clock (breakdowns and micro-stops, two independent streams).

How each distribution is obtained is decided per machine and stated in ``StationModel.describe``:

* with at least ``min_samples_to_resample`` complete observations the measured values are RESAMPLED
  (bootstrap: no shape assumed, long tails kept);
* with fewer, a distribution is FITTED: exponential time between stops with the censoring-aware mean
  (running time / stops), lognormal stop durations (log mean and log standard deviation; an assumed
  sigma of 0.8 when fewer than three durations were seen), gamma cycle times from mean and CV;
* no stop of a class in the window: the class is left out (with a note: at most ``running time`` of
  evidence says it is rare, not that it never happens).

Improvements (kaizen what-ifs) scale the SAME draws: halving MTTR multiplies each drawn breakdown
duration by 0.5, halving failures doubles each drawn time between breakdowns. So a comparison between
the line as it is and the improved line is not blurred by different luck (common random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from analytics.jit.inputs import MachineInputs, StopSample
from simulator.line_engine import fold_stops

MIN_SAMPLES_TO_RESAMPLE = 30
ASSUMED_LOG_SIGMA = 0.8


class Sampler(Protocol):
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Resampled:
    values: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[rng.integers(0, self.values.size, n)]

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    def describe(self) -> str:
        return f"resampled from {self.values.size} measured values"


@dataclass(frozen=True, slots=True)
class ExponentialFit:
    mean_s: float
    n: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_s, n)

    @property
    def mean(self) -> float:
        return self.mean_s

    def describe(self) -> str:
        return f"exponential fitted (mean {self.mean_s:.0f} s from {self.n} stops, censoring-aware)"


@dataclass(frozen=True, slots=True)
class LognormalFit:
    log_mean: float
    log_sigma: float
    n: int
    assumed_sigma: bool = False

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(self.log_mean, self.log_sigma, n)

    @property
    def mean(self) -> float:
        return math.exp(self.log_mean + self.log_sigma**2 / 2)

    def describe(self) -> str:
        sigma = f"sigma {self.log_sigma:.2f}" + (" assumed" if self.assumed_sigma else "")
        return f"lognormal fitted (median {math.exp(self.log_mean):.0f} s, {sigma}, from {self.n} values)"


@dataclass(frozen=True, slots=True)
class GammaFit:
    mean_s: float
    cv: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.cv <= 0:
            return np.full(n, self.mean_s)
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, self.mean_s / shape, n)

    @property
    def mean(self) -> float:
        return self.mean_s

    def describe(self) -> str:
        if self.cv <= 0:
            return f"constant {self.mean_s:.1f} s"
        return f"gamma fitted (mean {self.mean_s:.1f} s, CV {self.cv:.2f})"


Distribution = Resampled | ExponentialFit | LognormalFit | GammaFit


@dataclass(frozen=True, slots=True)
class StopModel:
    up: Distribution  # running seconds between stops
    down: Distribution  # stop durations

    @property
    def mean_up_s(self) -> float:
        return self.up.mean

    @property
    def mean_down_s(self) -> float:
        return self.down.mean

    def describe(self) -> str:
        return f"time between: {self.up.describe()}; duration: {self.down.describe()}"


@dataclass(frozen=True, slots=True)
class StationModel:
    machine: str
    cycle: Distribution
    breakdowns: StopModel | None
    micro_stops: StopModel | None
    scrap_rate: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mean_cycle_s(self) -> float:
        return self.cycle.mean / (1.0 - self.scrap_rate)

    def describe(self) -> dict[str, str]:
        return {
            "cycle": self.cycle.describe(),
            "breakdowns": self.breakdowns.describe() if self.breakdowns else "none observed: not modelled",
            "micro_stops": self.micro_stops.describe() if self.micro_stops else "none observed: not modelled",
            "scrap": f"{self.scrap_rate:.2%} of cycles repeated",
        }


@dataclass(frozen=True, slots=True)
class Improvement:
    """A kaizen what-if for one machine: factors on its measured behaviour (1 = unchanged)."""

    machine: str
    mttr_factor: float = 1.0  # breakdown durations x factor (0.5: MTTR halved)
    failure_rate_factor: float = 1.0  # breakdowns per running hour x factor (0.5: failures halved)
    micro_stop_rate_factor: float = 1.0  # micro-stops per running hour x factor
    cycle_factor: float = 1.0  # cycle times x factor

    def __post_init__(self) -> None:
        for name in ("mttr_factor", "failure_rate_factor", "micro_stop_rate_factor", "cycle_factor"):
            value = getattr(self, name)
            if not (0 <= value <= 10 and math.isfinite(value)):
                raise ValueError(f"{name} must be between 0 and 10, got {value}")
        if self.cycle_factor <= 0:
            raise ValueError("cycle_factor must be > 0")

    @property
    def label(self) -> str:
        parts = []
        if self.mttr_factor != 1:
            parts.append("MTTR halved" if self.mttr_factor == 0.5 else f"MTTR x{self.mttr_factor:g}")
        if self.failure_rate_factor != 1:
            parts.append("failures halved" if self.failure_rate_factor == 0.5
                         else f"failures x{self.failure_rate_factor:g}")
        if self.micro_stop_rate_factor != 1:
            parts.append("micro-stops halved" if self.micro_stop_rate_factor == 0.5
                         else f"micro-stops x{self.micro_stop_rate_factor:g}")
        if self.cycle_factor != 1:
            parts.append(f"cycle x{self.cycle_factor:g}")
        return f"{self.machine}: " + (", ".join(parts) or "unchanged")


def _duration_model(values: np.ndarray, min_samples: int) -> Distribution:
    if values.size >= min_samples:
        return Resampled(np.asarray(values, dtype=np.float64))
    positive = values[values > 0]
    logs = np.log(positive)
    if logs.size >= 3:
        return LognormalFit(float(logs.mean()), float(max(logs.std(ddof=1), 1e-6)), int(logs.size))
    return LognormalFit(float(logs.mean()), ASSUMED_LOG_SIGMA, int(logs.size), assumed_sigma=True)


def _stop_model(sample: StopSample, min_samples: int) -> StopModel | None:
    if sample.count == 0 or sample.running_s <= 0:
        return None
    if sample.up_s.size >= min_samples:
        up: Distribution = Resampled(np.asarray(sample.up_s, dtype=np.float64))
    else:
        assert sample.mean_up_s is not None
        up = ExponentialFit(sample.mean_up_s, sample.count)
    return StopModel(up=up, down=_duration_model(sample.down_s, min_samples))


def station_model(inputs: MachineInputs, min_samples_to_resample: int = MIN_SAMPLES_TO_RESAMPLE) -> StationModel:
    """The what-if model of one machine from its measured inputs (resampled where data suffice)."""
    notes = list(inputs.notes)
    gaps = inputs.cycle_gaps_s[inputs.cycle_gaps_s > 0]
    if gaps.size >= max(min_samples_to_resample, 100):
        # Rescale so the mean is the measured running time per part (the first part of a spell included).
        cycle: Distribution = Resampled(gaps * (inputs.cycle_mean_s / gaps.mean()))
    else:
        cv = inputs.cycle_cv if inputs.cycle_cv is not None else 0.0
        cycle = GammaFit(inputs.cycle_mean_s, cv)
    breakdowns = _stop_model(inputs.breakdowns, min_samples_to_resample)
    micro = _stop_model(inputs.micro_stops, min_samples_to_resample)
    if breakdowns is None:
        notes.append(f"no breakdown in {inputs.running_s / 3600:.0f} running hours: none modelled")
    return StationModel(inputs.machine, cycle, breakdowns, micro, min(inputs.scrap_rate, 0.5), tuple(notes))


# --- work draws ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkSet:
    """Work per part for every station, replication and variant block, ready for the line engine.

    ``work[k, i, b * reps + r]`` is the work of part k at station i in replication r of block b. Block
    0 is the line as measured; a variant (a set of improvements) reads block 0 except at the stations it
    changes, where it reads its own block. Variants that change different stations share a block.
    """

    work: np.ndarray  # (parts, stations, blocks * reps)
    reps: int
    variant_block: tuple[int, ...]  # block of each variant (variant 0 is the measured line: block 0)
    variant_stations: tuple[frozenset[int], ...]
    takt_s: float
    warmup: int = 0  # leading parts (groups) left out of every figure

    @property
    def parts(self) -> int:
        return int(self.work.shape[0])

    @property
    def stations(self) -> int:
        return int(self.work.shape[1])

    def sources(self, variant: int) -> np.ndarray:
        """(stations, reps) work column each station reads in each replication for a variant."""
        src = np.tile(np.arange(self.reps), (self.stations, 1))
        for i in self.variant_stations[variant]:
            src[i] += self.variant_block[variant] * self.reps
        return src


def _stream(rng_seq: np.random.SeedSequence, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in rng_seq.spawn(n)]


def _stop_extra(model: StopModel, bases: Sequence[np.ndarray], rng_up: np.random.Generator,
                rng_down: np.random.Generator, factors: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    """Stop time folded into each part, per (running work, (rate factor, duration factor)), same draws."""
    reps = bases[0].shape[1]
    need = np.max([b.sum(axis=0) * f for b, (f, _) in zip(bases, factors, strict=True)], axis=0)
    n = int(float(need.max()) / max(model.mean_up_s, 1e-9) * 1.3) + 32
    up = model.up.sample(rng_up, n * reps).reshape(n, reps)
    down = model.down.sample(rng_down, n * reps).reshape(n, reps)
    while np.any(up.sum(axis=0) < need):
        up = np.concatenate([up, model.up.sample(rng_up, n * reps).reshape(n, reps)])
        down = np.concatenate([down, model.down.sample(rng_down, n * reps).reshape(n, reps)])
    out = []
    for base, (rate_factor, duration_factor) in zip(bases, factors, strict=True):
        if rate_factor <= 0 or duration_factor <= 0:
            out.append(np.zeros_like(base))
        else:
            out.append(fold_stops(base, up / rate_factor, down * duration_factor))
    return out


def draw_work(
    stations: Sequence[StationModel],
    takt_s: float | None,
    parts: int,
    reps: int,
    seed: int | np.random.SeedSequence,
    variants: Sequence[Mapping[str, Improvement]] = (),
    group: int = 1,
    warmup: int = 0,
) -> WorkSet:
    """Draw the work of ``parts`` parts for every station (plus a customer pulling one part per takt when
    ``takt_s`` is given), ``reps`` replications, the measured line and each variant.

    ``group`` > 1 simulates parts in groups of that many (a short takt would otherwise need a very long
    recursion for the same hours of production): a group's work is the sum of its parts' cycles plus the
    stops that fall into it, the customer takes a group per ``group`` takts, buffers count groups.

    Every random stream belongs to one (station, purpose) pair, so the measured line and any variant of
    it see the same cycles and the same stop instants (common random numbers), and the same seed gives
    the same numbers.
    """
    if parts < 3 or reps < 1 or group < 1:
        raise ValueError("need at least two parts, one replication and groups of at least one part")
    index = {s.machine: i for i, s in enumerate(stations)}
    for v in variants:
        unknown = [m for m in v if m not in index]
        if unknown:
            raise KeyError(f"machine {unknown[0]!r} is not on this line")
    # Pack variants into blocks: a block can hold variants that change different stations.
    blocks: list[set[int]] = []
    variant_block = [0]
    variant_stations: list[frozenset[int]] = [frozenset()]
    for v in variants:
        changed = frozenset(index[m] for m in v)
        for b, used in enumerate(blocks):
            if not used & changed:
                used |= changed
                variant_block.append(b + 1)
                break
        else:
            blocks.append(set(changed))
            variant_block.append(len(blocks))
        variant_stations.append(changed)
    n_blocks = 1 + len(blocks)
    n_st = len(stations) + (1 if takt_s else 0)
    work = np.empty((parts, n_st, n_blocks * reps))
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    per_station = seq.spawn(len(stations))
    for i, st in enumerate(stations):
        rng_cycle, rng_scrap, rng_bu, rng_bd, rng_mu, rng_md = _stream(per_station[i], 6)
        cycles = st.cycle.sample(rng_cycle, parts * group * reps).reshape(parts, group, reps)
        if st.scrap_rate > 0:
            attempts = rng_scrap.geometric(1.0 - st.scrap_rate, cycles.size).reshape(cycles.shape)
            cycles = cycles * attempts
        base_cycles = cycles.sum(axis=1) if group > 1 else cycles[:, 0, :]
        # Every improvement of this station, the measured line first.
        improvements: list[Improvement] = [Improvement(st.machine)]
        targets: list[tuple[int, int]] = [(0, -1)]  # (block, variant) per improvement
        for vi, v in enumerate(variants):
            if st.machine in v:
                improvements.append(v[st.machine])
                targets.append((variant_block[vi + 1], vi + 1))
        bases = [base_cycles * imp.cycle_factor for imp in improvements]
        extras = [np.zeros_like(base_cycles) for _ in improvements]
        for model, rng_u, rng_d, key in ((st.breakdowns, rng_bu, rng_bd, "breakdowns"),
                                         (st.micro_stops, rng_mu, rng_md, "micro")):
            if model is None:
                continue
            # The same stop instants on the running clock for every improvement (common random numbers).
            if key == "breakdowns":
                factors = [(imp.failure_rate_factor, imp.mttr_factor) for imp in improvements]
            else:
                factors = [(imp.micro_stop_rate_factor, 1.0) for imp in improvements]
            for j, extra in enumerate(_stop_extra(model, bases, rng_u, rng_d, factors)):
                extras[j] += extra
        for j, (block, _variant) in enumerate(targets):
            work[:, i, block * reps:(block + 1) * reps] = bases[j] + extras[j]
        for b in range(1, n_blocks):
            if not any(t[0] == b for t in targets[1:]):
                work[:, i, b * reps:(b + 1) * reps] = work[:, i, :reps]
    if takt_s:
        work[:, -1, :] = takt_s * group
    return WorkSet(work, reps, tuple(variant_block), tuple(variant_stations), float(takt_s or 0.0) * group,
                   min(max(int(warmup), 0), parts - 2))
