"""The eval step and its parts: answering, caching, human grades, model clients, statistics."""
