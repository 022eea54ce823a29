"""The reply as it is decoded: text into events, reasoning, per-request logits processors."""
