"""POST /v1/chat/completions: chat messages rendered with the base model's template, whole or streamed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from serving.api.common import caller, request_id, sse, usage
from serving.engine import Delta, Engine, GenerateRequest
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

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request):
    engine: Engine = request.app.state.engine
    rid = request_id(request, "chatcmpl")
    prompt = engine.base.chat_prompt([(m.role, m.text()) for m in body.messages])
    prepared = await engine.prepare(GenerateRequest(
        request_id=rid, model=body.model, prompt=prompt, max_tokens=body.token_budget(),
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stop_list(), caller=caller(request),
    ))
    deltas = engine.stream(prepared)
    if body.stream:
        first = True

        def chunk(delta: Delta) -> BaseModel:
            nonlocal first
            role, first = ("assistant" if first else None), False
            return ChatCompletionChunk(id=rid, model=body.model, choices=[ChatChunkChoice(
                delta=ChatDelta(role=role, content=delta.text), finish_reason=delta.finish_reason)])

        def usage_chunk(counts: Usage) -> BaseModel:
            return ChatCompletionChunk(id=rid, model=body.model, choices=[], usage=counts)

        return sse(deltas, chunk, usage_chunk if body.include_usage() else None)
    parts = [delta async for delta in deltas]
    return ChatCompletionResponse(id=rid, model=body.model, usage=usage(parts[-1]), choices=[ChatChoice(
        message=AssistantMessage(content="".join(d.text for d in parts)), finish_reason=parts[-1].finish_reason)])
