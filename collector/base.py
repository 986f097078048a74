"""The one interface every protocol source implements, in the spirit of Telegraf's input plugins.

A source turns what it receives into canonical events (andon.events) and yields them in batches. The
consumer (the collector runtime) resumes the iterator only once the yielded batch is durable: written to
the database or spooled to disk. A source therefore acknowledges upstream (MQTT PUBACK, OPC UA sequence)
only after its ``yield`` returns, so a collector killed at any moment loses nothing it acknowledged.

Pipelining (optional, both sides opt in): a source may yield a ``Batch`` (a list with an acknowledgement
attached). A consumer that wants to work on the next batch while this one is being written calls
``batch.defer()`` before resuming the iterator: it then owns the acknowledgement and must call the
returned function once the batch is durable (and never otherwise), in the order the batches were
yielded. If the consumer does not call ``defer()``, resuming the iterator means "durable" exactly as
above and the source acknowledges on resumption. Either way nothing is acknowledged before it is durable.

Input that cannot become an event is yielded as a ``Rejection`` in the same batch: it is counted and
kept in the dead-letter table, never raised.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from andon.events import Event


@dataclass(slots=True)
class Rejection:
    source_id: str
    reason: str
    payload: bytes | str | None = None
    topic: str | None = None  # MQTT topic, OPC UA node id, HTTP path ...
    received_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


Item = Event | Rejection


class Batch(list[Item]):
    """A yielded batch whose upstream acknowledgement the consumer may take over (see the module doc)."""

    __slots__ = ("_ack", "_deferred")

    def __init__(self, items: Iterable[Item] = (), ack: Callable[[], None] | None = None) -> None:
        super().__init__(items)
        self._ack = ack
        self._deferred = False

    def defer(self) -> Callable[[], None]:
        """Consumer side: take over the acknowledgement. Call the result once the batch is durable."""
        self._deferred = True
        ack = self._ack
        return ack if ack is not None else _nothing

    @property
    def deferred(self) -> bool:
        """Source side, after the ``yield`` returned: True if the consumer acknowledges (not the source)."""
        return self._deferred


def _nothing() -> None:
    return None


@dataclass
class SourceReport:
    """What `andon collect --check` prints for one source."""

    source_id: str
    ok: bool
    detail: str
    machines: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    """One configured input. Subclasses live one per protocol module."""

    source_id: str

    @abc.abstractmethod
    def events(self) -> AsyncIterator[list[Item]]:
        """Yield batches of canonical events and rejections until cancelled; reconnect internally."""

    @abc.abstractmethod
    async def check(self) -> SourceReport:
        """Connect once, report what was found (machines, nodes, topics), disconnect."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once when the collector stops."""
