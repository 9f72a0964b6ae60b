"""What the validate stage knows about a datanet: its on-chain limits and its off-chain spec.

Resolved once per datanet from its DatanetCreated fact (the spec JSON is fetched from the content
store) and carried between runs in the checkpoint, so a contribution can be checked against the rules
of its datanet in any later run without re-reading the log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from payable.content_store import ContentStore, FetchError
from payable.datanets import DatanetSpec

MAX_SPEC_BYTES = 1 << 20


@dataclass(frozen=True)
class DatanetInfo:
    """A datanet as seen at its creation fact; ``spec`` is None when its metadata was unusable."""

    datanet_id: int
    max_size: int
    spec: DatanetSpec | None
    spec_error: str
    partition: int
    offset: int

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["spec"] = json.loads(self.spec.to_json()) if self.spec else None
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> DatanetInfo:
        spec = DatanetSpec.from_json(json.dumps(doc["spec"]).encode()) if doc["spec"] else None
        return cls(doc["datanet_id"], doc["max_size"], spec, doc["spec_error"], doc["partition"], doc["offset"])

    def created_before(self, partition: int, offset: int) -> bool:
        """True if this datanet existed at that log position (same partition: earlier offset)."""
        return partition != self.partition or self.offset < offset


def resolve(created: dict, store: ContentStore) -> DatanetInfo:
    """The DatanetInfo of a DatanetCreated fact; an unreadable spec is recorded, not raised."""
    spec, error = None, ""
    try:
        spec = DatanetSpec.from_json(store.fetch(created["metadata_uri"], MAX_SPEC_BYTES))
    except FetchError as exc:
        error = f"{exc.reason}: {exc}"
    except (ValueError, KeyError, TypeError) as exc:
        error = f"invalid spec: {exc}"
    return DatanetInfo(created["datanet_id"], created["max_contribution_size"], spec, error,
                       created["_partition"], created["_offset"])


def earliest(infos: list[DatanetInfo]) -> DatanetInfo:
    """A datanet created twice in the log (a replayed fact) keeps its first creation."""
    return min(infos, key=lambda info: (info.partition, info.offset))
