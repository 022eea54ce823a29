"""Anthropic Messages API: pydantic protocol, conversion, routes and the SSE event encoder."""

from server.api.anthropic.protocol import error_body
from server.api.anthropic.routes import router

__all__ = ["error_body", "router"]
