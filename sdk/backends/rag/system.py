"""Rag systems opened from an applied artifact: :class:`RagSystem` (retrieve, render the prompt, answer with
citations), the prompt, and the generators (a local model through Haystack's TransformersChatGenerator, or an
OpenAI-compatible endpoint). Used by ``dsl ask``, the eval backend, dataset retrieval and the gateway.

Haystack, transformers and jinja2 are imported inside the functions that need them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sdk.artifacts import Artifact
from sdk.backends.models import handle, load
from sdk.backends.rag.adapt import adapted_block, fusion_of
from sdk.backends.rag.corpus import location
from sdk.backends.rag.embedders import quiet_haystack
from sdk.backends.rag.retrievers import last_component, query_pipeline, run_inputs
from sdk.backends.rag.stores import open_store, secret
from sdk.errors import DslError
from sdk.integrity import endpoint_named
from sdk.limits import fit_text
from sdk.spec import Endpoint, FileRef, Ref
from sdk.systems import applied_block, input_artifact
from sdk.templating import render, tokenizer_chat
from sdk.upstream import Target, UpstreamError, chat

DEFAULT_PROMPT = """Answer the question using only the numbered documents. Cite the documents you use as [1], [2].
{% for doc in documents %}
[{{ loop.index }}] {{ doc.content }}
{% endfor %}
Question: {{ question }}
Answer:"""


def prompt_text(spec: Any, block: Any) -> str:
    if block.prompt is None:
        return DEFAULT_PROMPT
    return block.prompt.read(spec.base_dir) if isinstance(block.prompt, FileRef) else str(block.prompt)


@dataclass
class RagSystem:
    """A finished rag step, ready to answer. The query API used by ``dsl ask``, the eval backend and the gateway::

        rag = RagSystem.open(artifact)   # the applied rag step's artifact (Workspace.rag("docs") finds it)
        rag.retrieve("question", top_k=5)  -> [{"id", "content", "meta": {"source", "page", ...}, "score"}, ...]
        rag.answer("question", max_new_tokens=64)
            -> {"answer": str, "sources": [{"index": 1, "id", "source", "page", "content", "score"}, ...],
                "cited": [1, ...],  # source indexes the answer cites as [n]
                "documents": [... as retrieve ...],
                "prompt": str}  # what the generator was given (before its chat template)

    ``with_generator=False`` opens it for retrieval only (answer() then returns an empty answer and the sources).
    """

    spec: Any
    label: str
    block: Any
    pipeline: Any
    prompt: str
    generator: Any = None  # callable(prompt: str, max_new_tokens: int) -> str
    _warm: bool = field(default=False)
    fusion: Optional[dict[str, Any]] = None  # learned fusion kept by adapt (sdk.backends.rag.adapt)

    @classmethod
    def open(cls, art: Artifact, with_generator: bool = True, base_dir: Optional[Path] = None,
             spec: Any = None) -> "RagSystem":
        """Open the applied rag system of artifact ``art``: its block as applied (from the manifest), its index,
        its prompt, and the generator it was applied with. ``base_dir`` resolves a relative embedder path; with
        ``spec`` (the recipe being run), a generator endpoint's key is sent only to an endpoint it names."""
        quiet_haystack()
        block = applied_block(art)
        if block.adapt is not None:  # the kept adapted embedder and reranker, inside the artifact
            block = adapted_block(block, art.path, art.outputs.get("adapt"))
        fusion = fusion_of(art.outputs.get("adapt")) if block.adapt is not None else None
        label = art.step_id.partition(".")[2]
        store = open_store(art, block)
        prompt_file = art.path / art.outputs.get("prompt", "prompt.j2")
        prompt = prompt_file.read_text(encoding="utf-8") if prompt_file.exists() else DEFAULT_PROMPT
        generator = None
        if with_generator and block.generator is not None:
            gen_art = input_artifact(art, str(block.generator)) if isinstance(block.generator, Ref) else None
            generator = make_generator(block, gen_art, spec, art.step_id)
        return cls(None, label, block, query_pipeline(block, store, base_dir=base_dir, fusion=fusion), prompt,
                   generator, fusion=fusion)

    def retrieve(self, question: str, top_k: Optional[int] = None) -> list[dict[str, Any]]:
        """The top_k chunks for a question (default: the block's top_k), best first."""
        k = top_k or self.block.top_k
        data = run_inputs(self.block, question, k, self.fusion)
        last = last_component(self.block)
        out = self.pipeline.run(data, include_outputs_from={last})
        docs = out.get(last, {}).get("documents", [])[:k]
        return [{"id": d.id, "content": d.content, "meta": dict(d.meta), "score": float(d.score or 0.0)} for d in docs]

    def render_prompt(self, question: str, documents: list[dict[str, Any]]) -> str:
        """The prompt with the documents numbered from 1 (the jinja2 template gets ``documents`` and ``question``)."""
        docs = [_Doc(d["id"], d["content"], d["meta"], d.get("score")) for d in documents]
        return render(self.prompt, f"rag.{self.label}: the prompt template", documents=docs, question=question)

    def answer(self, question: str, *, max_new_tokens: Optional[int] = None) -> dict[str, Any]:
        documents = self.retrieve(question)
        sources = [{"index": i + 1, "id": d["id"], "source": d["meta"].get("source"), "page": d["meta"].get("page"),
                    "line": d["meta"].get("line"), "heading": d["meta"].get("heading"),
                    "location": location(d["meta"]), "content": d["content"], "score": d["score"]}
                   for i, d in enumerate(documents)]
        if self.generator is None:
            return {"answer": "", "sources": sources, "cited": [], "documents": documents}
        prompt = self.render_prompt(question, documents)
        text = self.generator(prompt, max_new_tokens or self.block.max_new_tokens)
        return {"answer": text, "sources": sources, "cited": citations(text, len(sources)), "documents": documents,
                "prompt": prompt}


def open_rag(art: Artifact, *, with_generator: bool = True, base_dir: Optional[Path] = None, spec: Any = None,
             **_: Any) -> RagSystem:
    """The rag kind's opener (``opener`` of its declaration; see :func:`sdk.systems.open_system`)."""
    return RagSystem.open(art, with_generator=with_generator, base_dir=base_dir, spec=spec)


@dataclass
class _Doc:
    id: str
    content: str
    meta: dict[str, Any]
    score: Optional[float] = None


def citations(text: str, n: int) -> list[int]:
    """The source numbers an answer cites as [1], [2], [1, 3] or [1][2], within 1..n, sorted."""
    found: set[int] = set()
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", text):
        found.update(int(x) for x in re.split(r"\s*,\s*", group))
    return sorted(i for i in found if 1 <= i <= n)


def make_generator(block: Any, art: Optional[Artifact], spec: Any = None, step_id: str = "rag") -> Any:
    """A callable (prompt, max_new_tokens) -> text for the block's generator, or None for retrieval only."""
    gen = block.generator
    if gen is None:
        return None
    if isinstance(gen, Endpoint):
        if gen.api_key is not None:
            secret(gen.api_key, "the generator endpoint's api_key")  # named now, not deep inside the client
            if spec is not None and not endpoint_named(spec, gen.url, gen.api_key.env):
                raise DslError(f"{step_id} was applied with the generator endpoint {gen.url}, which the recipe does "
                               f"not name (with key env({gen.api_key.env!r})); the key is sent only to endpoints "
                               "the recipe names: run dsl apply")
        target = Target.of(gen)  # one end-to-end deadline (its timeout) per call, its own bounded pool

        def call_endpoint(prompt: str, max_new_tokens: int) -> str:
            try:
                return chat(target, [{"role": "user", "content": prompt}], max_new_tokens)["text"]
            except UpstreamError as e:  # summarised: never the upstream's body unredacted, never the key
                raise DslError(f"the generator endpoint {gen.url} failed: {e}") from None

        return call_endpoint
    assert isinstance(gen, Ref)
    if art is None:
        raise DslError(f"the generator {gen} of this rag system has not been applied: run dsl apply")
    return LocalChatGenerator.from_artifact(art)


class LocalChatGenerator:
    """Local generation through Haystack's TransformersChatGenerator, always given its task (so it never asks the
    hub) and a local model folder; PEFT adapters are merged in memory first."""

    def __init__(self, component: Any) -> None:
        self.component = component

    @classmethod
    def from_artifact(cls, art: Artifact) -> "LocalChatGenerator":
        from haystack_integrations.components.generators.transformers import TransformersChatGenerator

        h = handle(art)
        kwargs: dict[str, Any] = {}
        if h.adapter:
            model, tokenizer = load(h, merge=True)
            kwargs["huggingface_pipeline_kwargs"] = {"model": model, "tokenizer": tokenizer}
            model_id = h.model
        else:
            model_id = h.model
            kwargs["huggingface_pipeline_kwargs"] = {"tokenizer": h.tokenizer_path} if h.tokenizer else {}
        component = TransformersChatGenerator(model=model_id, task="text-generation",
                                              generation_kwargs={"do_sample": False}, **kwargs)
        component.warm_up()
        return cls(component)

    def __call__(self, prompt: str, max_new_tokens: int) -> str:
        from haystack.dataclasses import ChatMessage

        prompt = self.fit(prompt, max_new_tokens)
        tok = getattr(getattr(self.component, "pipeline", None), "tokenizer", None)
        if getattr(tok, "chat_template", None):  # what the component renders with transformers, first under our budgets
            tokenizer_chat(tok, [{"role": "user", "content": prompt}])
        out = self.component.run(messages=[ChatMessage.from_user(prompt)],
                                 generation_kwargs={"max_new_tokens": max_new_tokens, "do_sample": False})
        return out["replies"][0].text or ""

    def fit(self, prompt: str, max_new_tokens: int) -> str:
        """The prompt cut to the model's context as the gateway cuts it (:func:`sdk.limits.fit`), its chat
        template's own tokens set aside."""
        pipe = getattr(self.component, "pipeline", None)
        tok, model = getattr(pipe, "tokenizer", None), getattr(pipe, "model", None)
        if tok is None or model is None:
            return prompt
        context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        reserved = 0
        if getattr(tok, "chat_template", None):
            empty = tokenizer_chat(tok, [{"role": "user", "content": ""}])
            reserved = len(tok(empty, add_special_tokens=False)["input_ids"])
        return fit_text(tok, prompt, context, max_new_tokens, reserved)


def endpoint_component(gen: Any) -> Any:
    """OpenAIChatGenerator for an endpoint; the key is named by its environment variable, never held as a value."""
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.utils import Secret

    key = Secret.from_env_var(gen.api_key.env) if gen.api_key else Secret.from_env_var("OPENAI_API_KEY", strict=False)
    return OpenAIChatGenerator(api_key=key, model=gen.model, api_base_url=gen.url, timeout=gen.timeout,
                               max_retries=gen.max_retries)
