"""Lance table schemas: the materialized datasets of accepted contributions.

One Lance dataset per datanet (``<data_dir>/lance/datanets/dn-<id>.lance``); each materialization adds
one version. Training and attribution read these columns and nothing else from a dataset version.
"""

from __future__ import annotations

import pyarrow as pa

CONTRIBUTION_ROW = pa.schema([
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("block_number", pa.int64(), nullable=False),
    pa.field("fact_event_id", pa.string(), nullable=False),
    pa.field("verdict_id", pa.string(), nullable=False),
])
