"""The ingester's log decoder against eth-abi's encoder, and its refusals; the reorg arithmetic. No services."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic

import contracts
from pipelines.ingest import reorg
from pipelines.ingest.decode import FACT_TYPES, SOURCE_CONTRACTS, LogDecoder, UndecodableLog, snake_case
from schemas import events

CHAIN_ID = 31337
ABI_EVENTS = {e["name"]: e for c in SOURCE_CONTRACTS
              for e in contracts.abi(c) if e["type"] == "event"}


def _value(abi_type: str, rng: random.Random) -> object:
    if abi_type == "address":
        return "0x" + rng.randbytes(20).hex()
    if abi_type == "bool":
        return rng.random() < 0.5
    if abi_type == "string":
        return "".join(rng.choice("abcé✓/:0") for _ in range(rng.randrange(0, 90)))
    if abi_type == "bytes32":
        return rng.randbytes(32)
    if abi_type.endswith("[]"):
        return [_value(abi_type[:-2], rng) for _ in range(rng.randrange(0, 4))]
    bits = int(abi_type.removeprefix("uint") or 256)
    return rng.randrange(0, 1 << min(bits, 63))  # ids and sizes are int64 fields; amounts are below 2**63 too


def _expected(abi_type: str, value: object, field_type: object) -> object:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list):
        return [v.lower() for v in value]
    if isinstance(value, str) and abi_type == "address":
        return value.lower()
    return str(value) if abi_type.startswith("uint") and str(field_type) == "string" else value


def _log(abi_event: dict, values: dict, log_index: int = 3) -> dict:
    indexed = [i for i in abi_event["inputs"] if i["indexed"]]
    plain = [i for i in abi_event["inputs"] if not i["indexed"]]
    topics = ["0x" + event_abi_to_log_topic(abi_event).hex()]
    topics += ["0x" + encode([i["type"]], [values[i["name"]]]).hex() for i in indexed]
    data = encode([i["type"] for i in plain], [values[i["name"]] for i in plain])
    return {"address": "0x" + "Ab" * 20, "topics": topics, "data": "0x" + data.hex(), "blockNumber": "0x1f",
            "blockHash": "0x" + "CD" * 32, "transactionHash": "0x" + "Ef" * 32, "logIndex": hex(log_index),
            "transactionIndex": "0x0", "removed": False}


@pytest.mark.parametrize("name", sorted(FACT_TYPES))
def test_every_fact_event_decodes_as_eth_abi_encodes_it(name):
    abi_event, event_type = ABI_EVENTS[name], FACT_TYPES[name]
    decoder = LogDecoder(CHAIN_ID)
    rng = random.Random(name)
    for _ in range(50):
        values = {i["name"]: _value(i["type"], rng) for i in abi_event["inputs"]}
        fact = decoder.decode(_log(abi_event, values))
        assert fact.event_type is event_type
        events.encode(event_type, [fact.record])  # schema-valid
        for argument in abi_event["inputs"]:
            field = snake_case(argument["name"])
            want = _expected(argument["type"], values[argument["name"]], event_type.schema.field(field).type)
            assert fact.record[field] == want, (field, argument["type"])
        assert fact.record["event_id"] == f"{CHAIN_ID}:0x{'ef' * 32}:3"
        assert fact.record["block_hash"] == "0x" + "cd" * 32 and fact.record["contract"] == "0x" + "ab" * 20
        assert fact.key == (f"dn-{fact.record['datanet_id']}".encode() if "datanet_id" in fact.record
                            else b"protocol")


def _submitted_log() -> dict:
    values = {"contributionId": 7, "datanetId": 2, "contributor": "0x" + "11" * 20, "contentHash": b"\x22" * 32,
              "uri": "cas://sha256/" + "22" * 32, "size": 10, "stake": 10**18}
    return _log(ABI_EVENTS["ContributionSubmitted"], values)


def _word(value: int) -> str:
    return f"{value:064x}"


@pytest.mark.parametrize("tamper, reason", [
    (lambda log: log["topics"].__setitem__(0, "0x" + "99" * 32), "unknown event signature"),
    (lambda log: log.update(topics=[]), "no topic0"),
    (lambda log: log["topics"].pop(), "needs 4 topics"),
    (lambda log: log.update(data=log["data"][:-64]), "overruns"),
    (lambda log: log.update(data=log["data"][:2 + 64 * 2]), "whole words"),
    (lambda log: log.update(data=log["data"][:66] + _word(10**6) + log["data"][130:]), "offset"),
    (lambda log: log["topics"].__setitem__(3, "0x" + "ff" * 12 + "11" * 20), "padding"),
    (lambda log: log["topics"].__setitem__(1, "0x" + _word(2**63)), "out of range"),
    (lambda log: log.update(data=log["data"][:2 + 64 * 2] + _word(2**64) + log["data"][2 + 64 * 3:]), "out of range"),
    (lambda log: log.update(data=log["data"][:2 + 64 * 5] + "ff" + log["data"][2 + 64 * 5 + 2:]), "not valid"),
    (lambda log: log.pop("transactionHash"), "malformed log"),
    (lambda log: log.update(logIndex="zz"), "malformed log"),
])
def test_a_malformed_log_is_refused_with_the_reason(tamper, reason):
    log = _submitted_log()
    LogDecoder(CHAIN_ID).decode(log)  # the untampered log is fine
    tamper(log)
    with pytest.raises(UndecodableLog, match=reason):
        LogDecoder(CHAIN_ID).decode(log)


def test_events_without_a_pipeline_schema_are_named_not_decoded():
    ownership = next(e for e in contracts.abi(contracts.DATANET_REGISTRY) if e.get("name") == "OwnershipTransferred")
    log = _log(ownership, {"previousOwner": "0x" + "00" * 20, "newOwner": "0x" + "11" * 20})
    assert LogDecoder(CHAIN_ID).decode(log) == "OwnershipTransferred"


# ---- reorg arithmetic ------------------------------------------------------------------------------

def test_fork_point_is_the_newest_stored_block_still_canonical():
    stored = ["a", "b", "c", "d"]  # blocks 10..13
    assert reorg.fork_point(14, stored, ["a", "b", "c", "d"]) == 13
    assert reorg.fork_point(14, stored, ["a", "b", "x", "y"]) == 11
    assert reorg.fork_point(14, stored, ["a", "b", None, None]) == 11  # the chain got shorter
    assert reorg.fork_point(14, stored, ["w", "x", "y", "z"]) is None


def test_window_extends_when_contiguous_and_restarts_otherwise():
    assert reorg.extend_window(["a", "b"], 12, 12, ["c", "d"], 3) == ["b", "c", "d"]
    assert reorg.extend_window(["a", "b"], 12, 20, ["x"], 3) == ["x"]


def test_marks_and_start_offsets_cover_every_block_after_the_fork():
    blocks, offsets = [5, 10, 20], [[0, 0], [3, 1], [7, 4]]
    assert reorg.trim_marks(blocks, offsets, 12) == ([10, 20], [[3, 1], [7, 4]])
    assert reorg.start_offsets(blocks, offsets, 15, 2) == [3, 1]
    assert reorg.start_offsets(blocks, offsets, 20, 3) == [7, 4, 0]
    assert reorg.start_offsets([], [], 20, 2) == [0, 0]


def test_live_orphans_skip_what_was_already_retracted():
    fact = {"event_id": "1:0xa:0", "chain_id": 1, "block_number": 9, "block_hash": "h9"}
    other = {**fact, "event_id": "1:0xb:0"}
    retraction = reorg.retraction("ContributionSubmitted", fact, "test")
    stream = [(b"k", "ContributionSubmitted", fact), (b"k", "FactRetracted", retraction),
              (b"k", "ContributionSubmitted", other), (b"k", "ContributionSubmitted", {**fact, "block_hash": "h8"})]
    assert reorg.live_orphans(stream, {"h9"}) == [(b"k", "ContributionSubmitted", other)]
    assert retraction["retracted_event_id"] == fact["event_id"] and retraction["event_id"].startswith("1:retracted:")
    assert reorg.retraction("ContributionSubmitted", fact, "again")["event_id"] == retraction["event_id"]
