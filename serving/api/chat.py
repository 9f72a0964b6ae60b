"""POST /v1/chat/completions: chat messages rendered with the base model's template, whole or streamed.

With ``retrieval`` in the body (OpenAI clients send it through ``extra_body``), the question (the last
user message) is searched in the named datanets' indexes first: the sources go into the prompt as quoted
data, the answer carries their inline markers and a ``citations`` field (on the first chunk of a stream),
and the usage event records them (``serving.rag``). Every answer names its usage event in the
``X-Payable-Usage-Event`` header, so a client (the chat page) can ask later what the answer earned whom.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from pipelines.retrieval import Source
from serving import rag
from serving.api.common import USAGE_EVENT_HEADER, caller, request_id, sse, usage
from serving.engine import Delta, Engine, GenerateRequest
from serving.errors import InvalidRequest
from serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    Usage,
)
from serving.usage import usage_id

router = APIRouter()
COMPLETION_RESERVE = 32  # tokens kept free for the answer when a retrieval request names no max_tokens


async def _retrieve(request: Request, body: ChatCompletionRequest, messages: list[tuple[str, str]]) -> list[Source]:
    if body.retrieval is None:
        return []
    retriever: rag.Retriever | None = request.app.state.retriever
    if retriever is None:
        raise InvalidRequest("this server has no retrieval indexes", param="retrieval", code="retrieval_unavailable")
    question = next((text for role, text in reversed(messages) if role == "user"), "")
    return await asyncio.to_thread(retriever.retrieve, body.retrieval.datanets, question, body.retrieval.k)


async def _with_markers(deltas: AsyncIterator[Delta], sources: list[Source]) -> AsyncIterator[Delta]:
    """The answer's deltas, the last one extended by the inline markers the model did not write itself."""
    text = ""
    try:
        async for delta in deltas:
            text += delta.text
            if delta.finish_reason is not None:
                delta = dataclasses.replace(delta, text=delta.text + rag.markers_missing(text, sources))
            yield delta
    finally:
        await deltas.aclose()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, response: Response):
    engine: Engine = request.app.state.engine
    rid = request_id(request, "chatcmpl")
    response.headers[USAGE_EVENT_HEADER] = usage_id(rid)
    messages = [(m.role, m.text()) for m in body.messages]
    retrieved = await _retrieve(request, body, messages)
    budget = engine.base.context - (body.token_budget() or min(COMPLETION_RESERVE, engine.base.context // 4))
    sources = rag.fit(messages, retrieved, lambda chat: len(engine.base.encode(engine.base.chat_prompt(chat))),
                      budget)
    prompt = engine.base.chat_prompt(rag.augment(messages, sources))
    prepared = await engine.prepare(GenerateRequest(
        request_id=rid, model=body.model, prompt=prompt, max_tokens=body.token_budget(),
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stop_list(), caller=caller(request),
        retrieved_sources=rag.usage_sources(sources), messages=messages, source_words=rag.shown_words(sources),
        attribution_k=body.attribution.k if body.attribution else None,
    ))
    deltas = _with_markers(engine.stream(prepared), sources)
    cited = rag.citations(sources) if body.retrieval is not None else None
    if body.stream:
        first = True

        def chunk(delta: Delta) -> BaseModel:
            nonlocal first
            role, citations, first = ("assistant" if first else None), (cited if first else None), False
            return ChatCompletionChunk(id=rid, model=body.model, citations=citations, attribution=delta.influences,
                                       choices=[ChatChunkChoice(delta=ChatDelta(role=role, content=delta.text),
                                                                finish_reason=delta.finish_reason)])

        def usage_chunk(counts: Usage) -> BaseModel:
            return ChatCompletionChunk(id=rid, model=body.model, choices=[], usage=counts)

        streamed = sse(deltas, chunk, usage_chunk if body.include_usage() else None)
        streamed.headers[USAGE_EVENT_HEADER] = response.headers[USAGE_EVENT_HEADER]
        return streamed
    parts = [delta async for delta in deltas]
    return ChatCompletionResponse(id=rid, model=body.model, usage=usage(parts[-1]), citations=cited,
                                  attribution=parts[-1].influences, choices=[
        ChatChoice(message=AssistantMessage(content="".join(d.text for d in parts)),
                   finish_reason=parts[-1].finish_reason)])
