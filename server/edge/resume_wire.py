"""How the front door and the worker speak of a resumed stream (the edge: stdlib only, both
sides import it). A stream asked with RESUMABLE_HEADER carries each new token's id in an SSE
comment line starting MARK_PREFIX, ahead of the events it produced; a request re-sent after its
worker died carries the reply's tokens so far under RESUME_KEY in its JSON body; a Responses
request also carries the ids its client already has under RESUME_RESPONSE_KEY (`id`,
`created_at`, `items`: output item ids by output index), which the reply then keeps."""

RESUMABLE_HEADER = "x-mlxctl-resumable"
RESUME_KEY = "mlxctl_resume"
RESUME_RESPONSE_KEY = "mlxctl_resume_response"
MARK_PREFIX = ": mlxctl-tokens "
