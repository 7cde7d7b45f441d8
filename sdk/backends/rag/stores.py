"""Document stores for the Haystack backend: the pgvector store (opened from the block's ``store``, checked
reachable before any work), the in-memory store saved as ``store.json``, the local index (``store = index {}``,
:mod:`sdk.backends.rag.index_store`) saved as the folder ``index/``, and secrets named by their variable.

Haystack, its pgvector integration and the index store are imported inside the functions that need them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.artifacts import Artifact
from sdk.errors import DslError


def pg_store(store: Any, embedding_dim: int = 384, for_writing: bool = False) -> Any:
    """The PgvectorDocumentStore of a ``pgvector { ... }`` block (the table is recreated only when writing)."""
    from haystack.utils import Secret
    from haystack_integrations.document_stores.pgvector import PgvectorDocumentStore

    return PgvectorDocumentStore(connection_string=Secret.from_env_var(store.connection.env), table_name=store.table,
                                 embedding_dimension=embedding_dim, recreate_table=store.recreate and for_writing,
                                 search_strategy=store.search_strategy, keyword_index_name=f"{store.table}_kw",
                                 hnsw_index_name=f"{store.table}_hnsw")


def secret(ref: Any, what: str) -> str:
    """A SecretRef's value; a missing variable is a user-facing error naming it (never the value)."""
    try:
        return str(ref.resolve())
    except KeyError:
        raise DslError(f"{what} needs the environment variable {ref.env}, which is not set") from None


def check_reachable(store: Any) -> None:
    """Fail early, naming host and port, when the PostgreSQL server cannot be reached."""
    import socket
    from urllib.parse import parse_qs, urlparse

    url = urlparse(secret(store.connection, "the pgvector connection"))
    host, port = url.hostname or "localhost", url.port or 5432
    socket_dir = (parse_qs(url.query).get("host") or [""])[0]
    if socket_dir.startswith("/"):  # a Unix-domain socket
        if not Path(socket_dir, f".s.PGSQL.{port}").exists():
            raise DslError(f"cannot reach the pgvector store: no PostgreSQL socket at {socket_dir} (port {port})")
        return
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        raise DslError(f"cannot reach the pgvector store at {host}:{port} ({e.strerror or e})") from None


def write_local(block: Any, docs: list[Any], out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Write a memory or index store of ``docs`` into the artifact folder ``out_dir``: the store and its outputs."""
    if block.store.type == "index":
        from sdk.backends.rag.index_store import (  # local: imports haystack and numpy
            FOLDER,
            IndexDocumentStore,
        )

        index = IndexDocumentStore.build(docs)
        index.save(out_dir / FOLDER)
        return index, {"store": FOLDER}
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    store.write_documents(docs)
    store.save_to_disk(str(out_dir / "store.json"))
    return store, {"store": "store.json"}


def open_store(art: Artifact, block: Any) -> Any:
    """The document store an applied rag step wrote: its pgvector table, ``store.json`` loaded back (with its
    embeddings, nothing re-embedded), or the ``index/`` folder read back. A damaged index is named with the
    command that rebuilds it."""
    if block.store.type == "pgvector":
        check_reachable(block.store)
        return pg_store(block.store)
    if block.store.type == "index":
        from sdk.backends.rag.index_store import (  # local: imports haystack and numpy
            FOLDER,
            IndexDocumentStore,
            IndexFileError,
        )

        name = art.outputs.get("store", FOLDER)
        index = IndexDocumentStore(str(art.path / name))
        try:
            index.count_documents()  # read now: a damaged file is named here, not at the first question
        except IndexFileError as e:
            raise DslError(f"the index of {art.step_id} cannot be read ({name}/{e.name}: {e.reason}); "
                           f"run dsl apply --replace {art.step_id}") from None
        return index
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    path = art.path / art.outputs.get("store", "store.json")
    try:
        return InMemoryDocumentStore.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged index is named, not shown as a traceback
        raise DslError(f"the index of {art.step_id} ({path.name}) cannot be read ({type(e).__name__}); "
                       f"run dsl apply --replace {art.step_id}") from None


def overwrite() -> Any:
    from haystack.document_stores.types import DuplicatePolicy

    return DuplicatePolicy.OVERWRITE
