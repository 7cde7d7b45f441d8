"""Serving: the OpenAI-compatible gateway, the embedded CPU engine and the SGLang launcher."""
