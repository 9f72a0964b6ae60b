"""The Kafka edge against the real broker process: topics, validated produce, bounded range reads."""

from __future__ import annotations

import pytest

from payable import kafka_log
from schemas import events, topics


def _submitted(contribution_id: int) -> dict:
    return {
        "event_id": f"31337:0x{contribution_id:064x}:0", "chain_id": 31337, "block_number": contribution_id,
        "block_hash": "0x" + "ab" * 32, "tx_hash": f"0x{contribution_id:064x}", "log_index": 0,
        "contract": "0x" + "11" * 20, "contribution_id": contribution_id, "datanet_id": 1,
        "contributor": "0x" + "22" * 20, "content_hash": "0x" + "33" * 32, "uri": "cas://sha256/" + "33" * 32,
        "size": 10, "stake": str(10**18),
    }


def test_produce_then_read_exact_range(stack):
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    kafka_log.ensure_topics(stack.kafka_bootstrap)  # idempotent
    producer = kafka_log.make_producer(stack.kafka_bootstrap)
    records = [_submitted(i) for i in range(1, 11)]
    futures = kafka_log.produce(producer, events.CONTRIBUTION_SUBMITTED, records,
                                key=lambda r: topics.datanet_key(r["datanet_id"]))
    partition = futures[0].get(timeout=10).partition
    producer.flush()
    producer.close()

    ends = kafka_log.end_offsets(stack.kafka_bootstrap, topics.CHAIN_FACTS)
    assert ends[partition] == 10, "all ten records of one datanet land in one partition"
    read = list(kafka_log.read_range(stack.kafka_bootstrap, topics.CHAIN_FACTS, partition, 3, 7))
    assert [m.offset for m in read] == [3, 4, 5, 6]
    decoded = [events.decode(m.value, m.headers)[1] for m in read]
    assert [d["contribution_id"] for d in decoded] == [4, 5, 6, 7]


def test_produce_refuses_malformed_event():
    bad = _submitted(1)
    del bad["stake"]
    with pytest.raises(events.SchemaError, match="missing fields"):
        events.encode(events.CONTRIBUTION_SUBMITTED, [bad])
    wrong_type = _submitted(1) | {"size": "ten"}
    with pytest.raises(events.SchemaError):
        events.encode(events.CONTRIBUTION_SUBMITTED, [wrong_type])


@pytest.mark.parametrize("value, headers, reason", [
    (b"{}", [], "headers"),
    (b"not json", events.CONTRIBUTION_SUBMITTED.headers, "not UTF-8 JSON"),
    (b"\xff\xfe", events.CONTRIBUTION_SUBMITTED.headers, "not UTF-8 JSON"),
    (b"", events.CONTRIBUTION_SUBMITTED.headers, "empty"),
    (b"[1]", events.CONTRIBUTION_SUBMITTED.headers, "not a JSON object"),
    (b"{}", [("event-type", b"Nope"), ("schema-version", b"1")], "unknown event type"),
])
def test_decode_names_what_is_wrong(value, headers, reason):
    with pytest.raises(events.SchemaError, match=reason):
        events.decode(value, headers)
