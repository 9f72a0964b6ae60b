"""payable's Dagster Definitions: the loop as assets, with resources chosen by environment.

Load with ``dagster dev -m orchestration.definitions`` (``payable ui`` does this over the data directory).
"""

import dagster as dg

from assets import attribution, audit, commitments, ingest, retrieval, rewards, serving, training, usage, validation
from orchestration.jobs import datanet_job, ingest_job, rewards_job, serving_job, usage_job, validate_job
from orchestration.resources import resources_from_env
from orchestration.schedules import close_reward_epoch, ingest_every_minute
from orchestration.sensors import changed_datasets, new_chain_facts

ASSET_MODULES = (ingest, validation, training, attribution, commitments, rewards, audit, retrieval, serving, usage)



def build_definitions(resources: dict[str, dg.ConfigurableResource]) -> dg.Definitions:
    """The whole graph bound to ``resources`` (the demo and tests bind their own data directory)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[ingest_job, validate_job, datanet_job, serving_job, usage_job, rewards_job],
        sensors=[new_chain_facts, changed_datasets],
        schedules=[ingest_every_minute, close_reward_epoch],
        resources=resources,
        # One process per run, its steps one after another: a step subprocess would import the graph (torch,
        # Beam, Lance: tens of seconds on two cores) again for steps that mostly wait on each other anyway.
        executor=dg.in_process_executor,
    )


defs = build_definitions(resources_from_env())
