"""OpenAI Chat Completions: pydantic protocol, conversion, routes and the SSE encoder."""

from server.api.openai.protocol import error_body
from server.api.openai.routes import router

__all__ = ["error_body", "router"]
