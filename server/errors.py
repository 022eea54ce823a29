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
    def __init__(self, prompt_tokens: int, context_length: int, at_least: bool = False):
        # at_least: a lower bound, refused before the whole prompt was tokenized.
        counted = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        super().__init__(
            f"prompt is too long: {counted} tokens > {context_length} maximum "
            f"(the model's context length is {context_length} tokens)",
            code="context_length_exceeded",
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class Unauthorized(WorkerError):
    status = 401
    kind = "unauthorized"


class Forbidden(WorkerError):
    """A Host or Origin this worker does not serve (DNS rebinding, a foreign web page)."""

    status = 403
    kind = "forbidden"


class NotFound(WorkerError):
    status = 404
    kind = "not_found"


class PayloadTooLarge(WorkerError):
    status = 413
    kind = "too_large"


class MethodNotAllowed(WorkerError):
    status = 405
    kind = "not_found"


class HTTPStatusError(BadRequest):
    """Any other client error the HTTP layer raised, with its own status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Overloaded(WorkerError):
    """The queue is full; the client should retry later."""

    status = 429
    kind = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.headers = {"retry-after": str(retry_after)}


class ServiceUnavailable(Overloaded):
    """The model is still loading or the worker is shutting down: not the client's rate."""

    status = 503
    kind = "unavailable"


class InternalError(WorkerError):
    status = 500
    kind = "internal"

    def __init__(self, message: str = "internal server error"):
        super().__init__(message)
