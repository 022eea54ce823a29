"""The inference worker: OpenAI and Anthropic APIs over mlx-lm."""
