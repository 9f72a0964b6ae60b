"""`payable up/down/status` semantics with the real anvil and broker processes."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest

from payable import services
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path):
    settings = make_settings(tmp_path / "data", own_broker=True)
    yield settings
    services.down(settings)


def test_up_is_idempotent_and_down_stops_by_pid(settings):
    pids = services.up(settings)
    assert set(pids) == {"chain", "broker"}
    assert services.up(settings) == pids, "a second up leaves running services alone"
    assert all(row.healthy and row.pid == pids[row.name] for row in services.status(settings))
    assert sorted(services.down(settings)) == ["broker", "chain"]
    assert not any(row.healthy for row in services.status(settings))
    assert services.down(settings) == []


def test_stale_pid_file_is_cleared(settings):
    settings.run_dir.mkdir(parents=True)
    for service in services.local_services(settings):
        service.pid_file(settings).write_text("999999\n")
    pids = services.up(settings)
    assert all(pid != 999999 for pid in pids.values())
    for service in services.local_services(settings):
        assert service.pid_file(settings).read_text().strip() == str(pids[service.name])


def up_with_port_taken(settings, port: int) -> None:
    """``services.up`` while another process listens on ``port``: a one-line error naming it."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(services.ServiceError, match=rf"127.0.0.1:{port} is already taken"):
            services.up(settings)


def test_a_port_taken_by_someone_else_is_a_clear_error(settings):
    up_with_port_taken(settings, settings.anvil_port)


def test_a_stack_whose_broker_cannot_start_leaves_no_chain_running(settings):
    up_with_port_taken(settings, settings.kafka_port)
    chain = services.local_services(settings)[0]
    assert services.running_pid(chain, settings) is None, "the chain this call started is stopped again"
    assert not services.port_open(settings.anvil_port)


def test_a_service_that_never_gets_ready_is_reported_with_its_log(settings, monkeypatch):
    chain = services.local_services(settings)[0]
    never_ready = replace(chain, ready=lambda port: False, timeout_s=0.5)
    with pytest.raises(services.ServiceError, match=r"did not become ready on 127.0.0.1:\d+ in 0.5 s: see .*chain.log"):
        services.start(never_ready, settings)
    assert services.running_pid(chain, settings) is None, "the half-started process is stopped"


def test_the_local_chain_mines_on_a_timer_when_given_a_block_time(tmp_path):
    """PAYABLE_BLOCK_TIME: blocks (so confirmations) accrue with no transaction at all, as on a real chain."""
    from payable.chain import Chain

    settings = replace(make_settings(tmp_path / "data", own_broker=True), block_time=1)
    chain = next(s for s in services.local_services(settings) if s.name == "chain")
    services.start(chain, settings)
    try:
        web3 = Chain(settings.rpc_url).w3
        first = web3.eth.block_number
        deadline = time.monotonic() + 30
        while web3.eth.block_number < first + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert web3.eth.block_number >= first + 2
    finally:
        services.stop(chain, settings)


def test_a_kafka_cluster_id_never_starts_with_a_dash(monkeypatch):
    """kafka-storage reads an id starting with "-" as an option and formatting fails (1 broker start in 64)."""
    import uuid

    draws = iter([uuid.UUID(bytes=bytes([0xF8]) + bytes(15)), uuid.UUID(bytes=bytes([0x10]) + bytes(15))])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(draws))
    assert services.kafka_cluster_id() == "EAAAAAAAAAAAAAAAAAAAAA"
    monkeypatch.undo()
    assert all(not services.kafka_cluster_id().startswith("-") for _ in range(2000))
