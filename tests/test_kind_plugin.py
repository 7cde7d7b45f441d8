"""A block kind and its backend defined outside sdk/, registered through the entry points a user would use
(``dsl.kinds`` and ``dsl.backends`` in an installed distribution's metadata), validate, plan, apply and show in
``dsl status`` without a line changed in sdk/ or dsl/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_dsl

PLUGIN = '''
from pydantic import Field

from sdk.backends.base import Backend, StepResult
from sdk.spec import Block, declare, ref_of
from sdk.spec.paths import named_files, path_problem
from sdk.spec.values import Problem


def _check(spec, label, block, check_files):
    problem = path_problem(spec, block.terms) if check_files else None
    return [Problem(path=("glossary", label, "terms"), message=problem)] if problem else []


@declare("glossary", backend=("glossary", "glossary_kind:GlossaryBackend"), outputs=("terms",), check=_check,
         reads=lambda spec, block: named_files(spec, block, ("terms",)))
class GlossaryBlock(Block):
    """Domain terms, one per line, kept when long enough."""

    terms: str = Field(description="Text file of terms, relative to the recipe")
    min_length: int = Field(default=2, ge=1, description="Shortest term kept")
    about: ref_of("dataset") = Field(default=None, description="Dataset the terms come from")


class GlossaryBackend(Backend):
    name, version, kinds = "glossary", "1", ("glossary",)

    def run(self, ctx):
        lines = (ctx.base_dir / ctx.block.terms).read_text().splitlines()
        words = sorted({w.strip() for w in lines if len(w.strip()) >= ctx.block.min_length})
        (ctx.out_dir / "terms.txt").write_text("\\n".join(words))
        return StepResult(metrics={"terms": len(words)}, outputs={"terms": "terms.txt"},
                          summary=f"{len(words)} terms")
'''

RECIPE = '''domain demo {
  dataset qa {
    path = "qa.jsonl"
  }

  glossary words {
    terms = "terms.txt"
    min_length = MINLEN
    about = dataset.qa
  }
}
'''


def _plugin(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "glossary_kind.py").write_text(PLUGIN)
    dist = site / "glossary_kind-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: glossary-kind\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dsl.kinds]\nglossary = glossary_kind:GlossaryBlock\n\n"
                                          "[dsl.backends]\nglossary = glossary_kind:GlossaryBackend\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_a_kind_from_a_plugin_validates_plans_applies_and_shows_in_status(tmp_path: Path) -> None:
    env = _plugin(tmp_path)
    (tmp_path / "terms.txt").write_text("SIP\nIMS\nx\nVoLTE\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}) + "\n")
    recipe = tmp_path / "r.dsl"

    recipe.write_text(RECIPE.replace("MINLEN", '"3"'))  # a string where a number belongs: located, strict
    bad = run_dsl("validate", str(recipe), env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{recipe}:8:18" in bad.stderr or "r.dsl:8:18" in bad.stderr, bad.stderr

    recipe.write_text(RECIPE.replace("MINLEN", "3").replace('terms = "terms.txt"', 'terms = "nope.txt"'))
    missing = run_dsl("validate", str(recipe), env=env)
    assert missing.returncode == 1 and "r.dsl:7:13" in missing.stderr and "'nope.txt' does not exist" in missing.stderr

    recipe.write_text(RECIPE.replace("MINLEN", "3"))
    assert run_dsl("validate", str(recipe), env=env).returncode == 0
    plan = run_dsl("plan", str(recipe), "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
    assert steps["glossary.words"]["action"] == "create" and steps["glossary.words"]["backend"] == "glossary"
    assert steps["glossary.words"]["depends_on"] == ["dataset.qa"]

    applied = run_dsl("apply", str(recipe), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    status = json.loads(run_dsl("status", str(recipe), "--json", env=env).stdout)
    row = next(r for r in status["steps"] if r["id"] == "glossary.words")
    assert row["status"] == "done" and row["metrics"] == {"terms": 3} and row["summary"] == "3 terms"
    art = tmp_path / ".dsl" / "demo" / row["artifact"]
    assert (art / "terms.txt").read_text().split("\n") == ["IMS", "SIP", "VoLTE"]
    again = run_dsl("plan", str(recipe), env=env)
    assert "No changes" in again.stdout

    # the builder has the plugin's kind as a method too, and the schema lists it
    code = ("import sdk, json; s = sdk.Domain('d').glossary('g', terms='t.txt').build(check_files=False); "
            "print(json.dumps(sorted(s.glossary)))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    assert out.stdout.strip() == '["g"]', out.stderr
    schema = run_dsl("schema", env=env)
    assert "glossary" in json.loads(schema.stdout)["properties"]


def test_a_broken_kind_plugin_does_not_break_the_cli(tmp_path: Path) -> None:
    env = _plugin(tmp_path)
    (tmp_path / "site" / "glossary_kind.py").write_text("raise ImportError('broken on purpose')\n")
    recipe = tmp_path / "r.dsl"
    recipe.write_text('domain demo {\n  description = "no plugin kinds used"\n}\n')
    r = run_dsl("validate", str(recipe), env=env)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


LATE = '''
import json, sys
from pathlib import Path

from pydantic import Field

import sdk
from sdk.backends.base import Backend, Registry, StepResult
from sdk.spec import Block, declare

assert "note" not in sdk.Spec.model_fields


@declare("note", backend=("note", "late:NoteBackend"), outputs=("text",))
class NoteBlock(Block):
    """A note, declared by a program after it imported the SDK."""

    text: str = Field(description="What the note says")


class NoteBackend(Backend):
    name, version, kinds = "note", "1", ("note",)

    def run(self, ctx):
        (ctx.out_dir / "note.txt").write_text(ctx.block.text)
        return StepResult(outputs={"text": "note.txt"}, summary="noted")


folder = Path(sys.argv[1])
spec = sdk.Domain("d", base_dir=folder).note("n", text="hello").build()
registry = Registry()
registry.register("note", NoteBackend)
result = sdk.apply(spec, registry=registry)
from sdk.spec import json_schema

try:
    declare("bare")(type("Bare", (Block,), {}))
    refused = ""
except ValueError as e:
    refused = str(e)
print(json.dumps({"field": "note" in sdk.Spec.model_fields, "schema": "note" in json_schema()["properties"],
                  "ran": result.ran, "refused": refused}))
'''


def test_a_kind_declared_after_import_is_part_of_the_spec_and_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "late.py").write_text(LATE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}
    out = subprocess.run([sys.executable, str(tmp_path / "late.py"), str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["field"] and got["schema"] and got["ran"] == ["note.n"]
    assert "'bare' is a step but names no backend" in got["refused"]
    assert (next((tmp_path / ".dsl").rglob("note.txt"))).read_text() == "hello"


def test_a_plugin_step_kind_without_a_backend_is_reported_not_run(tmp_path: Path) -> None:
    env = _plugin(tmp_path)
    plugin = (tmp_path / "site" / "glossary_kind.py")
    plugin.write_text(plugin.read_text().replace('backend=("glossary", "glossary_kind:GlossaryBackend"), ', ""))
    code = "import sdk.spec as S; print(' | '.join(S.kinds.plugin_errors())); print('glossary' in S.Spec.model_fields)"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)
    errors, field = out.stdout.strip().splitlines()
    assert "'glossary' is a step but names no backend" in errors and field == "False", out.stderr
    recipe = tmp_path / "r.dsl"
    recipe.write_text('domain demo {\n  glossary words { terms = "t.txt" }\n}\n')
    r = run_dsl("validate", str(recipe), env=env)  # the kind is not there: a located error, not the test backend
    assert r.returncode == 1 and "Traceback" not in r.stderr and "glossary" in r.stderr, r.stderr


SYSTEM_PLUGIN = '''
import json

from pydantic import Field

from sdk.backends.base import Backend, StepResult
from sdk.spec import Block, declare


@declare("faq", role="system", backend=("faq", "faq_kind:FaqBackend"), outputs=("answers",),
         opener="faq_kind:open_faq")
class FaqBlock(Block):
    """Questions answered from lines 'question = answer'."""

    path: str = Field(description="The lines, relative to the recipe")


class FaqBackend(Backend):
    name, version, kinds = "faq", "1", ("faq",)

    def run(self, ctx):
        lines = (ctx.base_dir / ctx.block.path).read_text().splitlines()
        pairs = dict(line.split(" = ", 1) for line in lines if " = " in line)
        (ctx.out_dir / "answers.json").write_text(json.dumps({q.strip().lower(): a.strip() for q, a in pairs.items()}))
        return StepResult(metrics={"questions": len(pairs)}, outputs={"answers": "answers.json"},
                          summary=f"{len(pairs)} answers")


class Faq:
    def __init__(self, answers):
        self.answers = answers

    def answer(self, question, max_new_tokens=None):
        text = self.answers.get(question.strip().lower(), "unknown")
        return {"answer": text, "cited": [1],
                "sources": [{"index": 1, "id": "faq", "source": "faq.txt", "content": text, "score": 1.0}]}


def open_faq(art, **options):  # from the applied artifact alone: never the recipe
    return Faq(json.loads((art.path / art.outputs["answers"]).read_text()))
'''

SYSTEM_RECIPE = '''domain desk {
  faq help {
    path = "faq.txt"
  }

  eval check {
    data = "eval.jsonl"
    systems = [faq.help]
    metrics = [exact_match]
    gate = faq.help.exact_match >= 0.5
    contamination = false
  }

  serve {
    port = PORT
  }
}
'''


def _served(recipe: Path, env: dict[str, str], port: int) -> tuple[str, dict, dict]:
    """Start dsl serve, ask faq.help through the OpenAI API, stop it: (stderr, /v1/models, the chat answer)."""
    import subprocess
    import sys

    import httpx

    from tests.test_serve import wait_http

    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "serve", str(recipe)], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()
        chat = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json={
            "model": "faq.help", "messages": [{"role": "user", "content": "Who answers the phone?"}]}).json()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    return out, models, chat


def test_a_plugin_system_kind_is_applied_evaluated_served_and_served_from_its_workdir_alone(tmp_path: Path) -> None:
    from tests.test_serve import free_port

    env = _plugin(tmp_path)
    (tmp_path / "site" / "faq_kind.py").write_text(SYSTEM_PLUGIN)
    (tmp_path / "site" / "glossary_kind-0.1.dist-info" / "entry_points.txt").write_text(
        "[dsl.kinds]\nfaq = faq_kind:FaqBlock\n\n[dsl.backends]\nfaq = faq_kind:FaqBackend\n")
    (tmp_path / "faq.txt").write_text("Who answers the phone? = Ada\nWhere is the desk? = Hall B\n")
    items = [("q1", "Who answers the phone?", "Ada"), ("q2", "Where is the desk?", "Hall B"), ("q3", "Lunch?", "noon")]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"id": i, "question": q, "answer": [a]}) + "\n"
                                                 for i, q, a in items))
    port = free_port()
    recipe = tmp_path / "r.dsl"
    recipe.write_text(SYSTEM_RECIPE.replace("PORT", str(port)))

    applied = run_dsl("apply", str(recipe), env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    status = {r["id"]: r for r in json.loads(run_dsl("status", str(recipe), "--json", env=env).stdout)["steps"]}
    assert status["eval.check"]["status"] == "done"  # evaluated: 2 of 3 answered right, the gate passed
    summary = json.loads(next((tmp_path / ".dsl" / "desk").rglob("summary.json")).read_text())
    assert summary["metrics"]["faq.help"]["exact_match"]["value"] == pytest.approx(2 / 3, abs=1e-3)
    asked = run_dsl("ask", str(recipe), "Where is the desk?", "--system", "faq.help", "--json", env=env)
    assert asked.returncode == 0 and json.loads(asked.stdout)["answer"] == "Hall B", asked.stderr

    recipe.write_text("domain desk {\n  faq help {\n")  # broken since it was applied: the workdir alone serves
    out, models, chat = _served(recipe, env, port)
    assert "faq.help" in [m["id"] for m in models["data"]], out
    assert chat["choices"][0]["message"]["content"] == "Ada" and chat["dsl_target"] == "faq.help", chat
    assert chat["sources"][0]["source"] == "faq.txt"
    assert "r.dsl cannot be loaded" in out and "the recipe version served: as applied at" in out and "Traceback" not in out

    recipe.unlink()  # deleted: the same
    out, _, chat = _served(recipe, env, port)
    assert chat["choices"][0]["message"]["content"] == "Ada", out
    assert "cannot be loaded" in out and "fingerprint " in out
