"""The prompt rows of a ``reward`` step: read from a prompts file (``{"prompt" or "question", "answer", optional
"choices", optional "context" and "sources"}``, a bad row a located ``FILE:LINE`` error) or from a dataset's
conversations; how each row is asked (its options numbered, or its passages through the rag prompt); and the
plan-time checks on them (citation rewards need context; no prompt may be a gating eval's question)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk import metrics as M
from sdk.errors import DataError
from sdk.jsonl import read_jsonl
from sdk.templating import render

RAW_PROMPT = "Question: {question}\nAnswer:"  # the eval's convention for a model without a chat template


def _choice_prompt(question: str, choices: list[str]) -> str:
    """The question with its options numbered, as the eval asks an endpoint or a rag generator."""
    opts = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(choices))
    return f"{question}\nOptions:\n{opts}\nAnswer with the number of the right option."


def read_prompts(path: Path, shown: str) -> list[dict[str, Any]]:
    """Rows ``{"question", "prompt", "answer", "choices", "_line"}``; ``prompt`` is the text asked (the question,
    with numbered options when the row has choices). A bad row raises a DataError at ``shown:LINE``."""
    rows: list[dict[str, Any]] = []
    for line, obj in read_jsonl(path, shown):
        if "prompt" in obj and "question" in obj and obj["prompt"] != obj["question"]:
            raise DataError(shown, line, "the row has both 'prompt' and 'question', which differ: which is asked?",
                            "keep one of them (they are two names of the same field)")
        question = obj.get("prompt", obj.get("question"))
        if not isinstance(question, str) or not question.strip():
            raise DataError(shown, line, "missing 'prompt' or 'question' (non-empty text)",
                            "a prompt row is {\"question\": \"...\", \"answer\": \"...\", \"choices\": [...]}")
        answer = obj.get("answer")
        if isinstance(answer, int) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(shown, line, "missing 'answer' (non-empty text, or the number of the right choice)")
        choices = obj.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise DataError(shown, line, "'choices' must be a list of at least two texts")
            if answer.strip().isdigit() and 1 <= int(answer) <= len(choices):
                answer = choices[int(answer) - 1]
            elif not any(M.normalize(c) == M.normalize(answer) for c in choices):
                raise DataError(shown, line, f"answer {answer!r} is not among the choices (give its text or number)")
            answer = next(c for c in choices if M.normalize(c) == M.normalize(answer))
        q = question.strip()
        context, sources = _context(obj, shown, line)
        rows.append({"question": q, "prompt": _choice_prompt(q, choices) if choices else q, "answer": answer,
                     "choices": choices, "context": context, "sources": sources, "_line": line})
    return rows


def _context(obj: dict[str, Any], shown: str, line: int) -> tuple[list[dict[str, str]], list[str]]:
    """A row's passages ``[{"source", "content"}]`` (a plain text passage is named by its number) and gold sources."""
    raw, gold = obj.get("context"), obj.get("sources")
    if gold is not None and (not isinstance(gold, list) or not all(isinstance(g, str) for g in gold)):
        raise DataError(shown, line, "'sources' must be a list of source names")
    if raw is None:  # the passages may come from retrieval (retrieval = rag.X in the reward block)
        return [], [source_key(g) for g in gold or []]
    if not isinstance(raw, list) or not raw:
        raise DataError(shown, line, "'context' must be a non-empty list of passages")
    passages = []
    for i, p in enumerate(raw):
        if isinstance(p, str) and p.strip():
            passages.append({"source": str(i + 1), "content": p})
        elif isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"].strip() \
                and isinstance(p.get("source", ""), str):
            passages.append({"source": p.get("source") or str(i + 1), "content": p["text"]})
        else:
            raise DataError(shown, line, f"context[{i}] must be text or {{\"source\": \"...\", \"text\": \"...\"}}")
    known = {source_key(p["source"]) for p in passages}
    missing = [g for g in gold or [] if source_key(g) not in known]
    if missing:
        raise DataError(shown, line, f"source {missing[0]!r} is not one of the row's context passages")
    return passages, [source_key(g) for g in gold or []]


def dataset_prompts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt rows from a dataset's conversations: the turns before the last assistant message are the prompt, its
    last user turn the question, the assistant's message the reference answer."""
    out = []
    for r in rows:
        msgs = r.get("messages") or []
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            continue
        turn = max((i for i, m in enumerate(msgs[:last]) if m["role"] == "user"), default=None)
        if turn is None or not msgs[last]["content"].strip():
            continue  # nothing asked before the answer: not a prompt
        q = msgs[turn]["content"].strip()
        out.append({"question": q, "prompt": q, "messages": msgs[:last], "answer": msgs[last]["content"].strip(),
                    "choices": None, "context": [], "sources": [], "_line": r.get("_line")})
    return out


CITATION_REWARDS = ("citation_precision", "citation_recall")


def needs_context(rows: list[dict[str, Any]], rewards: dict[str, Any], shown: str, retrieved: bool = False) -> None:
    """A citation reward scores what a row's answer cites among its passages against the row's gold sources: every
    row needs its sources, and its own context unless ``retrieved`` (a rag step retrieves the passages)."""
    wanted = [n for n in rewards if n in CITATION_REWARDS]
    bare = next((r["_line"] for r in rows if not r["sources"] or (not r["context"] and not retrieved)),
                None) if wanted else None
    if bare is None:
        return
    if retrieved:
        raise DataError(shown, bare, f"reward {wanted[0]} needs the gold 'sources' on every row",
                        "{\"question\": ..., \"answer\": ..., \"sources\": [\"sip.md\"]}")
    raise DataError(shown, bare, f"reward {wanted[0]} needs 'context' passages and the gold 'sources' among them "
                                 "on every row (or retrieval = rag.X)", "{\"question\": ..., \"answer\": ..., "
                                 "\"context\": [{\"source\": \"sip.md\", \"text\": \"...\"}], \"sources\": [\"sip.md\"]}")


def source_key(source: str) -> str:
    """Sources compare by file stem, as the eval compares them (``docs/sip.md`` is ``sip``)."""
    return Path(source).stem if source else source


def asked(row: dict[str, Any], template: str) -> str:
    """The text a row asks: its prompt, or with context, the rag prompt over its numbered passages."""
    if not row["context"]:
        return row["prompt"]
    docs = [{"id": p["source"], "content": p["content"], "meta": {"source": p["source"]}} for p in row["context"]]
    return render(template, "the rag prompt template", documents=docs, question=row["prompt"]).strip()


def overlap(rows: list[dict[str, Any]], items: list[Any]) -> list[tuple[int, Any]]:
    """(prompt line, eval item) for every prompt whose normalised question is an eval item's."""
    by_q = {M.normalize(it.question): it for it in items}
    return [(r["_line"], by_q[M.normalize(r["question"])]) for r in rows if M.normalize(r["question"]) in by_q]


def prompt_for(row: dict[str, Any], template: str, chat: bool) -> Any:
    """What the policy is asked for a row: chat messages when its tokenizer has a chat template, else text. A
    dataset's row keeps its conversation; a retrieved row (``asked``: the rag step's prompt over its passages)
    replaces the last user turn; a row with its own context is asked through ``template``."""
    text = row.get("asked") or asked(row, template)
    if row.get("messages") and chat:
        if not row.get("asked"):
            return row["messages"]
        msgs = row["messages"]
        turn = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        return [*msgs[:turn], {"role": "user", "content": text}, *msgs[turn + 1:]]
    if chat:
        return [{"role": "user", "content": text}]
    return text if row["context"] else RAW_PROMPT.format(question=text)
