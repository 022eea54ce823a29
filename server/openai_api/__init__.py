"""OpenAI Chat Completions: pydantic protocol, conversion, routes and the SSE encoder."""

from server.openai_api.protocol import error_body
from server.openai_api.routes import router

__all__ = ["error_body", "router"]
