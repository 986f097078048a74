"""A throwaway PostgreSQL cluster of its own (initdb in a temp dir, own port) for tests that stop and
start the database server, so the shared server of the test session is never disturbed."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempCluster:
    def __init__(self, preload_timescaledb: bool = True) -> None:
        self.bindir = sorted(Path("/usr/lib/postgresql").iterdir())[-1] / "bin"
        self.tmp = Path(tempfile.mkdtemp(prefix="andon-pg-"))
        self.port = free_port()
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.tmp, "postgres")
        self._sh(f"{self.bindir}/initdb -D {self.tmp}/data -A trust -U postgres >/dev/null")
        if preload_timescaledb:
            with open(self.tmp / "data" / "postgresql.conf", "a") as f:
                f.write("shared_preload_libraries = 'timescaledb'\n")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _sh(self, cmd: str) -> None:
        argv = ["su", "postgres", "-c", cmd] if self.root else ["bash", "-c", cmd]
        subprocess.run(argv, check=True)

    def start(self) -> None:
        self._sh(f"{self.bindir}/pg_ctl -D {self.tmp}/data -o '-p {self.port} -k {self.tmp} "
                 f"-c listen_addresses=127.0.0.1' -l {self.tmp}/log -w start >/dev/null")

    def stop(self, mode: str = "fast") -> None:
        self._sh(f"{self.bindir}/pg_ctl -D {self.tmp}/data -m {mode} -w stop >/dev/null")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.tmp, ignore_errors=True)
