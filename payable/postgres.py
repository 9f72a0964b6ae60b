"""A private PostgreSQL cluster for Dagster's storage, run by payable like its other local services.

With ``PAYABLE_DAGSTER_STORAGE=postgres`` Dagster keeps runs, events and schedules in PostgreSQL
(dagster.postgres.yaml). ``DAGSTER_PG_HOST`` (and its siblings) name a server of the operator's own; without
it ``payable up`` runs this cluster under the data directory: initdb'd on first start with a generated
password, serving on 127.0.0.1:PAYABLE_POSTGRES_PORT with its unix socket in its own directory (never
/var/run/postgresql, which may not exist or be writable), stopped by PID.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` account that Debian's
package creates; that account must be able to reach the data directory (``initdb`` says so when it cannot).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

from payable.services import Service, ServiceError, run_as
from payable.settings import Settings

SUPERUSER = "payable"
DATABASE = "dagster"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# A Unix socket path is at most 107 bytes (sun_path); PostgreSQL names its socket .s.PGSQL.<port>.
MAX_SOCKET_PATH = 107


def bindir() -> Path:
    """The directory of initdb and postgres: from PATH, else Debian's newest /usr/lib/postgresql/<v>/bin
    (Debian keeps the server binaries off PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    installed = sorted(DEBIAN_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not installed:
        raise ServiceError("the PostgreSQL server is not installed (apt-get install postgresql, or `make install`); "
                           "or set DAGSTER_PG_HOST to a running server")
    return installed[-1].parent


def owner() -> str | None:
    """The account the cluster runs as: this process's, or ``postgres`` when this process is root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError("PostgreSQL does not run as root and there is no `postgres` account to run it as "
                           "(Debian's postgresql package creates it)") from None
    return "postgres"


def cluster_dir(settings: Settings) -> Path:
    """Where the cluster lives: its data directory, socket, password and nothing else."""
    return settings.data_dir / "postgres"


def password(settings: Settings) -> str:
    """The superuser's password, generated when the cluster was created."""
    try:
        return (cluster_dir(settings) / "password").read_text().strip()
    except FileNotFoundError:
        raise ServiceError(f"no PostgreSQL cluster in {cluster_dir(settings)}: run `payable up` first") from None


def _initdb(home: Path, data: Path) -> None:
    """Creates the cluster: superuser SUPERUSER with a fresh password, password logins over TCP."""
    user = owner()
    home.mkdir(parents=True, exist_ok=True)
    secret = home / "password"
    secret.write_text(secrets.token_urlsafe(24) + "\n")
    secret.chmod(0o600)
    if user is not None:
        shutil.chown(home, user, user)
        shutil.chown(secret, user, user)
    created = subprocess.run(
        [str(bindir() / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={secret}", "-E", "UTF8",
         "--locale=C", "--auth=scram-sha-256", "--no-instructions"],
        capture_output=True, text=True, timeout=120, **run_as(user),
    )
    if created.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise ServiceError(f"initdb in {data} failed: {created.stderr.strip()[-2000:]}")


def _command(settings: Settings) -> list[str]:
    """Creates the cluster on first start and returns the server's command line."""
    home = cluster_dir(settings)
    data = home / "data"
    if len(str(home / f".s.PGSQL.{settings.postgres_port}")) > MAX_SOCKET_PATH:
        raise ServiceError(f"the data directory path is too long for PostgreSQL's Unix socket in {home}: "
                           f"choose a shorter PAYABLE_DATA_DIR")
    if not (data / "PG_VERSION").exists():
        _initdb(home, data)
    return [
        str(bindir() / "postgres"), "-D", str(data), "-p", str(settings.postgres_port),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={home}",
        # a local single-user cluster: a crash may lose the last few commits (never corrupts), and every
        # Dagster event is a commit, so not waiting for the WAL flush on each keeps runs quick
        "-c", "synchronous_commit=off",
    ]


def ready(port: int) -> bool:
    """True when the server accepts connections (pg_isready: no credentials needed)."""
    probe = subprocess.run([str(bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


def service(settings: Settings) -> Service:
    """The cluster as a local service. SIGINT is PostgreSQL's fast shutdown; its SIGTERM would wait for
    every client (a Dagster process's pooled connections) to disconnect."""
    return Service("postgres", settings.postgres_port, _command, ready, "postgres", "PAYABLE_POSTGRES_PORT",
                   timeout_s=60.0, user=owner(), stop_signal=signal.SIGINT)


def connection_config(settings: Settings, database: str = DATABASE) -> dict[str, str | int]:
    """The ``postgres_db`` block of Dagster's storage config for ``database`` on the local cluster."""
    return {"hostname": "127.0.0.1", "port": settings.postgres_port, "db_name": database,
            "username": SUPERUSER, "password": password(settings)}


def ensure_database(settings: Settings, database: str = DATABASE) -> None:
    """Creates ``database`` on the running local cluster unless it exists."""
    import psycopg2
    from psycopg2 import sql

    config = connection_config(settings, "postgres")
    try:
        connection = psycopg2.connect(host=config["hostname"], port=config["port"], dbname="postgres",
                                      user=SUPERUSER, password=config["password"], connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise ServiceError(f"the local PostgreSQL on 127.0.0.1:{settings.postgres_port} does not answer "
                           f"({str(exc).strip().splitlines()[0]}): run `payable up`") from None
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        connection.close()
