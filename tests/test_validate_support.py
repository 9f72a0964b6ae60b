"""Factories shared by the validate and dedupe tests (chain facts, datanets, content); no tests here."""

from __future__ import annotations

import hashlib
import random

from payable import kafka_log
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.validate.datanet_info import DatanetInfo
from schemas import events, topics

CHAIN_ID = 31337
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ra", "si", "tu", "ve", "zo", "ba", "de")
         for b in ("ron", "lis", "mat", "gen", "tor", "vak", "pel", "sun", "dri", "qua")]


def text(seed: int, words: int = 60) -> str:
    """A deterministic pseudo-sentence of ``words`` words, distinct for distinct seeds."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(words))


def mutate(source: str, replaced: int, seed: int = 0) -> str:
    """``source`` with ``replaced`` words swapped for new ones (a near-duplicate when small)."""
    rng = random.Random(seed)
    words = source.split()
    for index in rng.sample(range(len(words)), replaced):
        words[index] = f"zz{rng.randrange(10**6)}"
    return " ".join(words)


def created(datanet_id: int, store: ContentStore, spec: DatanetSpec | None = None, *, offset: int = 0,
            max_size: int = 10_000, metadata_uri: str | None = None) -> dict:
    """A DatanetCreated chain fact whose spec JSON is in ``store``."""
    uri = metadata_uri or store.put((spec or DatanetSpec(f"dn{datanet_id}")).to_json())[1]
    return {**_envelope(f"dn{datanet_id}", offset), "datanet_id": datanet_id, "owner": "0x" + "01" * 20,
            "metadata_uri": uri, "min_stake": "0", "max_contribution_size": max_size, "permissioned": False,
            "validators": []}


def submitted(contribution_id: int, datanet_id: int, store: ContentStore | None, content: bytes, *,
              offset: int | None = None, uri: str | None = None, size: int | None = None,
              content_hash: str | None = None, block_hash: str | None = None) -> dict:
    """A ContributionSubmitted chain fact for ``content`` (stored in ``store`` unless ``uri`` is given)."""
    digest = "0x" + hashlib.sha256(content).hexdigest()
    if uri is None:
        digest, uri = store.put(content)
    fact = {**_envelope(f"c{contribution_id}", contribution_id if offset is None else offset, block_hash),
            "contribution_id": contribution_id, "datanet_id": datanet_id, "contributor": "0x" + "02" * 20,
            "content_hash": content_hash or digest, "uri": uri, "size": len(content) if size is None else size,
            "stake": "1000"}
    return fact


def retracted(fact: dict, *, offset: int) -> dict:
    """A FactRetracted chain fact for a ContributionSubmitted ``fact``."""
    return {"event_id": "r:" + fact["event_id"], "chain_id": CHAIN_ID, "retracted_event_id": fact["event_id"],
            "retracted_event_type": "ContributionSubmitted", "retracted_block_number": fact["block_number"],
            "retracted_block_hash": fact["block_hash"], "datanet_id": fact["datanet_id"],
            "contribution_id": fact["contribution_id"], "reason": "reorg", "_partition": 0, "_offset": offset}


def info(datanet_id: int, spec: DatanetSpec | None = None, max_size: int = 10_000) -> DatanetInfo:
    """A resolved datanet created at the start of partition 0."""
    return DatanetInfo(datanet_id, max_size, spec or DatanetSpec(f"dn{datanet_id}"), "", 0, -1)


def _envelope(tag: str, offset: int, block_hash: str | None = None) -> dict:
    tx = "0x" + hashlib.sha256(tag.encode()).hexdigest()
    return {"event_id": f"{CHAIN_ID}:{tx}:0", "chain_id": CHAIN_ID, "block_number": 100 + offset,
            "block_hash": block_hash or "0x" + "ab" * 32, "tx_hash": tx, "log_index": 0,
            "contract": "0x" + "11" * 20, "_partition": 0, "_offset": offset}


def produce_facts(settings, event_type: events.EventType, records: list[dict]) -> None:
    """Produces factory-made facts to the real broker (test-only ``_``-prefixed keys dropped), keyed by datanet."""
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    clean = [{k: v for k, v in record.items() if not k.startswith("_")} for record in records]
    kafka_log.produce(producer, event_type, clean, key=lambda r: topics.datanet_key(r["datanet_id"]))
    producer.flush()
    producer.close()
