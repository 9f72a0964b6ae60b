"""Dagster resources: the chain, the Kafka log and the data directory, configured from the environment.

Assets never build clients themselves; they ask these resources, so local, staging and production differ
in configuration (PAYABLE_RPC_URL, KAFKA_BOOTSTRAP, PAYABLE_DATA_DIR), never in asset code.
"""

from __future__ import annotations

from dataclasses import replace

import dagster as dg

from payable.chain import Chain, Deployment
from payable.settings import Settings


class DataDirResource(dg.ConfigurableResource):
    """The data directory holding Lance datasets, adapters, the audit database and the deployment."""

    path: str

    def settings(self) -> Settings:
        return Settings.from_env(self.path)


class ChainResource(dg.ConfigurableResource):
    """Any JSON-RPC endpoint of the chain payable's contracts are deployed on, and its finality depth."""

    rpc_url: str
    confirmations: int

    def client(self) -> Chain:
        return Chain(self.rpc_url)


class KafkaResource(dg.ConfigurableResource):
    """Any Kafka bootstrap address."""

    bootstrap: str


def stage_settings(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> Settings:
    """The Settings the stage functions take, assembled from the three resources."""
    base = Settings.from_env(data_dir.path)
    return replace(base, rpc_url=chain.rpc_url, kafka_bootstrap=kafka.bootstrap, confirmations=chain.confirmations)


def deployment(settings: Settings) -> Deployment:
    return Deployment.load(settings.deployment_file)


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resource set that reaches the services and data directory of ``settings``."""
    return {
        "data_dir": DataDirResource(path=str(settings.data_dir)),
        "chain": ChainResource(rpc_url=settings.rpc_url, confirmations=settings.confirmations),
        "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap),
    }


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resource set for the current environment (embedded defaults when nothing is configured)."""
    return resources_for(Settings.from_env())
