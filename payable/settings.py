"""Where payable finds its services and data: environment variables, with embedded defaults.

Every external system is reached through one value here (a JSON-RPC URL, a Kafka bootstrap address,
a data directory that may be an object-store URI), so moving from the embedded local services to a real
chain or a real Kafka cluster is configuration, never code (DESIGN.md, invariant 7).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


BROKERS = ("kafka", "noida")
DAGSTER_STORAGES = ("sqlite", "postgres")


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved configuration for one payable process."""

    data_dir: Path
    rpc_url: str
    kafka_bootstrap: str
    anvil_port: int
    kafka_port: int
    confirmations: int
    local_chain: bool = field(default=True)
    local_kafka: bool = field(default=True)
    # Which local broker `payable up` runs: Apache Kafka (the default), or the noida-db emulator (opt-in).
    broker: str = field(default="kafka")
    # Seconds between blocks of the local chain; 0 mines a block per transaction only (anvil's automine).
    block_time: int = field(default=0)
    # Beam pipeline options every pipeline runs with (e.g. "--runner=... --dask_client_address=..."):
    # the one place the runner is chosen; the CLI's --beam-options and Dagster's BeamResource fill it.
    beam_options: tuple[str, ...] = field(default=())
    # Where Dagster keeps runs, events and schedules: SQLite under the data directory, or PostgreSQL
    # (dagster.postgres.yaml): the server DAGSTER_PG_HOST names, else a private cluster `payable up` runs.
    dagster_storage: str = field(default="sqlite")
    postgres_port: int = field(default=5433)
    local_postgres: bool = field(default=False)

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Settings:
        """Reads PAYABLE_* and KAFKA_BOOTSTRAP; an explicit ``data_dir`` wins over PAYABLE_DATA_DIR."""
        root = Path(data_dir or os.environ.get("PAYABLE_DATA_DIR") or ".payable").expanduser().resolve()
        anvil_port = _env_int("PAYABLE_ANVIL_PORT", 8545)
        kafka_port = _env_int("PAYABLE_KAFKA_PORT", 9092)
        rpc_url = os.environ.get("PAYABLE_RPC_URL") or ""
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or ""
        storage = _env_choice("PAYABLE_DAGSTER_STORAGE", DAGSTER_STORAGES)
        return cls(
            data_dir=root,
            rpc_url=rpc_url or f"http://127.0.0.1:{anvil_port}",
            kafka_bootstrap=bootstrap or f"127.0.0.1:{kafka_port}",
            anvil_port=anvil_port,
            kafka_port=kafka_port,
            confirmations=_env_int("PAYABLE_CONFIRMATIONS", 12),
            local_chain=not rpc_url,
            local_kafka=not bootstrap,
            broker=_env_choice("PAYABLE_BROKER", BROKERS),
            block_time=_env_int("PAYABLE_BLOCK_TIME", 0),
            beam_options=tuple(shlex.split(os.environ.get("PAYABLE_BEAM_OPTIONS", ""))),
            dagster_storage=storage,
            postgres_port=_env_int("PAYABLE_POSTGRES_PORT", 5433),
            local_postgres=storage == "postgres" and not os.environ.get("DAGSTER_PG_HOST"),
        )

    # Layout of the data directory: one place, so every stage agrees on it.
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def deployment_file(self) -> Path:
        return self.data_dir / "deployment.json"

    @property
    def content_dir(self) -> Path:
        return self.data_dir / "content"

    @property
    def lance_dir(self) -> Path:
        return self.data_dir / "lance"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def audit_db(self) -> Path:
        return self.data_dir / "audit.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"
