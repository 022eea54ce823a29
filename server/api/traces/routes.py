"""GET and POST /v1/trace: what the trace folder holds, and recording on or off live.

Behind the API key like every admin route; the folder is the worker's own (`--trace-dir`, or
the home's `traces/`): a client can turn recording on, never point it somewhere else.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, StrictBool

router = APIRouter()


class TraceSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool


@router.get("/v1/trace")
def trace_status(request: Request):
    return request.app.state.traces.status()


@router.post("/v1/trace")
def switch_traces(request: Request, switch: TraceSwitch):
    traces = request.app.state.traces
    traces.set_enabled(switch.enabled)
    return traces.status()
