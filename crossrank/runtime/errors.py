"""The one exception hierarchy of the runtime; server.py maps it to HTTP status in one place."""

from __future__ import annotations


class CrossrankError(Exception):
    """Base of every error the runtime raises on purpose."""

    error_type = "internal_error"


class ConfigError(CrossrankError):
    """A setting is invalid (flag, environment variable or argument)."""

    error_type = "config_error"


class ModelLoadError(CrossrankError):
    """The model directory cannot be served: missing, corrupt, unverified or incompatible files."""

    error_type = "model_error"


class InvalidRequest(CrossrankError):
    """The request is malformed or breaks a documented rule."""

    error_type = "invalid_request"


class LimitExceeded(InvalidRequest):
    """The request asks for more than a configured limit allows."""

    error_type = "limit_exceeded"


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit."""

    error_type = "payload_too_large"


class Unauthorized(CrossrankError):
    """Missing or wrong API key."""

    error_type = "unauthorized"


class Overloaded(CrossrankError):
    """Too much work is queued; the caller should retry later."""

    error_type = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(CrossrankError):
    """The request's deadline passed before its work was done; the work was dropped."""

    error_type = "deadline_exceeded"


class InferenceError(CrossrankError):
    """Inference failed; the affected requests fail, the server keeps serving."""

    error_type = "inference_error"


class Unavailable(CrossrankError):
    """The scorer is not ready or is shutting down."""

    error_type = "unavailable"


class UnsupportedMediaType(InvalidRequest):
    """The body is not declared as JSON."""

    error_type = "unsupported_media_type"
