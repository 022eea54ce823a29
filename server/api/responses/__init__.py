"""OpenAI Responses: pydantic protocol, input items, tools, routes, SSE encoder, the store."""

from server.api.responses.protocol import error_body
from server.api.responses.routes import router
from server.api.responses.store import open_store

__all__ = ["error_body", "open_store", "router"]
