"""Process settings (pydantic-settings): environment variables ANDON_*, or a .env file.

Together with the plant model file this is the one source of truth for configuration: what the plant
looks like lives in the plant model; where the services are and how this process behaves lives here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANDON_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/andon", description="PostgreSQL/TimescaleDB URL"
    )
    database_read_url: str | None = Field(
        default=None, description="optional streaming replica for the API's reads (writes go to database_url)"
    )
    plant_file: Path = Field(default=REPO_ROOT / "config" / "plant.yaml", description="plant model file")
    sources_file: Path = Field(default=REPO_ROOT / "config" / "sources.yaml", description="collector sources")
    api_host: str = Field(default="127.0.0.1", description="bind address; loopback unless told otherwise")
    api_port: int = Field(default=8080, ge=1, le=65535)
    ingest_rate_per_s: float = Field(default=20.0, gt=0, description="HTTP ingest requests per second per key")
    ingest_burst: float = Field(default=40.0, ge=1, description="HTTP ingest burst per key")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    spool_dir: Path = Field(default=Path("/var/tmp/andon-spool"), description="store-and-forward spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    writer_batch_size: int = Field(default=5000, ge=1, le=100_000)
    writer_flush_interval_s: float = Field(default=0.5, gt=0, le=60)
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=8, ge=1)
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
