"""Dagster resources: the chain, the Kafka log, the data directory and the Beam runner, from the environment.

Assets never build clients themselves; they ask these resources, so local, staging and production differ
in configuration (PAYABLE_RPC_URL, KAFKA_BOOTSTRAP, PAYABLE_DATA_DIR, PAYABLE_BEAM_OPTIONS), never in asset code.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

import dagster as dg

from payable.chain import Chain, Deployment
from payable.settings import Settings


class DataDirResource(dg.ConfigurableResource):
    """The data directory holding Lance datasets, adapters, the audit database and the deployment."""

    path: str

    beam_options: str = ""

    def settings(self) -> Settings:
        """Settings of this data directory; ``beam_options`` (Beam pipeline options, the runner of every
        pipeline a stage runs) replaces PAYABLE_BEAM_OPTIONS when set."""
        settings = Settings.from_env(self.path)
        if self.beam_options:
            settings = replace(settings, beam_options=tuple(shlex.split(self.beam_options)))
        return settings


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
    base = data_dir.settings()
    return replace(base, rpc_url=chain.rpc_url, kafka_bootstrap=kafka.bootstrap, confirmations=chain.confirmations)


def deployment(settings: Settings) -> Deployment:
    return Deployment.load(settings.deployment_file)


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resource set that reaches the services and data directory of ``settings``."""
    return {
        "data_dir": DataDirResource(path=str(settings.data_dir), beam_options=shlex.join(settings.beam_options)),
        "chain": ChainResource(rpc_url=settings.rpc_url, confirmations=settings.confirmations),
        "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap),
    }


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resource set for the current environment (embedded defaults when nothing is configured)."""
    return resources_for(Settings.from_env())
