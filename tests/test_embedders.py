"""The ONNX Runtime embedding path: the packaged all-MiniLM-L6-v2 exported locally and run by ONNX Runtime gives the
same embeddings as the PyTorch path, an index built either way retrieves the same top chunk, and the recipe's
``embedding_backend`` chooses the path (recorded in the artifact)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.rag import embedders as E
from sdk.errors import DslError

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not E.onnx_importable(), reason="onnxruntime/onnx not installed")]

SENTENCES = [
    "An INVITE request starts a SIP call and BYE ends it.",
    "The S-CSCF keeps session state; the HSS stores subscriber profiles.",
    "AMR-WB is the wideband codec of VoLTE.",
    ("Aspirin lowers the risk of a second heart attack in some patients, according to a randomised trial of "
    "several thousand adults followed for five years."),
    "x",
]


@pytest.fixture(scope="module")
def model_dir() -> str:
    return E.resolve_embedder(E.DEFAULT_EMBEDDER)


def test_onnx_and_torch_embeddings_agree(model_dir: str) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    torch_vecs = SentenceTransformer(model_dir, device="cpu").encode(SENTENCES, normalize_embeddings=True)
    onnx_vecs = E.OnnxEmbedder(model_dir).embed(SENTENCES)
    assert onnx_vecs.shape == torch_vecs.shape == (len(SENTENCES), 384)
    cosines = (np.asarray(torch_vecs) * onnx_vecs).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    # the default (auto = onnx-int8): the fused graph with int8 weights, close to PyTorch
    int8 = E.OnnxEmbedder(model_dir, quantize=True)
    import onnx

    graph = onnx.load(str(E.OnnxEmbedder._export(Path(model_dir), True)), load_external_data=False).graph
    kinds = {node.op_type for node in graph.node}
    assert {"QAttention", "SkipLayerNormalization", "BiasGelu", "MatMulInteger"} <= kinds, kinds  # fused, quantized
    cosines = (np.asarray(torch_vecs) * int8.embed(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.96 and cosines.mean() > 0.985, cosines  # the one-letter text is the worst


def test_embed_documents_keeps_the_order_of_mixed_lengths(model_dir: str) -> None:
    import numpy as np
    from haystack import Document

    docs = [Document(content=s, meta={"i": i}) for i, s in enumerate(SENTENCES)]
    out = E.embed_documents(docs, E.DEFAULT_EMBEDDER, backend="onnx")
    assert [d.meta["i"] for d in out] == list(range(len(SENTENCES)))
    alone = E.OnnxEmbedder(model_dir).embed([SENTENCES[3]])[0]
    assert float(np.dot(out[3].embedding, alone)) > 0.9999


def test_auto_picks_onnx_and_a_foreign_model_falls_back_to_torch(model_dir: str, tmp_path: Path) -> None:
    lines: list[str] = []
    assert E.choose_backend("auto", model_dir, lines.append) == "onnx-int8" and lines == []
    assert E.choose_backend("auto", str(tmp_path), lines.append) == "torch"
    assert len(lines) == 1 and lines[0].startswith("info: embedding with PyTorch")
    with pytest.raises(DslError, match="onnx"):
        E.choose_backend("onnx", str(tmp_path))


RECIPE = """domain d {{
  corpus c {{ paths = ["docs/*.txt"] }}
  rag r {{ corpus = corpus.c  retriever = dense  top_k = 1  embedding_backend = {backend} }}
}}
"""

DOCS = {
    "sip": "The Session Initiation Protocol sets up calls. An INVITE request starts a call and BYE ends it.",
    "ims": "The IP Multimedia Subsystem uses the S-CSCF to keep session state and the HSS to store subscribers.",
    "codec": "AMR-WB is the wideband codec of VoLTE. Opus is the codec of WebRTC and adapts its bit rate.",
    "pubmed": "Statins reduced LDL cholesterol and cardiovascular events in older adults in a pooled analysis.",
}
QUESTIONS = {"which request starts a call?": "sip", "where are subscribers stored?": "ims",
             "what is the codec of WebRTC?": "codec", "do statins lower cholesterol?": "pubmed"}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_index_built_either_way_retrieves_the_same_top_chunk(tmp_path: Path, backend: str) -> None:
    (tmp_path / "docs").mkdir()
    for name, text in DOCS.items():
        (tmp_path / "docs" / f"{name}.txt").write_text(text)
    (tmp_path / "r.dsl").write_text(RECIPE.format(backend=backend))
    result = sdk.apply(load(tmp_path / "r.dsl"))
    assert result.ok, [o.error for o in result.failed]
    ws = sdk.workspace.open_workspace(tmp_path / "r.dsl")
    assert ws.artifact("rag.r").outputs["embedding_backend"] == backend
    rag = ws.rag("r", with_generator=False)
    for question, expected in QUESTIONS.items():
        assert Path(rag.retrieve(question)[0]["meta"]["source"]).stem == expected, question
