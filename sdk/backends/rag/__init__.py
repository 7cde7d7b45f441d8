"""The corpus and rag steps (haystack) and the retrieval system they build: embedders, retrievers, stores, fusion, adaptation."""
