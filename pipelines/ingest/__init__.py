"""Chain ingest: reorg-safe, exactly-once chain facts from the contracts' logs into Kafka.

``ingest_until_head(settings, deployment, options) -> IngestReport`` is the one call the CLI, the demo
and Dagster need; ``ingest_forever`` keeps following the chain. See ``ingester.py`` for how.
"""

from pipelines.ingest.ingester import (
    DeepReorg,
    Ingester,
    IngestOptions,
    IngestReport,
    ingest_forever,
    ingest_until_head,
)

__all__ = ["DeepReorg", "IngestOptions", "IngestReport", "Ingester", "ingest_forever", "ingest_until_head"]
