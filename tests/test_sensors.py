"""Sensors read offsets and versions only, and request runs exactly for the work that is new."""

from __future__ import annotations

import dagster as dg

from orchestration.resources import resources_for
from orchestration.sensors import changed_datasets, new_chain_facts
from payable import kafka_log
from payable.content_store import ContentStore
from pipelines.training.arguments import TrainingArguments
from pipelines.training.train import train_latest
from pipelines.validate.run import validate_new_offsets
from schemas import events
from tests.test_validate_support import created, produce_facts, submitted, text


def _evaluate(sensor, settings, instance):
    context = dg.build_sensor_context(instance=instance, resources=resources_for(settings))
    return sensor(context)


def _requests(result) -> list[dg.RunRequest]:
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def test_new_chain_facts_requests_a_run_only_for_unvalidated_offsets(stack):
    store = ContentStore(stack.content_dir)
    with dg.instance_for_test() as instance:
        kafka_log.ensure_topics(stack.kafka_bootstrap)
        assert isinstance(_evaluate(new_chain_facts, stack, instance), dg.SkipReason), "idle: nothing to do"

        produce_facts(stack, events.DATANET_CREATED, [created(1, store)])
        produce_facts(stack, events.CONTRIBUTION_SUBMITTED, [submitted(1, 1, store, text(1).encode())])
        (request,) = _requests(_evaluate(new_chain_facts, stack, instance))
        again = _requests(_evaluate(new_chain_facts, stack, instance))
        assert [r.run_key for r in again] == [request.run_key], "the same backlog keeps the same run key"

        validate_new_offsets(stack)
        assert isinstance(_evaluate(new_chain_facts, stack, instance), dg.SkipReason)


def test_changed_datasets_requests_training_only_for_datanets_whose_dataset_changed(stack):
    store = ContentStore(stack.content_dir)
    facts = [created(1, store), created(2, store)]
    contributions = [submitted(i, 1 + i % 2, store, text(i).encode()) for i in range(1, 9)]
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    produce_facts(stack, events.DATANET_CREATED, facts)
    produce_facts(stack, events.CONTRIBUTION_SUBMITTED, contributions)
    with dg.instance_for_test() as instance:
        assert _requests(_evaluate(changed_datasets, stack, instance)) == [], "no dataset yet"
        validate_new_offsets(stack)
        result = _evaluate(changed_datasets, stack, instance)
        assert sorted(r.partition_key for r in _requests(result)) == ["dn-1", "dn-2"]
        added = result.dynamic_partitions_requests[0].partition_keys
        assert sorted(added) == ["dn-1", "dn-2"], "new datanets become partitions"

        train_latest(stack, 1, TrainingArguments(epochs=1, max_length=32, num_checkpoints=1), show_progress=False)
        assert [r.partition_key for r in _requests(_evaluate(changed_datasets, stack, instance))] == ["dn-2"]
