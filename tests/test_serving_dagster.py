"""Dagster shows what is served: the served_models asset over the registry, with a live server's cache state."""

from __future__ import annotations

import json
from dataclasses import replace

import dagster as dg
import openai

from assets.serving import served_models
from orchestration.definitions import defs
from orchestration.resources import DataDirResource
from payable import services
from payable.settings import Settings
from serving.server import ServeOptions, ServerThread, build
from serving.status import state_file
from tests.serving_fixtures import write_adapter


def test_served_models_asset_lists_models_and_the_cache(tmp_path):
    settings = replace(Settings.from_env(tmp_path), kafka_bootstrap=f"127.0.0.1:{services.free_port()}")
    write_adapter(settings.adapters_dir, 1, 1, seed=1)
    latest = write_adapter(settings.adapters_dir, 1, 2, seed=2)
    write_adapter(settings.adapters_dir, 5, 1, seed=3)
    assert defs.resolve_assets_def("served_models") is not None
    resources = {"data_dir": DataDirResource(path=str(settings.data_dir))}

    def materialize() -> dict:
        result = dg.materialize([served_models], resources=resources)
        return result.asset_materializations_for_node("served_models")[0].metadata

    offline = materialize()
    assert offline["adapters"].value == 3 and offline["datanets"].value == 2
    assert f"| dn-1 | {latest} |" in offline["aliases"].value
    assert "no server is running" in offline["server"].value

    with ServerThread(build(settings, ServeOptions(max_batch=2)), usage_timeout_s=0.2) as server:
        state_file(settings).parent.mkdir(parents=True, exist_ok=True)
        state_file(settings).write_text(json.dumps({"pid": 1, "host": server.host, "port": server.port}))
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        for _ in range(2):
            client.completions.create(model="dn-5", prompt="hi", max_tokens=2)
        live = materialize()
    assert live["server"].value.startswith(server.url)
    assert live["adapter_cache_misses_total"].value == 1 and live["adapter_cache_hits_total"].value == 1
    assert live["adapter_cache_resident"].value == 1 and live["usage_events_pending"].value == 2
