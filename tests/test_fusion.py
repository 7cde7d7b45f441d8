"""Learned fusion (issue 27): ``fuse`` joins rankings by weighted RRF or normalised weighted scores, ``learn_fusion``
finds the weights (and a reranker's cut-off) that a synthetic dev split is built to reward, keeps Haystack's
equal-weight RRF when nothing beats it, and the hybrid query pipeline joins bm25 and dense by the learned
parameters exactly as ``fuse`` does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sdk.backends.rag import fusion as F
from sdk.errors import DslError


def test_equal_weight_rrf_is_haystacks_reciprocal_rank_fusion() -> None:
    pytest.importorskip("haystack")
    from haystack import Document
    from haystack.components.joiners import DocumentJoiner

    bm25 = [("a", 9.0), ("b", 7.0), ("c", 1.0)]
    dense = [("c", 0.9), ("d", 0.8), ("a", 0.7)]
    ours = [d for d, _ in F.fuse({"bm25": bm25, "dense": dense})]
    lists = [[Document(id=d, content=d, score=s) for d, s in r] for r in (bm25, dense)]
    theirs = [d.id for d in DocumentJoiner(join_mode="reciprocal_rank_fusion").run(lists)["documents"]]
    assert ours == theirs == ["a", "c", "b", "d"]


def test_weights_and_score_normalisation_decide_the_order() -> None:
    rankings = {"bm25": [("a", 30.0), ("b", 20.0), ("c", 10.0)], "dense": [("c", 0.9), ("b", 0.85), ("a", 0.1)]}
    assert [d for d, _ in F.fuse(rankings, {"method": "rrf", "k": 60, "weights": {"bm25": 0.9, "dense": 0.1}})] \
        == ["a", "b", "c"]
    assert [d for d, _ in F.fuse(rankings, {"method": "rrf", "k": 60, "weights": {"bm25": 0.1, "dense": 0.9}})] \
        == ["c", "b", "a"]
    # min-max per retriever: a = 1*w + 0, b = 0.5*w + 0.94*(1-w), c = 0 + 1*(1-w); raw bm25 scores would swamp cosines
    fused = F.fuse(rankings, {"method": "score", "norm": "minmax", "weights": {"bm25": 0.5, "dense": 0.5}})
    assert [d for d, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(0.5 * 0.5 + 0.5 * 0.75 / 0.8)
    # a document only one retriever found gets 0 from the other, weights are divided by their sum, ties keep the
    # order of first appearance
    assert F.fuse({"bm25": [("x", 2.0)], "dense": [("y", 0.5)]}, {"method": "score", "weights": {"bm25": 1, "dense": 1}}) \
        == [("x", 0.5), ("y", 0.5)]


@pytest.mark.parametrize(("params", "message"), [
    ({"method": "rrf", "weights": {"bm25": 1.0}}, "no weight for dense"),
    ({"method": "rrf", "weights": {"bm25": -1.0, "dense": 1.0}}, "numbers >= 0"),
    ({"method": "rrf", "weights": {"bm25": 0.0, "dense": 0.0}}, "not all be zero"),
    ({"method": "borda"}, "unknown fusion method 'borda'"),
    ({"method": "score", "norm": "rank"}, "unknown fusion normalisation 'rank'"),
])
def test_bad_parameters_are_one_clear_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(DslError, match=message):
        F.fuse({"bm25": [("a", 1.0)], "dense": [("a", 0.5)]}, params)


def _synthetic(n: int, seed: int = 0) -> tuple[dict[str, list[list[tuple[str, float]]]], list[set[str]]]:
    """Dev rankings where dense ranks the gold first in 90 % of queries (else third) and bm25 puts it at a random
    rank of its top 10, always ranking two shared distractors above the gold."""
    rng = random.Random(seed)
    bm25, dense, gold = [], [], []
    for q in range(n):
        g = f"q{q}-gold"
        others = [f"q{q}-d{i}" for i in range(12)]
        d_order = [g] + others[:9] if rng.random() < 0.9 else others[:2] + [g] + others[2:9]
        b_order = others[:2] + others[2:10]
        b_order.insert(rng.randrange(2, 10), g)
        dense.append([(d, 1.0 - 0.05 * i) for i, d in enumerate(d_order)])
        bm25.append([(d, 20.0 - i) for i, d in enumerate(b_order[:10])])
        gold.append({g})
    return {"bm25": bm25, "dense": dense}, gold


def test_learned_weights_follow_the_retriever_that_finds_the_gold() -> None:
    rankings, gold = _synthetic(200)
    learned = F.learn_fusion(rankings, gold)
    w = learned["params"]["weights"]
    assert w["dense"] > w["bm25"]
    assert learned["dev"]["recall@1"] == pytest.approx(sum(r[0][0] in g for r, g in zip(rankings["dense"], gold)) / 200)
    assert learned["dev"]["mrr"] > learned["baseline"]["mrr"] + 0.05  # equal RRF lets bm25's noise in
    assert learned["baseline"] == F.figures([[d for d, _ in F.fuse({k: v[q] for k, v in rankings.items()})]
                                             for q in range(200)], gold)
    assert len(learned["candidates"]) == len(F.candidates(["bm25", "dense"]))
    assert learned["candidates"][0]["params"] == {"method": "rrf", "k": 60, "weights": {"bm25": 0.5, "dense": 0.5}}
    assert learned["params"]["depth"] == 10 and learned["queries"] == 200
    assert max(c[learned["objective"]] for c in learned["candidates"]) == learned["dev"]["mrr"]
    assert len(learned["dev"]["reciprocal_ranks"]) == len(learned["baseline"]["reciprocal_ranks"]) == 200


def test_the_baseline_is_kept_when_nothing_beats_it() -> None:
    rankings = {"bm25": [[("g", 3.0), ("x", 1.0)]] * 5, "dense": [[("g", 0.9), ("y", 0.1)]] * 5}
    learned = F.learn_fusion(rankings, [{"g"}] * 5)
    assert learned["params"] == {"method": "rrf", "k": 60, "weights": {"bm25": 0.5, "dense": 0.5}, "depth": 2}
    assert learned["dev"]["mrr"] == learned["baseline"]["mrr"] == 1.0


def test_the_reranker_cut_off_is_the_smallest_that_reaches_the_gold() -> None:
    # the gold sits at fused rank 12 to 18; the reranker scores it highest, so a cut-off of 20 finds it, 10 does not
    n = 30
    rankings: dict[str, list[list[tuple[str, float]]]] = {"bm25": [], "dense": []}
    scores, gold = [], []
    for q in range(n):
        ids = [f"{q}-{i}" for i in range(30)]
        g = ids[12 + q % 7]
        rankings["bm25"].append([(d, 30.0 - i) for i, d in enumerate(ids)])
        rankings["dense"].append([(d, 1.0 - i / 30) for i, d in enumerate(ids)])
        scores.append({d: (5.0 if d == g else -float(i)) for i, d in enumerate(ids)})
        gold.append({g})
    learned = F.learn_fusion(rankings, gold, rerank_scores=scores, cutoffs=(5, 10, 20, 40))
    assert learned["params"]["rerank_cutoff"] == 20
    assert learned["dev"]["recall@1"] == 1.0 and learned["baseline"]["recall@1"] == 0.0
    assert F.rerank([("a", 3.0), ("b", 2.0), ("c", 1.0)], {"b": 9.0, "c": 10.0}, 2) == [("b", 9.0), ("a", 3.0), ("c", 1.0)]


def test_mismatched_dev_inputs_are_one_clear_error() -> None:
    rankings, gold = _synthetic(4)
    with pytest.raises(DslError, match="bm25 has rankings for 4 dev queries, the gold ids are for 3"):
        F.learn_fusion(rankings, gold[:3])
    with pytest.raises(DslError, match="the reranker scored 1 dev queries"):
        F.learn_fusion(rankings, gold, rerank_scores=[{}])
    with pytest.raises(DslError, match="unknown fusion objective"):
        F.learn_fusion(rankings, gold, objective="ndcg")


@pytest.mark.slow  # loads the packaged embedder (a few seconds on a quiet machine, more under load)
def test_the_hybrid_pipeline_joins_by_learned_parameters_on_a_tiny_corpus() -> None:
    pytest.importorskip("haystack")
    from haystack import Document, Pipeline
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from sdk.backends.rag import embedders as E
    from sdk.backends.rag import retrievers as R
    from sdk.spec.blocks.rag import RagBlock

    texts = ["Opus is the audio codec of WebRTC.", "VP8 and H.264 are the video codecs of WebRTC.",
             "An INVITE request starts a SIP call and BYE ends it.", "The HSS stores subscriber profiles.",
             "AMR-WB is the wideband codec of VoLTE.", "The S-CSCF keeps the session state of a call."]
    docs = E.embed_documents([Document(id=f"d{i}", content=t) for i, t in enumerate(texts)], E.DEFAULT_EMBEDDER)
    store = InMemoryDocumentStore()
    store.write_documents(docs)
    block = RagBlock(corpus="corpus.c", retriever="hybrid", top_k=2)  # type: ignore[arg-type]
    questions = {"Which codec does WebRTC use for audio?": "d0", "What ends a SIP call?": "d2",
                 "Where are subscriber profiles kept?": "d3", "Which wideband codec does VoLTE use?": "d4"}
    plain = R.query_pipeline(block, store, top_k=6)
    parts = [plain.run(R.run_inputs(block, q, 6), include_outputs_from={"bm25", "dense"}) for q in questions]
    dev = {name: [[(d.id, d.score) for d in out[name]["documents"]] for out in parts] for name in ("bm25", "dense")}
    learned = F.learn_fusion(dev, [{g} for g in questions.values()])
    params = learned["params"]
    assert learned["dev"]["mrr"] >= learned["baseline"]["mrr"] and params["depth"] == 6

    fused_pipe = R.query_pipeline(block, store, fusion=params)
    assert sorted(fused_pipe.graph.predecessors("joiner")) == ["bm25", "dense"]
    for q, out in zip(questions, parts):
        got = fused_pipe.run(R.run_inputs(block, q, 2, fusion=params), include_outputs_from={"joiner"})
        expected = F.fuse({n: [(d.id, d.score) for d in out[n]["documents"]] for n in ("bm25", "dense")}, params)
        assert [(d.id, d.score) for d in got["joiner"]["documents"]] == expected[:2]
    # the pipeline round-trips through Haystack YAML (the joiner's module named, as for the index store)
    again = Pipeline.loads(fused_pipe.dumps(), allowed_modules=["sdk.backends.rag.fusion_joiner"])
    assert again.get_component("joiner").params == {k: v for k, v in params.items() if k != "depth"}
