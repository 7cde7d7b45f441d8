"""The synth step's built-in prompts (jinja2, rendered in the project's sandbox; a recipe overrides them with
``prompt = file(...)`` and ``answer_prompt = file(...)``), the parsing of the teacher's replies, and the rows each
task writes."""

from __future__ import annotations

import json
import random
import re
from typing import Any

from sdk.hashing import digest
from sdk.templating import render as sandboxed

QUESTION_PROMPT = """You write {% if task == "eval" %}one exam question an expert of the domain would ask{% else \
%}one question a user of the domain could ask{% endif %} about the passage below, and its reference answer.
The question must be answerable from the passage alone and make sense without it (no "the passage", no "above").
The answer must state the fact from the passage, briefly and exactly, in the passage's own words where possible.

Passage (from {{ source }}):
{{ chunk }}

Reply with one line of JSON and nothing else: {"question": "...", "answer": "..."}"""

RAFT_ANSWER_PROMPT = """Answer the question from the document below, which holds the answer.
Reason in a few short steps. Quote the sentences you rely on from the document, each between ##begin_quote## and \
##end_quote##, and cite the document as [{{ cite }}]. End with one line "<ANSWER>: " followed by the short answer.

Document [{{ cite }}] (from {{ source }}):
{{ chunk }}

Question: {{ question }}"""

_JSON = re.compile(r"\{.*\}", re.DOTALL)
_LINES = re.compile(r"^\s*(?:Q|Question)\s*[:.]\s*(?P<q>.+?)\s*\n+\s*(?:A|Answer)\s*[:.]\s*(?P<a>.+)$", re.DOTALL | re.IGNORECASE)
_CITE = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")


def render(template: str, where: str, **variables: Any) -> str:
    return sandboxed(template, where, **variables)


def parse_qa(text: str | None) -> tuple[str, str] | None:
    """(question, answer) from a reply in JSON (``{"question", "answer"}``, possibly in a code fence) or in
    ``Question: ... / Answer: ...`` lines; None when it holds neither."""
    if not text:
        return None
    match = _JSON.search(text)
    if match:
        try:
            obj = json.loads(match.group(0))
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str):
            return obj["question"].strip(), obj["answer"].strip()
    match = _LINES.search(text.strip())
    return (match.group("q").strip(), match.group("a").strip()) if match else None


def row_id(task: str, chunk_id: str, question: str) -> str:
    """A row's stable id: 16 hex digits of task, chunk id and question."""
    return digest({"task": task, "chunk": chunk_id, "question": question})[:16]


def without_citations(answer: str) -> str:
    """A raft answer for a row whose golden chunk is left out: the same reasoning, citing no document."""
    return _CITE.sub("", answer)


def corrupted(answer: str, chunk: str, seed: str) -> str:
    """A wrong answer made from a right one (preference rows without a student): its numbers changed, or else the
    words it shares with its chunk replaced by other words of the chunk; never the answer itself."""
    rng = random.Random(seed)
    if re.search(r"\d", answer):
        out = re.sub(r"\d", lambda m: str((int(m.group(0)) + rng.randint(1, 8)) % 10), answer)
        if out != answer:
            return out
    words = answer.split()
    pool = sorted({w for w in re.findall(r"[A-Za-z][\w-]{3,}", chunk)} - set(words)) or ["unknown"]
    content = [i for i, w in enumerate(words) if len(w.strip(".,;:")) > 3]
    for i in content[: max(1, len(content) // 2)]:
        words[i] = rng.choice(pool)
    out = " ".join(words)
    return out if out != answer else "I do not know."


def final_row(task: str, row: dict[str, Any], render_context: Any = None) -> dict[str, Any]:
    """The row in the shape its consumer reads: chat messages (qa, raft), a pair (preference) or an eval item."""
    if task == "qa":
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        return {"id": row["id"], "messages": messages}
    if task == "raft":
        user = render_context(row["question"], row["documents"])
        return {"id": row["id"], "messages": [{"role": "user", "content": user},
                                              {"role": "assistant", "content": row["answer"]}]}
    if task == "preference":
        return {"id": row["id"], "prompt": row["question"], "chosen": row["chosen"], "rejected": row["rejected"]}
    return {"id": row["id"], "question": row["question"], "answer": row["answer"], "sources": [row["source"]]}
