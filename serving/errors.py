"""Errors the server answers with, each mapped to an HTTP status and an OpenAI error ``type``/``code``."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server refuses or cannot serve; ``message`` says why in one line."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class InvalidRequest(ServingError):
    pass


class ModelNotFound(ServingError):
    status = 404
    type = "not_found_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"the model {model!r} does not exist (GET /v1/models lists the served models)",
                         param="model", code="model_not_found")


class AdapterUnavailable(ServingError):
    """The adapter exists but its files cannot be served (corrupt, or made for another base model)."""

    status = 500
    type = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="adapter_unavailable")


class BaseModelMismatch(ServingError):
    """The adapter was trained on another base model than the one served: its factors would be noise here."""

    def __init__(self, adapter_id: str, adapter_base: str | None, served: str, served_hash: str) -> None:
        super().__init__(f"{adapter_id} was trained on base model {(adapter_base or '?')[:12]}, not the served "
                         f"{served} ({served_hash[:12]}): ask a server of that base", param="model",
                         code="model_base_mismatch")


class GenerationFailed(ServingError):
    status = 500
    type = "server_error"
