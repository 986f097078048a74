"""`andon demo`: the database, a viewer key, the simulated line feeding Andon, the API and the board.

Parts of the demo that are not installed in this build are skipped with a note; the command always
brings up the database and the API and prints where to look.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time

from andon.settings import get_settings
from andon.storage import db, keys


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(args: argparse.Namespace) -> int:
    from andon.cli import main as andon_main

    settings = get_settings()
    if andon_main(["db", "upgrade"]) != 0:
        return 1
    with db.connect(settings.database_url) as conn:
        _, token = keys.create_key(conn, f"demo viewer {time.strftime('%Y-%m-%d %H:%M')}", "viewer")
        conn.commit()
    children: list[subprocess.Popen] = []
    if _has_serving_simulator():
        children.append(subprocess.Popen([sys.executable, "-m", "andon.cli", "simulate", "--serve", "both",
                                          "--speed", str(args.speed)]))
    else:
        print("demo: the simulator's OPC UA/MQTT front-ends are not in this build yet; the board shows no live data")
    if _have("collector.runtime"):
        children.append(subprocess.Popen([sys.executable, "-m", "andon.cli", "collect"]))
    port = args.port or settings.api_port
    base = f"http://{settings.api_host}:{port}"
    print("\n" + "=" * 72)
    print(f"Andon is starting at {base}/")
    print(f"  board:    {base}/board?key={token}")
    print(f"  API docs: {base}/docs")
    print(f"  viewer key: {token}")
    print("=" * 72 + "\n", flush=True)
    try:
        import uvicorn

        uvicorn.run("api.app:create_app", factory=True, host=settings.api_host, port=port, log_level="warning")
    finally:
        for c in children:
            c.terminate()
        for c in children:
            try:
                c.wait(timeout=10)
            except subprocess.TimeoutExpired:
                c.kill()
    return 0


def _has_serving_simulator() -> bool:
    return _have("simulator.serve")
