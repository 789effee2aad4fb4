"""One typed Settings object read from TUNECOST_* variables; bad values fail at start."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from cryptography.fernet import Fernet
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

VAR_DIR = Path("var")
# Default decompressed-size cap, as a multiple of the upload limit: JSONL text compresses ~3-6x
# with gzip, so a real gzipped upload fits; past this a stream is treated as a gzip bomb.
GZIP_EXPANSION_ALLOWANCE = 8


class Settings(BaseSettings):
    """Everything the API, the worker and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="TUNECOST_", extra="ignore")

    database_url: str = Field(
        f"sqlite:///{VAR_DIR / 'tunecost.db'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    broker_url: str = Field(
        f"sqla+sqlite:///{VAR_DIR / 'broker.db'}",
        description="Celery broker: redis://host:6379/0, or kombu's SQLAlchemy transport",
    )
    storage_root: str = Field(
        str(VAR_DIR / "storage"), description="where datasets and artifacts live; any fsspec URL"
    )
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [VAR_DIR / "models"],
        description="comma-separated folders that local model paths must lie under",
    )
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, gt=0, le=1 << 40, description="largest dataset upload accepted"
    )
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="largest JSON request body accepted")
    # What one dataset may hold once decompressed: every line is parsed and counted, so these
    # bound the CPU and memory one upload costs (README "Security").
    max_dataset_bytes: int | None = Field(
        None,
        gt=0,
        le=1 << 42,
        description="largest decompressed dataset; unset: 8 x TUNECOST_MAX_UPLOAD_BYTES",
    )
    max_dataset_lines: int = Field(
        1_000_000, gt=0, le=1 << 32, description="most lines (records) in one dataset"
    )
    # Per-tenant quotas (app/auth/quotas.py, README "Quotas"): what one team (or teamless key)
    # may hold at once, so no tenant fills the storage, the queue or the delivery fan-out alone.
    quota_datasets: int = Field(1000, gt=0, le=1 << 31, description="datasets one tenant holds")
    quota_dataset_bytes: int = Field(
        100 * 1024**3,
        gt=0,
        le=1 << 60,
        description="bytes of stored datasets (as uploaded) one tenant holds",
    )
    quota_active_jobs: int = Field(
        200, gt=0, le=1 << 31, description="queued or running jobs of one tenant at once"
    )
    # GitHub's limit of webhooks on one event of a repository is 20 (docs.github.com,
    # "Creating webhooks"); each subscription multiplies every event's deliveries.
    quota_webhooks: int = Field(
        20, gt=0, le=10_000, description="webhook subscriptions one tenant holds"
    )
    bootstrap_admin_key: bool = Field(
        True, description="create and print an admin key at start when there are no keys"
    )
    worker_ping_timeout_s: float = Field(1.0, gt=0, le=30)
    heartbeat_interval_s: float = Field(5.0, gt=0, le=300)
    heartbeat_stale_s: float = Field(60.0, gt=0)
    visibility_timeout_s: int = Field(
        7 * 24 * 3600, gt=0, description="broker redelivery delay; longer than the longest run"
    )
    # CPU-heavy estimates (a model built on the meta device, the planner) run at most this many
    # at once; more wait in a bounded queue, and past it get 503 + Retry-After. The default, one
    # per two cores, leaves the other cores to the requests that only talk to the database.
    estimate_slots: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        gt=0,
        le=256,
        description="CPU-heavy estimates run at once",
    )
    estimate_queue: int = Field(64, ge=0, le=10_000, description="estimates waiting for a slot")
    estimate_wait_s: float = Field(20.0, gt=0, le=600, description="longest wait for a slot")
    # Streamed exports hold a database connection each while they run: at most this many at
    # once (well under the pool's 20), the rest wait briefly or get 503 + Retry-After.
    export_slots: int = Field(4, gt=0, le=64, description="streamed exports at once")
    export_queue: int = Field(16, ge=0, le=10_000, description="exports waiting for a slot")
    export_wait_s: float = Field(20.0, gt=0, le=600, description="longest wait for a slot")
    # A job queued this long while a worker of its GPU kind is alive may have lost its broker
    # message; the sweeper sends it again (the task is idempotent). Longer than a normal wait
    # behind a busy worker would make duplicates rarer, never wrong.
    queued_resend_s: float = Field(900.0, ge=10, description="re-send queued jobs after this")
    worker_cpu_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="threads of a training job on the CPU (default: OMP_NUM_THREADS when set, "
        "else all cores but one, left to the API and database)",
    )
    worker_gpu: str | None = Field(
        None, description="override the detected device kind of this worker (a catalog GPU id)"
    )
    # How many devices this worker hands out to jobs (README "Devices per worker"): it runs up
    # to that many jobs at once on disjoint device sets, and takes jobs of up to that many.
    worker_gpu_count: int | None = Field(
        None,
        ge=1,
        le=64,
        description="devices this worker runs jobs on; unset: every GPU NVML sees, or 1 on a "
        "CPU-only machine (where it sets how many logical CPU devices the worker has)",
    )
    # What the fleet can run (README "Runnable plans"): a plan needing more devices than one
    # job may have, or a GPU kind no worker serves, is shown but never recommended, and a job
    # for it is refused at submit.
    gpus_per_node: int = Field(
        8, ge=1, le=64, description="devices of the largest worker node (an HGX/DGX node has 8)"
    )
    max_nodes_per_job: int = Field(
        1, ge=1, le=64, description="nodes one job may span (1: a job runs on one worker node)"
    )
    fleet_gpus: Annotated[list[str], NoDecode] | None = Field(
        None, description="comma-separated catalog GPU ids the workers serve; unset: any"
    )
    # Jobs across nodes (README "Jobs across nodes"): where the other nodes reach this worker
    # when it hosts a job's rendezvous (node 0), and the ports it offers for that.
    worker_address: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="host name or IP the other nodes of a job reach this worker at; unset: "
        "the machine's host name",
    )
    worker_rendezvous_port: int | None = Field(
        None,
        ge=1024,
        le=65535,
        description="first TCP port of the rendezvous store this worker hosts for a job across "
        "nodes (it takes the first free one of as many as it has devices); unset: any free port",
    )
    worker_lock_dir: Path | None = Field(
        None,
        description="folder of the worker's device lock files (default: the system temp folder)",
    )
    # Cost provenance of the jobs this worker runs (README "Cost provenance").
    worker_cost_source: Literal["self_hosted", "cloud"] | None = Field(
        None,
        description="who pays for this worker's device time: `cloud` (a provider invoices it) "
        "or `self_hosted` (your own hardware); unset: self_hosted on CPU, cloud on a GPU",
    )
    worker_billing_provider: str | None = Field(
        None,
        pattern=r"^[a-z0-9_-]{1,64}$",
        description="cloud: the catalog provider id that invoices (default: the job's priced one)",
    )
    worker_region: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="region the worker runs in (default: the priced offer's region when cloud)",
    )
    internal_rate_usd_per_gpu_hour: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="self_hosted: internal cost of one device-hour (default: its energy at TDP)",
    )
    price_max_age_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="a price read longer ago than this warns in estimates and degrades health",
    )
    price_refresh_every_h: float | None = Field(
        None,
        gt=0,
        le=24 * 365,
        description="Celery beat re-imports every provider's price list this often; unset: off",
    )
    focus_billing_account_id: str = Field(
        "tunecost", min_length=1, max_length=200, description="FOCUS BillingAccountId"
    )
    focus_billing_account_name: str = Field(
        "tunecost fine-tuning", min_length=1, max_length=200, description="FOCUS BillingAccountName"
    )
    focus_self_hosted_name: str = Field(
        "Self-hosted",
        min_length=1,
        max_length=200,
        description="FOCUS ProviderName, PublisherName and InvoiceIssuerName of self-hosted runs",
    )

    # The FinOps loop (README "Budgets", "Webhooks", "Scheduled FOCUS delivery").
    webhook_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated Fernet keys that encrypt webhook signing secrets at rest; "
        "the first encrypts, all decrypt (rotation); unset: a key file under var/ (one machine)",
    )
    webhook_allow_private_targets: bool = Field(
        False,
        description="allow webhook URLs on loopback, private, link-local or reserved addresses "
        "(development and tests; never where the service can reach internal systems)",
    )
    webhook_allow_http: bool = Field(
        False, description="allow plain http:// webhook URLs (development and tests)"
    )
    webhook_retry_base_s: float = Field(
        30.0, gt=0, le=3600, description="wait before a failed delivery's 2nd attempt; doubles"
    )
    webhook_retry_max_s: float = Field(
        6 * 3600.0, gt=0, le=7 * 24 * 3600, description="longest wait between two attempts"
    )
    webhook_max_attempts: int = Field(
        12, ge=1, le=50, description="attempts of one delivery before it is marked failed"
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, description="one attempt's HTTP timeout")
    webhook_sweep_every_s: float = Field(
        60.0, gt=0, le=3600, description="beat re-sends deliveries whose message was lost"
    )
    focus_lines_every_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="celery beat writes the FOCUS CSV lines finished jobs lack (after an "
        "upgrade, a change of the focus_* settings, a bulk write) this often, up to a minute "
        "each time; until then an export computes them, more slowly",
    )
    focus_delivery_every_h: float | None = Field(
        24.0,
        gt=0,
        le=24 * 31,
        description="celery beat writes the FOCUS files of the current and previous billing "
        "periods (and any never delivered) this often; unset or empty: off",
    )
    focus_delivery_url: str | None = Field(
        None,
        description="where FOCUS files are delivered, any fsspec URL; default "
        "<storage root>/exports/focus",
    )

    @field_validator("webhook_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("webhook_keys")
    @classmethod
    def _fernet_keys(cls, value: list[str]) -> list[str]:
        for i, key in enumerate(value):
            try:
                Fernet(key.encode())
            except ValueError:
                raise ValueError(
                    f"key {i + 1} is not a Fernet key (32 bytes, url-safe base64: 44 characters)"
                ) from None
        return value

    @field_validator("focus_delivery_every_h", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p.strip()) for p in value.split(",") if p.strip()]
        return value

    @field_validator("fleet_gpus", mode="before")
    @classmethod
    def _split_gpus(cls, value: object) -> object:
        if isinstance(value, str):
            return [g.strip() for g in value.split(",") if g.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(
                "TUNECOST_DATABASE_URL must start with sqlite:///, postgresql:// "
                "or postgresql+psycopg://"
            )
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if not value.startswith(
            ("redis://", "rediss://", "sqla+sqlite:", "sqla+postgresql", "amqp://")
        ):
            raise ValueError(
                "TUNECOST_BROKER_URL must be redis://..., amqp://... or sqla+sqlite:///path"
            )
        return value

    @field_validator("storage_root")
    @classmethod
    def _storage_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("TUNECOST_STORAGE_ROOT must not be empty")
        return value.rstrip("/") or "/"

    @property
    def dataset_bytes_cap(self) -> int:
        """The decompressed size a dataset may reach (TUNECOST_MAX_DATASET_BYTES or its default)."""
        if self.max_dataset_bytes is not None:
            return self.max_dataset_bytes
        return self.max_upload_bytes * GZIP_EXPANSION_ALLOWANCE

    @property
    def focus_delivery_root(self) -> str:
        """Where the scheduled FOCUS files go (an fsspec URL)."""
        return (self.focus_delivery_url or f"{self.storage_root}/exports/focus").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def resolved_model_roots(self) -> list[Path]:
        """The allowed model roots as absolute, symlink-free paths."""
        return [p.expanduser().resolve() for p in self.model_roots]


class SettingsError(RuntimeError):
    """A TUNECOST_* variable holds a value tunecost cannot start with."""


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one naming the environment variables."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TUNECOST_{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
