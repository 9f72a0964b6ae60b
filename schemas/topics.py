"""Kafka topics, keys and headers: the one place that names them.

| topic                     | key                         | value                           | written by            |
|---------------------------|-----------------------------|---------------------------------|-----------------------|
| payable.chain.facts       | datanet id ("dn-<id>"), or  | chain facts: DatanetCreated,    | chain ingester        |
|                           | "protocol" for epoch events | ContributionSubmitted,          |                       |
|                           |                             | ContributionRetracted, ...      |                       |
| payable.chain.checkpoints | chain id ("chain-<id>")     | IngestCheckpoint                | chain ingester        |
| payable.chain.dlq         | chain id                    | DeadLetter (raw log + error)    | chain ingester        |
| payable.alerts            | chain id                    | Alert (e.g. reorg deeper than   | any stage             |
|                           |                             | the confirmation window)        |                       |
| payable.verdicts          | datanet id                  | ContributionVerdict             | validate stage        |
| payable.verdicts.dlq      | datanet id                  | DeadLetter                      | validate stage        |
| payable.rewards.outbox    | epoch ("epoch-<n>")         | emitter states of an epoch      | reward emitter        |
| payable.usage             | usage event id              | UsageEvent (one served request) | payable serve         |
| payable.commitments       | commitment id (0x bytes32)  | model / influence commitment    | commitments publisher |
|                           |                             | records and their tx states     |                       |
| payable.usage.attribution | usage event id              | ContextAttributed, ContextAttri-| context-attribution   |
|                           |                             | butionSkipped (per RAG answer)  | stage                 |
| payable.canaries          | datanet id                  | CanariesCommitted, Canaries-    | attribution operator  |
|                           |                             | Revealed (planted known-bad)    | (`payable canaries`)  |

Every message carries the headers ``event-type`` (e.g. b"ContributionSubmitted") and
``schema-version`` (e.g. b"1"); values are UTF-8 JSON objects validated against the pyarrow schema
of that type and version (``schemas.events``). Keys by datanet keep a datanet's events in order.
"""

from __future__ import annotations

CHAIN_FACTS = "payable.chain.facts"
CHAIN_CHECKPOINTS = "payable.chain.checkpoints"
CHAIN_DLQ = "payable.chain.dlq"
ALERTS = "payable.alerts"
VERDICTS = "payable.verdicts"
VERDICTS_DLQ = "payable.verdicts.dlq"
REWARDS_OUTBOX = "payable.rewards.outbox"
USAGE = "payable.usage"
COMMITMENTS = "payable.commitments"
USAGE_ATTRIBUTION = "payable.usage.attribution"
CANARIES = "payable.canaries"

ALL_TOPICS = (CHAIN_FACTS, CHAIN_CHECKPOINTS, CHAIN_DLQ, ALERTS, VERDICTS, VERDICTS_DLQ, REWARDS_OUTBOX, USAGE,
              COMMITMENTS, USAGE_ATTRIBUTION, CANARIES)

HEADER_EVENT_TYPE = "event-type"
HEADER_SCHEMA_VERSION = "schema-version"

PROTOCOL_KEY = "protocol"


def datanet_key(datanet_id: int) -> bytes:
    """The partition key of everything about one datanet, so its events stay ordered."""
    return f"dn-{datanet_id}".encode()


def chain_key(chain_id: int) -> bytes:
    return f"chain-{chain_id}".encode()


def epoch_key(epoch_id: int) -> bytes:
    return f"epoch-{epoch_id}".encode()


def commitment_key(commitment_id: str) -> bytes:
    """A commitment's record and transaction states share one key, so they stay in order."""
    return commitment_id.encode()
