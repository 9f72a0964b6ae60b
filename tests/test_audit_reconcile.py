"""The audit database and reconciliation after one real small run of the loop (anvil + broker + Lance)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import lance
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import contracts
from contracts.deploy import deploy
from payable import services
from payable.chain import Chain
from payable.cli import main
from payable.keys import Role, dev_account
from pipelines.audit.build import build_audit_db
from pipelines.audit.reconcile import reconcile
from pipelines.audit.tables import TABLES, VIEWS
from pipelines.rewards.epochs import epoch_dir, load_epoch
from pipelines.training import AdapterRegistry
from pipelines.validate import materialize
from tests.conftest import make_settings, stack_env
from tests.test_audit_support import ON_TOPIC, run_small_loop

DOCS = Path(__file__).resolve().parent.parent / "docs" / "audit.md"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    """One full small run shared by the module's tests (each stage takes seconds; the run once ~15 s)."""
    tmp = tmp_path_factory.mktemp("audit")
    settings = make_settings(tmp / "data")
    services.up(settings)
    try:
        chain = Chain(settings.rpc_url)
        deployment = deploy(chain, dev_account(Role.DEPLOYER.value), dev_account(Role.OPERATOR.value).address)
        deployment.save(settings.deployment_file)
        run = run_small_loop(settings, chain, deployment, tmp)
        build_audit_db(settings)
        yield settings, deployment, chain, run
    finally:
        services.down(settings)


def dump(path: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in {**TABLES, **VIEWS}}
    finally:
        con.close()


def documented_queries() -> dict[str, str]:
    """Example name -> SQL (without its SET VARIABLE lines), from docs/audit.md."""
    found = re.findall(r"^### ([\w-]+):.*?```sql\n(.*?)```", DOCS.read_text(), flags=re.S | re.M)
    return {name: "\n".join(line for line in sql.splitlines() if not line.startswith("SET VARIABLE"))
            for name, sql in found}


def query(path: Path, sql: str, **variables) -> list[dict]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        for name, value in variables.items():
            con.execute(f"SET VARIABLE {name} = ?", [value])
        cursor = con.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def cli(settings, *args: str, stdin: str | None = None):
    env = {**stack_env(settings), "PAYABLE_CONFIRMATIONS": str(settings.confirmations)}
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env, input=stdin)


def test_rebuild_from_the_log_gives_identical_tables(loop, tmp_path):
    settings, deployment, *_ = loop
    before = dump(settings.audit_db)
    assert all(before[t] for t in ("contributions", "verdicts", "payouts", "account_payouts", "chain_events",
                                   "influence_scores", "dataset_contributions", "training_runs", "chain_txs"))
    settings.audit_db.unlink()
    build_audit_db(settings)
    assert dump(settings.audit_db) == before
    assert not list(settings.audit_db.parent.glob("*.building-*")), "the temporary build file is renamed away"

    # Without the epoch's files (a replay from the log): the per-contribution allocation is the epoch's own
    # ContributionAllocated events, whatever the epoch's slashes (StakeSlashed facts since) did to the inputs.
    saved = tmp_path / "epoch-1"
    shutil.copytree(epoch_dir(settings, 1), saved)
    shutil.rmtree(epoch_dir(settings, 1))
    try:
        replayed = dump(build_audit_db(settings, tmp_path / "again.duckdb").path)
        assert reconcile(settings, deployment, db_path=tmp_path / "again.duckdb", rebuild=False) == []
        load_epoch(settings, 1)  # rebuilds the files from the log, per-contribution allocations included
        assert pq.read_table(epoch_dir(settings, 1) / "allocations.parquet") == pq.read_table(
            saved / "allocations.parquet")
    finally:
        shutil.rmtree(epoch_dir(settings, 1), ignore_errors=True)
        shutil.copytree(saved, epoch_dir(settings, 1))
    assert replayed["payouts"] == before["payouts"]
    assert query(tmp_path / "again.duckdb", "SELECT allocation_source FROM reward_epochs") == [
        {"allocation_source": "log"}]


def test_documented_queries_trace_payouts_rejections_totals_and_claims(loop):
    settings, deployment, chain, run = loop
    queries = documented_queries()
    assert set(queries) == {"why-paid", "rejected", "paid-per-datanet", "unclaimed", "cited-by", "usage-earned"}, \
        "the usage queries are run by tests/test_context_attribution_stage.py and tests/test_usage_rewards.py"
    epoch = load_epoch(settings, 1)
    me = ON_TOPIC.address.lower()
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    claimed = {(e["args"]["account"].lower(), e["args"]["amount"])
               for e in distributor.events.RewardClaimed().get_logs(from_block=0)}

    why = query(settings.audit_db, queries["why-paid"], account=me, epoch_id=1)
    assert [r["contribution_id"] for r in why] == run.contribution_ids[me]
    assert sum(int(r["amount"]) for r in why) == epoch.amounts[epoch.index_of(me)]
    assert {(me, int(why[0]["account_amount"]))} == claimed
    assert {r["claim_tx_hash"] for r in why} == {run.claim_tx}
    assert {r["dataset_version"] for r in why} == {lance.dataset(
        materialize.dataset_uri(settings.lance_dir, run.datanet_id)).version}
    assert {r["adapter_id"] for r in why} == {AdapterRegistry(settings.adapters_dir).latest(run.datanet_id).adapter_id}
    assert all(r["score"] == r["influence"] and r["verdict_id"] and r["submit_tx"] for r in why)
    assert all(r["submitted_event"] in run.seen_facts for r in why)

    rejected = query(settings.audit_db, queries["rejected"])
    assert [(r["contribution_id"], r["reason"], r["duplicate_of"]) for r in rejected] == [
        (run.duplicate_id, "duplicate", run.contribution_ids[me][0])]
    assert rejected[0]["slash_tx"] and int(rejected[0]["slashed"]) > 0

    per_datanet = query(settings.audit_db, queries["paid-per-datanet"])
    assert [(r["epoch_id"], r["datanet_id"], int(r["paid"])) for r in per_datanet] == [(1, run.datanet_id, epoch.total)]
    accepted = sum(len(ids) for ids in run.contribution_ids.values()) - 1
    assert per_datanet[0]["contributions"] == accepted

    unclaimed = query(settings.audit_db, queries["unclaimed"])
    assert [(r["account"], int(r["amount"])) for r in unclaimed] == [
        (a, x) for a, x in zip(epoch.accounts, epoch.amounts, strict=True) if a != me]
    assert all(r["published"] for r in unclaimed)


def test_every_submission_has_a_verdict_and_no_key_reaches_the_database(loop):
    settings, *_ = loop
    (counts,) = query(settings.audit_db, """
        SELECT (SELECT count(*) FROM contributions) AS submitted,
               count(*) FILTER (WHERE status = 'accepted') AS accepted,
               count(*) FILTER (WHERE status = 'rejected') AS rejected
        FROM verdicts WHERE is_current""")
    assert counts["accepted"] + counts["rejected"] == counts["submitted"] > 0
    text = json.dumps(dump(settings.audit_db), default=str).lower()
    keys = [dev_account(i).key.hex().removeprefix("0x").lower() for i in range(10)]
    assert not [k for k in keys if k in text]
    assert dev_account(3).address.lower()[2:] in text, "the scan does see the table contents"


def test_reconcile_passes_after_the_full_run(loop):
    settings, deployment, *_ = loop
    assert reconcile(settings, deployment) == []
    result = cli(settings, "reconcile")
    assert result.exit_code == 0, result.output
    assert "agrees with the chain" in result.output


CORRUPTIONS = {
    "payout amount": ("UPDATE payouts SET amount = amount + 1 WHERE contribution_id = {first}",
                      "payouts", "contribution_id={first}"),
    "claimed amount": ("UPDATE account_payouts SET claimed_amount = claimed_amount - 5 WHERE account = '{me}'",
                       "account_payouts", "account={me}"),
    "lost verdict": ("DELETE FROM verdicts WHERE contribution_id = {first}", "verdicts", "contribution_id={first}"),
    "missing payout row": ("DELETE FROM payouts WHERE contribution_id = {last}", "payouts",
                           "contribution_id={last}"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_reconcile_names_the_corrupted_row(loop, tmp_path, corruption):
    settings, deployment, _, run = loop
    me = ON_TOPIC.address.lower()
    fill = {"first": run.contribution_ids[me][0], "last": run.contribution_ids[me][-1], "me": me}
    sql, table, key = (part.format(**fill) for part in CORRUPTIONS[corruption])
    copy = tmp_path / "corrupted.duckdb"
    shutil.copy(settings.audit_db, copy)
    con = duckdb.connect(str(copy))
    assert con.execute(sql).fetchone()[0] == 1
    con.close()

    differences = reconcile(settings, deployment, db_path=copy, rebuild=False)
    assert differences and any(d.table == table and key in d.key for d in differences), differences
    result = cli(settings, "reconcile", "--no-rebuild", "--db", str(copy))
    assert result.exit_code == 1
    assert f"{table}[" in result.output and key in result.output


def test_audit_cli_answers_sql_as_json_and_csv(loop):
    settings, *_ = loop
    result = cli(settings, "audit", "--sql", "SELECT epoch_id, total FROM reward_epochs", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"epoch_id": 1, "total": str(load_epoch(settings, 1).total)}]
    result = cli(settings, "audit", "--sql", "SELECT count(*) AS n FROM payouts", "--csv")
    assert result.output.splitlines() == ["n", str(len(query(settings.audit_db, "SELECT * FROM payouts")))]
    failed = cli(settings, "audit", "--sql", "UPDATE payouts SET amount = 0")
    assert failed.exit_code == 1, "the prompt is read-only"
    session = cli(settings, "audit", "--csv", stdin=".tables\nSELECT count(*) AS n\n  FROM verdicts;\n.quit\n")
    assert session.exit_code == 0, session.output
    assert "account_payouts,BASE TABLE" in session.output and "chain_txs,VIEW" in session.output
    assert f"n\n{len(query(settings.audit_db, 'SELECT * FROM verdicts'))}\n" in session.output
