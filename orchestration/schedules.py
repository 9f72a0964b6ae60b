"""Schedules: catch up with the chain often; close a reward epoch once a day."""

import os

import dagster as dg

from orchestration.jobs import ingest_job, rewards_job

ingest_every_minute = dg.ScheduleDefinition(
    name="ingest_chain_facts", job=ingest_job, cron_schedule="* * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="One confirmed catch-up pass of the chain ingester (for deployments without `payable ingest`).",
)

close_reward_epoch = dg.ScheduleDefinition(
    name="close_reward_epoch", job=rewards_job,
    cron_schedule=os.environ.get("PAYABLE_EPOCH_CRON", "0 0 * * *"), execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Closes the due reward epoch (PAYABLE_EPOCH_CRON, default daily at 00:00 UTC), emits it on-chain "
                "exactly once and rebuilds the audit tables; a no-op when nothing changed.",
)
