"""Loading an epoch's inputs from the other stages' outputs: thin readers, kept apart from the pure split.

- verdicts: the ``payable.verdicts`` topic, each contribution's latest ContributionVerdict (a later one,
  e.g. after a reorg, replaces an earlier one);
- slashed: StakeSlashed chain facts not retracted by a reorg;
- influence: the attribution stage's ``<lance_dir>/influence.lance``, the rows of each datanet's newest
  dataset version (the model the epoch pays for).
"""

from __future__ import annotations

from dataclasses import fields

import pyarrow as pa

from payable import kafka_log
from payable.settings import Settings
from pipelines.attribution.canaries import payout_exclusions
from pipelines.rewards.split import EpochInputs, HarmEvidence
from schemas import events, influence, topics
from schemas import rewards as schema
from schemas import verdicts as _verdict_events  # noqa: F401 - registers ContributionVerdict for decoding

INFLUENCE_TABLE = "influence.lance"
EVIDENCE = [f.name for f in fields(HarmEvidence)]
INFLUENCE_WITH_HARM = pa.schema([*schema.INFLUENCE, *(influence.INFLUENCE.field(name) for name in (
    "harmful", *(name for name in EVIDENCE if name not in schema.INFLUENCE.names)))])


def load_inputs(settings: Settings, closing: bool = True) -> EpochInputs:
    """To close an epoch (``closing``), refuses (``CanaryError``) while a canary commitment is unrevealed: its
    canaries could be paid. Rechecking a closed epoch (``verify``) needs only the canaries revealed so far."""
    influence = load_influence(settings)
    return EpochInputs(influence.select(schema.INFLUENCE.names), load_verdicts(settings.kafka_bootstrap),
                       load_slashed(settings.kafka_bootstrap), harm_evidence(influence),
                       payout_exclusions(settings.kafka_bootstrap, refuse_pending=closing))


def harm_evidence(influence: pa.Table) -> dict[int, HarmEvidence]:
    """Flagged contribution id -> its evidence; of several flagged rows (methods, adapters), the first by
    (adapter, method), so the choice does not depend on the table's row order."""
    flagged = influence.filter(influence["harmful"]).sort_by([("adapter_id", "ascending"), ("method", "ascending")])
    out: dict[int, HarmEvidence] = {}
    for row in flagged.select(["contribution_id", *EVIDENCE]).to_pylist():
        out.setdefault(row.pop("contribution_id"), HarmEvidence(**row))
    return out


def load_influence(settings: Settings) -> pa.Table:
    """The newest dataset version's scores of every datanet, with attribution's ``harmful`` flag and evidence."""
    import lance

    path = settings.lance_dir / INFLUENCE_TABLE
    if not path.exists():
        return INFLUENCE_WITH_HARM.empty_table()
    table = lance.dataset(str(path)).to_table(columns=INFLUENCE_WITH_HARM.names).cast(INFLUENCE_WITH_HARM)
    newest = table.group_by("datanet_id").aggregate([("dataset_version", "max")])
    latest = dict(zip(newest.column("datanet_id").to_pylist(), newest.column("dataset_version_max").to_pylist(),
                      strict=True))
    keep = [latest[d] == v for d, v in zip(table.column("datanet_id").to_pylist(),
                                           table.column("dataset_version").to_pylist(), strict=True)]
    return table.filter(pa.array(keep, type=pa.bool_()))


def scored_adapters(settings: Settings) -> frozenset[str]:
    """Every adapter the influence table has scores for, in any dataset version."""
    import lance

    path = settings.lance_dir / INFLUENCE_TABLE
    if not path.exists():
        return frozenset()
    return frozenset(lance.dataset(str(path)).to_table(columns=["adapter_id"]).column("adapter_id").to_pylist())


def load_verdicts(bootstrap: str) -> pa.Table:
    latest: dict[int, dict] = {}
    for record in _records(bootstrap, topics.VERDICTS, "ContributionVerdict"):
        latest[record["contribution_id"]] = {name: record[name] for name in schema.VERDICT.names}
    rows = [latest[cid] for cid in sorted(latest)]
    return pa.Table.from_pylist(rows, schema=schema.VERDICT)


def load_slashed(bootstrap: str) -> frozenset[int]:
    slashed: dict[str, int] = {}
    retracted: set[str] = set()
    for record in _records(bootstrap, topics.CHAIN_FACTS, "StakeSlashed", "FactRetracted"):
        if "retracted_event_id" in record:
            retracted.add(record["retracted_event_id"])
        else:
            slashed[record["event_id"]] = record["contribution_id"]
    return frozenset(cid for event_id, cid in slashed.items() if event_id not in retracted)


def _records(bootstrap: str, topic: str, *names: str):
    """Decoded records of the given event types, partition by partition, in log order."""
    wanted = {name.encode() for name in names}
    for partition, end in sorted(kafka_log.end_offsets(bootstrap, topic).items()):
        for message in kafka_log.read_range(bootstrap, topic, partition, 0, end):
            if dict(message.headers).get(topics.HEADER_EVENT_TYPE) in wanted:
                yield events.decode(message.value, message.headers)[1]
