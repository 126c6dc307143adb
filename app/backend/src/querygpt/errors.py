"""Exceptions that carry an HTTP status and a message a user can act on.

Domain code raises these; one exception handler in ``app.py`` turns them into
``{"detail": "..."}`` responses, so modules never import FastAPI just to fail.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An environment variable is missing or invalid; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable


class QueryGPTError(Exception):
    """Base for errors that map to an HTTP response."""

    status_code: int = 500

    def __init__(self, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code

    @property
    def operator_detail(self) -> str:
        """The message for logs and operator tools; may name internal addresses."""
        return self.detail


class UploadRejected(QueryGPTError):
    """The uploaded file cannot be indexed; ``reason`` labels the metric."""

    def __init__(self, reason: str, detail: str, *, status_code: int) -> None:
        super().__init__(detail, status_code=status_code)
        self.reason = reason


class InvalidRequest(QueryGPTError):
    """A request field has a value we cannot work with (422)."""

    status_code = 422


class InvalidCollectionName(InvalidRequest):
    pass


class CollectionNotFound(QueryGPTError):
    status_code = 404


class DocumentNotFound(QueryGPTError):
    status_code = 404


class DimensionMismatch(QueryGPTError):
    """The collection was built with another embedding model."""

    status_code = 409


class UpstreamError(QueryGPTError):
    """Qdrant or Ollama answered, but with an error (502).

    ``service`` is ``"qdrant"``, ``"ollama"``, ``"s3"`` or ``"postgresql"`` so operators know
    where to look.
    """

    status_code = 502

    def __init__(
        self, service: str, detail: str, *, status_code: int | None = None, where: str = ""
    ) -> None:
        super().__init__(detail, status_code=status_code)
        self.service = service
        # The endpoint that failed: logged and shown to operators, never in an API response
        # (clients must not learn internal addresses; docs/architecture.md).
        self.where = where

    @property
    def operator_detail(self) -> str:
        return f"{self.detail} ({self.service} at {self.where})" if self.where else self.detail


class UpstreamUnavailable(UpstreamError):
    """Qdrant or Ollama could not be reached or timed out (503)."""

    status_code = 503


class DeadlineExceeded(QueryGPTError):
    """The request's deadline ran out; the work was stopped (504).

    ``endpoint`` and ``stage`` (where it stopped) label querygpt_deadline_exceeded_total.
    """

    status_code = 504

    def __init__(self, detail: str, *, endpoint: str, stage: str) -> None:
        super().__init__(detail)
        self.endpoint = endpoint
        self.stage = stage


class TooManyRequests(QueryGPTError):
    """Refused by a limit (429); ``reason`` labels querygpt_requests_rejected_total and
    ``retry_after`` (whole seconds) becomes the Retry-After header."""

    status_code = 429

    def __init__(self, detail: str, *, reason: str, retry_after: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class Unauthorized(QueryGPTError):
    """No usable credentials (401). ``challenge`` adds ``WWW-Authenticate: Bearer``; a failed
    login answers without it (the credentials were the body's, not a header's)."""

    status_code = 401

    def __init__(self, detail: str, *, challenge: bool = True) -> None:
        super().__init__(detail)
        self.challenge = challenge


class Forbidden(QueryGPTError):
    """Authenticated, but not allowed (403); the message names what is missing."""

    status_code = 403


class NotFound(QueryGPTError):
    """An unknown user, grant, token or collection named in the request (404)."""

    status_code = 404


class Conflict(QueryGPTError):
    """The thing to create exists already (409)."""

    status_code = 409


class QuotaExceeded(QueryGPTError):
    """A user's storage quota would be exceeded (413)."""

    status_code = 413
