"""Running the loop in-process through Dagster's own jobs, as the demo and the end-to-end tests do.

The runs land in the data directory's Dagster instance, so ``payable ui`` afterwards shows exactly them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import dagster as dg

from assets.partitions import datanet_partitions, partition_key
from orchestration.definitions import build_definitions
from orchestration.instance import get_instance
from orchestration.resources import resources_for
from payable.settings import Settings
from pipelines.validate import materialize

Stage = Callable[[str], AbstractContextManager]
# Runs log to the instance (the UI shows them); only warnings go to the console.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Loop:
    """The Definitions bound to one data directory, and that directory's persistent Dagster instance."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.defs = build_definitions(resources_for(settings))
        self.instance = get_instance(settings)

    def run(self, job_name: str, partition_key: str | None = None, ops: dict[str, dict] | None = None
            ) -> dg.ExecuteInProcessResult:
        """Runs a job to completion; a failed step or a failed ERROR-severity check raises. ``ops``: config by op
        name, as the launchpad's config editor sets it (``{"influence_scores": {"lds_subsets": 3}}``)."""
        job = self.defs.resolve_job_def(job_name)
        run_config = {**QUIET, "ops": {name: {"config": config} for name, config in ops.items()}} if ops else QUIET
        return job.execute_in_process(instance=self.instance, partition_key=partition_key, run_config=run_config)

    def datanet_keys(self) -> list[str]:
        """Partition keys of every datanet that has a dataset, registered as dynamic partitions."""
        keys = [partition_key(d) for d in materialize.datanet_ids(self.settings.lance_dir)]
        new = [k for k in keys if not self.instance.has_dynamic_partition(datanet_partitions.name, k)]
        if new:
            self.instance.add_dynamic_partitions(datanet_partitions.name, new)
        return keys

    def run_all(self, stage: Stage = lambda name: nullcontext(), before_rewards: Callable[[], None] | None = None,
                launch: dict[str, dict] | None = None) -> dict[str, dg.ExecuteInProcessResult]:
        """ingest -> validate -> (per datanet) train + attribute -> served models -> RAG answers attributed -> reward
        epoch + payouts + audit; ``before_rewards`` runs before the epoch (the demo reveals its canaries there);
        ``launch``: the launch config of every datanet's train + attribute run by op name, as the launchpad sets it
        (``{"lora_adapters": {"num_threads": 2}, "influence_scores": {"lds_subsets": 3}}``). Returns each
        datanet's train + attribute run by partition key."""
        with stage("ingest chain facts"):
            self.run("ingest_chain_facts")
        with stage("validate + deduplicate (Beam)"):
            self.run("validate_new_facts")
        datanet_runs = {}
        for key in self.datanet_keys():
            with stage(f"train LoRA + attribute {key}"):
                datanet_runs[key] = self.run("train_and_attribute_datanet", partition_key=key, ops=launch)
        with stage("served models"):
            self.run("refresh_served_models")
        with stage("attribute RAG answers"):
            self.run("attribute_usage")
        if before_rewards is not None:
            before_rewards()
        with stage("reward epoch on-chain + audit"):
            self.run("close_reward_epoch")
        return datanet_runs
