"""dsl ask FILE "question" [--system rag.NAME] [--json]"""

from __future__ import annotations

import json
from typing import Optional

import click

from dsl.commands._common import json_option, only_label, open_ws, say_drift, workdir_option
from dsl.redact import shown


@click.command("ask")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("question")
@click.option("--system", help="The rag system to ask (rag.NAME); default: the only one.")
@workdir_option
@json_option
def command(file: str, question: str, system: Optional[str], workdir: Optional[str], as_json: bool) -> None:
    """Ask a RAG system a question; prints the answer and its cited sources."""
    ws = open_ws(file, workdir)
    label = only_label(ws, "rag", system, "--system")
    changed = say_drift(ws, f"rag.{label}")  # what answers is the applied version, never the edited block
    rag = ws.rag(label)
    out = rag.answer(question)
    out["answer"] = out["answer"].strip()  # a generator's leading space or trailing newline is not the answer
    if as_json:
        click.echo(json.dumps({"system": f"rag.{label}", "question": question, "answer": out["answer"],
                               "cited": out["cited"], "sources": out["sources"], "changed_since_applied": changed},
                              indent=2, default=str))
        return
    if rag.generator is None:
        click.echo("(retrieval only: no generator)")
    else:  # model, corpus and upstream text reach the terminal without control or escape sequences
        click.echo(shown(out["answer"]) or "(empty answer)")
    click.echo("")
    click.echo("Sources:")
    for s in out["sources"]:
        mark = "*" if s["index"] in out["cited"] else " "
        content = " ".join(shown(s["content"]).split("\n"))[:100]
        click.echo(f" {mark}[{s['index']}] {shown(str(s.get('location') or s['source']))} (score {s['score']:.3f}): "
                   f"{content}...")
