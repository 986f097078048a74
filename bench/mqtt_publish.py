#!/usr/bin/env python3
"""Publisher process for bench/mqtt.py: every line of each file as one QoS 1 MQTT message on the file's
topic, then wait for the broker's acknowledgements. Imports only paho, so it starts in a blink.

    python bench/mqtt_publish.py PORT TOPIC=FILE [TOPIC=FILE ...]
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

TIMEOUT_S = 300.0


def publish_files(port: int, pairs: list[tuple[str, Path]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    try:
        for topic, path in pairs:
            lines = [line for line in path.read_bytes().split(b"\n") if line]
            # This thread runs the network loop itself (no loop_start): no hand-over between threads.
            infos = [client.publish(topic, line, qos=1) for line in lines]
            deadline = time.monotonic() + TIMEOUT_S
            while not all(info.is_published() for info in infos):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path}: not acknowledged in {TIMEOUT_S:g} s")
                client.loop(timeout=0.05)
    finally:
        client.disconnect()


def main() -> int:
    port = int(sys.argv[1])
    pairs = [(arg.split("=", 1)[0], Path(arg.split("=", 1)[1])) for arg in sys.argv[2:]]
    publish_files(port, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
