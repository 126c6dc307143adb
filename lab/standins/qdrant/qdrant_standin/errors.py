"""Errors that become upstream-shaped HTTP error responses.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: clients (qdrant-client's ``UnexpectedResponse``, our app's error handling)
key off the status code and the ``{"status": {"error": ...}}`` body, so the
stand-in reuses upstream's message prefixes ("Not found: ", "Wrong input: ").
"""

from __future__ import annotations


class ApiError(Exception):
    """An error with the HTTP status and message upstream would return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_input(description: str) -> ApiError:
    """Upstream's StorageError::BadInput (400)."""
    return ApiError(400, f"Wrong input: {description}")


def bad_request(description: str) -> ApiError:
    """Upstream's StorageError::BadRequest (400)."""
    return ApiError(400, f"Bad request: {description}")


def not_found(description: str) -> ApiError:
    """Upstream's StorageError::NotFound (404)."""
    return ApiError(404, f"Not found: {description}")


def forbidden(description: str) -> ApiError:
    """Upstream's StorageError::Forbidden (403)."""
    return ApiError(403, f"Forbidden: {description}")


def collection_not_found(name: str) -> ApiError:
    return not_found(f"Collection `{name}` doesn't exist!")


def unsupported(feature: str) -> ApiError:
    """A real Qdrant feature the stand-in deliberately lacks: fail loudly, never guess."""
    return bad_input(f"{feature} is not supported by the QueryGPT lab stand-in (not Qdrant)")


def not_emulated(method: str, path: str) -> ApiError:
    """A route the stand-in does not serve: a 400 that says so, never a bare 404 that a
    client would take for a missing collection or point."""
    return unsupported(f"Endpoint {method} {path}")
