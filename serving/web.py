"""The chat page at ``/`` and the two JSON endpoints it reads besides the OpenAI API.

The page (``serving/static/``: plain HTML, CSS and JavaScript, no build step, nothing fetched from
elsewhere) lists the models of ``/v1/models``, streams an answer from ``/v1/chat/completions`` with
retrieval, and links each citation to ``/v1/contributions/{id}`` (the contribution's text, contributor and
verdict) and the answer to ``/v1/usage/{usage_event_id}/earnings`` (what it earned whom, once a usage
epoch has paid it). Errors leave in the API's one-line JSON shape (``serving.api``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from kafka.errors import KafkaError

from payable import kafka_log
from payable.settings import Settings
from pipelines.rewards.usage import earnings_of
from serving.contributions import contribution_detail
from serving.errors import ServingError

STATIC = FilePath(__file__).with_name("static")
USAGE_EVENT_ID = r"^use-[0-9a-f]{32}$"  # serving.usage.usage_id
router = APIRouter()
static_files = StaticFiles(directory=STATIC)


class ContributionNotFound(ServingError):
    status = 404
    type = "not_found_error"

    def __init__(self, contribution_id: int) -> None:
        super().__init__(f"no dataset holds contribution {contribution_id}", param="contribution_id",
                         code="contribution_not_found")


class EarningsUnavailable(ServingError):
    """The usage epochs could not be read off the log (Kafka down or unreachable): unknown, not unpaid."""

    status = 503
    type = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="usage_event_id", code="earnings_unavailable")


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/v1/contributions/{contribution_id}")
async def contribution(request: Request, contribution_id: int = Path(ge=0)) -> dict:
    settings: Settings = request.app.state.settings
    found = await asyncio.to_thread(contribution_detail, settings, contribution_id)
    if found is None:
        raise ContributionNotFound(contribution_id)
    return found


def earnings(settings: Settings, usage_event_id: str) -> dict:
    """What one answer earned whom: ``paid`` with the rows of the usage epoch that paid it, else ``pending``
    (amounts in wei as decimal strings: JSON numbers lose precision in JavaScript past 2**53)."""
    try:
        rows = earnings_of(settings, usage_event_id)
    except (KafkaError, TimeoutError) as exc:
        error = kafka_log.log_error(exc, settings.kafka_bootstrap)
        raise EarningsUnavailable(str(error) if error else f"reading the usage epochs failed: {exc}") from None
    return {"usage_event_id": usage_event_id, "status": "paid" if rows else "pending",
            "earnings": [row | {"amount": str(row["amount"])} for row in rows]}


@router.get("/v1/usage/{usage_event_id}/earnings")
async def usage_earnings(request: Request, usage_event_id: str = Path(pattern=USAGE_EVENT_ID)) -> dict:
    return await asyncio.to_thread(earnings, request.app.state.settings, usage_event_id)
