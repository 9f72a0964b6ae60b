"""The Dagster instance of a data directory: DAGSTER_HOME under it, configured by the repo's dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import yaml

from payable import postgres
from payable.services import REPO_ROOT
from payable.settings import Settings


def instance_config(settings: Settings) -> Path:
    """dagster.yaml (SQLite under DAGSTER_HOME), or dagster.postgres.yaml for PAYABLE_DAGSTER_STORAGE=postgres."""
    return REPO_ROOT / ("dagster.postgres.yaml" if settings.dagster_storage == "postgres" else "dagster.yaml")


def prepare_home(settings: Settings) -> Path:
    """Creates <data_dir>/dagster with the instance config and points DAGSTER_HOME at it.

    On the local PostgreSQL cluster (``payable up`` runs it) the config names it outright, so any Dagster
    process given this DAGSTER_HOME (``dagster dev``, ``dagster-daemon run``, a run worker) finds it with no
    DAGSTER_PG_* variables; a server of the operator's own is read from those variables at load time.
    """
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if settings.local_postgres:
        postgres.ensure_database(settings)
        config = yaml.safe_load(instance_config(settings).read_text())
        config["storage"]["postgres"]["postgres_db"].update(postgres.connection_config(settings))
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        shutil.copyfile(instance_config(settings), home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance of ``settings``' data directory (what the UI shows)."""
    prepare_home(settings)
    return dg.DagsterInstance.get()
