"""Service settings, read from the environment (prefix ``ADVISOR_``) and an optional ``.env``."""

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AuthMode = Literal["auto", "required", "off"]
# A device as jobs and workers name it (a regular expression).
DEVICE = r"(auto|cpu|cuda(:\d+)?)"
WorkerMode = Literal["embedded", "off"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADVISOR_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'advisor.db'}",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... at scale.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    auth: AuthMode = Field(
        default="auto",
        description="auto: required unless bound to loopback; off is refused off loopback.",
    )
    default_project: str = "default"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_epochs: int = Field(default=10_000, ge=1)
    worker: WorkerMode = Field(
        default="embedded", description="embedded: one worker thread in the API process; off."
    )
    worker_device: str = Field(
        default="auto",
        pattern=rf"^{DEVICE}(,{DEVICE})*$",
        description="auto, cpu, cuda or cuda:N; several, comma-separated (cuda:0,cuda:1), to "
        "also take jobs that spread one retrain over several devices (gpus: N).",
    )
    worker_lease_s: float = Field(default=30.0, gt=0)
    worker_poll_s: float = Field(default=1.0, gt=0)
    worker_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch threads per worker (default: torch's own, one per core). On a "
        "machine shared with other trainings, 1: threads spinning for cores that other "
        "processes hold made small trainings up to 40x slower here.",
    )
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders the datasets read from files (image_folder, image_csv, "
        "segmentation_folder) may live in.",
    )
    # The three below are read by the loader (app.training.data) from the environment, in the
    # worker's process; they are declared here so that they are validated and documented.
    data_cache_mb: float = Field(
        default=512,
        ge=0,
        description="Decoded images (uint8, at the recipe's size) are kept in memory up to this "
        "many MB a dataset; a larger dataset is resized once into an on-disk cache.",
    )
    data_cache_dir: Path | None = Field(
        default=None,
        description="Where the on-disk cache of resized images goes (default: the system's "
        "temporary folder, advisor-data-cache).",
    )
    data_workers: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="DataLoader worker processes decoding images (default: the cores, at most 4).",
    )
    shared_evidence: bool = Field(
        default=False,
        description="The ladder counts verifications of similar runs in every project, not only "
        "the run's own.",
    )
    metrics_token: str | None = Field(
        default=None,
        description="A bearer token that opens /metrics, and nothing else, with every "
        "project's figures. When auth is required, a project's token opens it too, with that "
        "project's figures only; while auth is off, it is open to all.",
    )
    worker_token: str | None = Field(
        default=None,
        description="A bearer token that lets a worker of the fleet claim, heartbeat and hand in "
        "any project's trials over the worker API (a project's token limits a worker to that "
        "project's). While auth is off and this is unset, the worker API is open, like the rest.",
    )
    sqlite_busy_timeout_ms: int = 5000
    log_level: str = "info"

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> "Settings":
        if self.auth == "off" and not is_loopback(self.host):
            raise ValueError(
                f"ADVISOR_AUTH=off is refused when binding to {self.host}: auth is required "
                "whenever the server is reachable from other machines"
            )
        return self

    @property
    def auth_required(self) -> bool:
        if self.auth == "auto":
            return not is_loopback(self.host)
        return self.auth == "required"

    @property
    def worker_devices(self) -> tuple[str, ...]:
        return tuple(self.worker_device.split(","))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
