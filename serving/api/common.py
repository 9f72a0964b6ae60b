"""What the endpoint modules share: the error response, request identity, and the SSE stream of deltas."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

from serving.engine import Delta
from serving.errors import InvalidRequest, ServingError
from serving.protocol import ErrorBody, ErrorResponse, Usage

CALLER_HEADER = "x-payable-caller"
REQUEST_ID_HEADER = "x-request-id"
USAGE_EVENT_HEADER = "x-payable-usage-event"  # the usage event id of the answer (serving.usage.usage_id)
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_response(status: int, message: str, kind: str, param: str | None, code: str | None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def caller(request: Request) -> str | None:
    """The caller's address from ``X-Payable-Caller`` (lower-cased), or ``None``; malformed is refused."""
    raw = request.headers.get(CALLER_HEADER)
    if raw is None:
        return None
    if not _ADDRESS.match(raw.strip()):
        raise InvalidRequest(f"{CALLER_HEADER} must be a 0x-prefixed 20-byte hex address, got {raw[:64]!r}",
                             param=CALLER_HEADER, code="invalid_caller")
    return raw.strip().lower()


def request_id(request: Request, prefix: str) -> str:
    """The client's ``X-Request-Id`` when well-formed (retries keep their usage id), else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is None:
        return f"{prefix}-{uuid.uuid4().hex}"
    if not _REQUEST_ID.match(given):
        raise InvalidRequest(f"{REQUEST_ID_HEADER} must be 1-128 characters of [A-Za-z0-9._:-]",
                             param=REQUEST_ID_HEADER, code="invalid_request_id")
    return given


def usage(final: Delta) -> Usage:
    """Token counts of a finished completion (its last delta)."""
    return Usage(prompt_tokens=final.prompt_tokens, completion_tokens=final.completion_tokens,
                 total_tokens=final.prompt_tokens + final.completion_tokens)


def sse(deltas: AsyncIterator[Delta], chunk: Callable[[Delta], BaseModel],
        usage_chunk: Callable[[Usage], BaseModel] | None = None) -> EventSourceResponse:
    """Server-sent events: one ``data:`` JSON chunk per delta (then a chunk of token counts when
    ``usage_chunk`` is given), an error object if generation fails, then ``[DONE]``.

    When the client disconnects, the response task is cancelled, which closes ``deltas``: the engine then
    cancels the generation at the next step and records its usage event.
    """

    async def events() -> AsyncIterator[str]:
        try:
            async for delta in deltas:
                yield chunk(delta).model_dump_json()
                if delta.finish_reason and usage_chunk is not None:
                    yield usage_chunk(usage(delta)).model_dump_json()
        except ServingError as exc:
            body = ErrorResponse(error=ErrorBody(message=exc.message, type=exc.type, param=exc.param, code=exc.code))
            yield body.model_dump_json()
        finally:
            await deltas.aclose()
        yield "[DONE]"

    return EventSourceResponse(events(), ping=15)
