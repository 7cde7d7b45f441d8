"""The retriever registry: its names are the RagBlock's `retriever` values, each retriever's pipeline and run
inputs name the same components, hybrid composes bm25 and dense, the reranker is a last stage with a larger pool,
and a retriever registered from outside is used by the query pipeline, the run inputs and the result's name."""

from __future__ import annotations

import itertools
import typing
from pathlib import Path
from typing import Any, Optional

import pytest

from sdk.backends.rag import retrievers as R
from sdk.errors import DslError
from sdk.spec.blocks.rag import RagBlock

pytest.importorskip("haystack")

TEXTS = ["Opus is the audio codec of WebRTC.", "VP8 and H.264 are its video codecs.",
         "Postgres stores rows in heap pages.", "The reranker reorders candidates."]


def _block(retriever: str, reranker: Optional[str] = None, top_k: int = 5) -> RagBlock:
    return RagBlock(corpus="corpus.c", retriever=retriever, reranker=reranker, top_k=top_k)  # type: ignore[arg-type]


def _store() -> Any:
    from haystack import Document
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    store = InMemoryDocumentStore()
    store.write_documents([Document(id=f"d{i}", content=t) for i, t in enumerate(TEXTS)])
    return store


def test_the_registry_names_are_exactly_the_rag_blocks_retriever_values() -> None:
    values = typing.get_args(RagBlock.model_fields["retriever"].annotation)
    assert sorted(R.RETRIEVERS) == sorted(values)


def test_an_unknown_retriever_is_a_one_line_error_naming_the_known_ones() -> None:
    with pytest.raises(DslError, match=r"unknown retriever 'sparse' \(known: bm25, dense, hybrid\)"):
        R.retriever("sparse")


def test_only_retrievers_with_a_dense_part_need_vectors_in_the_index() -> None:
    assert {name: cls.needs_vectors for name, cls in R.RETRIEVERS.items()} == \
        {"bm25": False, "dense": True, "hybrid": True}


@pytest.mark.parametrize(("name", "reranker"), list(itertools.product(sorted(R.RETRIEVERS), [None, "./ranker"])))
def test_pipeline_run_inputs_and_result_name_agree(name: str, reranker: Optional[str]) -> None:
    block = _block(name, reranker, top_k=3)
    p = R.query_pipeline(block, _store())
    nodes = set(p.graph.nodes)
    assert set(R.run_inputs(block, "codec?", 3)) == nodes  # every component gets its inputs, and no other name
    last = R.last_component(block)
    assert last in nodes and not list(p.graph.successors(last))  # the result is the pipeline's last stage
    first_k = R.pool_size(3) if reranker else 3
    for node in nodes - {"query_embedder"}:
        assert p.get_component(node).top_k == (3 if node == "ranker" else first_k)


def test_hybrid_is_bm25_and_dense_joined_by_reciprocal_rank_fusion() -> None:
    block = _block("hybrid")
    p = R.query_pipeline(block, _store())
    assert set(p.graph.nodes) == {"bm25", "query_embedder", "dense", "joiner"}
    assert sorted(p.graph.predecessors("joiner")) == ["bm25", "dense"]
    assert p.get_component("joiner").join_mode.value == "reciprocal_rank_fusion"
    inputs = R.run_inputs(block, "q", 4)
    assert inputs == {**R.run_inputs(_block("bm25"), "q", 4), **R.run_inputs(_block("dense"), "q", 4),
                      "joiner": {"top_k": 4}}


def test_bm25_retrieves_through_the_registry_at_call_time_top_k() -> None:
    block = _block("bm25", top_k=2)
    p = R.query_pipeline(block, _store())
    last = R.last_component(block)
    out = p.run(R.run_inputs(block, "Which audio codec does WebRTC use?", 1), include_outputs_from={last})
    docs = out[last]["documents"]
    assert [d.id for d in docs] == ["d0"]


class _TwiceBM25(R.Retriever):
    """A retriever defined outside sdk/: BM25 under another component name, keeping twice top_k."""

    name = "twice"
    output = "kw"

    def add(self, p: Any, block: Any, store: Any, top_k: int, base_dir: Optional[Path]) -> str:
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever

        p.add_component("kw", InMemoryBM25Retriever(document_store=store, top_k=2 * top_k))
        return self.output

    def inputs(self, question: str, top_k: int) -> dict[str, dict[str, Any]]:
        return {"kw": {"query": question, "top_k": 2 * top_k}}


def test_a_registered_retriever_is_one_class_used_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(R.RETRIEVERS, "twice", _TwiceBM25)
    block = _block("bm25", top_k=1).model_copy(update={"retriever": "twice"})
    assert R.last_component(block) == "kw"
    p = R.query_pipeline(block, _store())
    out = p.run(R.run_inputs(block, "Which codecs does WebRTC use?", 1), include_outputs_from={"kw"})
    assert len(out["kw"]["documents"]) == 2
    assert {d.id for d in out["kw"]["documents"]} == {"d0", "d1"}
