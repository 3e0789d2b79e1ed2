"""Ridgeline's serving runtime: weights from object storage, transformers + bitsandbytes on
Ray Serve, an OpenAI-compatible API. Importing this package pulls in neither Ray nor torch."""
