"""Constrained tool calls: a grammar per request (llguidance) that keeps a call's syntax and its
arguments valid, applied as a per-request logits processor (see `server.decoding.processors`)."""
