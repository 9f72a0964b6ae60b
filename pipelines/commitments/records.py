"""What the AttributionRegistry commits to, encoded exactly as the contract hashes it (pure, no I/O).

Scores and quality figures become int256 fixed point: ``round(value * SCORE_SCALE)``, computed on the exact
rational value of the float64 and rounded half to even, so anyone holding the influence table reproduces the
integer bit for bit. Ids are keccak256 of the adapter id / run name; a method is its name as a bytes32
(UTF-8, right-padded), as Solidity's ``bytes32("tracin")``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from pipelines.rewards.merkle import keccak

SCORE_SCALE = 10**18
INT256_MIN, INT256_MAX = -(2**255), 2**255 - 1


def fixed_point(value: float) -> int:
    """``value`` * SCORE_SCALE as an int256, exactly rounded (half to even) from the float64."""
    if not math.isfinite(value):
        raise ValueError(f"cannot commit a non-finite score {value!r}")
    scaled = round(Fraction(value) * SCORE_SCALE)
    if not INT256_MIN <= scaled <= INT256_MAX:
        raise ValueError(f"score {value!r} overflows int256 at scale {SCORE_SCALE}")
    return scaled


def word(value: int) -> bytes:
    """A uint256 or int256 as its 32-byte ABI word (two's complement)."""
    return (value % 2**256).to_bytes(32, "big")


def hash_word(hex_hash: str) -> bytes:
    """A 32-byte hash given as hex (``0x`` optional)."""
    raw = bytes.fromhex(hex_hash.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(raw)} bytes: {hex_hash[:20]}")
    return raw


def name_word(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 32:
        raise ValueError(f"{name!r} does not fit in a bytes32")
    return raw.ljust(32, b"\0")


def commitment_id(name: str) -> bytes:
    """The on-chain id of an adapter (its registry id) or of an influence run (its run name)."""
    return keccak(name.encode())


def canonical_hash(doc: dict) -> bytes:
    """keccak256 of a document's canonical JSON (sorted keys, no spaces): e.g. the training arguments."""
    return keccak(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def hexed(raw: bytes) -> str:
    return "0x" + raw.hex()


@dataclass(frozen=True)
class ModelCommitment:
    """One adapter's lineage as committed (hashes as 0x hex)."""

    adapter_id: str
    datanet_id: int
    dataset_version: int
    dataset_root: str
    base_model_hash: str
    weights_hash: str
    eval_set_hash: str
    training_args_hash: str
    contributions: int

    @property
    def commitment_id(self) -> str:
        return hexed(commitment_id(self.adapter_id))

    def args(self) -> tuple:
        """The arguments of ``AttributionRegistry.commitModel``."""
        return (commitment_id(self.adapter_id), self.datanet_id, self.dataset_version,
                *(hash_word(h) for h in (self.dataset_root, self.base_model_hash, self.weights_hash,
                                         self.eval_set_hash, self.training_args_hash)))

    def record_hash(self) -> str:
        """keccak256(abi.encode(datanetId, datasetVersion, datasetRoot, base, weights, eval, args))."""
        _, datanet, version, *hashes = self.args()
        return hexed(keccak(word(datanet) + word(version) + b"".join(hashes)))

    def to_record(self) -> dict:
        return {**asdict(self), "commitment_id": self.commitment_id, "record_hash": self.record_hash()}

    @classmethod
    def from_record(cls, record: dict) -> ModelCommitment:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class InfluenceCommitment:
    """One influence run's scores as committed; ``lds``/``auc`` fixed point, 0 while unmeasured."""

    run: str  # "<datanet>:<dataset_version>:<adapter_id>:<method>" (``pipelines.rewards.runs.run_names``)
    adapter_id: str
    method: str
    scores_root: str
    contributions: int
    lds: int = 0
    auc: int = 0

    @property
    def commitment_id(self) -> str:
        return hexed(commitment_id(self.run))

    @property
    def adapter_commitment(self) -> str:
        return hexed(commitment_id(self.adapter_id))

    def args(self) -> tuple:
        """The arguments of ``AttributionRegistry.commitInfluence``."""
        return (commitment_id(self.run), commitment_id(self.adapter_id), name_word(self.method),
                hash_word(self.scores_root), self.lds, self.auc)

    def record_hash(self) -> str:
        """keccak256(abi.encode(adapterId, method, scoresRoot, lds, auc))."""
        _, adapter, method, root, lds, auc = self.args()
        return hexed(keccak(adapter + method + root + word(lds) + word(auc)))

    def to_record(self) -> dict:
        return {"run": self.run, "adapter_commitment": self.adapter_commitment, "method": self.method,
                "scores_root": self.scores_root, "score_scale": str(SCORE_SCALE), "lds": str(self.lds),
                "auc": str(self.auc), "contributions": self.contributions,
                "commitment_id": self.commitment_id, "record_hash": self.record_hash()}

    @classmethod
    def from_record(cls, record: dict) -> InfluenceCommitment:
        adapter_id = record["run"].split(":")[2]
        return cls(record["run"], adapter_id, record["method"], record["scores_root"], record["contributions"],
                   int(record["lds"]), int(record["auc"]))

