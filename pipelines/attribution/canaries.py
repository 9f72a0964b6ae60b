"""Canary contributions: known-bad texts the operator plants to measure whether attribution finds bad data.

Commit-reveal, so the operator cannot name "canaries" after seeing which contributions scored worst:
1. ``plant``: the canaries are submitted as ordinary contributions (through the chain, staked like any other,
   from the attribution operator's key), then ``CanariesCommitted`` goes on the log with
   keccak256(salt || each sorted id as a uint256 word); salt and ids are kept in a private file under
   ``<data_dir>/canaries`` (mode 0600) until the reveal;
2. the influence run records the commitment in force for its datanet (``canary_commitment``);
3. ``reveal``: salt and ids go on the log (``CanariesRevealed``) only if they hash to a commitment of that
   datanet and each id was planted for it: its ContributionSubmitted (on the log, ingested from the chain)
   came from the planting account the commitment recorded, at a block inside the commitment's planting
   window (after the head the planting started from, no later than the commitment). So an operator cannot
   name anyone else's contribution a canary (it would go unpaid), nor an older one of its own; a reveal on
   the log that breaks the rule is ignored when read, with the same reason (``planting_refusal``). A run's
   canary AUC (``quality.canary_auc``) is computed only from such a reveal of the very
   commitment the run recorded. No commitment, or no matching reveal: the AUC stays unmeasured.
A revealed canary is never paid, and while a commitment is unrevealed no epoch can close (``payout_exclusions``):
its canaries are not yet known to the split, so paying anything could pay them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sha3  # safe-pysha3: keccak256 as the EVM computes it
from eth_account.signers.local import LocalAccount

from payable import kafka_log
from payable.errors import PayableError
from payable.settings import Settings
from pipelines.log_views import live_submissions, read_view
from schemas import canaries as schema
from schemas import events, topics

_GARBAGE = "qxzjvkw0123456789"


class CanaryError(PayableError, ValueError):
    """A reveal that matches no commitment, a commitment still unrevealed at payout time, or no secret to reveal."""


def commitment_of(salt: str, contribution_ids: Sequence[int]) -> str:
    """keccak256(salt || sorted ids, each a 32-byte big-endian word), as 0x hex."""
    raw = bytes.fromhex(salt.removeprefix("0x"))
    if len(raw) != 32:
        raise CanaryError(f"a canary salt is 32 bytes, got {len(raw)}")
    words = b"".join(int(cid).to_bytes(32, "big") for cid in sorted(set(contribution_ids)))
    return "0x" + sha3.keccak_256(raw + words).hexdigest()


def canary_texts(count: int, seed: int) -> list[str]:
    """``count`` distinct known-bad texts: random tokens no datanet can learn from (enough words to pass the
    validate stage's minimum, unlike each other, so none is rejected as a duplicate)."""
    rng = random.Random(seed)
    return [" ".join("".join(rng.choice(_GARBAGE) for _ in range(rng.randint(3, 8))) for _ in range(24))
            for _ in range(count)]


@dataclass
class DatanetCanaries:
    """One datanet's canaries as the log tells them: commitments in log order, and the valid reveals."""

    commitments: list[str] = field(default_factory=list)
    revealed: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """commitment -> its canary ids, for reveals that hash to it and pass ``planting_refusal``."""
    records: dict[str, dict] = field(default_factory=dict)
    """commitment -> its CanariesCommitted record (planter and planting window, from v2 on)."""
    refused: dict[str, str] = field(default_factory=dict)
    """commitment -> why a reveal of it on the log was not accepted."""

    @property
    def in_force(self) -> str | None:
        """The commitment a run scored now is judged by: the latest one."""
        return self.commitments[-1] if self.commitments else None

    @property
    def pending(self) -> list[str]:
        return [c for c in self.commitments if c not in self.revealed]


def planting_refusal(committed: dict, contribution_ids: Sequence[int], submissions: dict[int, dict]) -> str | None:
    """Why ``contribution_ids`` cannot be the canaries of ``committed`` (a CanariesCommitted record), or None.

    ``submissions``: contribution id -> its live ContributionSubmitted fact. Each id must have been submitted by
    the planter the commitment recorded, in its window (from_block, block]: the rule that keeps an operator
    from naming someone else's (or an older) contribution a canary after seeing the scores."""
    planter = committed.get("planter")
    if planter is None:
        return (f"commitment {committed['commitment'][:18]}… recorded no planting account (a v1 commitment): "
                "nothing shows its ids were the operator's own plants")
    for cid in sorted(set(int(c) for c in contribution_ids)):
        fact = submissions.get(cid)
        if fact is None:
            return f"contribution {cid} has no ContributionSubmitted fact on the log (ingest the chain first)"
        if fact["contributor"].lower() != planter:
            return (f"contribution {cid} was submitted by {fact['contributor'].lower()}, not the planting account "
                    f"{planter}")
        if not committed["from_block"] < fact["block_number"] <= committed["block"]:
            return (f"contribution {cid} was submitted at block {fact['block_number']}, outside the planting window "
                    f"({committed['from_block']}, {committed['block']}] of the commitment")
    return None


def read_canaries(bootstrap: str) -> dict[int, DatanetCanaries]:
    """datanet id -> its canaries, from ``payable.canaries``; a reveal matching no earlier commitment of its
    datanet, or naming ids its planter did not plant for it, is ignored (the CLI refuses to write one; a
    forged one on the log proves nothing)."""
    out: dict[int, DatanetCanaries] = {}
    submissions: dict[int, dict] | None = None
    for message in kafka_log.read_topic(bootstrap, topics.CANARIES):
        event_type, record = events.decode(message.value, message.headers)
        state = out.setdefault(record["datanet_id"], DatanetCanaries())
        if event_type.name == schema.CANARIES_COMMITTED.name:
            if record["commitment"] not in state.commitments:
                state.commitments.append(record["commitment"])
                state.records[record["commitment"]] = record
        elif (record["commitment"] in state.commitments
              and commitment_of(record["salt"], record["contribution_ids"]) == record["commitment"]):
            if submissions is None:  # read the chain facts only when some reveal needs them
                submissions = live_submissions(read_view(bootstrap, topics.CHAIN_FACTS))
            why = planting_refusal(state.records[record["commitment"]], record["contribution_ids"], submissions)
            if why is None:
                state.revealed[record["commitment"]] = tuple(sorted(record["contribution_ids"]))
            else:
                state.refused[record["commitment"]] = why
    return out


def for_datanet(bootstrap: str, datanet_id: int) -> DatanetCanaries:
    return read_canaries(bootstrap).get(datanet_id, DatanetCanaries())


def payout_exclusions(bootstrap: str, refuse_pending: bool = True) -> frozenset[int]:
    """Every revealed canary id (never paid); with ``refuse_pending``, refuses while any commitment is
    unrevealed."""
    state = read_canaries(bootstrap)
    pending = [(d, c) for d, s in sorted(state.items()) for c in s.pending]
    if pending and refuse_pending:
        datanet, commitment = pending[0]
        raise CanaryError(f"datanet {datanet} has unrevealed canaries ({commitment[:18]}…): reveal them with "
                          f"`payable canaries reveal --datanet {datanet}` before closing an epoch, so none is paid")
    return frozenset(cid for s in state.values() for ids in s.revealed.values() for cid in ids)


def _append(bootstrap: str, event_type: events.EventType, record: dict) -> None:
    """Writes one canary event, keyed by its datanet, and waits for the broker's acknowledgement."""
    kafka_log.ensure_topics(bootstrap, [topics.CANARIES])
    producer = kafka_log.make_producer(bootstrap)
    try:
        (future,) = kafka_log.produce(producer, event_type, [record], key=lambda r: topics.datanet_key(r["datanet_id"]),
                                      topic=topics.CANARIES)
        future.get(timeout=30)
    finally:
        producer.close(timeout=30)


def secret_path(data_dir: Path, datanet_id: int, commitment: str) -> Path:
    return Path(data_dir) / "canaries" / f"dn-{datanet_id}-{commitment[2:18]}.json"


def commit(bootstrap: str, data_dir: Path, datanet_id: int, contribution_ids: Sequence[int], planter: str,
           window: tuple[int, int], salt: str | None = None) -> str:
    """Writes the secret file, then ``CanariesCommitted`` with the ``planter`` account and the planting
    ``window`` (from_block, block] its canaries were submitted in; returns the commitment."""
    salt = salt or "0x" + secrets.token_hex(32)
    ids = sorted(set(int(c) for c in contribution_ids))
    if not ids:
        raise CanaryError("no canary contribution ids to commit")
    commitment = commitment_of(salt, ids)
    path = secret_path(data_dir, datanet_id, commitment)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"datanet_id": datanet_id, "commitment": commitment, "salt": salt, "contribution_ids": ids}, out)
    _append(bootstrap, schema.CANARIES_COMMITTED, {"event_id": commitment, "datanet_id": datanet_id,
                                                   "commitment": commitment, "count": len(ids),
                                                   "planter": planter.lower(), "from_block": window[0],
                                                   "block": window[1]})
    return commitment


def read_secret(data_dir: Path, datanet_id: int, commitment: str) -> tuple[str, list[int]]:
    """The salt and ids ``commit`` kept for ``commitment``."""
    path = secret_path(data_dir, datanet_id, commitment)
    if not path.exists():
        raise CanaryError(f"no canary secret for datanet {datanet_id} commitment {commitment[:18]}… in {path.parent}:"
                          " give --salt and --ids")
    doc = json.loads(path.read_text())
    return doc["salt"], doc["contribution_ids"]


def reveal(bootstrap: str, datanet_id: int, salt: str, contribution_ids: Sequence[int]) -> tuple[str, tuple[int, ...]]:
    """Writes ``CanariesRevealed`` when (salt, ids) open one of the datanet's commitments; refuses otherwise.
    Returns (commitment, ids). Revealing twice writes the same event id (idempotent)."""
    state = for_datanet(bootstrap, datanet_id)
    if not state.commitments:
        raise CanaryError(f"datanet {datanet_id} has no canary commitment on the log: nothing to reveal")
    try:
        commitment = commitment_of(salt, contribution_ids)
    except ValueError as exc:
        raise CanaryError(f"malformed canary salt: {exc}") from exc
    if commitment not in state.commitments:
        raise CanaryError(f"the reveal does not match datanet {datanet_id}'s canary commitment "
                          f"{state.in_force[:18]}… (wrong salt or ids): refused")
    why = planting_refusal(state.records[commitment], contribution_ids,
                           live_submissions(read_view(bootstrap, topics.CHAIN_FACTS)))
    if why is not None:
        raise CanaryError(f"the reveal of {commitment[:18]}… is refused: {why}")
    ids = tuple(sorted(set(int(c) for c in contribution_ids)))
    if commitment not in state.revealed:
        event_id = "0x" + hashlib.sha256(f"CanariesRevealed:{commitment}".encode()).hexdigest()
        _append(bootstrap, schema.CANARIES_REVEALED, {"event_id": event_id, "datanet_id": datanet_id,
                                                      "commitment": commitment, "salt": salt,
                                                      "contribution_ids": list(ids)})
    return commitment, ids


@dataclass(frozen=True)
class Planted:
    datanet_id: int
    commitment: str
    contribution_ids: tuple[int, ...]
    secret: Path


def plant(settings: Settings, datanet_id: int, count: int, account: LocalAccount, seed: int | None = None) -> Planted:
    """Submits ``count`` canary texts to the datanet through the chain from ``account`` (staked like any
    contribution), then commits their ids on the log. ``seed`` (default: secret randomness) fixes the texts."""
    from payable.chain import Chain, Deployment
    from payable.content_store import ContentStore
    from payable.datanets import contribute

    if count < 1:
        raise CanaryError(f"plant at least one canary, got {count}")
    texts = canary_texts(count, secrets.randbits(64) if seed is None else seed)
    chain = Chain(settings.rpc_url)
    start = chain.w3.eth.block_number
    with tempfile.TemporaryDirectory(prefix="payable-canaries-") as folder:
        paths = []
        for i, text in enumerate(texts):
            paths.append(Path(folder) / f"canary-{i}.txt")
            paths[-1].write_text(text)
        submitted = contribute(chain, Deployment.load(settings.deployment_file),
                               ContentStore(settings.content_dir), account, datanet_id, paths)
    ids = tuple(sorted(s.contribution_id for s in submitted))
    commitment = commit(settings.kafka_bootstrap, settings.data_dir, datanet_id, ids, account.address,
                        (start, chain.w3.eth.block_number))
    return Planted(datanet_id, commitment, ids, secret_path(settings.data_dir, datanet_id, commitment))


@dataclass(frozen=True)
class Revealed:
    commitment: str
    contribution_ids: tuple[int, ...]
    aucs: dict[tuple, float | None]
    """(datanet, dataset version, adapter, method) of each run scored under the commitment -> its canary AUC."""


def reveal_and_score(settings: Settings, datanet_id: int, salt: str, contribution_ids: Sequence[int]) -> Revealed:
    """``reveal``, then the canary AUC of every influence run that recorded this commitment, into its rows."""
    from pipelines.attribution.quality import rows_canary_auc  # torch: only the reveal needs it
    from pipelines.attribution.table import record_canaries

    commitment, ids = reveal(settings.kafka_bootstrap, datanet_id, salt, contribution_ids)
    return Revealed(commitment, ids, record_canaries(settings.lance_dir, datanet_id, commitment, set(ids),
                                                     rows_canary_auc))
