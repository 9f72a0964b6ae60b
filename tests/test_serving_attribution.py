"""Per-answer attribution through the real server and the ``openai`` client: an answer repeating one training
contribution's fact names it first, the ranking is the gradient store's, it rides on the response, the last
stream chunk and the usage event, and what cannot be attributed is refused before generation starts."""

from __future__ import annotations

from dataclasses import replace

import openai
import pyarrow as pa
import pytest

from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.answers import attributor, top_contributions
from pipelines.attribution.synthetic import make_datanet, rows
from pipelines.training import train_latest
from schemas.usage import USAGE_EVENT
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version
from tests.serving_fixtures import openai_client, running_server, usage_of, write_adapter

FACT_ID = 700
PROMPT = "the zebra quillon eats purple kelp at midnight"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Datanet 1 trained and attributed (TracIn writes its gradient store), with one contribution stating a unique
    fact; datanet 2 an adapter with no training lineage; a real server over both."""
    settings = settings_in(tmp_path_factory.mktemp("served-attribution"))
    dn = make_datanet(contributors={"on_topic": 3, "off_topic": 2}, per_contributor=3, num_queries=6)
    planted = rows(1, [("0xfac7000000000000000000000000000000000000",
                        "the zebra quillon eats purple kelp at midnight on mars .")], first_id=FACT_ID)
    write_version(settings, 1, pa.concat_tables([dn.table, planted]))
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, replace(FAST, num_checkpoints=3), show_progress=False).record
    attribute(settings, 1, record.adapter_id, ScoreArguments(method="tracin", projection_dim=64))
    attributor.cache_clear()
    write_adapter(settings.adapters_dir, 2, 1, seed=5)
    with running_server(settings) as server:
        yield settings, record, server


def test_a_completion_names_the_contribution_whose_fact_it_repeats_first(served) -> None:
    settings, record, server = served
    client = openai_client(server)
    raw = client.completions.with_raw_response.create(
        model="dn-1", prompt=PROMPT, max_tokens=3, temperature=0, extra_body={"attribution": {"k": 5}},
        extra_headers={"X-Request-Id": "attr-1"})
    completion = raw.parse()
    influences = completion.model_extra["attribution"]
    assert [i["rank"] for i in influences] == [1, 2, 3, 4, 5]
    assert influences[0]["contribution_id"] == FACT_ID
    expected = top_contributions(settings, record.adapter_id, PROMPT, completion.choices[0].text, 5)
    assert [i["contribution_id"] for i in influences] == [h.contribution_id for h in expected]
    assert [i["score"] for i in influences] == pytest.approx([h.score for h in expected], rel=1e-6)

    event = usage_of(server, "attr-1")
    USAGE_EVENT.to_batch([event])
    assert event["influences"] == influences and event["adapter_ids"] == [record.adapter_id]


def test_a_streamed_chat_carries_the_attribution_on_its_last_chunk_only(served) -> None:
    _, _, server = served
    chunks = list(openai_client(server).chat.completions.create(
        model="dn-1", messages=[{"role": "user", "content": PROMPT}], max_tokens=4, stream=True,
        extra_body={"attribution": {"k": 3}}, extra_headers={"X-Request-Id": "attr-2"}))
    carrying = [c for c in chunks if c.model_extra.get("attribution")]
    assert len(chunks) > 1 and carrying == [chunks[-1]] and chunks[-1].choices[0].finish_reason is not None
    assert len(chunks[-1].model_extra["attribution"]) == 3
    assert usage_of(server, "attr-2")["influences"] == chunks[-1].model_extra["attribution"]


def test_answers_without_attribution_record_none(served) -> None:
    _, _, server = served
    openai_client(server).completions.create(model="dn-1", prompt=PROMPT, max_tokens=2,
                                             extra_headers={"X-Request-Id": "attr-3"})
    assert usage_of(server, "attr-3")["influences"] is None


@pytest.mark.parametrize(("model", "says"), [
    ("tiny-gpt2", "not the base model alone"),
    ("dn-1*0.5+dn-2*0.5", "not an ensemble of 2 adapters"),
    ("dn-2", "has no training lineage"),
])
def test_what_cannot_be_attributed_is_refused_before_generating(served, model, says) -> None:
    _, _, server = served
    rid = f"refused-{abs(hash(model))}"
    with pytest.raises(openai.ConflictError) as refused:
        openai_client(server).completions.create(model=model, prompt=PROMPT, max_tokens=2,
                                                 extra_body={"attribution": {"k": 3}},
                                                 extra_headers={"X-Request-Id": rid})
    error = refused.value.body
    assert error["code"] == "attribution_unavailable" and says in error["message"]
    assert not [e for e in server.service.usage.buffered() if e["request_id"] == rid]


def test_a_bad_attribution_option_is_a_400(served) -> None:
    _, _, server = served
    with pytest.raises(openai.BadRequestError):
        openai_client(server).completions.create(model="dn-1", prompt=PROMPT, max_tokens=2,
                                                 extra_body={"attribution": {"k": 0}})
