"""The retrieval half in Dagster: each datanet's hybrid search index over its newest dataset version."""

import dagster as dg

from assets.plots import table_md
from assets.validation import datanet_datasets
from orchestration.resources import DataDirResource, KafkaResource
from pipelines import log_views
from pipelines.retrieval import build_index
from pipelines.validate.materialize import datanet_ids

OWNERS = ["team:ml"]


@dg.asset(
    group_name="serving", kinds={"lance"}, owners=OWNERS, deps=[datanet_datasets],
    description="Per datanet, the accepted contributions of the newest dataset version minus slashed stakes, "
                "chunked and embedded with all-MiniLM-L6-v2, in a LanceDB table with a full-text index "
                "(hybrid search, reciprocal-rank fusion) that RAG chats retrieve from. Rebuilt only when the "
                "dataset version or the slashed set moved; each index names the dataset version it covers.",
)
def retrieval_index(data_dir: DataDirResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = data_dir.settings()
    slashed = log_views.slashed_contributions(kafka.bootstrap)
    built = [build_index(settings, datanet_id, slashed=slashed) for datanet_id in datanet_ids(settings.lance_dir)]
    return dg.MaterializeResult(metadata={
        "datanets": len(built),
        "chunks": sum(b.chunks for b in built),
        "indexes": table_md([{"datanet": b.datanet_id, "dataset_version": b.dataset_version,
                              "index_version": b.index_version, "contributions": b.contributions,
                              "chunks": b.chunks} for b in built]),
    })
