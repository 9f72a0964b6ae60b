"""Partitioning of the per-datanet assets: one dynamic partition per datanet ("dn-<id>")."""

from __future__ import annotations

import dagster as dg

datanet_partitions = dg.DynamicPartitionsDefinition(name="datanet")


def partition_key(datanet_id: int) -> str:
    return f"dn-{datanet_id}"


def datanet_id_of(key: str) -> int:
    return int(key.removeprefix("dn-"))
