"""A datanet's eval queries come from its spec, named on-chain: the Lance eval set is a projection of the log."""

from __future__ import annotations

import shutil

import lance

from payable import kafka_log
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.training.data import datanet_spec, eval_uri, sync_eval_queries
from schemas import events
from tests.test_validate_support import created, produce_facts

QUERIES = ("what does the electron carry", "why does the gas expand")


def test_eval_queries_are_materialized_from_the_spec_and_rebuilt_after_deletion(stack):
    store = ContentStore(stack.content_dir)
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    produce_facts(stack, events.DATANET_CREATED, [created(1, store, DatanetSpec("notes", eval_queries=QUERIES)),
                                                 created(2, store, DatanetSpec("plain"))])

    def sync(datanet_id: int) -> str | None:  # as training does: the spec from the log, then its queries
        return sync_eval_queries(stack, datanet_id, datanet_spec(stack, datanet_id))

    uri = sync(1)
    assert uri == eval_uri(stack.lance_dir, 1)
    assert lance.dataset(uri).to_table()["text"].to_pylist() == list(QUERIES)
    version = lance.dataset(uri).version
    sync(1)
    assert lance.dataset(uri).version == version, "an unchanged set is not rewritten"

    shutil.rmtree(stack.lance_dir / "evals")
    assert lance.dataset(sync(1)).to_table()["text"].to_pylist() == list(QUERIES)
    assert sync(2) is None, "a spec without queries falls back to the held-out split"
    assert sync(3) is None, "unknown datanet"
