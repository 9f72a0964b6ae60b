"""Launching training without code: the Dagster launchpad config and ``payable train`` options, over the
datanet spec's defaults, all landing in the lineage and the adapter id (real broker, real Dagster run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg

from assets.partitions import datanet_partitions, partition_key
from assets.training import lora_adapters
from orchestration.resources import resources_for
from payable import kafka_log
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.training import AdapterRegistry
from pipelines.validate.run import validate_new_offsets
from schemas import events
from tests.test_validate_support import created, produce_facts, submitted, text

SPEC = DatanetSpec("launch", eval_queries=("the cat sat on the warm mat today", "a dog ran in the park"),
                   training={"epochs": 1, "max_length": 24, "num_checkpoints": 1, "lora_r": 2})


def _datanet(stack) -> None:
    store = ContentStore(stack.content_dir)
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    produce_facts(stack, events.DATANET_CREATED, [created(1, store, SPEC)])
    produce_facts(stack, events.CONTRIBUTION_SUBMITTED,
                  [submitted(i, 1, store, text(i, words=20).encode()) for i in range(1, 7)])
    validate_new_offsets(stack)


def test_launchpad_settings_over_spec_defaults_land_in_the_lineage(stack) -> None:
    _datanet(stack)
    launch = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "learning_rate": 0.005, "seed": 3,
              "target_modules": ["c_attn"], "batch_size": 4, "num_threads": 2}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(datanet_partitions.name, [partition_key(1)])
        result = dg.materialize([lora_adapters], instance=instance, partition_key=partition_key(1),
                                resources=resources_for(stack),
                                run_config={"ops": {"lora_adapters": {"config": launch}}})
    assert result.success
    metadata = result.asset_materializations_for_node("lora_adapters")[0].metadata
    record = AdapterRegistry(stack.adapters_dir).record(1, metadata["adapter_id"].value)
    args = record.training_arguments
    assert {k: args[k] for k in launch} == {**launch, "target_modules": ["c_attn"]}  # the launch wins
    assert (args["epochs"], args["max_length"], args["num_checkpoints"]) == (1, 24, 1)  # the spec's defaults
    assert args["quantization"] == "none" and args["base"]["name"] == "tiny-gpt2"  # built-in defaults
    assert metadata["training_arguments"].value == args
    assert metadata["base_eval_perplexity"].value > 0 and metadata["generations"].value
    # the same settings from the CLI are the same adapter (a no-op); another value is another adapter
    options = ["--datanet", "1", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--learning-rate",
               "0.005", "--seed", "3", "--target-modules", "c_attn", "--batch-size", "4", "--threads", "2"]
    same = _train(stack, *options)
    assert same.returncode == 0 and json.loads(same.stdout)["trained"] is False
    other = json.loads(_train(stack, *options, "--epochs", "2").stdout)
    assert other["trained"] is True and other["adapter_id"] != metadata["adapter_id"].value
    assert AdapterRegistry(stack.adapters_dir).record(1, other["adapter_id"]).training_arguments["epochs"] == 2


def test_cli_train_refuses_bad_input_with_one_line(stack) -> None:
    unknown = _train(stack, "--datanet", "7")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: datanet 7 has no dataset to train on: unknown datanet, or none of its contributions has been "
        "validated yet (run `payable ingest` and `payable validate`)"]
    _datanet(stack)
    bad_base = _train(stack, "--datanet", "1", "--base", "no-such-model")
    assert bad_base.returncode == 1 and bad_base.stderr.startswith("error: unknown base model 'no-such-model'")
    assert len(bad_base.stderr.strip().splitlines()) == 1
    qlora = _train(stack, "--datanet", "1", "--quantization", "4bit", "--base", "tiny-gpt2")
    assert qlora.returncode == 1 and "error: quantization=4bit" in qlora.stderr


def _train(stack, *options: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PAYABLE_DATA_DIR": str(stack.data_dir), "PAYABLE_ANVIL_PORT": str(stack.anvil_port),
                        "PAYABLE_KAFKA_PORT": str(stack.kafka_port)}
    return subprocess.run([sys.executable, "-c", "from payable.cli import main; main()", "train", *options],
                          capture_output=True, text=True, env=env, timeout=300)
