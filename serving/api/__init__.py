"""The HTTP layer: a FastAPI app over one :class:`~serving.engine.Engine`, one module per endpoint family.

Every error leaves in OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``): a
malformed body or failed validation is a 400, an unknown model a 404, an adapter that cannot be loaded a
500 naming the adapter and the reason. Unexpected exceptions are caught here too, so a request can fail
but the worker never does.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from payable.settings import Settings
from serving import web
from serving.api import chat, completions, metrics, models
from serving.api.common import error_response
from serving.engine import Engine
from serving.errors import ServingError
from serving.rag import Retriever
from serving.usage import UsageWriter

log = logging.getLogger(__name__)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".strip(), None
    param = ".".join(location) or None
    return f"{param or 'body'}: {first.get('msg', 'invalid request')}", param


def create_app(engine: Engine, usage: UsageWriter | None = None, retriever: Retriever | None = None,
               settings: Settings | None = None) -> FastAPI:
    """The OpenAI-compatible app; starting and stopping the engine and usage writer is the caller's job.
    Without a ``retriever``, a chat request asking for retrieval is refused; with ``settings`` (the data
    directory the page's contribution details and earnings are read from), the chat page is served at ``/``."""
    app = FastAPI(title="payable serve", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.usage = usage
    app.state.retriever = retriever
    app.state.settings = settings
    for module in (completions, chat, models, metrics):
        app.include_router(module.router)
    if settings is not None:
        app.include_router(web.router)
        app.mount("/static", web.static_files, name="static")

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, "invalid_request_error", param, None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind, None, None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "server_error", None, None)

    return app
