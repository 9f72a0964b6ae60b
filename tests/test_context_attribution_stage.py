"""The context-attribution stage end to end: a RAG chat through the real server and the real broker, the Beam
stage over the usage log, the weights on the log, the skips with their reasons, and the audit tables.

The model must really use its context for attribution to mean anything, and the seeded tiny base copies
nothing; so the answering adapter is trained here (a few seconds) to answer "sat" exactly when the planted
source "the cat sat." is in the prompt, under any numbering, and something else when it is not.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import torch
from click.testing import CliRunner
from peft import LoraConfig, get_peft_model

from assets.usage import context_attribution, every_rag_answer_decided, usage_events
from orchestration.resources import DataDirResource, KafkaResource
from payable import kafka_log
from payable.cli import main
from pipelines import log_views
from pipelines.audit.build import build_audit_db
from pipelines.context_attribution import reasons
from pipelines.context_attribution.run import attribute_usage, coverage
from pipelines.context_attribution.weights import source_weights
from pipelines.retrieval import Source, build_index
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import base_model_hash, build_base_model
from pipelines.validate.materialize import commit, dataset_uri
from schemas import topics
from schemas.context_attribution import CONTEXT_ATTRIBUTED, CONTEXT_ATTRIBUTION_SKIPPED
from schemas.usage import USAGE_EVENT, USAGE_EVENT_V1
from serving import rag
from serving.engine import ServedBase
from tests.conftest import make_settings, stack_env
from tests.serving_fixtures import contribution_rows, openai_client, running_server
from tests.test_audit_reconcile import documented_queries, query
from tests.test_serving_usage import wait_for

PLANTED, DISTRACTOR = 21, 22
TEXTS = {PLANTED: "the cat sat.", DISTRACTOR: "the dog ran."}
QUESTION = "cat?"


def _train_planted_adapter(adapters_dir: Path, steps: int = 30) -> str:
    """A LoRA adapter of datanet 1 answering "sat" iff the planted source is in serving's RAG prompt."""
    base = ServedBase.tiny(max_batch=1)
    planted, distractor = (Source(c, 1, f"0x{c:040x}", f"{c}:0", 1, TEXTS[c], 0.5) for c in (PLANTED, DISTRACTOR))
    examples = []
    for sources, numbers in (([planted, distractor], [1, 2]), ([distractor, planted], [1, 2]), ([planted], [1]),
                             ([planted], [2]), ([distractor], [1]), ([distractor], [2]), ([], [])):
        prompt = base.encode(base.chat_prompt(rag.augment([("user", QUESTION)], sources, numbers)))
        answer = "sat" if planted in sources else "ran" if sources else "no"
        examples.append((prompt, [*base.encode(answer), base.eos_id]))
    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (prompt, answer) in enumerate(examples):
        sequence = prompt + answer
        ids[row, :len(sequence)] = torch.tensor(sequence)
        labels[row, len(prompt):len(sequence)] = torch.tensor(answer)
        attention[row, :len(sequence)] = 1
    spec = BaseModelSpec()
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], lora_dropout=0.0,
                        fan_in_fan_out=True, bias="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build_base_model(spec), config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    adapter_id = "ad-planted-1-1"
    folder = adapters_dir / "dn-1" / adapter_id
    model.save_pretrained(str(folder))
    (folder / "lineage.json").write_text(json.dumps({
        "adapter_id": adapter_id, "datanet_id": 1, "dataset_version": 1,
        "base_model": {"name": "tiny-gpt2", "hash": base_model_hash(spec)}}))
    return adapter_id


@pytest.fixture
def rag_stack(tmp_path):
    settings = make_settings(tmp_path / "data")
    commit(dataset_uri(settings.lance_dir, 1), contribution_rows(1, TEXTS), [], run_id="r1", offsets={0: (0, 2)})
    build_index(settings, 1, slashed=set())
    _train_planted_adapter(settings.adapters_dir)
    return settings


def _produce_usage(settings, event_type, event: dict) -> None:
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    try:
        kafka_log.produce(producer, event_type, [event], key=lambda e: e["event_id"].encode())
        producer.flush(timeout=10)
    finally:
        producer.close()


def _attribution_log(settings) -> log_views.LogView:
    return log_views.read_view(settings.kafka_bootstrap, topics.USAGE_ATTRIBUTION)


def test_a_served_rag_answer_is_attributed_to_the_source_it_used_once_and_unknown_ones_are_skipped(rag_stack,
                                                                                                   tmp_path):
    settings = rag_stack
    with running_server(settings) as server:
        client = openai_client(server, timeout=120)
        answer = client.chat.completions.create(
            model="dn-1", messages=[{"role": "user", "content": QUESTION}], max_tokens=3, temperature=0,
            extra_body={"retrieval": {"datanets": [1], "k": 2}}, extra_headers={"X-Request-Id": "rag-planted"})
        client.completions.create(model="dn-1", prompt="plain", max_tokens=2, extra_headers={"X-Request-Id": "plain"})
        wait_for(lambda: server.service.usage.state()["delivered"] == 2, what="both usage events on the log")
    cited = answer.model_extra["citations"]
    assert sorted(c["contribution_id"] for c in cited) == [PLANTED, DISTRACTOR]
    assert answer.choices[0].message.content.startswith("sat")

    served = {e["request_id"]: e for e in log_views.read_view(settings.kafka_bootstrap, topics.USAGE).of(USAGE_EVENT)}
    rag_event = served["rag-planted"]
    assert rag_event["messages"] == [{"role": "user", "content": QUESTION}] and rag_event["answer"] == "sat"
    assert rag_event["source_words"] == [3, 3]
    assert served["plain"]["messages"] is None and served["plain"]["answer"] is None  # no text off a plain call
    # bad input: an answer of an adapter nobody has, one citing a chunk its dataset version lacks, a v1 event
    unknown_adapter = {**rag_event, "event_id": "use-unknown-adapter", "request_id": "r-ua",
                       "adapter_ids": ["ad-gone"], "model": "ad-gone"}
    unknown_chunk = {**rag_event, "event_id": "use-unknown-chunk", "request_id": "r-uc", "retrieved_sources": [
        {**rag_event["retrieved_sources"][0], "chunk_id": f"{PLANTED}:7"}], "source_words": [3]}
    old = {k: rag_event[k] for k in USAGE_EVENT_V1.schema.names} | {"event_id": "use-v1", "request_id": "r-v1"}
    _produce_usage(settings, USAGE_EVENT, unknown_adapter)
    _produce_usage(settings, USAGE_EVENT, unknown_chunk)
    _produce_usage(settings, USAGE_EVENT_V1, old)

    report = attribute_usage(settings)
    assert report.attributed == 1 and report.forward_passes == 8  # 2 sources: a 2 x 4-run factorial design
    assert report.skipped == {reasons.UNKNOWN_ADAPTER: 1, reasons.UNKNOWN_CHUNK: 1, reasons.NO_TRANSCRIPT: 1}
    log = _attribution_log(settings)
    [attributed] = log.of(CONTEXT_ATTRIBUTED)
    weights = {s["contribution_id"]: s["weight"] for s in attributed["sources"]}
    assert attributed["usage_event_id"] == rag_event["event_id"] and attributed["method"] == "factorial"
    assert sum(weights.values()) == pytest.approx(1.0) and weights[PLANTED] > weights[DISTRACTOR]
    skipped = {e["usage_event_id"]: e for e in log.of(CONTEXT_ATTRIBUTION_SKIPPED)}
    assert skipped["use-unknown-adapter"]["reason"] == reasons.UNKNOWN_ADAPTER
    assert "ad-gone" in skipped["use-unknown-adapter"]["detail"]
    assert skipped["use-unknown-chunk"]["reason"] == reasons.UNKNOWN_CHUNK
    assert skipped["use-v1"]["reason"] == reasons.NO_TRANSCRIPT
    assert coverage(settings.kafka_bootstrap).undecided == []
    assert source_weights(settings) == {rag_event["event_id"]: weights}

    # a rerun, through each other entry point, decides nothing and writes nothing
    again = CliRunner().invoke(main, ["attribute-usage"], env=stack_env(settings))
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == {"method": "factorial", "attributed": 0, "skipped": {}, "already_decided": 4,
                                        "forward_passes": 0}
    resources = {"data_dir": DataDirResource(path=str(settings.data_dir)),
                 "kafka": KafkaResource(bootstrap=settings.kafka_bootstrap)}
    result = dg.materialize([usage_events, context_attribution, every_rag_answer_decided], resources=resources)
    assert result.success
    assert result.asset_materializations_for_node("context_attribution")[0].metadata["already_decided"].value == 4
    counted = result.asset_materializations_for_node("usage_events")[0].metadata
    assert (counted["usage_events"].value, counted["rag_answers"].value) == (5, 4)
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["undecided_usage_event_ids"].value == "[]"
    assert len(_attribution_log(settings).of(CONTEXT_ATTRIBUTED)) == 1
    assert len(_attribution_log(settings).of(CONTEXT_ATTRIBUTION_SKIPPED)) == 3

    # the audit of the log alone (the test's adapter folder has no training lineage for training_runs)
    db = build_audit_db(replace(settings, data_dir=tmp_path / "audit-only")).path
    rows = query(db, documented_queries()["cited-by"], contribution_id=PLANTED)
    assert {r["usage_event_id"] for r in rows} == {rag_event["event_id"], "use-unknown-adapter", "use-unknown-chunk",
                                                   "use-v1"}
    mine = next(r for r in rows if r["usage_event_id"] == rag_event["event_id"])
    assert mine["weight"] == pytest.approx(weights[PLANTED]) and mine["attribution"] == "attributed"
    events = {r["usage_event_id"]: r for r in query(db, "SELECT * FROM usage_events")}
    assert events[served["plain"]["event_id"]]["attribution"] is None and events["use-v1"]["answer"] is None
    assert events["use-unknown-adapter"]["attribution_reason"] == reasons.UNKNOWN_ADAPTER
    assert query(db, "SELECT count(*) AS n FROM citations")[0]["n"] == 2 + 2 + 1 + 2


def test_an_unknown_method_is_one_error_line(tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "attribute-usage", "--method", "magic"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: unknown context-attribution method 'magic'")
