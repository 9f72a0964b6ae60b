"""Schedules: catch up with the chain often; close a reward epoch once a day.

A tick is skipped while a run of its job is still queued or running. A run worker imports the whole graph
(torch, Beam, Lance) before it does anything, so on a busy machine a run can take longer than the interval
between ticks; without the skip the queue grows by a run per tick, and the sensors' runs (validation,
training) wait behind catch-up passes that will find nothing to do.
"""

from __future__ import annotations

import os

import dagster as dg

from orchestration.jobs import ingest_job, rewards_job

UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def one_run_at_a_time(name: str, job: dg.UnresolvedAssetJobDefinition, cron: str,
                      description: str) -> dg.ScheduleDefinition:
    """A schedule of ``job`` on ``cron`` (UTC, running by default) whose ticks skip while a run of ``job``
    has not finished."""

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING, description=description)
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        unfinished = context.instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=UNFINISHED), limit=1)
        if unfinished:
            return dg.SkipReason(f"run {unfinished[0].run_id} of {job.name} is {unfinished[0].status.value}")
        return dg.RunRequest()

    return _schedule


ingest_every_minute = one_run_at_a_time(
    "ingest_chain_facts", ingest_job, "* * * * *",
    "One confirmed catch-up pass of the chain ingester (for deployments without `payable ingest`).",
)

close_reward_epoch = one_run_at_a_time(
    "close_reward_epoch", rewards_job, os.environ.get("PAYABLE_EPOCH_CRON", "0 0 * * *"),
    "Closes the due reward epoch (PAYABLE_EPOCH_CRON, default daily at 00:00 UTC), emits it on-chain exactly "
    "once and rebuilds the audit tables; a no-op when nothing changed.",
)
