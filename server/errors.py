"""The worker's error hierarchy: each error knows its HTTP status; protocols pick the wire shape."""

from __future__ import annotations


class WorkerError(Exception):
    """An error a client sees. `kind` is protocol-neutral; each API maps it to its own type name."""

    status = 500
    kind = "internal"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers: dict[str, str] = {}


class BadRequest(WorkerError):
    status = 400
    kind = "bad_request"


class ContextLengthExceeded(BadRequest):
    def __init__(self, prompt_tokens: int, context_length: int):
        super().__init__(
            f"prompt is too long: {prompt_tokens} tokens > {context_length} maximum "
            f"(the model's context length is {context_length} tokens)",
            code="context_length_exceeded",
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class Unauthorized(WorkerError):
    status = 401
    kind = "unauthorized"


class NotFound(WorkerError):
    status = 404
    kind = "not_found"


class PayloadTooLarge(WorkerError):
    status = 413
    kind = "too_large"


class Overloaded(WorkerError):
    """The queue is full (or the model is still loading); the client should retry later."""

    status = 429
    kind = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, status: int | None = None):
        super().__init__(message)
        self.headers = {"retry-after": str(retry_after)}
        if status is not None:
            self.status = status


class InternalError(WorkerError):
    status = 500
    kind = "internal"

    def __init__(self, message: str = "internal server error"):
        super().__init__(message)
