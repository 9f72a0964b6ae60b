"""Dagster on a real PostgreSQL: the loop's runs, events and materializations land there, and the daemon runs
the whole loop against it unattended (schedules and sensors: ingest, validate, train + attribute, reward epoch).

One private PostgreSQL cluster per test session (``payable.postgres``, as ``payable up`` runs it), a fresh
database per test; the chain (anvil) and the Kafka broker are the real ones of ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import dagster as dg
import duckdb
import psycopg2
import pytest
from click.testing import CliRunner

import contracts
from assets.partitions import partition_key
from contracts.deploy import TOKEN_UNIT, deploy
from orchestration.instance import get_instance, prepare_home
from orchestration.loop import Loop
from payable import demo_corpus, postgres, services
from payable.chain import Chain, Deployment
from payable.cli import main
from payable.content_store import ContentStore
from payable.datanets import contribute, create_datanet
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines.rewards import outbox
from pipelines.validate import materialize
from tests.chain_helpers import mine
from tests.conftest import make_settings, stack_env

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Settings]:
    """The session's PostgreSQL cluster, as `payable up` runs it."""
    root = private_dir()
    settings = replace(Settings.from_env(root), dagster_storage="postgres", local_postgres=True,
                       postgres_port=services.free_port())
    service = postgres.service(settings)
    services.start(service, settings)
    try:
        yield settings
    finally:
        services.stop(service, settings)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(cluster: Settings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fresh database for the test, named to Dagster through the DAGSTER_PG_* variables (an operator's
    own server, as far as payable can tell); returns psycopg2's connection arguments for it."""
    name = "t_" + request.node.name.lower()[:40].replace("[", "_").replace("]", "")
    postgres.ensure_database(cluster, name)
    config = postgres.connection_config(cluster, name)
    for key, variable in (("hostname", "HOST"), ("port", "PORT"), ("db_name", "DB"), ("username", "USERNAME"),
                          ("password", "PASSWORD")):
        monkeypatch.setenv(f"DAGSTER_PG_{variable}", str(config[key]))
    monkeypatch.setenv("PAYABLE_DAGSTER_STORAGE", "postgres")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # restored after the test: prepare_home sets it
    return {"host": config["hostname"], "port": config["port"], "dbname": name, "user": config["username"],
            "password": config["password"]}


def private_dir() -> Path:
    """A fresh directory the `postgres` account can reach (pytest's temporary directories are root's own)."""
    root = Path(tempfile.mkdtemp(prefix="payable-pg-"))
    root.chmod(0o755)
    return root


def test_payable_up_runs_a_private_postgresql_that_dagster_finds_through_its_home(monkeypatch):
    """PAYABLE_DAGSTER_STORAGE=postgres and no DAGSTER_PG_HOST: `payable up` runs the cluster, the instance
    config in DAGSTER_HOME names it, runs survive a restart, `payable down` stops it by PID."""
    data = private_dir()
    env = {"PAYABLE_DATA_DIR": str(data), "PAYABLE_DAGSTER_STORAGE": "postgres", "DAGSTER_PG_HOST": "",
           "PAYABLE_POSTGRES_PORT": str(services.free_port()),  # a remote chain and broker: no anvil, no Kafka
           "PAYABLE_RPC_URL": "http://127.0.0.1:9", "KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    cli = CliRunner()
    try:
        started = cli.invoke(main, ["up"])
        assert started.exit_code == 0 and started.output.startswith("postgres: running (pid"), started.output
        assert re.search(r"^postgres .* healthy$", cli.invoke(main, ["status"]).output, re.M)
        settings = Settings.from_env()
        assert settings.local_postgres and [s.name for s in services.local_services(settings)] == ["postgres"]

        @dg.asset
        def note() -> int:
            return 1

        instance = get_instance(settings)
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        run_id = dg.materialize([note], instance=instance).run_id
        instance.dispose()
        assert cli.invoke(main, ["down"]).output.strip() == "stopped: postgres"
        assert not services.port_open(settings.postgres_port)
        assert cli.invoke(main, ["up"]).exit_code == 0
        instance = get_instance(settings)
        assert instance.get_run_by_id(run_id).is_success, "the run outlives a restart of the cluster"
        instance.dispose()
    finally:
        cli.invoke(main, ["down"])
        shutil.rmtree(data, ignore_errors=True)


def test_a_postgres_storage_that_cannot_be_reached_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PAYABLE_DAGSTER_STORAGE", "postgresql")
    bad = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "status"])
    assert bad.exit_code == 1 and bad.output.strip() == (
        "error: PAYABLE_DAGSTER_STORAGE must be one of sqlite, postgres, got 'postgresql'")
    monkeypatch.setenv("PAYABLE_DAGSTER_STORAGE", "postgres")
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    down = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "ui"])
    assert down.exit_code == 1 and "Traceback" not in down.output, down.output
    assert down.output.startswith(f"error: no PostgreSQL cluster in {tmp_path / 'postgres'}: run `payable up`")


def on_postgres(settings: Settings) -> Settings:
    """``settings`` with Dagster's storage on the server the DAGSTER_PG_* variables name."""
    return replace(settings, dagster_storage="postgres", local_postgres=False)


def query(database: dict, sql: str, *params) -> list[tuple]:
    with psycopg2.connect(**database) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    connection.close()
    return rows


def submit_notes(settings: Settings, count: int) -> tuple[int, list[int]]:
    """Deploys payable's contracts, creates a science datanet and submits ``count`` distinct notes; returns
    the datanet id and the contribution ids."""
    chain, store = Chain(settings.rpc_url), ContentStore(settings.content_dir)
    deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address,
                        attributor=dev_account(Role.TRAINER.value).address)
    deployment.save(settings.deployment_file)
    owner, contributor = dev_account(Role.DEPLOYER.value), dev_account(Role.CONTRIBUTOR.value)
    datanet_id = create_datanet(chain, deployment, store, owner, demo_corpus.SCIENCE, min_stake=TOKEN_UNIT,
                                max_contribution_size=64_000, validators=[dev_account(Role.VALIDATOR.value).address])
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    chain.transact(owner, token.functions.transfer(contributor.address, 10 * TOKEN_UNIT))
    rng, files = random.Random(15), []
    for number in range(count):
        files.append(settings.data_dir / f"note-{number}.txt")
        files[-1].write_text(demo_corpus.science_note(rng))
    submitted = contribute(chain, deployment, store, contributor, datanet_id, files)
    return datanet_id, [s.contribution_id for s in submitted]


def dataset_contributions(settings: Settings, datanet_id: int) -> set[int]:
    dataset = materialize.open_dataset(materialize.dataset_uri(settings.lance_dir, datanet_id))
    if dataset is None:
        return set()
    return set(dataset.to_table(columns=["contribution_id"])["contribution_id"].to_pylist())


def test_the_loop_materializes_its_assets_into_postgresql(stack, database):
    settings = on_postgres(stack)
    datanet_id, contributions = submit_notes(settings, 3)
    mine(Chain(settings.rpc_url), settings.confirmations)
    loop = Loop(settings)
    try:
        ingested, validated = loop.run("ingest_chain_facts"), loop.run("validate_new_facts")
    finally:
        loop.instance.dispose()
    assert dataset_contributions(settings, datanet_id) == set(contributions)
    assert not list(settings.dagster_home.glob("**/*.db")), "no SQLite storage beside PostgreSQL"

    runs = dict(query(database, "SELECT run_id, status FROM runs"))
    assert runs == {ingested.run_id: "SUCCESS", validated.run_id: "SUCCESS"}
    materialized = query(database, "SELECT run_id, asset_key FROM event_logs "
                                   "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY id")
    assert [(run, dg.AssetKey.from_db_string(key).to_user_string()) for run, key in materialized] == [
        (ingested.run_id, "chain_events"), (validated.run_id, "contribution_verdicts")]
    steps = query(database, "SELECT dagster_event_type, run_id, step_key FROM event_logs "
                            "WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS')")
    started = {(run, step) for kind, run, step in steps if kind == "STEP_START"}
    assert {run for run, _ in started} == set(runs)
    assert {(run, step) for kind, run, step in steps if kind == "STEP_SUCCESS"} == started, "every step succeeded"
    keys = query(database, "SELECT asset_key FROM asset_keys")
    assert {"chain_events", "contribution_verdicts"} <= {dg.AssetKey.from_db_string(k).to_user_string() for k, in keys}


@pytest.fixture
def mining_stack(tmp_path: Path) -> Iterator[Settings]:
    """A stack whose chain mines a block every second (PAYABLE_BLOCK_TIME), so confirmations accrue with
    nobody mining by hand, as on a real chain."""
    settings = replace(make_settings(tmp_path / "data"), block_time=1)
    services.up(settings)
    try:
        yield settings
    finally:
        services.down(settings)


def daemon_env(settings: Settings) -> dict[str, str]:
    """What a deployment sets for the daemon: the data directory, the services, the finality depth, and a
    reward epoch closed every minute (PAYABLE_EPOCH_CRON; daily by default) so that a test sees two ticks."""
    return os.environ | stack_env(settings) | {
        "DAGSTER_HOME": str(settings.dagster_home), "PAYABLE_CONFIRMATIONS": str(settings.confirmations),
        "PAYABLE_EPOCH_CRON": "* * * * *",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM to the daemon, then SIGKILL to what is left of its process group: its code servers and the run
    workers they launched outlive it (and ignore SIGTERM)."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)


def wait_for_confirmations(settings: Settings, timeout_s: float = 60.0) -> None:
    """Until the block timer has mined ``confirmations`` blocks past the last transaction, so the first
    ingest tick finds every fact final and the loop runs once (one dataset version, one adapter, one epoch)."""
    chain = Chain(settings.rpc_url)
    final = chain.w3.eth.block_number + settings.confirmations
    deadline = time.monotonic() + timeout_s
    while chain.w3.eth.block_number < final:
        if time.monotonic() > deadline:
            pytest.fail(f"the chain mined no block {final} in {timeout_s:g} s (PAYABLE_BLOCK_TIME not honoured?)")
        time.sleep(0.2)


# Minute-granular schedules (ingest, then the reward epoch twice) and run workers that import the whole graph:
# about 5.5 min on a lightly loaded 2-core machine (load 2-4), 15 min and more at load 10.
@pytest.mark.timeout(1500)
def test_the_daemon_runs_the_whole_loop_unattended_on_postgresql(mining_stack, database, tmp_path):
    """Contributions, then nothing by hand: the chain mines their confirmations, the daemon's schedule ingests
    the facts, its sensors launch validation and then training + attribution of the changed datanet, and the
    reward schedule closes an epoch that is published on-chain; its next tick, with nothing new, pays nothing."""
    settings = on_postgres(mining_stack)
    datanet_id, contributions = submit_notes(settings, 3)
    wait_for_confirmations(settings)
    prepare_home(settings)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as stream:
        daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m",
                                   "orchestration.definitions"], cwd=ROOT, env=daemon_env(settings), stdout=stream,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    instance = dg.DagsterInstance.get()
    deployment = Deployment.load(settings.deployment_file)
    watch = Watch(instance, daemon, log, deadline=time.monotonic() + 1200)
    try:
        watch.until(lambda: 1 in outbox.epochs_on_chain(settings.kafka_bootstrap, deployment.chain_id,
                                                        deployment.distributor), "epoch 1 on-chain")
        on_chain_at = time.time()
        (again,) = watch.until(lambda: [r for r in watch.succeeded("close_reward_epoch")
                                        if instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp()
                                        > on_chain_at][-1:], "a reward tick after the epoch was paid")
        runs = {job: watch.succeeded(job) for job in ("ingest_chain_facts", "validate_new_facts",
                                                      "train_and_attribute_datanet", "close_reward_epoch")}
    finally:
        stop_daemon(daemon)
        instance.dispose()
    assert {r.tags.get("dagster/schedule_name") for r in runs["ingest_chain_facts"]} == {"ingest_chain_facts"}
    assert {r.tags.get("dagster/sensor_name") for r in runs["validate_new_facts"]} == {"new_chain_facts"}
    (trained,) = runs["train_and_attribute_datanet"]
    assert trained.tags.get("dagster/sensor_name") == "changed_datasets"
    assert trained.tags.get("dagster/partition") == partition_key(datanet_id)
    assert {r.tags.get("dagster/schedule_name") for r in runs["close_reward_epoch"]} == {"close_reward_epoch"}
    assert again.run_id in {r.run_id for r in runs["close_reward_epoch"]}

    closed = outbox.closed_epochs(settings.kafka_bootstrap)
    assert list(closed) == [1], "exactly one epoch paid: the tick after it found nothing due"
    distributor = Chain(settings.rpc_url).contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    published = distributor.events.EpochPublished().get_logs(from_block=0)
    assert [(e.args.epochId, "0x" + e.args.merkleRoot.hex()) for e in published] == [(1, closed[1]["merkle_root"])]
    token = Chain(settings.rpc_url).contract(contracts.OPEN_TOKEN, deployment.token)
    funding = token.events.Transfer().get_logs(from_block=0, argument_filters={"to": distributor.address})
    assert sum(e.args.value for e in funding) >= published[0].args.total > 0, "the distributor was funded"

    assert dataset_contributions(settings, datanet_id) == set(contributions)
    audit = duckdb.connect(str(settings.audit_db), read_only=True)
    try:
        epochs = audit.execute("SELECT epoch_id, published, merkle_root FROM reward_epochs").fetchall()
        scored = audit.execute("SELECT DISTINCT contribution_id FROM influence_scores").fetchall()
        trained_runs = audit.execute("SELECT datanet_id FROM training_runs").fetchall()
    finally:
        audit.close()
    assert epochs == [(1, True, closed[1]["merkle_root"])]
    assert {c for (c,) in scored} == set(contributions) and trained_runs == [(datanet_id,)]
    daemons = {name for (name,) in query(database, "SELECT daemon_type FROM daemon_heartbeats")}
    assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= daemons, "the daemon's heartbeats are in PostgreSQL"


class Watch:
    """Polls the daemon's instance for a condition under one deadline; fails at once when a run fails or the
    daemon exits, with the tail of its log."""

    def __init__(self, instance: dg.DagsterInstance, daemon: subprocess.Popen, log: Path, deadline: float):
        self.instance, self.daemon, self.log, self.deadline = instance, daemon, log, deadline

    def succeeded(self, job: str) -> list[dg.DagsterRun]:
        """Successful runs of ``job``, oldest first."""
        runs = self.instance.get_runs(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.SUCCESS]))
        return list(reversed(runs))

    def until(self, condition: Callable[[], T], what: str) -> T:
        """The first truthy value of ``condition()``."""
        while time.monotonic() < self.deadline:
            if self.daemon.poll() is not None:
                pytest.fail(f"dagster-daemon exited with {self.daemon.returncode}: {self.log.read_text()[-3000:]}")
            failed = self.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            if failed:
                pytest.fail(f"run {failed[0].job_name} failed; daemon log: {self.log.read_text()[-3000:]}")
            value = condition()
            if value:
                return value
            time.sleep(1)
        pytest.fail(f"timed out waiting for {what}; daemon log: {self.log.read_text()[-3000:]}")
