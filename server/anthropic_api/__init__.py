"""Anthropic Messages API: pydantic protocol, conversion, routes and the SSE event encoder."""

from server.anthropic_api.protocol import error_body
from server.anthropic_api.routes import router

__all__ = ["error_body", "router"]
