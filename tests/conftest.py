"""Shared fixtures: real local services (anvil, the Kafka-protocol broker) on free ports.

Each fixture starts real processes through ``payable.services`` exactly as ``payable up`` does, with a
fresh data directory, and stops them by PID afterwards. Both start in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import contracts
from payable import services
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from payable.settings import Settings


def make_settings(data_dir: Path) -> Settings:
    """Settings for an isolated local stack: free ports, its own data directory."""
    anvil_port, kafka_port = services.free_port(), services.free_port()
    return replace(
        Settings.from_env(data_dir),
        anvil_port=anvil_port,
        kafka_port=kafka_port,
        rpc_url=f"http://127.0.0.1:{anvil_port}",
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        local_chain=True,
        local_kafka=True,
        confirmations=2,
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Settings]:
    """A running anvil + broker, torn down after the test."""
    settings = make_settings(tmp_path / "data")
    services.up(settings)
    try:
        yield settings
    finally:
        services.down(settings)


@pytest.fixture
def chain(stack: Settings) -> Chain:
    return Chain(stack.rpc_url)


@pytest.fixture
def deployment(stack: Settings, chain: Chain) -> Deployment:
    """payable's contracts deployed on the test's anvil, saved to its data directory."""
    from contracts.deploy import deploy

    deployed = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address,
                      attributor=dev_account(Role.TRAINER.value).address)
    deployed.save(stack.deployment_file)
    return deployed


@pytest.fixture
def token(chain: Chain, deployment: Deployment):
    return chain.contract(contracts.OPEN_TOKEN, deployment.token)


@pytest.fixture
def registry(chain: Chain, deployment: Deployment):
    return chain.contract(contracts.DATANET_REGISTRY, deployment.registry)


@pytest.fixture
def distributor(chain: Chain, deployment: Deployment):
    return chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
