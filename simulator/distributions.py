"""Random durations for the line simulator: pydantic specs that sample numpy arrays, in seconds.

A spec is written in a config file as a mapping with a ``dist`` key, for example
``{dist: weibull, shape: 1.3, scale: 40, unit: h}`` or ``{dist: empirical, values: [310, 95, 1210]}``.
Every spec's ``sample(rng, n)`` returns ``n`` durations in seconds as a float64 array, so the engines
draw whole blocks at once instead of one value per Python call.

Anything with the same ``sample(rng, n)`` method (see ``Sampler``) can be passed to the engines, which
is how the JIT what-if analysis plugs in empirical arrays or distributions fitted elsewhere.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
Unit = Literal["s", "min", "h", "d"]


@runtime_checkable
class Sampler(Protocol):
    """Anything that draws ``n`` non-negative durations (seconds) from a numpy Generator."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    unit: Unit = "s"

    @property
    def _scale_s(self) -> float:
        return UNIT_SECONDS[self.unit]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean_s(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class Constant(_Spec):
    dist: Literal["constant"] = "constant"
    value: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value * self._scale_s)

    def mean_s(self) -> float:
        return self.value * self._scale_s


class Exponential(_Spec):
    dist: Literal["exponential"] = "exponential"
    mean: float = Field(gt=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean * self._scale_s, n)

    def mean_s(self) -> float:
        return self.mean * self._scale_s


class Weibull(_Spec):
    dist: Literal["weibull"] = "weibull"
    shape: float = Field(gt=0)  # beta
    scale: float = Field(gt=0)  # eta (not the mean unless shape == 1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.scale * self._scale_s * rng.weibull(self.shape, n)

    def mean_s(self) -> float:
        return self.scale * self._scale_s * math.gamma(1.0 + 1.0 / self.shape)


class Lognormal(_Spec):
    """Lognormal given by its median and the standard deviation of log(x) (sigma)."""

    dist: Literal["lognormal"] = "lognormal"
    median: float = Field(gt=0)
    sigma: float = Field(gt=0, le=5)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median * self._scale_s), self.sigma, n)

    def mean_s(self) -> float:
        return self.median * self._scale_s * math.exp(self.sigma**2 / 2)


class Gamma(_Spec):
    dist: Literal["gamma"] = "gamma"
    shape: float = Field(gt=0)
    scale: float = Field(gt=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.shape, self.scale * self._scale_s, n)

    def mean_s(self) -> float:
        return self.shape * self.scale * self._scale_s


class Uniform(_Spec):
    dist: Literal["uniform"] = "uniform"
    low: float = Field(ge=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low * self._scale_s, self.high * self._scale_s, n)

    def mean_s(self) -> float:
        return (self.low + self.high) / 2 * self._scale_s


class Geometric(_Spec):
    """Whole number of slots of ``slot`` length, P(k) = (1-p)^(k-1) p, k >= 1 (slotted-time machines)."""

    dist: Literal["geometric"] = "geometric"
    p: float = Field(gt=0, le=1)
    slot: float = Field(default=1.0, gt=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.geometric(self.p, n).astype(np.float64) * (self.slot * self._scale_s)

    def mean_s(self) -> float:
        return self.slot * self._scale_s / self.p


class Empirical(_Spec):
    """Resampled with replacement from observed values (for example TBF/TTR taken from an event log)."""

    dist: Literal["empirical"] = "empirical"
    values: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        arr = np.asarray(self.values, dtype=np.float64) * self._scale_s
        return arr[rng.integers(0, arr.size, n)]

    def mean_s(self) -> float:
        return float(np.mean(self.values)) * self._scale_s


DurationSpec = Annotated[
    Constant | Exponential | Weibull | Lognormal | Gamma | Uniform | Geometric | Empirical,
    Field(discriminator="dist"),
]


class EmpiricalSampler:
    """Resampling from a numpy array without going through pydantic (large arrays, what-if analysis)."""

    def __init__(self, values_s: np.ndarray | list[float]) -> None:
        self.values = np.asarray(values_s, dtype=np.float64)
        if self.values.ndim != 1 or self.values.size == 0:
            raise ValueError("need a non-empty 1-d array of durations")
        if np.any(self.values < 0) or not np.all(np.isfinite(self.values)):
            raise ValueError("durations must be finite and >= 0")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.values[rng.integers(0, self.values.size, n)]

    def mean_s(self) -> float:
        return float(self.values.mean())


class ConstantSampler:
    def __init__(self, value_s: float) -> None:
        if not value_s >= 0:
            raise ValueError("duration must be >= 0")
        self.value = float(value_s)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def mean_s(self) -> float:
        return self.value


def as_sampler(value: float | Sampler | np.ndarray | list[float]) -> Sampler:
    """A number is a constant duration, an array is resampled, a sampler is used as it is."""
    if isinstance(value, int | float):
        return ConstantSampler(float(value))
    if isinstance(value, np.ndarray | list):
        return EmpiricalSampler(value)
    if isinstance(value, Sampler):
        return value
    raise TypeError(f"cannot draw durations from {type(value).__name__}")


class BlockDraws:
    """Serves scalars from numpy blocks: the scalar event loop must not call the Generator per value."""

    __slots__ = ("_block", "_buf", "_i", "_rng", "_sampler")

    def __init__(self, sampler: Sampler, rng: np.random.Generator, block: int = 2048) -> None:
        self._sampler = sampler
        self._rng = rng
        self._block = block
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._sampler.sample(self._rng, self._block).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v


class UniformDraws:
    """Uniform(0, 1) scalars served from numpy blocks."""

    __slots__ = ("_buf", "_i", "_rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(4096).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v
