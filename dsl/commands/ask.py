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
@click.option("--system", help="The system to ask: a rag system (rag.NAME, or NAME), a model (finetune.NAME, ...) "
              "or another system kind's (KIND.NAME); default: the only rag system.")
@workdir_option
@json_option
def command(file: str, question: str, system: Optional[str], workdir: Optional[str], as_json: bool) -> None:
    """Ask a RAG system (or a model, or another system) a question; prints the answer and its cited sources."""
    from sdk.errors import DslError
    from sdk.spec.kinds import kinds_served_as
    from sdk.systems import open_system, serving_of

    ws = open_ws(file, workdir)
    kind = system.partition(".")[0] if system and "." in system else kinds_served_as("rag")[0]
    if serving_of(kind) not in ("rag", "model", "system"):  # what the kind declares, never its name
        raise DslError(f"{system} is not a system dsl ask can ask: name a rag system (rag.NAME), a model "
                       "(e.g. finetune.NAME) or another system kind's (KIND.NAME)")
    sid = f"{kind}.{only_label(ws, kind, system, '--system')}"
    changed = say_drift(ws, sid)  # what answers is the applied version, never the edited block
    rag = open_system(ws.artifact(sid), base_dir=ws.spec.base_dir, spec=ws.spec)  # from its manifest alone
    out = rag.answer(question)
    out["answer"] = str(out.get("answer") or "").strip()  # a generator's leading space or newline is not the answer
    out.setdefault("cited", [])
    out.setdefault("sources", [])
    if as_json:
        click.echo(json.dumps({"system": sid, "question": question, "answer": out["answer"],
                               "cited": out["cited"], "sources": out["sources"], "changed_since_applied": changed},
                              indent=2, default=str))
        return
    if getattr(rag, "generator", True) is None:
        click.echo("(retrieval only: no generator)")
    else:  # model, corpus and upstream text reach the terminal without control or escape sequences
        click.echo(shown(out["answer"]) or "(empty answer)")
    click.echo("")
    click.echo("Sources:")
    for s in out["sources"]:
        mark = "*" if s.get("index") in out["cited"] else " "
        content = " ".join(shown(s["content"]).split("\n"))[:100]
        click.echo(f" {mark}[{s.get('index')}] {shown(str(s.get('location') or s.get('source')))} "
                   f"(score {float(s.get('score') or 0.0):.3f}): "
                   f"{content}...")
