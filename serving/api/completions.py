"""POST /v1/completions: text completion, whole or streamed as server-sent events."""

from __future__ import annotations

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel

from serving.api.common import caller, request_id, sse, usage
from serving.engine import Delta, Engine, GenerateRequest
from serving.protocol import CompletionChoice, CompletionRequest, CompletionResponse, Logprobs, Usage

router = APIRouter()


def _logprobs(engine: Engine, deltas: list[Delta], top: int) -> Logprobs:
    """OpenAI's legacy logprobs object over the completion's tokens (log-softmax of the step logits)."""
    result = Logprobs()
    offset = 0
    decode = engine.base.tokenizer.decode
    for delta in deltas:
        for token, logits in zip(delta.tokens, delta.logits, strict=False):
            logp = torch.log_softmax(logits.float(), dim=-1)
            text = decode([token])
            result.tokens.append(text)
            result.token_logprobs.append(float(logp[token]))
            values, ids = logp.topk(top) if top else (logp[:0], logp[:0].long())
            result.top_logprobs.append({decode([int(i)]): float(v) for v, i in zip(values, ids, strict=True)})
            result.text_offset.append(offset)
            offset += len(text)
    return result


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request):
    engine: Engine = request.app.state.engine
    rid = request_id(request, "cmpl")
    prepared = await engine.prepare(GenerateRequest(
        request_id=rid, model=body.model, prompt=body.prompt_text(), max_tokens=body.max_tokens,
        temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stop_list(),
        logprobs=body.logprobs is not None, caller=caller(request),
        attribution_k=body.attribution.k if body.attribution else None,
    ))
    deltas = engine.stream(prepared)
    if body.stream:
        def chunk(delta: Delta) -> BaseModel:
            logprobs = _logprobs(engine, [delta], body.logprobs) if body.logprobs is not None else None
            return CompletionResponse(id=rid, model=body.model, attribution=delta.influences, choices=[
                CompletionChoice(text=delta.text, finish_reason=delta.finish_reason, logprobs=logprobs)])

        def usage_chunk(counts: Usage) -> BaseModel:
            return CompletionResponse(id=rid, model=body.model, choices=[], usage=counts)

        return sse(deltas, chunk, usage_chunk if body.include_usage() else None)
    parts = [delta async for delta in deltas]
    final = parts[-1]
    logprobs = _logprobs(engine, parts, body.logprobs) if body.logprobs is not None else None
    return CompletionResponse(id=rid, model=body.model, usage=usage(final), attribution=final.influences, choices=[
        CompletionChoice(text="".join(d.text for d in parts), finish_reason=final.finish_reason, logprobs=logprobs)])
