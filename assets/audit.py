"""The analysts' audit database, and its reconciliation with the chain."""

import dagster as dg

from assets.plots import table_md
from assets.rewards import onchain_payouts
from assets.validation import contribution_verdicts
from orchestration.resources import ChainResource, DataDirResource, KafkaResource, deployment, stage_settings
from pipelines.audit.build import build_audit_db
from pipelines.audit.reconcile import reconcile

OWNERS = ["team:analytics"]


@dg.asset(
    group_name="audit", kinds={"duckdb"}, owners=OWNERS, deps=[onchain_payouts, contribution_verdicts],
    description="DuckDB audit tables rebuilt from the log and the Lance tables: every payout traceable to its "
                "tx, epoch, scores, dataset version, contribution and chain event.",
)
def audit_tables(data_dir: DataDirResource, chain: ChainResource, kafka: KafkaResource) -> dg.MaterializeResult:
    summary = build_audit_db(stage_settings(data_dir, chain, kafka))
    return dg.MaterializeResult(metadata={
        "path": str(summary.path),
        "tables": table_md([{"table": t, "rows": n} for t, n in sorted(summary.rows.items())]),
        "undecodable_log_records": summary.undecodable,
        **{f"rows_{t}": n for t, n in summary.rows.items()},
    })


@dg.asset_check(asset=audit_tables, description="The audit tables agree with the chain (distributor balance, "
                "published roots and totals, claims) and account for every contribution and payout.")
def chain_reconciliation(data_dir: DataDirResource, chain: ChainResource,
                         kafka: KafkaResource) -> dg.AssetCheckResult:
    settings = stage_settings(data_dir, chain, kafka)
    differences = reconcile(settings, deployment(settings), rebuild=False)
    return dg.AssetCheckResult(passed=not differences, metadata={
        "differences": len(differences),
        "offending_rows": table_md([{"table": d.table, "key": d.key, "check": d.check, "expected": d.expected,
                                     "found": d.found} for d in differences[:50]]),
    })
