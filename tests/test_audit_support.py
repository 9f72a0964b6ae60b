"""A small real run of the whole loop for the audit tests, and chain facts read from anvil's logs; no tests.

Until the chain ingester (``pipelines/ingest``) lands, ``produce_chain_facts`` stands in for it: it turns the
contracts' real logs (real tx hashes, log indexes, block hashes) past the confirmation depth into
schema-valid facts on ``payable.chain.facts``, each once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import contracts
from payable import kafka_log
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec, contribute, create_datanet
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.synthetic import contribution_text, sentence
from pipelines.rewards.claims import claim
from pipelines.rewards.emitter import emit_epoch
from pipelines.rewards.epochs import close_epoch
from pipelines.rewards.inputs import load_inputs
from pipelines.rewards.params import governed_params
from pipelines.training import train_latest
from pipelines.validate.run import validate_new_offsets
from schemas import events, topics
from tests.attribution_fixtures import FAST, write_evals
from tests.chain_helpers import mine

DEPLOYER, VALIDATOR = dev_account(Role.DEPLOYER.value), dev_account(Role.VALIDATOR.value)
ON_TOPIC, SECOND, OFF_TOPIC = (dev_account(i) for i in (3, 4, 5))
STAKE = 10**18

# (event name, contract attribute of Deployment, fact type, fields of the fact from the log's args)
_FACTS = (
    ("DatanetCreated", "registry", events.DATANET_CREATED, lambda a: {
        "datanet_id": a["datanetId"], "owner": a["owner"].lower(), "metadata_uri": a["metadataURI"],
        "min_stake": str(a["minStake"]), "max_contribution_size": a["maxContributionSize"],
        "permissioned": a["permissioned"], "validators": [v.lower() for v in a["validators"]]}),
    ("ContributionSubmitted", "registry", events.CONTRIBUTION_SUBMITTED, lambda a: {
        "contribution_id": a["contributionId"], "datanet_id": a["datanetId"], "contributor": a["contributor"].lower(),
        "content_hash": _hex(a["contentHash"]), "uri": a["uri"], "size": a["size"], "stake": str(a["stake"])}),
    ("StakeSlashed", "registry", events.STAKE_SLASHED, lambda a: {
        "contribution_id": a["contributionId"], "datanet_id": a["datanetId"], "validator": a["validator"].lower(),
        "reason_code": a["reasonCode"], "amount": str(a["amount"])}),
    ("EpochPublished", "distributor", events.EPOCH_PUBLISHED, lambda a: {
        "epoch_id": a["epochId"], "merkle_root": _hex(a["merkleRoot"]), "total": str(a["total"])}),
    ("RewardClaimed", "distributor", events.REWARD_CLAIMED, lambda a: {
        "epoch_id": a["epochId"], "account": a["account"].lower(), "amount": str(a["amount"])}),
)
_ABI = {"registry": contracts.DATANET_REGISTRY, "distributor": contracts.REWARD_DISTRIBUTOR}


def _hex(value: bytes) -> str:
    return "0x" + value.hex().removeprefix("0x")


def produce_chain_facts(settings: Settings, chain: Chain, deployment: Deployment, seen: set[str]) -> int:
    """Mines past the confirmation depth, then produces every confirmed log not in ``seen`` as a chain fact."""
    mine(chain, settings.confirmations)
    head = chain.w3.eth.block_number - settings.confirmations
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    produced = 0
    for name, where, fact_type, fields in _FACTS:
        contract = chain.contract(_ABI[where], getattr(deployment, where))
        for log in getattr(contract.events, name)().get_logs(from_block=deployment.deploy_block, to_block=head):
            fact = {"event_id": f"{chain.chain_id}:{_hex(log['transactionHash'])}:{log['logIndex']}",
                    "chain_id": chain.chain_id, "block_number": log["blockNumber"],
                    "block_hash": _hex(log["blockHash"]), "tx_hash": _hex(log["transactionHash"]),
                    "log_index": log["logIndex"], "contract": log["address"].lower(), **fields(log["args"])}
            if fact["event_id"] in seen:
                continue
            seen.add(fact["event_id"])
            key = topics.datanet_key(fact["datanet_id"]) if "datanet_id" in fact else topics.PROTOCOL_KEY.encode()
            kafka_log.produce(producer, fact_type, [fact], key=lambda _r, k=key: k)
            produced += 1
    producer.flush()
    producer.close()
    return produced


@dataclass
class LoopRun:
    """What the small run did, for tests to check the audit against."""

    datanet_id: int
    contribution_ids: dict[str, list[int]]  # contributor address (lower) -> its contribution ids
    duplicate_id: int
    claim_tx: str
    seen_facts: set[str] = field(default_factory=set)


def run_small_loop(settings: Settings, chain: Chain, deployment: Deployment, tmp: Path) -> LoopRun:
    """facts -> validate -> train -> attribute -> close epoch 1 -> emit on anvil -> ON_TOPIC claims."""
    store = ContentStore(settings.content_dir)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    datanet = create_datanet(chain, deployment, store, DEPLOYER, DatanetSpec("cooking"), min_stake=STAKE,
                             max_contribution_size=10_000, validators=[VALIDATOR.address])
    rng = random.Random(0)
    plan = {ON_TOPIC: ["on_topic"] * 3, SECOND: ["on_topic"] * 2, OFF_TOPIC: ["off_topic"] * 2}
    texts = {who: [contribution_text(rng, kind, 3) for kind in kinds] for who, kinds in plan.items()}
    texts[SECOND].append(texts[ON_TOPIC][0])  # an exact copy: rejected as a duplicate, slashed by the emitter
    ids: dict[str, list[int]] = {}
    for who, items in texts.items():
        chain.transact(DEPLOYER, token.functions.transfer(who.address, STAKE * len(items)), label="stake money")
        files = []
        for i, text in enumerate(items):
            files.append(tmp / f"{who.address}-{i}.txt")
            files[-1].write_text(text)
        ids[who.address.lower()] = [s.contribution_id for s in contribute(chain, deployment, store, who, datanet,
                                                                          files)]
    run = LoopRun(datanet, ids, ids[SECOND.address.lower()][-1], "")
    produce_chain_facts(settings, chain, deployment, run.seen_facts)

    validate_new_offsets(settings)
    write_evals(settings, datanet, [" ".join(sentence(rng, "cooking") for _ in range(2)) for _ in range(8)])
    record = train_latest(settings, datanet, FAST, show_progress=False).record
    attribute(settings, datanet, record.adapter_id, ScoreArguments(method="tracin", projection_dim=64))
    close_epoch(settings, 1, load_inputs(settings), governed_params(chain, deployment))
    assert emit_epoch(settings, deployment, 1, push=False).ok
    run.claim_tx = claim(settings, deployment, 1, ON_TOPIC).tx_hash
    produce_chain_facts(settings, chain, deployment, run.seen_facts)
    return run
