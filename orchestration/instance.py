"""The Dagster instance of a data directory: DAGSTER_HOME under it, configured by the repo's dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from payable.services import REPO_ROOT
from payable.settings import Settings


def instance_config() -> Path:
    """dagster.yaml, or dagster.postgres.yaml when PAYABLE_DAGSTER_STORAGE=postgres."""
    storage = os.environ.get("PAYABLE_DAGSTER_STORAGE", "sqlite")
    if storage not in ("sqlite", "postgres"):
        raise ValueError(f"PAYABLE_DAGSTER_STORAGE must be sqlite or postgres, got {storage!r}")
    return REPO_ROOT / ("dagster.yaml" if storage == "sqlite" else "dagster.postgres.yaml")


def prepare_home(settings: Settings) -> Path:
    """Creates <data_dir>/dagster with the instance config and points DAGSTER_HOME at it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_config(), home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance of ``settings``' data directory (what the UI shows)."""
    prepare_home(settings)
    return dg.DagsterInstance.get()
