"""Jobs: the slices of the asset graph that sensors and schedules launch."""

import dagster as dg

# Tag limited to one concurrent run in dagster.yaml: two runs never emit the same epoch.
REWARDS_TAG = {"payable/rewards": "epoch"}

ingest_job = dg.define_asset_job(
    "ingest_chain_facts",
    selection=dg.AssetSelection.assets("chain_events"),
    description="One catch-up pass of the chain ingester: confirmed facts into Kafka, reorgs retracted.",
    tags={"payable/stage": "ingest"},
)

validate_job = dg.define_asset_job(
    "validate_new_facts",
    selection=dg.AssetSelection.assets("contribution_verdicts"),
    description="Validate and deduplicate new chain facts into verdicts and dataset versions.",
    tags={"payable/stage": "validate"},
)

datanet_job = dg.define_asset_job(
    "train_and_attribute_datanet",
    selection=dg.AssetSelection.assets("datanet_datasets", "lora_adapters", "influence_scores", "model_commitments"),
    description="For one datanet: record its dataset version, train its LoRA adapter, score every contribution, "
                "commit the adapter and its scores on-chain.",
)

serving_job = dg.define_asset_job(
    "refresh_served_models",
    selection=dg.AssetSelection.assets("retrieval_index", "served_models"),
    description="What `payable serve` offers: every adapter, each datanet's alias, the retrieval indexes its RAG "
                "chats search, and a running server's cache.",
    tags={"payable/stage": "serving"},
)

usage_job = dg.define_asset_job(
    "attribute_usage",
    selection=dg.AssetSelection.assets("usage_events", "context_attribution"),
    description="The usage log's projection, and how much each retrieved source drove each new RAG answer "
                "(weights on payable.usage.attribution for the usage rewards).",
    tags={"payable/stage": "usage"},
)

rewards_job = dg.define_asset_job(
    "close_reward_epoch",
    selection=dg.AssetSelection.assets("reward_epochs", "onchain_payouts", "usage_rewards", "audit_tables"),
    description="Split the epoch's pool by influence, publish the Merkle root once, rebuild the audit tables.",
    tags=REWARDS_TAG,
)
