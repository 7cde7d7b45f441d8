"""How each system answers an eval's items: tasks, prompts, the runner for a model, a rag system or an endpoint,
per-item scores, and the answers saved as they come (so a killed eval resumes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk import metrics as M
from sdk import scoring as R
from sdk.artifacts import Artifact
from sdk.backends.eval.clients import CONTEXT_PROMPT, RAW_PROMPT, EndpointModel, LocalModel
from sdk.backends.rag.system import LocalChatGenerator
from sdk.evalsets import EvalItem, source_key
from sdk.spec import Endpoint
from sdk.systems import Asker, applied_block, input_artifact, open_system, serving_of
from sdk.templating import render


def system_id(system: Any) -> str:
    return f"endpoint:{system.model}" if hasattr(system, "url") else str(system)


def task_of(block: Any, items: list[EvalItem]) -> str:
    if block.task != "auto":
        return str(block.task)
    if all(it.choices for it in items):
        return "multiple_choice"
    if all(it.label is not None for it in items):
        return "classification"
    return "generate"


@dataclass
class Answer:
    prediction: str
    sources: list[str]
    retrieved: list[str]
    nll: tuple[float, int] | None = None
    evidence: bool | None = None  # retrieval found the answer (a gold source, or the reference in a chunk); None: no retrieval
    routing: dict[str, Any] | None = None  # a router's decision: {target, system, probability}; None: not routed


def found_evidence(item: EvalItem, retrieved: list[str], contents: list[str]) -> bool:
    """Whether retrieval brought what the answer needs: one of the item's gold sources, or (without sources) the
    reference answer inside a retrieved chunk. A wrong answer with evidence is a generation miss, else a retrieval
    miss."""
    if item.sources:
        keys = {source_key(s) for s in retrieved}
        return any(source_key(s) in keys for s in item.sources)
    refs = [M.normalize(a) for a in (item.answers or [item.gold]) if a]
    text = M.normalize(" ".join(contents))
    return any(r and r in text for r in refs)


def _prompt_with(question: str, item: EvalItem, task: str, options: list[str] | None = None) -> str:
    """What an endpoint (or a rag system's generator) is asked: the options numbered, and how to answer."""
    if task == "multiple_choice" and options:
        opts = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(options))
        return f"{question}\nOptions:\n{opts}\nAnswer with the number of the right option."
    if task == "classification" and options:
        return f"{question}\nAnswer with one of: {', '.join(options)}."
    return question


class Prompter:
    """The text a local model scores options after: ``Question: {question}\nAnswer:`` (lm-eval's convention) or
    the block's Jinja2 ``prompt`` (variables: question, choices, context)."""

    def __init__(self, template: str | None) -> None:
        self.template = template or None  # rendered in the project's one sandbox (sdk.templating)

    def __call__(self, item: EvalItem, context: str | None = None) -> str:
        if self.template is not None:
            return render(self.template, "the eval's prompt template", question=item.question,
                          choices=item.choices or [], context=context or "")
        if context:
            return CONTEXT_PROMPT.format(context=context, question=item.question)  # too long: cut at the left
        return RAW_PROMPT.format(question=item.question)


class SystemRunner:
    """Answers items for one system (a model step, a rag step or an endpoint)."""

    def __init__(self, spec: Any, system: Any, artifacts: dict[str, Artifact], labels: list[str], task: str,
                 prompter: Prompter) -> None:
        self.spec, self.system, self.labels, self.task, self.prompter = spec, system, labels, task, prompter
        self.local: LocalModel | None = None
        self.endpoint: EndpointModel | None = None
        self.rag: Any = None
        self.reader: LocalModel | None = None  # a rag system's local generator, when answers are generated
        if isinstance(system, Endpoint):
            self.endpoint = EndpointModel(system)
        elif serving_of(system) == "system":  # a plugin's system, opened by its kind's opener, asked like an endpoint
            self.endpoint = Asker(open_system(artifacts[str(system)], spec=spec, base_dir=spec.base_dir))  # type: ignore[assignment]
        elif serving_of(system) == "rag":
            rag_art = artifacts[str(system)]
            gen = applied_block(rag_art).generator
            scored = task in ("multiple_choice", "classification") and gen is not None and not isinstance(gen, Endpoint)
            # options are scored by the generator's log-likelihood with the retrieved chunks in the prompt;
            # free answers come from the rag system itself (its prompt, its generator, its citations)
            self.rag = open_system(rag_art, with_generator=not scored, base_dir=spec.base_dir, spec=spec)
            if scored:
                gen_art = input_artifact(rag_art, str(gen))
                self.local = open_system(gen_art, spec=spec).local  # the generator, by its kind's opener
            elif isinstance(self.rag.generator, LocalChatGenerator):  # its own weights, for answer perplexity
                pipe = self.rag.generator.component.pipeline
                self.reader = LocalModel(model=pipe.model, tokenizer=pipe.tokenizer)
        else:
            self.local = open_system(artifacts[str(system)], spec=spec).local  # a model, by its kind's opener

    @property
    def batched(self) -> bool:
        """Whether :meth:`answer_many` answers a chunk of items together: a local model (options scored, answers
        generated, reference perplexities, each in batches) and a rag system whose local generator scores the
        options (retrieval stays per question). A rag system's free answers come from its own per-question
        pipeline, and endpoints are asked one question at a time: those answer one by one."""
        return self.local is not None

    def answer(self, item: EvalItem, max_new_tokens: int, want_nll: bool) -> Answer:
        """The system's answer to one item (see :meth:`answer_many`)."""
        return self.answer_many([item], max_new_tokens, want_nll, 1)[0]

    def answer_many(self, items: list[EvalItem], max_new_tokens: int, want_nll: bool, batch: int = 16) -> list[Answer]:
        """The system's answers to ``items``, in order; with ``want_nll``, also the negative log-likelihood of each
        reference answer after the very prompt the system answered from (for a rag system: with its retrieved
        chunks). A local model answers ``batch`` items per generate call or forward pass, the same answers as one
        at a time under greedy decoding."""
        if self.local is None:
            return [self._answer_alone(item, max_new_tokens, want_nll) for item in items]
        lm = self.local
        found = [self._retrieve(item) if self.rag is not None else (None, [], [], None) for item in items]
        options = [self._options(item) for item in items]
        prompts: list[str] = [""] * len(items)
        preds: list[str] = [""] * len(items)
        scored = [i for i, o in enumerate(options) if o]
        for i in scored:
            prompts[i] = self.prompter(items[i], found[i][0])
        scores = lm.scored_many([prompts[i] for i in scored], [[" " + o for o in options[i]] for i in scored], batch)
        for i, row in zip(scored, scores):
            preds[i] = options[i][max(range(len(row)), key=row.__getitem__)]  # type: ignore[index]
        generated = [i for i, o in enumerate(options) if not o]
        for i in generated:
            prompts[i] = lm.generation_prompt(items[i].question, self.prompter(items[i]) if self.prompter.template else None)
        for i, text in zip(generated, lm.generate_many([prompts[i] for i in generated], max_new_tokens, batch)):
            preds[i] = text
        nlls: list[tuple[float, int] | None] = [None] * len(items)
        wanted = [i for i, item in enumerate(items) if want_nll and _reference(item)]
        for i, nll in zip(wanted, lm.answer_nlls([prompts[i] for i in wanted], [_reference(items[i]) for i in wanted],
                                                 batch)):
            nlls[i] = nll
        return [Answer(preds[i], found[i][1], found[i][2], nlls[i], found[i][3]) for i in range(len(items))]

    def _options(self, item: EvalItem) -> list[str] | None:
        return item.choices if self.task == "multiple_choice" else (self.labels if self.task == "classification" else None)

    def _retrieve(self, item: EvalItem) -> tuple[str, list[str], list[str], bool]:
        """(context, sources, retrieved, evidence) of the rag system's retrieval for one question."""
        docs = self.rag.retrieve(item.question)
        retrieved = [str(d["meta"].get("source") or d["id"]) for d in docs]
        evidence = found_evidence(item, retrieved, [d["content"] for d in docs])
        return "\n".join(d["content"] for d in docs), list(dict.fromkeys(retrieved)), retrieved, evidence

    def _answer_alone(self, item: EvalItem, max_new_tokens: int, want_nll: bool) -> Answer:
        """An endpoint's or a rag pipeline's answer to one item."""
        task, options = self.task, self._options(item)
        sources, retrieved, read_prompt, evidence = [], [], None, None
        if options:
            if self.rag is not None:
                _, sources, retrieved, evidence = self._retrieve(item)
            question = _prompt_with(item.question, item, task, options)
            text = self.rag.answer(question, max_new_tokens=16)["answer"] if self.rag is not None \
                else self.endpoint.ask(question, 16)  # type: ignore[union-attr]
            idx = M.parse_choice(text, options)
            pred = options[idx] if idx is not None else text.strip()
        elif self.rag is not None:
            out = self.rag.answer(item.question, max_new_tokens=max_new_tokens)
            if self.reader is not None:
                read_prompt = self.reader.chat(out["prompt"])
            pred = (out["answer"] or "").strip().split("\n")[0].strip()
            retrieved = [str(s.get("source") or s["id"]) for s in out["sources"]]
            evidence = found_evidence(item, retrieved, [str(s.get("content") or "") for s in out["sources"]])
            cited = [retrieved[i - 1] for i in out.get("cited", []) if 0 < i <= len(retrieved)]
            sources = list(dict.fromkeys(cited or retrieved))
        else:
            pred = self.endpoint.ask(item.question, max_new_tokens).strip()  # type: ignore[union-attr]
        nll = None
        if want_nll and _reference(item) and self.reader is not None and read_prompt is not None:
            nll = self.reader.answer_nll(read_prompt, _reference(item))
        return Answer(pred, sources, retrieved, nll, evidence)


def _reference(item: EvalItem) -> str | None:
    """What perplexity is measured on: the first reference answer, else the label."""
    return item.answers[0] if item.answers else item.label


def score_item(item: EvalItem, ans: Answer, task: str, metrics: list[str], k: int,
               judged: float | None = None) -> dict[str, float | None]:
    """Per-item scores of the per-item metrics (None: the metric does not apply to this item or system); each
    metric is one function in the registry of :mod:`sdk.metrics`."""
    view = R.Scored(prediction=ans.prediction, answers=item.answers or [item.gold], gold=item.gold, task=task,
                    cited=[source_key(s) for s in ans.sources], retrieved=[source_key(s) for s in ans.retrieved],
                    expected=[source_key(s) for s in item.sources], k=k, judged=judged)
    return {m: R.METRICS[m].score(view) for m in metrics if R.METRICS[m].score is not None}


def partial_path(folder: Path, sid: str) -> Path:
    return folder / f"answers-{sid.replace(':', '_').replace('/', '_')}.jsonl"


def load_partial(folder: Path, sid: str) -> dict[str, dict[str, Any]]:
    path = partial_path(folder, sid)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        out[row["id"]] = row
    return out


def save_partial(folder: Path, sid: str, item_id: str, ans: Answer, judged: float | None = None,
                 item: str | None = None) -> dict[str, Any]:
    """Append one answer to the system's checkpoint file (one JSON line, flushed on close) and return its row;
    ``item`` is the item's digest (sdk.backends.eval.cache.item_key), by which a later run reuses the answer."""
    folder.mkdir(parents=True, exist_ok=True)
    row = {"id": item_id, "item": item, "prediction": ans.prediction, "sources": ans.sources, "retrieved": ans.retrieved,
           "nll": list(ans.nll) if ans.nll else None, "judge": judged, "evidence": ans.evidence}
    if ans.routing is not None:
        row["routing"] = ans.routing
    with open(partial_path(folder, sid), "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row
