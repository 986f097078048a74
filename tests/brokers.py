"""A Mosquitto broker of the test's own (free loopback port, persistence on) that can be stopped and
restarted without disturbing the shared broker other tests use."""

from __future__ import annotations

import getpass
import signal
import socket
import subprocess
import time
from pathlib import Path


def broker_up(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class OwnBroker:
    """A mosquitto of our own on a free loopback port, with persistence, that can be restarted."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            # Started as root, mosquitto would switch to the "mosquitto" user, which cannot write the
            # persistence file here: stay the current user so sessions survive the restart.
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nautosave_interval 1\nmax_inflight_messages 100\n"
            # Keep every QoS 1 message for a disconnected persistent session (the default drops past 1000).
            "max_queued_messages 1000000\nmax_queued_bytes 0\n"
            f"log_dest file {workdir}/mosquitto.log\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not broker_up(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean restart: the broker saves its sessions
            self.proc.wait(10)
        self.proc = None
