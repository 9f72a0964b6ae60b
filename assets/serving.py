"""The serving half in Dagster: which models `payable serve` offers, and the running server's cache state."""

import dagster as dg

from assets.plots import table_md
from assets.retrieval import retrieval_index
from assets.training import lora_adapters
from orchestration.resources import DataDirResource
from serving.adapter_source import AdapterSource
from serving.status import NotServing, read_status

OWNERS = ["team:ml"]
_SHOWN = ("adapter_cache_resident", "adapter_cache_resident_bytes", "adapter_cache_pinned", "adapter_cache_hits_total",
          "adapter_cache_misses_total", "adapter_cache_evictions_total", "adapter_cache_load_failures_total",
          "batch_running", "tokens_generated_total", "usage_events_delivered_total", "usage_events_pending",
          "usage_send_failures_total")


@dg.asset(
    group_name="serving", kinds={"pytorch"}, owners=OWNERS, deps=[lora_adapters, retrieval_index],
    description="The models `payable serve` offers over its OpenAI-compatible API: every adapter of every "
                "datanet and each datanet's dn-<id> alias; with the running server's adapter cache and "
                "usage-event counters when one is up.",
)
def served_models(data_dir: DataDirResource) -> dg.MaterializeResult:
    settings = data_dir.settings()
    source = AdapterSource(settings.adapters_dir)
    entries = source.entries()
    datanets = sorted({e.datanet_id for e in entries})
    metadata = {
        "adapters": len(entries),
        "datanets": len(datanets),
        "models": table_md([{"model": e.adapter_id, "datanet": e.datanet_id, "dataset_version": e.dataset_version}
                            for e in entries]),
        "aliases": table_md([{"alias": f"dn-{d}", "serves": source.latest(d).adapter_id} for d in datanets]),
    }
    try:
        status = read_status(settings)
    except NotServing as exc:
        metadata["server"] = str(exc)
    else:
        metadata["server"] = f"{status.url} (pid {status.pid})"
        metadata.update({name: status.metrics[name] for name in _SHOWN if name in status.metrics})
    return dg.MaterializeResult(metadata=metadata)
