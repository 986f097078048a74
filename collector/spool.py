"""Store-and-forward: a bounded, durable, ordered on-disk queue of event batches.

When the database is unreachable (or older batches are still waiting), batches are appended here and
fsync'ed before the source is allowed to acknowledge upstream; the drain writes them in order once the
database is back and only then moves the committed offset forward. A crash between the write and the
offset update replays a batch, which the idempotent writer stores once.

Layout: ``<dir>/NNNNNNNNNN.seg`` segment files of records ``[u32 length][u32 crc32][json]`` and
``<dir>/offset`` holding ``segment position`` of the first record not yet written to the database.
A torn record at the end of the last segment (power cut mid-append) is ignored and truncated.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

from andon.events import Event, event_from_dict, event_to_dict

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<II")
SEGMENT_BYTES = 64 << 20


class SpoolFull(RuntimeError):
    pass


class Spool:
    def __init__(self, directory: Path | str, max_bytes: int = 1 << 30, warn_fraction: float = 0.8) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.warn_fraction = warn_fraction
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._warned = False
        self._seg, self._pos = self._read_offset()
        self._recover_tail()
        self._write_seg = max([self._seg, *self._segments()])
        self._fh = open(self._seg_path(self._write_seg), "ab")  # noqa: SIM115 - kept open for appends

    # --- files ---------------------------------------------------------------------------------------
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"{n:010d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _read_offset(self) -> tuple[int, int]:
        try:
            seg, pos = (self.dir / "offset").read_text().split()
            return int(seg), int(pos)
        except (FileNotFoundError, ValueError):
            segs = self._segments()
            return (segs[0] if segs else 1), 0

    def _write_offset(self) -> None:
        tmp = self.dir / "offset.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self._seg} {self._pos}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "offset")

    def _recover_tail(self) -> None:
        segs = self._segments()
        if not segs:
            return
        last = self._seg_path(segs[-1])
        good = 0
        with open(last, "rb") as f:
            data = f.read()
        while good + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, good)
            end = good + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[good + _HEADER.size:end]) != crc:
                break
            good = end
        if good < len(data):
            log.warning("spool: dropping a torn record at the end of %s (%d bytes)", last, len(data) - good)
            with open(last, "r+b") as f:
                f.truncate(good)

    # --- queue ---------------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        total = 0
        for n in self._segments():
            if n < self._seg:
                continue
            size = self._seg_path(n).stat().st_size
            total += size - (self._pos if n == self._seg else 0)
        return total

    def empty(self) -> bool:
        with self._lock:
            return self.size_bytes() == 0

    def append(self, events: list[Event]) -> None:
        """Durably append one batch (fsync before returning)."""
        payload = json.dumps([event_to_dict(e) for e in events], separators=(",", ":")).encode()
        with self._lock:
            size = self.size_bytes()
            if size + len(payload) > self.max_bytes:
                raise SpoolFull(f"spool {self.dir} is full ({size} of {self.max_bytes} bytes)")
            if size > self.warn_fraction * self.max_bytes and not self._warned:
                log.warning("spool %s is %.0f%% full; the database has been unreachable for a while",
                            self.dir, 100 * size / self.max_bytes)
                self._warned = True
            if self._fh.tell() > SEGMENT_BYTES:
                self._fh.close()
                self._write_seg += 1
                self._fh = open(self._seg_path(self._write_seg), "ab")  # noqa: SIM115
            self._fh.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._not_empty.notify_all()

    def peek(self) -> list[Event] | None:
        """The oldest batch not yet committed, or None."""
        with self._lock:
            while True:
                path = self._seg_path(self._seg)
                if path.exists():
                    with open(path, "rb") as f:
                        f.seek(self._pos)
                        head = f.read(_HEADER.size)
                        if len(head) == _HEADER.size:
                            length, crc = _HEADER.unpack(head)
                            payload = f.read(length)
                            if len(payload) == length and zlib.crc32(payload) == crc:
                                self._peeked = self._pos + _HEADER.size + length
                                return [event_from_dict(d) for d in json.loads(payload)]
                if self._seg < self._write_seg:
                    # Finished segment: move on and delete it.
                    path.unlink(missing_ok=True)
                    self._seg += 1
                    self._pos = 0
                    self._write_offset()
                    continue
                return None

    def commit(self) -> None:
        """The batch returned by the last peek() is in the database."""
        with self._lock:
            self._pos = self._peeked
            self._write_offset()
            if self.size_bytes() < self.warn_fraction * self.max_bytes:
                self._warned = False

    def wait(self, timeout: float) -> None:
        with self._not_empty:
            self._not_empty.wait(timeout)

    def close(self) -> None:
        with self._lock:
            self._fh.close()
