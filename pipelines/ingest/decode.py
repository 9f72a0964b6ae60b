"""Raw chain logs -> chain-fact records (``schemas.events``), or the reason a log cannot be one.

Decoders are built once from the contracts' ABIs: topic0 (the event signature hash) -> a decoder that
reads the indexed arguments from the topics and the rest from the ABI-encoded data, and names them as
the event's schema does (``contributionId`` -> ``contribution_id``). The build fails loudly if a schema
and its ABI event disagree, so a contract change cannot silently drop a field.

Decoding reads the hex words of the log directly instead of calling eth-abi per log: on this 2-core
machine eth-abi's tuple decoder took 45-65 µs for a ContributionSubmitted's data alone, this takes about
20 µs for the whole record (envelope included). It covers the ABI types payable's events use (static
elementary types, ``string``, ``bytes``, arrays of static elementary types) with eth-abi's strict checks
(value ranges, zero padding, offsets inside the data, UTF-8); a type outside that set fails the build,
not a log. A test checks it
against eth-abi's encoder on random values.

ABI events that the pipeline has no schema for (ownership and role changes, the stake lock period,
the treasury address) are ``ignored`` and counted by name; a topic0 that no payable contract declares,
or a log whose data does not decode, raises ``UndecodableLog`` and becomes a dead letter.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import NamedTuple

import pyarrow as pa
from eth_utils import event_abi_to_log_topic

import contracts
from schemas import events, topics

# The chain facts the ingester emits, by the ABI event name that produces each one.
FACT_TYPES = {t.name: t for t in (
    events.DATANET_CREATED, events.VALIDATOR_SET, events.CONTRIBUTION_SUBMITTED, events.STAKE_SLASHED,
    events.STAKE_RELEASED, events.MINIMUM_STAKE_CHANGED, events.EPOCH_PUBLISHED, events.REWARD_CLAIMED,
    events.ACCESS_REQUESTED, events.ACCESS_GRANTED, events.ACCESS_REVOKED,
    events.AGENT_REGISTERED, events.AGENT_UNSTAKED, events.AGENT_SLASHED,
)}
SOURCE_CONTRACTS = (contracts.DATANET_REGISTRY, contracts.REWARD_DISTRIBUTOR, contracts.AGENT_REGISTRY)
ENVELOPE = ("event_id", "chain_id", "block_number", "block_hash", "tx_hash", "log_index", "contract")
PROTOCOL_KEY = topics.PROTOCOL_KEY.encode()
DEAD_LETTER_ORIGIN = "ingest"

_INT64 = (-(2**63), 2**63 - 1)
_ZERO_WORD = "0" * 64


class UndecodableLog(ValueError):
    """A log that is not a well-formed event of payable's contracts."""


class Fact(NamedTuple):
    """One decoded log: its schema, partition key and validated-to-be record (a tuple: made per log)."""

    event_type: events.EventType
    key: bytes
    record: dict


def snake_case(name: str) -> str:
    """ABI argument name -> schema field name: ``metadataURI`` -> ``metadata_uri``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


# ---- ABI words ---------------------------------------------------------------------------------

def _word_decoder(abi_type: str, field: pa.Field | None = None) -> Callable[[str], object]:
    """A function of one 64-hex-digit word returning the value of a static elementary ABI type, as the
    schema ``field`` holds it: int64 fields get ints (checked to fit), string fields decimal strings."""
    if abi_type == "address":
        def address(word: str) -> str:
            if word[:24] != _ZERO_WORD[:24]:
                raise UndecodableLog(f"address word has non-zero padding: {word}")
            int(word, 16)  # rejects non-hex digits
            return "0x" + word[24:].lower()
        return address
    if abi_type == "bool":
        def boolean(word: str) -> bool:
            value = int(word, 16)
            if value > 1:
                raise UndecodableLog(f"bool word is {value}")
            return value == 1
        return boolean
    match = re.fullmatch(r"(u?)int(\d*)", abi_type)
    if match:
        return _integer_decoder(abi_type, not match.group(1), int(match.group(2) or 256), field)
    match = re.fullmatch(r"bytes(\d+)", abi_type)
    if match and 1 <= int(match.group(1)) <= 32:
        width = 2 * int(match.group(1))

        def fixed_bytes(word: str) -> str:
            if word[width:] != _ZERO_WORD[width:]:
                raise UndecodableLog(f"{abi_type} word has non-zero padding: {word}")
            int(word, 16)
            return "0x" + word[:width].lower()
        return fixed_bytes
    raise ValueError(f"ABI type {abi_type!r} is not supported by the ingester's decoder")


def _integer_decoder(abi_type: str, signed: bool, bits: int, field: pa.Field | None) -> Callable[[str], object]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    as_text = field is not None and pa.types.is_string(field.type)
    if field is not None and pa.types.is_integer(field.type):
        low, high = max(low, _INT64[0]), min(high, _INT64[1])
    what = f"{abi_type} {field.name}" if field is not None else abi_type
    if not signed and not as_text and high < 1 << 64:
        # Most words hold small numbers: compare the zero padding, parse only the last 16 digits.
        def small_uint(word: str) -> int:
            value = int(word[48:], 16)
            if word[:48] != _ZERO_WORD[:48] or value > high:
                raise UndecodableLog(f"{what} out of range: 0x{word}")
            return value
        return small_uint

    def integer(word: str) -> object:
        value = int(word, 16)
        if signed and value >= 1 << 255:
            value -= 1 << 256
        if not low <= value <= high:
            raise UndecodableLog(f"{what} out of range: {value}")
        return str(value) if as_text else value
    return integer


def _word(data: str, index: int) -> str:
    word = data[64 * index: 64 * index + 64]
    if len(word) != 64:
        raise UndecodableLog(f"data ends before word {index} ({len(data) // 2} bytes)")
    return word


def _tail_decoder(abi_type: str) -> Callable[[str, int], object]:
    """A function of (data hex, byte offset) returning a dynamic value (string, bytes, T[])."""
    if abi_type in ("string", "bytes"):
        def blob(data: str, offset: int) -> object:
            length = int(_word(data, offset // 32), 16)
            start = 2 * offset + 64
            raw = data[start: start + 2 * length]
            if len(raw) != 2 * length:
                raise UndecodableLog(f"{abi_type} of {length} bytes overruns the data")
            try:
                value = bytes.fromhex(raw)
                return "0x" + value.hex() if abi_type == "bytes" else value.decode("utf-8")
            except ValueError as exc:
                raise UndecodableLog(f"{abi_type} is not valid: {exc}") from exc
        return blob
    if abi_type.endswith("[]"):
        element = _word_decoder(abi_type[:-2])

        def array(data: str, offset: int) -> list:
            first = offset // 32
            length = int(_word(data, first), 16)
            if 64 * (first + 1 + length) > len(data):
                raise UndecodableLog(f"{abi_type} of {length} elements overruns the data")
            return [element(_word(data, first + 1 + i)) for i in range(length)]
        return array
    raise ValueError(f"ABI type {abi_type!r} is not supported by the ingester's decoder")


def _is_dynamic(abi_type: str) -> bool:
    return abi_type in ("string", "bytes") or abi_type.endswith("[]")


# ---- events --------------------------------------------------------------------------------------

class EventDecoder:
    """Decodes the logs of one ABI event into records of its schema."""

    def __init__(self, abi_event: dict, event_type: events.EventType):
        self.event_type = event_type
        inputs = abi_event["inputs"]
        names = [snake_case(i["name"]) for i in inputs]
        expected = [n for n in event_type.schema.names if n not in ENVELOPE]
        if sorted(names) != sorted(expected):
            raise ValueError(f"{event_type.name}: ABI arguments {names} do not match the schema's fields {expected}")
        self.indexed: list[tuple[str, Callable]] = []
        self.static: list[tuple[str, int, Callable]] = []
        self.dynamic: list[tuple[str, int, Callable]] = []
        head = 0
        for name, argument in zip(names, inputs, strict=True):
            abi_type, field = argument["type"], event_type.schema.field(name)
            if argument["indexed"]:
                if _is_dynamic(abi_type):
                    raise ValueError(f"{event_type.name}.{name}: indexed {abi_type} is only a hash")
                self.indexed.append((name, _word_decoder(abi_type, field)))
                continue
            if _is_dynamic(abi_type):
                self.dynamic.append((name, head, _tail_decoder(abi_type)))
            else:
                self.static.append((name, head, _word_decoder(abi_type, field)))
            head += 1
        self.head_words = head
        self.keyed_by_datanet = "datanet_id" in expected

    def decode(self, log: dict, chain_id: int) -> Fact:
        """The fact of ``log``; raises UndecodableLog saying what is wrong with it."""
        try:
            log_topics = log["topics"]
            data = log["data"][2:]
            tx_hash = log["transactionHash"].lower()
            log_index = int(log["logIndex"], 16)
            record = {
                "event_id": f"{chain_id}:{tx_hash}:{log_index}", "chain_id": chain_id,
                "block_number": int(log["blockNumber"], 16), "block_hash": log["blockHash"].lower(),
                "tx_hash": tx_hash, "log_index": log_index, "contract": log["address"].lower(),
            }
            if len(log_topics) != len(self.indexed) + 1:
                raise UndecodableLog(f"{self.event_type.name} needs {len(self.indexed) + 1} topics, "
                                     f"the log has {len(log_topics)}")
            if len(data) % 64 or len(data) < 64 * self.head_words:
                raise UndecodableLog(f"{self.event_type.name}: data of {len(data) // 2} bytes is not "
                                     f"{self.head_words} or more whole words")
            for (name, decode), topic in zip(self.indexed, log_topics[1:], strict=True):
                record[name] = decode(topic[2:])
            for name, index, decode in self.static:
                record[name] = decode(data[64 * index: 64 * index + 64])
            for name, index, decode in self.dynamic:
                offset = int(data[64 * index: 64 * index + 64], 16)
                if offset % 32 or 2 * offset >= len(data):
                    raise UndecodableLog(f"{name}: offset {offset} is not a word inside the data")
                record[name] = decode(data, offset)
        except UndecodableLog:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise UndecodableLog(f"{self.event_type.name}: malformed log: {type(exc).__name__}: {exc}") from exc
        key = topics.datanet_key(record["datanet_id"]) if self.keyed_by_datanet else PROTOCOL_KEY
        return Fact(self.event_type, key, record)


class LogDecoder:
    """topic0 -> decoder over the contracts that payable ingests; knows which events it ignores."""

    def __init__(self, chain_id: int):
        self.chain_id = chain_id
        self.decoders: dict[str, EventDecoder] = {}
        self.ignored: dict[str, str] = {}
        for contract in SOURCE_CONTRACTS:
            for entry in contracts.abi(contract):
                if entry.get("type") != "event":
                    continue
                topic0 = "0x" + event_abi_to_log_topic(entry).hex()
                if entry["name"] in FACT_TYPES:
                    self.decoders[topic0] = EventDecoder(entry, FACT_TYPES[entry["name"]])
                else:
                    self.ignored[topic0] = entry["name"]
        missing = set(FACT_TYPES) - {d.event_type.name for d in self.decoders.values()}
        if missing:
            raise ValueError(f"no contract ABI declares the fact events {sorted(missing)}")

    def decode(self, log: dict) -> Fact | str:
        """The log's Fact, or the ABI name of an ignored event; raises UndecodableLog otherwise."""
        log_topics = log.get("topics") if isinstance(log, dict) else None
        if not log_topics or not isinstance(log_topics[0], str):
            raise UndecodableLog("log has no topic0 (anonymous or malformed)")
        topic0 = log_topics[0].lower()
        decoder = self.decoders.get(topic0)
        if decoder is not None:
            return decoder.decode(log, self.chain_id)
        if topic0 in self.ignored:
            return self.ignored[topic0]
        raise UndecodableLog(f"unknown event signature {topic0}")


def dead_letter(log: object, error: str, chain_id: int) -> dict:
    """A DeadLetter record for a raw log; its id hashes the raw log, so a replay produces the same one."""
    raw = json.dumps(log, sort_keys=True, default=str)
    where = "?"
    if isinstance(log, dict):
        where = f"{log.get('address')} block {log.get('blockNumber')} tx {log.get('transactionHash')} " \
                f"log {log.get('logIndex')}"
    return {"event_id": f"dlq:{hashlib.sha256(raw.encode()).hexdigest()}", "source": f"chain {chain_id}: {where}",
            "error": error, "raw": raw, "origin": DEAD_LETTER_ORIGIN}
