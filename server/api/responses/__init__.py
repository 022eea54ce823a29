"""OpenAI Responses (stateless): pydantic protocol, input items, tools, routes, SSE encoder."""

from server.api.responses.protocol import error_body
from server.api.responses.routes import router

__all__ = ["error_body", "router"]
