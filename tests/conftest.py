"""Shared fixtures: real local services (anvil, an Apache Kafka broker) on free ports.

Each stack starts real processes through ``payable.services`` exactly as ``payable up`` does, with a fresh
data directory, and stops them by PID afterwards. anvil starts in well under a second, a Kafka broker (a
JVM) in seconds, so the tests share ONE broker per test session (per xdist worker) and get a clean one
by deleting every topic and consumer group when a stack is made; tests that stop or restart the broker
ask for their own with ``make_settings(..., own_broker=True)``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

import contracts
from payable import services
from payable.chain import Chain, Deployment
from payable.keys import Role, dev_account
from payable.settings import Settings

_shared_broker: Settings | None = None


def _fresh_settings(data_dir: Path) -> Settings:
    anvil_port, kafka_port = services.free_port(), services.free_port()
    return replace(
        Settings.from_env(data_dir),
        anvil_port=anvil_port,
        kafka_port=kafka_port,
        rpc_url=f"http://127.0.0.1:{anvil_port}",
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        local_chain=True,
        local_kafka=True,
        broker="kafka",
        block_time=0,
        beam_options=(),
        confirmations=2,
    )


def shared_broker() -> Settings:
    """The session's one Kafka broker, started on first use (a session of unit tests starts none)."""
    global _shared_broker
    if _shared_broker is None:
        settings = _fresh_settings(Path(tempfile.mkdtemp(prefix="payable-kafka-")) / "data")
        services.start(services.broker_service(settings), settings)
        _shared_broker = settings
    return _shared_broker


def clear_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Deletes every topic and consumer group but Kafka's own, so the next stack starts on an empty log."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        groups = [group["group_id"] for group in admin.list_groups()]
        if groups:
            admin.delete_groups(groups)
        names = [name for name in admin.list_topics() if not name.startswith("__")]
        if names:
            admin.delete_topics(names, timeout_ms=10_000)
        deadline = time.monotonic() + timeout_s
        while set(names) & set(admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still listed {timeout_s:g} s after deletion: {names}")
            time.sleep(0.05)
    finally:
        admin.close()


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_broker() -> Iterator[None]:
    yield
    if _shared_broker is not None:
        services.down(_shared_broker)
        shutil.rmtree(_shared_broker.data_dir.parent, ignore_errors=True)


def make_settings(data_dir: Path, *, own_broker: bool = False) -> Settings:
    """Settings for an isolated local stack: its own anvil on a free port, its own data directory, and an
    empty Kafka log: the session's shared broker cleared, or with ``own_broker`` a broker of its own that
    ``services.up``/``down`` start and stop (for tests that stop, restart or start the broker itself)."""
    settings = _fresh_settings(data_dir)
    if own_broker:
        return settings
    broker = shared_broker()
    clear_broker(broker.kafka_bootstrap)
    return replace(settings, kafka_port=broker.kafka_port, kafka_bootstrap=broker.kafka_bootstrap,
                   local_kafka=False)


def stack_env(settings: Settings) -> dict[str, str]:
    """The environment variables under which a ``payable`` subprocess reaches the stack of ``settings``."""
    kafka = ({"PAYABLE_KAFKA_PORT": str(settings.kafka_port), "KAFKA_BOOTSTRAP": ""} if settings.local_kafka
             else {"KAFKA_BOOTSTRAP": settings.kafka_bootstrap})
    return {"PAYABLE_DATA_DIR": str(settings.data_dir), "PAYABLE_ANVIL_PORT": str(settings.anvil_port),
            "PAYABLE_RPC_URL": "", **kafka}


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A running anvil and an empty Kafka log, torn down after the test. The log is the shared broker's,
    or a broker of the test's own when it is marked ``@pytest.mark.own_broker`` (it stops or restarts it)."""
    settings = make_settings(tmp_path / "data", own_broker=request.node.get_closest_marker("own_broker") is not None)
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
                      attributor=dev_account(Role.TRAINER.value).address,
                      agent_validators=[dev_account(Role.VALIDATOR.value).address])
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


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Dask cluster on 127.0.0.1: a scheduler and two single-threaded worker processes; yields its
    address. Stopped by PID at the end of the session."""
    from pipelines.runners.cluster import local_dask_cluster

    with local_dask_cluster(2, tmp_path_factory.mktemp("dask")) as address:
        yield address


@pytest.fixture(scope="session")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Beam's Prism job server and a worker pool whose SDK harnesses are separate processes; yields the
    Beam options that select it. Stopped by PID at the end of the session."""
    from pipelines.runners.cluster import local_prism

    with local_prism(tmp_path_factory.mktemp("prism")) as options:
        yield options
