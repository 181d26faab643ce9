"""The one exception hierarchy of the runtime. Each class carries its HTTP status and error_type;
server.py reads them in one place (`http_response`), so a new error is one class here."""

from __future__ import annotations


class CrossrankError(Exception):
    """Base of every error the runtime raises on purpose."""

    status = 500
    error_type = "internal_error"

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer to this error carries (none by default)."""
        return {}


class ConfigError(CrossrankError):
    """A setting is invalid (flag, environment variable or argument)."""

    error_type = "config_error"


class ModelLoadError(CrossrankError):
    """The model directory cannot be served: missing, corrupt, unverified or incompatible files."""

    error_type = "model_error"


class InvalidRequest(CrossrankError):
    """The request is malformed or breaks a documented rule."""

    status = 422
    error_type = "invalid_request"


class BadJSON(InvalidRequest):
    """The body is not valid UTF-8 JSON."""

    status = 400
    error_type = "invalid_json"


class LimitExceeded(InvalidRequest):
    """The request asks for more than a configured limit allows."""

    error_type = "limit_exceeded"


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    status = 413
    error_type = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    """The body is not declared as JSON."""

    status = 415
    error_type = "unsupported_media_type"


class Unauthorized(CrossrankError):
    """Missing or wrong API key."""

    status = 401
    error_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Overloaded(CrossrankError):
    """Too much work is queued; the caller should retry later."""

    status = 429
    error_type = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, int(self.retry_after_s)))}


class ClientDisconnected(CrossrankError):
    """The client went away before its answer was ready; its work was dropped. Nobody reads the
    answer: 499 (nginx's "client closed request") is what logs and metrics record."""

    status = 499
    error_type = "client_disconnected"


class DeadlineExceeded(CrossrankError):
    """The request's deadline passed before its work was done; the work was dropped."""

    status = 504
    error_type = "deadline_exceeded"


class InferenceError(CrossrankError):
    """Inference failed; the affected requests fail, the server keeps serving."""

    error_type = "inference_error"


class Unavailable(CrossrankError):
    """The scorer is not ready or is shutting down."""

    status = 503
    error_type = "unavailable"
