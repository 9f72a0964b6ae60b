"""Reconciliation: the audit tables against the chain, and against the invariants they must satisfy.

Each check yields ``Difference`` rows naming the table, the row's key, what was expected and what was
found. No differences means: the distributor holds exactly what published epochs still owe; each epoch's
root and total on-chain are the audit's; the governed parameters an epoch records are the chain's at the block
it records (and its pool is theirs); claimed flags and amounts match the RewardClaimed facts; every
contribution of a paid dataset version has exactly one payout row whose amount is its exact share; and
every submitted contribution has a verdict, accepted or rejected (invariant 5).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import duckdb

from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.audit.build import build_audit_db
from pipelines.audit.chain_view import ChainRewards, audited_block, claimed_flags, epoch_roots, read_chain_rewards
from pipelines.audit.shares import apportion
from pipelines.ingest import checkpoint
from pipelines.log_views import read_view
from pipelines.rewards.params import GovernedParams, read_params
from schemas import events, topics

ZERO_ROOT = "0x" + "00" * 32


@dataclass(frozen=True)
class Difference:
    """One disagreement: ``table`` row ``key`` should have ``expected`` for ``check`` but has ``found``."""

    check: str
    table: str
    key: str
    expected: object
    found: object

    def __str__(self) -> str:
        return f"{self.table}[{self.key}] {self.check}: expected {self.expected}, found {self.found}"


def reconcile(settings: Settings, deployment: Deployment, *, db_path: Path | None = None,
              rebuild: bool = True) -> list[Difference]:
    """All differences between the audit database (rebuilt first unless ``rebuild`` is False) and the chain."""
    path = Path(db_path or settings.audit_db)
    if rebuild:
        build_audit_db(settings, path)
    chain = Chain(settings.rpc_url)
    ingested = checkpoint.load(settings.kafka_bootstrap, deployment)
    on_chain = read_chain_rewards(chain, deployment,
                                  audited_block(chain.w3.eth.block_number, ingested, settings.confirmations))
    con = duckdb.connect(str(path), read_only=True)
    try:
        return (_deep_reorg(settings, ingested) + _distributor(con, on_chain, deployment)
                + _epochs(con, chain, deployment, on_chain) + _governed(con, chain, deployment)
                + _claims(con, chain, deployment, on_chain)
                + _runs_paid_once(con) + _funded_once(con, on_chain, deployment) + _payouts(con) + _coverage(con)
                + _verdicts(con))
    finally:
        con.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: tuple = ()) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _deep_reorg(settings: Settings, ingested: checkpoint.Checkpoint) -> list[Difference]:
    """The ingester stopped on a reorg deeper than its window: the facts may hold transactions that left
    the chain. The alert stands while the checkpoint written with it (same sequence number, see
    ``Ingester._deep_reorg``) is still the latest."""
    standing = f"{ingested.chain_id}:reorg-beyond-window:{ingested.seq}:{ingested.scope}"
    return [Difference("no standing deep-reorg alert", "alerts", f"alert={alert['event_id']}",
                       "ingester past every reorg", alert["message"])
            for alert in read_view(settings.kafka_bootstrap, topics.ALERTS).of(events.ALERT)
            if alert["event_id"] == standing]


def _runs_paid_once(con) -> list[Difference]:
    """Invariant 4: an influence run is paid in exactly one epoch."""
    rows = _rows(con, """
        SELECT run, list(epoch_id ORDER BY epoch_id) AS epochs
        FROM (SELECT epoch_id, unnest(influence_runs) AS run FROM reward_epochs)
        GROUP BY run HAVING count(*) > 1 ORDER BY run""")
    return [Difference("influence run paid by one epoch", "reward_epochs", f"run={r['run']}", "one epoch",
                       "epochs " + ", ".join(map(str, r["epochs"]))) for r in rows]


def _funded_once(con, on_chain: ChainRewards, deployment: Deployment) -> list[Difference]:
    """The treasury's funding of an epoch is one Transfer into the distributor: the epoch's confirmed fund
    transactions (the emitter's outbox) that the chain shows as such transfers."""
    rows = _rows(con, """
        SELECT epoch_id, list(DISTINCT tx_hash ORDER BY tx_hash) AS txs FROM reward_tx_states
        WHERE step = 'fund' AND state = 'confirmed' AND distributor = ?
        GROUP BY epoch_id ORDER BY epoch_id""", (deployment.distributor.lower(),))
    out = []
    for r in rows:
        funded = [tx for tx in r["txs"] if tx in on_chain.fundings]
        if len(funded) > 1:
            out.append(Difference("distributor funded once per epoch", "reward_tx_states", f"epoch_id={r['epoch_id']}",
                                  1, f"{len(funded)} transfers: {', '.join(funded)}"))
    return out


def _distributor(con, on_chain: ChainRewards, deployment: Deployment) -> list[Difference]:
    (owed,) = con.execute("""
        SELECT coalesce((SELECT sum(published_total) FROM reward_epochs WHERE published), 0)
             - coalesce((SELECT sum(claimed_amount) FROM account_payouts WHERE claimed), 0)""").fetchone()
    key = f"distributor={deployment.distributor.lower()}, block={on_chain.block}"
    out = []
    if int(owed) != on_chain.distributor_balance:
        out.append(Difference("token balance = published totals - claimed", "reward_epochs,account_payouts", key,
                              int(owed), on_chain.distributor_balance))
    if int(owed) != on_chain.outstanding:
        out.append(Difference("outstanding() = published totals - claimed", "reward_epochs,account_payouts", key,
                              int(owed), on_chain.outstanding))
    return out


def _epochs(con, chain: Chain, deployment: Deployment, on_chain: ChainRewards) -> list[Difference]:
    epochs = {r["epoch_id"]: r for r in _rows(con, "SELECT * FROM reward_epochs ORDER BY epoch_id")}
    sums = dict(con.execute("SELECT epoch_id, sum(amount) FROM account_payouts GROUP BY epoch_id").fetchall())
    usage = dict(con.execute("SELECT epoch_id, sum(amount) FROM usage_payouts GROUP BY epoch_id").fetchall())
    roots = epoch_roots(chain, deployment, sorted(epochs), on_chain.block)
    out = []
    for epoch_id, e in epochs.items():
        key = f"epoch_id={epoch_id}"
        if int(sums.get(epoch_id, 0)) != int(e["total"]):
            out.append(Difference("total = sum of account payouts", "reward_epochs", key, int(e["total"]),
                                  int(sums.get(epoch_id, 0))))
        collected = int(e["usage_fees"]) + int(e["usage_carry_in"]) - int(e["usage_carry_out"])
        if int(usage.get(epoch_id, 0)) != collected:
            out.append(Difference("usage payouts = fees + usage carry in - usage carry out", "usage_payouts", key,
                                  collected, int(usage.get(epoch_id, 0))))
        if e["allocation_source"] == "unavailable":
            out.append(Difference("per-contribution allocation known", "reward_epochs", key,
                                  "epoch_files or recomputed", "unavailable"))
        chain_root = roots[epoch_id]
        audit_root = e["published_root"] if e["published"] else ZERO_ROOT
        if chain_root != audit_root:
            out.append(Difference("root on-chain", "reward_epochs", key, audit_root, chain_root))
        if e["published"] and e["published_root"] != e["merkle_root"]:
            out.append(Difference("published root = closed root", "reward_epochs", key, e["merkle_root"],
                                  e["published_root"]))
        if epoch_id in on_chain.published:
            root, total, tx_hash = on_chain.published[epoch_id]
            if (root, total) != (e["merkle_root"], int(e["total"])):
                out.append(Difference("EpochPublished (root, total) on-chain", "reward_epochs", key,
                                      (e["merkle_root"], int(e["total"])), (root, total)))
            if e["published"] and e["publish_tx_hash"] != tx_hash:
                out.append(Difference("publish tx", "reward_epochs", key, tx_hash, e["publish_tx_hash"]))
    for epoch_id in sorted(set(on_chain.published) - set(epochs)):
        out.append(Difference("epoch published on-chain is in the audit", "reward_epochs", f"epoch_id={epoch_id}",
                              on_chain.published[epoch_id][:2], None))
    return out


def _governed(con, chain: Chain, deployment: Deployment) -> list[Difference]:
    """An epoch was closed by the governed parameters it records: the deployment's ProtocolParameters held them
    at its block."""
    out = []
    for e in _rows(con, "SELECT epoch_id, pool, params, influence_runs FROM reward_epochs WHERE params IS NOT NULL "
                        "ORDER BY epoch_id"):
        key = f"epoch_id={e['epoch_id']}"
        recorded = GovernedParams.from_json(e["params"])
        if recorded.address != deployment.parameters.lower():
            out.append(Difference("governed parameters of this deployment", "reward_epochs", key,
                                  deployment.parameters.lower(), recorded.address or "none"))
            continue
        on_chain = read_params(chain, recorded.address, recorded.block)
        if on_chain != recorded:
            out.append(Difference("governed parameters at the recorded block", "reward_epochs", key,
                                  on_chain.to_json(), recorded.to_json()))
        expected = recorded.pool_for(len(e["influence_runs"]))
        if int(e["pool"]) != expected:
            out.append(Difference("pool = governed epochPool", "reward_epochs", key, expected, int(e["pool"])))
    return out


def _claims(con, chain: Chain, deployment: Deployment, on_chain: ChainRewards) -> list[Difference]:
    payouts = {(r["epoch_id"], r["account"]): r for r in _rows(
        con, "SELECT * FROM account_payouts WHERE epoch_id IN (SELECT epoch_id FROM reward_epochs WHERE published)")}
    flags = claimed_flags(chain, deployment, sorted((e, p["leaf_index"]) for (e, _), p in payouts.items()),
                          on_chain.block)
    out = []
    for (epoch_id, account), p in sorted(payouts.items()):
        key = f"epoch_id={epoch_id}, account={account}"
        flag = flags[(epoch_id, p["leaf_index"])]
        if flag != p["claimed"]:
            out.append(Difference("claimed flag on-chain", "account_payouts", key, flag, p["claimed"]))
        chain_claim = on_chain.claims.get((epoch_id, account))
        audit_claim = (int(p["claimed_amount"]), p["claim_tx_hash"]) if p["claimed"] else None
        if chain_claim != audit_claim:
            out.append(Difference("RewardClaimed (amount, tx) on-chain", "account_payouts", key, chain_claim,
                                  audit_claim))
        if p["claimed"] and int(p["claimed_amount"]) != int(p["amount"]):
            out.append(Difference("claimed amount = allocated amount", "account_payouts", key, int(p["amount"]),
                                  int(p["claimed_amount"])))
    for epoch_id, account in sorted(set(on_chain.claims) - set(payouts)):
        out.append(Difference("claim on-chain has an account payout", "account_payouts",
                              f"epoch_id={epoch_id}, account={account}", on_chain.claims[(epoch_id, account)], None))
    return out


def _payouts(con) -> list[Difference]:
    """Each contribution's payout amount is its exact share of the training part of its account's leaf (the leaf
    less the account's usage earnings in the epoch), recomputed here."""
    leaves = {(r["epoch_id"], r["account"]): int(r["amount"]) for r in _rows(con, """
        SELECT a.epoch_id, a.account, a.amount - coalesce(sum(u.amount), 0) AS amount FROM account_payouts a
        LEFT JOIN usage_payouts u ON u.epoch_id = a.epoch_id AND u.account = a.account
        GROUP BY a.epoch_id, a.account, a.amount""")}
    rows = _rows(con, "SELECT * FROM payouts ORDER BY epoch_id, contribution_id")
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["epoch_id"], r["account"])].append(r)
    out = []
    for (epoch_id, account), group in sorted(groups.items()):
        weights = {r["contribution_id"]: r["influence"] if r["outcome"] == "paid" else 0.0 for r in group}
        expected = apportion(leaves.get((epoch_id, account), 0), weights)
        out += [Difference("amount = share of the account's leaf", "payouts",
                           f"epoch_id={epoch_id}, contribution_id={r['contribution_id']}, account={account}",
                           expected[r["contribution_id"]], int(r["amount"]))
                for r in group if int(r["amount"]) != expected[r["contribution_id"]]]
    for epoch_id, account in sorted(k for k in set(leaves) - set(groups) if leaves[k]):
        out.append(Difference("account payout has contributions behind it", "payouts",
                              f"epoch_id={epoch_id}, account={account}", "payout rows", None))
    return out


def _coverage(con) -> list[Difference]:
    """Every contribution of a dataset version an epoch paid on has exactly one payout row in that epoch."""
    out = [Difference("payout traced to a dataset version's scores", "payouts",
                      f"epoch_id={r['epoch_id']}, contribution_id={r['contribution_id']}", "dataset_version", None)
           for r in _rows(con, "SELECT * FROM payouts WHERE dataset_version IS NULL ORDER BY ALL")]
    missing = _rows(con, """
        WITH paid_versions AS (SELECT DISTINCT epoch_id, datanet_id, dataset_version FROM payouts
                               WHERE dataset_version IS NOT NULL)
        SELECT v.epoch_id, m.datanet_id, m.dataset_version, m.contribution_id, count(p.contribution_id) AS rows
        FROM paid_versions v
        JOIN dataset_contributions m USING (datanet_id, dataset_version)
        LEFT JOIN payouts p ON p.epoch_id = v.epoch_id AND p.contribution_id = m.contribution_id
        GROUP BY ALL HAVING count(p.contribution_id) <> 1 ORDER BY ALL""")
    return out + [Difference("one payout row per contribution of the paid dataset version", "payouts",
                             f"epoch_id={r['epoch_id']}, contribution_id={r['contribution_id']}, "
                             f"datanet_id={r['datanet_id']}, dataset_version={r['dataset_version']}", 1, r["rows"])
                  for r in missing]


def _verdicts(con) -> list[Difference]:
    """Invariant 5: every submitted contribution ends accepted or rejected, and nothing else is decided."""
    undecided = _rows(con, """
        SELECT c.contribution_id, v.status FROM contributions c
        LEFT JOIN verdicts v ON v.contribution_id = c.contribution_id AND v.is_current
        WHERE v.status IS NULL OR v.status NOT IN ('accepted', 'rejected') ORDER BY ALL""")
    unknown = _rows(con, """
        SELECT v.contribution_id, v.verdict_id FROM verdicts v
        ANTI JOIN contributions c USING (contribution_id) WHERE v.is_current ORDER BY ALL""")
    return ([Difference("verdict accepted or rejected", "verdicts", f"contribution_id={r['contribution_id']}",
                        "accepted|rejected", r["status"]) for r in undecided]
            + [Difference("verdict answers a submitted contribution", "contributions",
                          f"contribution_id={r['contribution_id']}", "ContributionSubmitted fact", None)
               for r in unknown])
