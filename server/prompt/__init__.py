"""A ChatRequest into token ids with the model's chat template (a pool thread, before the queue)."""
