"""Context-attribution shares: the normalization rule, and ``source_weights`` read back from the real log."""

from __future__ import annotations

import pytest

from payable import kafka_log
from pipelines.context_attribution import records
from pipelines.context_attribution.weights import normalize, source_weights
from schemas import topics
from schemas.context_attribution import CONTEXT_ATTRIBUTED, CONTEXT_ATTRIBUTION_SKIPPED
from tests.conftest import make_settings


def _source(contribution_id: int, chunk: int) -> dict:
    return {"datanet_id": 1, "contribution_id": contribution_id, "contributor": "0x" + "ab" * 20,
            "chunk_id": f"{contribution_id}:{chunk}", "dataset_version": 2, "score": 0.5}


def _usage(event_id: str, sources: list[dict]) -> dict:
    return {"event_id": event_id, "retrieved_sources": sources}


def test_normalize_clips_negative_weights_and_sums_to_one():
    assert normalize([3.0, -1.0, 1.0]) == [0.75, 0.0, 0.25]
    assert normalize([-2.0, 0.0, -0.5, 0.0]) == [0.25] * 4  # nothing positive: an equal split
    assert normalize([]) == []
    with pytest.raises(ValueError, match="finite"):
        normalize([1.0, float("nan")])


def test_an_attribution_record_is_valid_and_its_id_depends_only_on_its_inputs():
    usage = _usage("use-1", [_source(7, 0), _source(9, 1)])
    record = records.attributed(usage, "factorial", [0.2, 0.6], forward_passes=16)
    CONTEXT_ATTRIBUTED.to_batch([record])
    assert [s["weight"] for s in record["sources"]] == pytest.approx([0.25, 0.75])
    assert record == records.attributed(usage, "factorial", [0.2, 0.6], forward_passes=16)
    assert record["event_id"] != records.attributed(usage, "leave_one_out", [0.2, 0.6], 3)["event_id"]
    with pytest.raises(ValueError, match="1 weights for 2 sources"):
        records.attributed(usage, "factorial", [1.0], forward_passes=16)


def test_source_weights_sums_chunks_per_contribution_and_counts_a_repeated_event_once(tmp_path):
    settings = make_settings(tmp_path / "data")
    kafka_log.ensure_topics(settings.kafka_bootstrap, [topics.USAGE_ATTRIBUTION])
    first = records.attributed(_usage("use-a", [_source(7, 0), _source(9, 0), _source(7, 3)]), "factorial",
                               [1.0, 2.0, 1.0], forward_passes=16)
    second = records.attributed(_usage("use-b", [_source(4, 0)]), "factorial", [-1.0], forward_passes=16)
    other_method = records.attributed(_usage("use-c", [_source(4, 0)]), "leave_one_out", [1.0], forward_passes=2)
    skip = records.skipped("use-d", "unknown_adapter", "adapter ad-x is not in the registry")
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    try:
        for event_type, batch in ((CONTEXT_ATTRIBUTED, [first, second, first, other_method]),
                                  (CONTEXT_ATTRIBUTION_SKIPPED, [skip])):
            kafka_log.produce(producer, event_type, batch, key=lambda e: e["usage_event_id"].encode())
        producer.flush(timeout=10)
    finally:
        producer.close()

    weights = source_weights(settings)
    assert set(weights) == {"use-a", "use-b"}  # the other method's and the skipped event are not paid by
    assert weights["use-a"] == pytest.approx({7: 0.5, 9: 0.5})  # its two chunks of contribution 7 summed, once
    assert weights["use-b"] == {4: 1.0}
    assert source_weights(settings, method="leave_one_out") == {"use-c": {4: 1.0}}
