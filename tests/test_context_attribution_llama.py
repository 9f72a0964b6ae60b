"""Context attribution on a Llama base: the answer's base resolved from its hash through the adapter lineage (or,
for the base model alone, the server's name for it), the LoRA fold in each architecture's weight layout, and the
answers of a base nothing resolves to recorded as ``unknown_base_model``.

CI has no SmolLM2, so the Llama here is ``write_llama_base``'s random 2-layer one (as in test_serving_llama); the
SmolLM2 run is ``payable demo --base smollm2``'s usage round.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from peft import PeftModel

from pipelines import log_views
from pipelines.context_attribution import reasons
from pipelines.context_attribution.run import attribute_usage
from pipelines.context_attribution.served import ServedModels, UnknownBaseModel
from pipelines.retrieval import build_index
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import base_model_hash, load_model
from pipelines.validate.materialize import commit, dataset_uri
from schemas import topics
from schemas.context_attribution import CONTEXT_ATTRIBUTED, CONTEXT_ATTRIBUTION_SKIPPED
from schemas.usage import USAGE_EVENT
from tests.conftest import make_settings
from tests.serving_fixtures import contribution_rows, openai_client, running_server, write_adapter, write_llama_base
from tests.test_context_attribution_stage import _produce_usage
from tests.test_serving_usage import wait_for

TEXTS = {31: "cat sat.", 32: "dog ran."}  # short: the random Llama has 128 positions


def _event(spec: BaseModelSpec, adapter_id: str) -> dict:
    return {"base_model_hash": base_model_hash(spec), "adapter_ids": [adapter_id], "adapter_weights": [1.0],
            "model": adapter_id}


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_the_folded_model_computes_the_peft_models_logits(tmp_path, architecture):
    spec = write_llama_base(tmp_path / "llama") if architecture == "llama" else BaseModelSpec()
    adapter_id = write_adapter(tmp_path / "adapters", 1, 1, seed=5, spec=spec)
    folded = ServedModels(tmp_path / "adapters").model(_event(spec, adapter_id))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = PeftModel.from_pretrained(load_model(spec), str(tmp_path / "adapters" / "dn-1" / adapter_id))
    ids = torch.randint(3, 400, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference.eval()(input_ids=ids).logits, folded(input_ids=ids).logits
        plain = load_model(spec)(input_ids=ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the adapter changes the logits, so equality means the fold
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_a_base_the_lineage_names_with_other_weights_is_an_unknown_base(tmp_path):
    spec = write_llama_base(tmp_path / "llama")
    adapter_id = write_adapter(tmp_path / "adapters", 1, 1, seed=5, spec=spec)
    models = ServedModels(tmp_path / "adapters")
    with pytest.raises(UnknownBaseModel, match="no lineage of the answer's adapters nor its model name"):
        models.model({**_event(spec, adapter_id), "base_model_hash": "ab" * 32})
    assert not models._bases  # nothing loaded for a hash nothing resolves to


def test_llama_answers_served_by_the_real_server_are_attributed_and_unknown_bases_skipped(tmp_path):
    settings = make_settings(tmp_path / "data")
    spec = write_llama_base(tmp_path / "llama-base")
    commit(dataset_uri(settings.lance_dir, 1), contribution_rows(1, TEXTS), [], run_id="r1", offsets={0: (0, 2)})
    build_index(settings, 1, slashed=set())
    write_adapter(settings.adapters_dir, 1, 1, seed=1, spec=spec)
    retrieval = {"retrieval": {"datanets": [1], "k": 2}}
    chat = [{"role": "user", "content": "cat?"}]
    with running_server(settings, base=spec.name) as server:
        client = openai_client(server, timeout=120)
        for model, request_id in (("dn-1", "llama-adapter"), (spec.name, "llama-base-only")):
            client.chat.completions.create(model=model, messages=chat, max_tokens=4, temperature=0,
                                           extra_body=retrieval, extra_headers={"X-Request-Id": request_id})
        wait_for(lambda: server.service.usage.state()["delivered"] == 2, what="both usage events on the log")
    served = {e["request_id"]: e for e in log_views.read_view(settings.kafka_bootstrap, topics.USAGE).of(USAGE_EVENT)}
    adapted, base_only = served["llama-adapter"], served["llama-base-only"]
    assert adapted["adapter_ids"] == ["ad-test-1-1-1"] and base_only["adapter_ids"] == []
    assert adapted["answer"] and base_only["answer"] and len(adapted["retrieved_sources"]) == 2
    # bad input: answers on bases nothing here resolves to, through an adapter's lineage or through a base name
    _produce_usage(settings, USAGE_EVENT, {**adapted, "event_id": "use-other-base", "request_id": "r-ob",
                                           "base_model_hash": "ab" * 32})
    _produce_usage(settings, USAGE_EVENT, {**base_only, "event_id": "use-gone-base", "request_id": "r-gb",
                                           "model": "no-such-base", "base_model_hash": "cd" * 32})

    report = attribute_usage(settings)
    assert report.attributed == 2 and report.forward_passes == 16  # 2 sources each: 8 ablations an answer
    assert report.skipped == {reasons.UNKNOWN_BASE_MODEL: 2}
    log = log_views.read_view(settings.kafka_bootstrap, topics.USAGE_ATTRIBUTION)
    attributed = {e["usage_event_id"]: e for e in log.of(CONTEXT_ATTRIBUTED)}
    assert set(attributed) == {adapted["event_id"], base_only["event_id"]}
    for event in attributed.values():
        assert {s["contribution_id"] for s in event["sources"]} == set(TEXTS)
        assert sum(s["weight"] for s in event["sources"]) == pytest.approx(1.0)
    skipped = {e["usage_event_id"]: e for e in log.of(CONTEXT_ATTRIBUTION_SKIPPED)}
    assert {k: e["reason"] for k, e in skipped.items()} == {"use-other-base": reasons.UNKNOWN_BASE_MODEL,
                                                            "use-gone-base": reasons.UNKNOWN_BASE_MODEL}
    assert "'no-such-base'" in skipped["use-gone-base"]["detail"] and "\n" not in skipped["use-gone-base"]["detail"]


def test_a_base_with_no_serving_runner_is_an_unknown_base_with_one_line(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from pipelines.training import tiny_model

    tokenizer = tiny_model.build_tokenizer(BaseModelSpec())
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    Qwen2ForCausalLM(config).save_pretrained(str(tmp_path / "qwen"))
    tokenizer.save_pretrained(str(tmp_path / "qwen"))
    spec = BaseModelSpec(name=str(tmp_path / "qwen"))  # the name a server on it would record (were it servable)
    models = ServedModels(tmp_path / "adapters")
    with pytest.raises(UnknownBaseModel, match="cannot be loaded: no serving runner for architecture 'qwen2'") as e:
        models.model({"base_model_hash": base_model_hash(spec), "adapter_ids": [], "adapter_weights": [],
                      "model": spec.name})
    assert "\n" not in str(e.value)
