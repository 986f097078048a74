"""The board in headless Chromium (Debian's, driven by Playwright) against a running service fed by the
simulator's OPC UA server through the real OPC UA collector: a tile changes colour when its machine
stops, and a reason entered in the downtime form shows in the Pareto. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
import uvicorn

from andon.events import MachineState, StateChange
from andon.plant import Calendar, load_plant_model
from andon.settings import Settings
from andon.storage import db, keys, plant_sync
from andon.storage.writer import EventWriter
from api.app import create_app
from collector.opcua import DiscoveryConfig, OpcUaSource, OpcUaSourceConfig
from collector.runtime import Delivery, run
from collector.spool import Spool
from simulator.frontends.opcua_server import SimOpcUaServer

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MACHINES = [f"L1-M{i}" for i in range(1, 7)]

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plant:
    """The API server, the simulator's OPC UA server for the demo line and the OPC UA collector, each on
    its own thread and event loop, all on loopback."""

    def __init__(self, db_url: str, tmp: Path) -> None:
        self.db_url = db_url
        self.port = _free_port()
        app = create_app(Settings(database_url=db_url), refresh_interval_s=2, score_risk=False)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.api_thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop = asyncio.new_event_loop()
        self.sim = SimOpcUaServer(MACHINES, cert_dir=tmp / "certs")
        self.stop_event: asyncio.Event | None = None
        self.pool = db.make_pool(db_url, 1, 2)
        self.delivery = Delivery(EventWriter(self.pool), Spool(tmp / "spool"), self.pool)
        self.collector_thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.api_thread.start()
        self.collector_thread.start()
        self.call(self.sim.start())
        for m in MACHINES:
            self.call(self.sim.set_state(m, 6))  # everything running
        source = OpcUaSource(OpcUaSourceConfig(id="board-opcua", url=self.sim.url, publishing_interval_ms=100,
                                               discover=DiscoveryConfig(), heartbeat_timeout_s=30),
                             known_machines=MACHINES)

        async def go() -> None:
            self.stop_event = asyncio.Event()
            await run([source], self.delivery, self.stop_event)

        self.collector_task = asyncio.run_coroutine_threadsafe(go(), self.loop)
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "API did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.collector_task.result(30)
        self.call(self.sim.stop())
        self.server.should_exit = True
        self.api_thread.join(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.collector_thread.join(10)
        self.pool.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def plant(fresh_db_url, tmp_path):
    # The demo plant, scheduled around the clock, so the test does not depend on the weekday it runs on.
    model = load_plant_model(REPO / "config" / "plant.yaml")
    site = model.sites[0].model_copy(update={"calendar": Calendar()})
    with psycopg.connect(fresh_db_url) as conn:
        plant_sync.sync_plant_model(conn, model.model_copy(update={"sites": [site]}), "test", force=True)
        conn.commit()
    p = Plant(fresh_db_url, tmp_path)
    p.start()
    yield p
    p.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _key(db_url: str, role: str) -> str:
    with psycopg.connect(db_url) as conn:
        _, token = keys.create_key(conn, f"browser-{role}", role)
        conn.commit()
    return token


def _rgb(page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).backgroundColor")


def test_tile_turns_red_when_the_machine_stops(plant: Plant, browser):
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(f"{plant.base}/board#key={_key(plant.db_url, 'viewer')}")
    tile = "#tile-L1-M3"
    page.wait_for_selector(f'{tile}[data-state="running"]', timeout=30_000)
    page.wait_for_timeout(600)  # past the colour transition
    running_colour = _rgb(page, tile)
    page.screenshot(path=str(SHOTS / "board-running.png"))
    # The simulated PLC aborts with stop reason 301 (a tool break in L1-M3's fault map, "3*").
    plant.call(plant.sim.set_state("L1-M3", 9, stop_reason_id=301))
    page.wait_for_selector(f'{tile}[data-state="unplanned_stop"]', timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('#tile-L1-M3 .reason').textContent.includes('Tool break')", timeout=10_000)
    # The tile fades to its new colour (a CSS transition): wait for the end of it.
    page.wait_for_function(
        "() => { const c = getComputedStyle(document.querySelector('#tile-L1-M3')).backgroundColor;"
        " const [r, g, b] = c.match(/\\d+/g).map(Number); return r > 150 && g < 90 && b < 90; }",
        timeout=10_000)
    down_colour = _rgb(page, tile)
    page.screenshot(path=str(SHOTS / "board-machine-down.png"))
    assert down_colour != running_colour
    r, g, b = (int(x) for x in down_colour[down_colour.index("(") + 1: down_colour.index(")")].split(",")[:3])
    assert r > 150 and g < 90 and b < 90, down_colour  # red
    assert page.text_content(f"{tile} .state").strip().lower() == "down"
    # Other tiles are untouched.
    assert page.get_attribute("#tile-L1-M1", "data-state") == "running"


def test_reason_entered_in_the_form_shows_in_the_pareto(plant: Plant, browser):
    # A 10-minute unplanned stop of L1-M5 without a reason, an hour ago (inside the last 24 h window).
    t = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    EventWriter(plant.pool).write([
        StateChange("L1-M5", t - dt.timedelta(minutes=5), MachineState.RUNNING, "history"),
        StateChange("L1-M5", t, MachineState.UNPLANNED_STOP, "history"),
        StateChange("L1-M5", t + dt.timedelta(minutes=10), MachineState.RUNNING, "history"),
    ])
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{plant.base}/downtime#key={_key(plant.db_url, 'maintainer')}")
    row = page.wait_for_selector("#unassigned tbody tr[data-stop]", timeout=30_000)
    assert "L1-M5" in row.inner_text()
    page.screenshot(path=str(SHOTS / "downtime-before.png"), full_page=True)
    row.query_selector("select.reason").select_option("material-missing")
    row.query_selector("input.comment").fill("no housings from the casting line")
    row.query_selector("button.save").click()
    page.wait_for_function(
        "() => JSON.parse(document.getElementById('pareto').dataset.keys || '[]').includes('material-missing')",
        timeout=20_000)
    page.wait_for_function(
        "() => !document.querySelector('#unassigned tbody tr[data-stop]')", timeout=20_000)
    page.screenshot(path=str(SHOTS / "downtime-after.png"), full_page=True)
    bars = page.eval_on_selector("#pareto", "el => el.data[0].x")
    assert "material-missing" in bars
