"""The OpenAI wire shapes the server speaks: requests, responses, stream chunks and the error object.

Field names, defaults and ``object`` tags follow OpenAI's API reference, so any OpenAI client works.
Fields the server cannot honour (``n`` > 1, ``echo``, ``best_of``...) are refused with a clear
``invalid_request_error`` instead of silently ignored; unknown extra fields are ignored, as OpenAI does.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StreamOptions(BaseModel):
    include_usage: bool = False


class AttributionOptions(BaseModel):
    """Per-answer attribution: the ``k`` training contributions that most influenced the answer."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1, le=100)


class Influence(BaseModel):
    """One training contribution of an answer's adapter, by its TracIn influence on the answer."""

    rank: int
    contribution_id: int
    score: float


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=1000)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    stream_options: StreamOptions | None = None
    attribution: AttributionOptions | None = None

    def include_usage(self) -> bool:
        """A streamed response ends with a chunk holding the token counts (``stream_options``)."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class RetrievalOptions(BaseModel):
    """Retrieval-augmented generation: the top ``k`` chunks of these datanets go into the prompt."""

    model_config = ConfigDict(extra="forbid")

    datanets: list[int] = Field(min_length=1, max_length=16)
    k: int = Field(4, ge=1, le=16)


class Citation(BaseModel):
    """One retrieved source of an answer: what its inline marker points at, and who contributed it."""

    marker: str  # "[1]", as in the answer text and the prompt
    contribution_id: int
    datanet_id: int
    contributor: str
    chunk_id: str
    dataset_version: int
    score: float  # fused retrieval score
    text: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    retrieval: RetrievalOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Logprobs(BaseModel):
    """The legacy completions ``logprobs`` object."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: Logprobs | None = None


class _Completion(BaseModel):
    """What every completion response and stream chunk carries."""

    id: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    usage: Usage | None = None
    attribution: list[Influence] | None = None  # asked for with ``attribution``: on the response or the last chunk


class CompletionResponse(_Completion):
    """A whole completion, and also each chunk of a streamed one (OpenAI uses one shape for both)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionResponse(_Completion):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    citations: list[Citation] | None = None  # present when the request asked for retrieval


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Completion):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    citations: list[Citation] | None = None  # on the first chunk of a retrieval-augmented stream


class ModelCard(BaseModel):
    """One entry of /v1/models: OpenAI's fields, plus where the adapter comes from."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str
    """The adapter id a name serves (an alias's current target; the adapter itself otherwise)."""
    parent: str | None
    """The base model an adapter runs on; ``None`` for the base model."""
    datanet_id: int | None = None
    dataset_version: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
