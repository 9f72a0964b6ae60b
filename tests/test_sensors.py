"""Sensors read offsets and versions only, and request runs exactly for the work that is new."""

from __future__ import annotations

import dagster as dg

from orchestration.resources import resources_for
from orchestration.schedules import ingest_every_minute
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


def test_a_schedule_tick_is_skipped_while_a_run_of_its_job_is_unfinished():
    """Ticks do not queue up behind a slow run: a running ingest run skips the next tick, a finished one
    does not, and another job's unfinished run does not hold it back."""
    with dg.instance_for_test() as instance:
        def tick():
            return ingest_every_minute.evaluate_tick(dg.build_schedule_context(instance=instance))

        def add_run(job_name: str, status: dg.DagsterRunStatus) -> dg.DagsterRun:
            return instance.add_run(dg.DagsterRun(job_name=job_name, status=status))

        assert len(tick().run_requests) == 1
        add_run("close_reward_epoch", dg.DagsterRunStatus.STARTED)
        assert len(tick().run_requests) == 1, "another job's run does not hold the tick"
        running = add_run("ingest_chain_facts", dg.DagsterRunStatus.STARTED)
        skipped = tick()
        assert not skipped.run_requests and running.run_id in skipped.skip_message
        instance.report_run_failed(running)
        assert len(tick().run_requests) == 1, "a finished run does not"
