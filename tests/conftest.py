"""Shared fixtures: a real TimescaleDB database created for the test session (dropped at the end)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from andon.plant import PlantModel, load_plant_model
from andon.storage import db, plant_sync
from tests.brokers import OwnBroker

REPO = Path(__file__).resolve().parent.parent
BASE_URL = os.environ.get("ANDON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _fresh_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return make_conninfo(BASE_URL, dbname=name)


def _drop_database(url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def demo_plant() -> PlantModel:
    return load_plant_model(REPO / "config" / "plant.yaml")


@pytest.fixture(scope="session")
def db_url(demo_plant: PlantModel) -> Iterator[str]:
    """A migrated database with the demo plant model, shared by the session's tests."""
    url = _fresh_database("andon_test")
    db.upgrade(url, create_db=False)
    with psycopg.connect(url) as conn:
        plant_sync.sync_plant_model(conn, demo_plant, "file:config/plant.yaml")
        conn.commit()
    yield url
    _drop_database(url)


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A brand-new empty database (no extension, no schema) for migration tests."""
    url = _fresh_database("andon_empty")
    yield url
    _drop_database(url)


@pytest.fixture
def fresh_db_url(demo_plant: PlantModel) -> Iterator[str]:
    """A migrated database of its own, for tests that need exact contents."""
    url = _fresh_database("andon_t")
    db.upgrade(url, create_db=False)
    with psycopg.connect(url) as conn:
        plant_sync.sync_plant_model(conn, demo_plant, "file:config/plant.yaml")
        conn.commit()
    yield url
    _drop_database(url)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    if shutil.which("mosquitto") is None:
        pytest.fail("the mosquitto binary is needed for the broker-restart test")
    broker = OwnBroker(tmp_path)
    broker.start()
    yield broker
    broker.stop()
