"""Hostile files: templates that try to run code or unbounded work, links in the workdir, edited manifests, files
swapped between check and read, oversized corpus files. Each scenario uses real files (and the real `dsl`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.errors import DslError
from sdk.workspace import open_workspace
from tests._specs import SMALL, write_small
from tests.conftest import run_dsl

# ---------------------------------------------------------------------------------------------- templates


def _payloads(proof: Path) -> list[str]:
    cmd = f"touch {proof}"
    return [
        f"{{{{ cycler.__init__.__globals__.os.popen('{cmd}').read() }}}}",
        f"{{{{ joiner.__init__.__globals__['os'].system('{cmd}') }}}}",
        f"{{{{ namespace.__init__.__globals__.os.system('{cmd}') }}}}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"{{{{ ()|attr('__class__')|attr('__base__')|attr('__subclasses__')() }}}}",
        "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
        "{{ range(10**9)|list|length }}",
        "{{ 'a' * 10**9 }}",
        "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
        "{{ '{:>999999999}'.format('x') }}",
        "{{ 'x'|center(999999999) }}",
    ]


def _template_attrs() -> list[tuple[str, str]]:
    from sdk.spec import kinds as K
    from sdk.spec.templates import template_attrs

    return [(k.name, a) for k in K.all_kinds() for a in template_attrs(k.block)]


def test_template_attributes_are_found_from_the_kind_registry() -> None:
    found = set(_template_attrs())
    assert {("eval", "prompt"), ("rag", "prompt"), ("reward", "prompt"), ("finetune", "chat_template"),
            ("base_model", "chat_template"), ("align", "chat_template"), ("eval", "rubric"), ("synth", "prompt")} \
        <= found, found


def _nested_kind() -> tuple[type, type]:
    """A block with a template inside a sub-block (as a synth step's filters { rubric } or a judge's prompt)."""
    from sdk.spec.values import Block, TextOrFile

    class Judge(Block):
        prompt: TextOrFile | None = None

    class Kind(Block):
        judge: Judge | None = None
        rubric: TextOrFile | None = None

    return Kind, Judge


def test_a_template_inside_a_sub_block_is_found_refused_and_confined(tmp_path: Path) -> None:
    from sdk.spec.templates import template_attrs, template_problems
    from sdk.spec.values import FileRef

    kind, judge = _nested_kind()
    assert template_attrs(kind) == ("judge.prompt", "rubric")  # from the schema: a new attribute is covered
    (tmp_path / "recipe").mkdir()
    (tmp_path / "secret.txt").write_text("not for the judge")
    spec = sdk.Domain("d", base_dir=tmp_path / "recipe").build(check_files=False)
    outside = kind.model_construct(judge=judge.model_construct(prompt=FileRef("../secret.txt")))
    assert template_problems(spec, "k", "x", outside, True) == \
        [(("k", "x", "judge", "prompt"), "file('../secret.txt') escapes the recipe's folder")]
    hostile = kind.model_construct(judge=judge.model_construct(prompt=_payloads(tmp_path / "PROOF")[0]))
    [(path, message)] = template_problems(spec, "k", "x", hostile, True)
    assert path == ("k", "x", "judge", "prompt") and "the judge.prompt template is refused" in message


def _constructed(block_cls: type, attr: str, value: object) -> object:
    """A block with only the (dotted) template attribute ``attr`` set, its sub-blocks built on the way."""
    import typing

    from pydantic import BaseModel

    head, _, rest = attr.partition(".")
    if not rest:
        return block_cls.model_construct(**{head: value})
    tp, todo = None, [block_cls.model_fields[head].annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            tp = t
            break
        todo += typing.get_args(t)
    return block_cls.model_construct(**{head: _constructed(tp, rest, value)})


@pytest.mark.parametrize("kind,attr", _template_attrs())
def test_every_template_attribute_refuses_escape_payloads_before_anything_runs(tmp_path: Path, kind: str,
                                                                                attr: str) -> None:
    from sdk.spec import kinds as K
    from sdk.spec.templates import template_problems
    from sdk.spec.values import FileRef

    proof = tmp_path / "PROOF"
    spec = sdk.Domain("d", base_dir=tmp_path).build(check_files=False)
    block_cls = K.get_kind(kind).block
    for i, payload in enumerate(_payloads(proof)):
        (tmp_path / f"t{i}.j2").write_text(payload)
        for value in (payload, FileRef(f"t{i}.j2")):
            block = _constructed(block_cls, attr, value)
            problems = template_problems(spec, kind, "x", block, True)
            assert len(problems) == 1 and problems[0][0] == (kind, "x", *attr.split(".")), (payload, problems)
            assert "is refused" in problems[0][1]
    assert not proof.exists()


def test_a_hostile_eval_prompt_is_a_located_error_and_runs_nothing(tmp_path: Path) -> None:
    proof = tmp_path / "PROOF"
    payload = _payloads(proof)[0]
    recipe = SMALL.replace("metrics = [exact_match, f1]", f'metrics = [exact_match, f1]\n    prompt = "{payload}"')
    path = write_small(tmp_path, recipe)
    r = run_dsl("apply", str(path), "--backend", "test")
    assert r.returncode == 1 and "recipe.dsl:41:14" in r.stderr and "prompt template is refused" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not proof.exists()


@pytest.mark.parametrize("payload_index", range(11))
def test_every_renderer_refuses_at_run_time_too(tmp_path: Path, payload_index: int) -> None:
    """The sandbox itself, without the static check: the eval prompt, the rag prompt and the reward prompt."""
    from sdk.backends.eval.answers import Prompter
    from sdk.backends.rag.system import RagSystem
    from sdk.backends.training.reward_data import asked
    from sdk.evalsets import EvalItem

    proof = tmp_path / "PROOF"
    payload = _payloads(proof)[payload_index]
    item = EvalItem(id="1", question="q", answers=["a"])
    rag = RagSystem.__new__(RagSystem)
    rag.prompt, rag.label = payload, "docs"
    row = {"prompt": "q", "context": [{"source": "a.md", "content": "c"}]}
    for render in (lambda: Prompter(payload)(item), lambda: rag.render_prompt("q", []), lambda: asked(row, payload)):
        with pytest.raises(DslError) as e:
            render()
        assert "refused" in str(e.value) or "cannot be rendered" in str(e.value), e.value
    assert not proof.exists()


def test_ordinary_templates_render_as_before() -> None:
    from sdk.templating import problem, render

    tpl = "{% for d in documents %}[{{ loop.index }}] {{ d.content }}\n{% endfor %}Q: {{ question|upper }}"
    assert problem(tpl) is None
    assert problem('{{ "_" * 40 }}\n{{ "____" }} {{ question }}') is None  # underscores in text are not attributes
    assert render(tpl, "t", documents=[{"content": "x"}], question="why") == "[1] x\nQ: WHY"
    assert render("{{ x }}", "t", autoescape=True, x="<b>") == "&lt;b&gt;"
    loop = "{% for i in range(60000) %}{% endfor %}ok"
    assert [render(loop, "t") for _ in range(3)] == ["ok"] * 3  # the work budget is per render, not per template


def test_nested_loops_over_the_data_are_bounded_too() -> None:
    """Loops over the variables a template is given (documents, items, long strings) spend the same per-render
    budget as range(): nested loops over a large input are refused quickly instead of running for hours."""
    from sdk.templating import TemplateRefused, render

    docs = [{"content": f"chunk {i}"} for i in range(5000)]
    nested = "{% for a in documents %}{% for b in documents %}{% endfor %}{% endfor %}done"
    with pytest.raises(TemplateRefused, match=r"t is refused: loops over more than 100000 items in one render"):
        render(nested, "t", documents=docs)
    with pytest.raises(TemplateRefused, match="loops over more than"):
        render("{% for c in q %}{% for d in q %}{% endfor %}{% endfor %}", "t", q="x" * 2000)
    with pytest.raises(TemplateRefused, match="loops over more than"):  # inside a dict, through a filter
        render("{% for i in range(100) %}{{ item.choices|join('') }}{% endfor %}", "t",
               item={"choices": ["a"] * 2000})
    assert render(nested, "t", documents=docs[:300]) == "done"  # 300 x 300 fits the budget
    assert render("{{ q|length }} {{ q[:3] }} {{ item.choices|length }}", "t", q="y" * 100,
                  item={"choices": ("a", "b")}) == "100 yyy 2"


# ------------------------------------------------------------------------------------------ workdir links


def _applied(tmp_path: Path, recipe: str = SMALL) -> tuple[Path, Path]:
    from sdk.executor import default_workdir

    path = write_small(tmp_path, recipe)
    spec = load(path)
    assert sdk.apply(spec, backend="test").ok
    return path, default_workdir(spec)


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    path, wd = _applied(tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (wd / ".lock").unlink()
    (wd / ".lock").symlink_to(victim)
    r = run_dsl("apply", str(path), "--backend", "test")
    assert r.returncode == 1 and ".lock is a symbolic link" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("name", ["state.json", "artifacts", "checkpoints"])
def test_the_workdirs_own_entries_are_never_links(tmp_path: Path, name: str) -> None:
    path, wd = _applied(tmp_path)
    outside = tmp_path / f"outside-{name}"
    (wd / name).rename(outside) if (wd / name).exists() else outside.mkdir()
    (wd / name).symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*")) if outside.is_dir() else outside.read_text()
    r = run_dsl("apply", str(path), "--backend", "test", "--replace", "corpus.docs")
    assert r.returncode == 1 and f"{name} is a symbolic link" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (sorted(p.name for p in outside.rglob("*")) if outside.is_dir() else outside.read_text()) == before


def test_artifact_files_that_became_links_are_damaged(tmp_path: Path) -> None:
    path, wd = _applied(tmp_path)
    art = next((wd / "artifacts" / "dataset.qa").iterdir())
    secret = tmp_path / "secret.txt"
    out = art / "out.json"
    secret.write_bytes(b"s" * out.stat().st_size)  # same size: only a link check can tell
    out.unlink()
    out.symlink_to(secret)
    manifest = next((wd / "artifacts" / "route.default").iterdir()) / "manifest.json"
    copy = tmp_path / "manifest-copy.json"
    copy.write_bytes(manifest.read_bytes())
    manifest.unlink()
    manifest.symlink_to(copy)
    v = run_dsl("verify", str(path))
    assert v.returncode == 1 and "out.json is a link" in v.stdout and "manifest.json is a link" in v.stdout, v.stdout


# ------------------------------------------------------------------------------------- manifests under integrity


def test_an_edited_manifest_is_damaged_named_and_never_used(tmp_path: Path) -> None:
    path, wd = _applied(tmp_path)
    manifest = next((wd / "artifacts" / "rag.docs").iterdir()) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["top_k"] = 7  # same structure, a different applied configuration
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True))
    v = run_dsl("verify", str(path))
    assert v.returncode == 1 and "DAMAGED rag.docs" in v.stdout and "manifest.json content differs" in v.stdout, v.stdout
    r = run_dsl("ask", str(path), "--system", "rag.docs", "What is SIP?")
    assert r.returncode == 1 and "rag.docs" in r.stderr and "manifest.json content differs" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    plan = sdk.plan(load(path), wd, backend="test")
    assert plan.step("rag.docs").action.value == "replace" and "manifest.json" in plan.step("rag.docs").reason
    assert sdk.apply(load(path), backend="test").ok
    assert run_dsl("verify", str(path)).returncode == 0


def test_a_workdir_from_before_manifest_hashes_is_adopted_once(tmp_path: Path) -> None:
    path, wd = _applied(tmp_path)
    state_file = wd / "state.json"
    data = json.loads(state_file.read_text())
    for entry in data["steps"].values():
        entry.pop("manifest_sha256")
    state_file.write_text(json.dumps(data))
    v = run_dsl("verify", str(path))
    assert v.returncode == 0 and "manifest not under integrity yet" in v.stdout, v.stdout
    assert sdk.apply(load(path), backend="test", replace=["route.default"]).ok
    entries = json.loads(state_file.read_text())["steps"].values()
    assert all(e.get("manifest_sha256") for e in entries)
    v = run_dsl("verify", str(path))
    assert v.returncode == 0 and "not under integrity" not in v.stdout, v.stdout


def test_a_key_is_sent_only_to_an_endpoint_the_recipe_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.backends.rag.system import make_generator
    from tests._openai_server import OpenAIServer, chat_completion

    seen: list[str] = []
    monkeypatch.setenv("GEN_KEY", "s3cret")
    with OpenAIServer(lambda body, request: seen.append(request.headers.get("authorization", "")) or
                      chat_completion("ok")) as server:
        applied = f"http://127.0.0.1:{server.port}/v1"
        gen = f'endpoint {{ url = "{applied}", model = "m", api_key = env("GEN_KEY"), max_retries = 0 }}'
        path = write_small(tmp_path, SMALL.replace("generator = finetune.sip", f"generator = {gen}"))
        block = load(path).rag["docs"]  # the block as applied
        path.write_text(path.read_text().replace(applied, "http://127.0.0.1:9/v1"))
        moved = load(path)  # the recipe being run names another URL now
        with pytest.raises(DslError, match="the key is sent only to endpoints the recipe names"):
            make_generator(block, None, moved, "rag.docs")
        assert seen == []
        path.write_text(path.read_text().replace("http://127.0.0.1:9/v1", applied))
        assert make_generator(block, None, load(path), "rag.docs")("hi", 4) == "ok"
    assert seen == ["Bearer s3cret"]


# ------------------------------------------------------------------------------- corpus: read once, bounded


def _corpus_recipe(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.txt").write_text("SIP is the session initiation protocol used for VoIP calls.\n")
    (tmp_path / "docs" / "b.md").write_text("# IMS\n\nIMS is the IP multimedia subsystem defined by 3GPP.\n\n"
                                            "## Nodes\n\nThe S-CSCF node keeps the session state of each user.\n")
    path = tmp_path / "r.dsl"
    path.write_text(f'domain r {{\n  corpus c {{\n    paths = ["docs/*"]\n    split = {{ by = word, length = 8, '
                    f'overlap = 0 }}\n    min_chars = 0{extra}\n  }}\n}}\n')
    return path


def test_a_file_swapped_for_a_link_after_the_plan_is_refused_not_indexed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk.executor as E

    recipe = tmp_path / "r"
    recipe.mkdir()
    path = _corpus_recipe(recipe)
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY material that must never be indexed\n")
    planned = E.refingerprint

    def plan_then_swap(*args, **kwargs):  # the race: after the plan's confinement check and hashes, before the read
        out = planned(*args, **kwargs)
        (recipe / "docs" / "a.txt").unlink()
        (recipe / "docs" / "a.txt").symlink_to(secret)
        return out

    monkeypatch.setattr(E, "refingerprint", plan_then_swap)
    spec = load(path)
    result = sdk.apply(spec)
    assert not result.ok
    error = result.failed[0].error
    assert "docs/a.txt" in error and ("leads outside" in error or "changed after the plan" in error), error
    chunks = list((E.default_workdir(spec) / "artifacts").rglob("chunks.jsonl"))
    assert not any("PRIVATE KEY" in c.read_text() for c in chunks)


def test_a_file_changed_after_the_plan_is_refused_so_lineage_names_what_was_read(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk.executor as E

    path = _corpus_recipe(tmp_path)
    planned = E.refingerprint

    def plan_then_edit(*args, **kwargs):
        out = planned(*args, **kwargs)
        (tmp_path / "docs" / "a.txt").write_text("A decoy replaced the text after it was hashed.\n")
        return out

    monkeypatch.setattr(E, "refingerprint", plan_then_edit)
    result = sdk.apply(load(path))
    assert not result.ok and "docs/a.txt" in result.failed[0].error
    assert "changed after the plan hashed it" in result.failed[0].error


def test_an_oversized_corpus_file_is_a_located_error_overridable_in_the_recipe(tmp_path: Path) -> None:
    path = _corpus_recipe(tmp_path, "\n    max_file_mb = 1")
    (tmp_path / "docs" / "big.txt").write_text("word " * 300_000)  # 1.4 MiB
    r = run_dsl("validate", str(path))
    assert r.returncode == 1 and "r.dsl:3:14" in r.stderr and "docs/big.txt is 1.4 MiB, over the corpus limit of 1 MiB" \
        in r.stderr and "raise max_file_mb in the corpus block" in r.stderr, r.stderr
    path.write_text(path.read_text().replace("max_file_mb = 1", "max_file_mb = 2"))
    assert run_dsl("validate", str(path)).returncode == 0


def test_one_huge_line_is_chunked_in_bounded_pieces(tmp_path: Path) -> None:
    from sdk.backends.rag.corpus import SEGMENT, ingest, segments

    text = "x" * (2 * SEGMENT + 10) + " tail"
    assert [len(p) for _, p in segments(text)] == [SEGMENT, SEGMENT, 15]
    assert "".join(p for _, p in segments(text)) == text
    path = _corpus_recipe(tmp_path)
    (tmp_path / "docs" / "one-line.txt").write_text("word " * 400_000)  # 2 MB on one line
    spec = load(path)
    chunks, metrics = ingest(spec, spec.corpus["c"], "c", print)
    assert max(len(c["content"]) for c in chunks) <= SEGMENT and metrics["files"] == 3


def test_text_and_markdown_chunks_name_their_line_and_heading_not_page_1(tmp_path: Path) -> None:
    from sdk.backends.rag.corpus import ingest, location

    path = _corpus_recipe(tmp_path)
    spec = load(path)
    chunks, _ = ingest(spec, spec.corpus["c"], "c", print)
    where = [location(c["meta"]) for c in chunks]
    assert where == ["docs/a.txt:1", "docs/a.txt:1", "docs/b.md:1 (IMS)", "docs/b.md:3 (IMS)", "docs/b.md:7 (Nodes)"]
    assert chunks[4]["content"] == "session state of each user."  # on line 7, under "## Nodes"
    assert all("page" not in c["meta"] for c in chunks)


# ------------------------------------------------------------------------- damaged artifacts and checkpoints


def test_a_chat_template_changed_in_place_is_named_not_rendered(tmp_path: Path) -> None:
    tpl = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|end|>{% endfor %}"
    path = tmp_path / "r.dsl"
    path.write_text('domain r {\n  base_model tiny {\n    architecture = llama { layers = 2, hidden = 64, heads = 4, '
                    f'vocab = 500, context = 128 }}\n    chat_template = "{tpl}"\n  }}\n}}\n')
    assert sdk.apply(load(path)).ok
    from sdk.executor import default_workdir

    template = next((default_workdir(load(path)) / "artifacts" / "base_model.tiny").glob("*/chat_template.jinja"))
    hostile = "{{ cycler.__init__.__globals__ }}"
    template.write_text(hostile + tpl[len(hostile):])  # same size: only a hash can tell
    r = run_dsl("plan", str(path))
    assert "artifact damaged: chat_template.jinja content differs" in r.stdout, r.stdout + r.stderr
    with pytest.raises(DslError, match="base_model.tiny .* damaged .*chat_template.jinja content differs"):
        open_workspace(path).artifact("base_model.tiny")


def test_a_systems_inputs_are_checked_like_the_system(tmp_path: Path) -> None:
    from sdk.systems import input_artifact

    path, wd = _applied(tmp_path)
    out = next((wd / "artifacts" / "finetune.sip").iterdir()) / "out.json"
    text = out.read_text()
    out.write_text(text.replace("finetune", "FINETUNE"))
    rag = open_workspace(path).artifact("rag.docs")  # the system itself is intact
    with pytest.raises(DslError, match="finetune.sip used by rag.docs is damaged .out.json content differs"):
        input_artifact(rag, "finetune.sip")


def test_a_template_refused_by_the_sandbox_is_exit_1_not_an_internal_error(monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    import dsl.cli
    from jinja2.exceptions import SecurityError

    def refused(*args, **kwargs):
        raise SecurityError("access to attribute '__init__' of 'Cycler' object is unsafe.")

    monkeypatch.setattr(dsl.cli.cli, "main", refused)
    with pytest.raises(SystemExit) as e:
        dsl.cli.main(["ask", "r.dsl", "q"])
    assert e.value.code == 1 and "dsl verify names the damaged artifact" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_named_with_how_to_discard_it(tmp_path: Path) -> None:
    import torch

    from sdk.backends.training.common import train

    checkpoint = tmp_path / "checkpoints" / "finetune.sip" / "ab12" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "rng_state.pth").write_bytes(b"\x80\x04garbage, not a pickle")

    class Trainer:  # resumes as transformers' Trainer does: torch.load of the checkpoint's files
        callback_handler = None

        def remove_callback(self, cb: object) -> None:
            pass

        def train(self, resume_from_checkpoint: str) -> None:
            torch.load(Path(resume_from_checkpoint) / "rng_state.pth", weights_only=False)

    with pytest.raises(DslError) as e:
        train(Trainer(), str(checkpoint), print)
    assert f"the checkpoint {checkpoint} cannot be read" in str(e.value) and f"rm -r {checkpoint}" in str(e.value)


def test_a_link_inside_checkpoints_is_never_written_through(tmp_path: Path) -> None:
    path, wd = _applied(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (wd / "checkpoints").mkdir(exist_ok=True)
    shutil.rmtree(wd / "checkpoints" / "corpus.docs", ignore_errors=True)
    (wd / "checkpoints" / "corpus.docs").symlink_to(outside)
    r = run_dsl("apply", str(path), "--backend", "test", "--replace", "corpus.docs")
    assert r.returncode != 0 and ("leads outside the workdir" in r.stdout + r.stderr or
                                  "checkpoints/corpus.docs is a symbolic link" in r.stderr), r.stdout + r.stderr
    assert list(outside.iterdir()) == []


def test_the_judge_is_calibrated_on_the_recorded_eval_artifact_only(tmp_path: Path) -> None:
    """A synth filter or a reward trusts a judge by its agreement with the experts on the eval's answers: those
    are read from the artifact the state records, under integrity, never from a folder planted beside it."""
    from sdk.grades import applied_eval
    from sdk.state import StateStore

    path, wd = _applied(tmp_path)
    recorded = StateStore(wd).load().artifact_path("eval.expert").resolve()
    assert applied_eval(wd, "eval.expert") == (recorded, None)
    planted = wd / "artifacts" / "eval.expert" / "ffffffffffff"
    planted.mkdir()
    (planted / "predictions.jsonl").write_text('{"id": "1", "prediction": "x", "scores": {"judge": 1.0}}\n')
    assert applied_eval(wd, "eval.expert") == (recorded, None)  # the newest folder is not the applied one
    out = recorded / "out.json"
    out.write_text(out.read_text().replace("eval", "EVAL"))  # same size: only a hash can tell
    assert applied_eval(wd, "eval.expert") == (recorded, "out.json content differs")
