"""sdk.systems: a kind declares how its applied steps are served and opened, and everything that runs a system asks
that declaration (model kinds included); dsl serve finds the workdir of a recipe that no longer loads and serves a
rag system from it after the recipe is deleted; the gateway's streamed chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdk.artifacts import Artifact
from sdk.errors import DslError
from sdk.spec import kinds as K
from sdk.spec import parse_ref


def test_built_in_kinds_declare_how_they_are_served() -> None:
    from sdk.systems import serving_of

    assert serving_of("rag.docs") == "rag" and serving_of(parse_ref("rag.docs")) == "rag"
    assert serving_of("route.default") == "router"
    assert {serving_of(f"{k}.x") for k in ("base_model", "pretrain", "finetune", "align", "reward")} == {"model"}
    assert serving_of("eval.x") is None and serving_of("corpus.c") is None and serving_of("nosuch.x") is None
    assert serving_of(object()) is None  # an endpoint has no kind
    assert K.kinds_served_as("router") == ["route"] and K.kinds_served_as("rag") == ["rag"]
    assert set(K.kinds_served_as("model")) == {"base_model", "pretrain", "finetune", "align", "reward"}


def test_a_kind_that_is_served_as_a_system_must_name_its_opener() -> None:
    class B:
        pass

    with pytest.raises(ValueError, match="names no opener"):
        K.Kind(name="faq", block=B, role="system", backend="faq", serving="system")
    with pytest.raises(ValueError, match="serving must be one of"):
        K.Kind(name="faq", block=B, role="system", backend="faq", serving="web", opener="m:f")
    kind = K.Kind(name="faq", block=B, role="system", backend="faq", opener="m:f")
    assert kind.serving_as == "system"  # a system with an opener is served as one by default
    assert K.Kind(name="plain", block=B, role="system", backend="x").serving_as is None


def test_open_system_refuses_what_its_kind_cannot_open(tmp_path: Path) -> None:
    from sdk.systems import open_system

    with pytest.raises(DslError, match="eval.x is not a system that can be opened"):
        open_system(Artifact("eval.x", tmp_path, {}))
    with pytest.raises(DslError, match=r"router.json: cannot read the router"):
        open_system(Artifact("route.default", tmp_path, {}))  # the router's files are not there: named, no traceback


def test_model_kinds_declare_their_opener_and_open_from_the_artifact_alone(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk.backends.eval.clients import LocalModel
    from sdk.systems import open_system
    from tests._tiny import tiny_model_dir

    model_kinds = ("base_model", "pretrain", "finetune", "align", "reward")
    assert {K.get_kind(k).opener for k in model_kinds} == {"sdk.backends.eval.clients:open_model"}
    folder = tiny_model_dir(tmp_path)
    art = Artifact("pretrain.base", tmp_path / "artifacts" / "pretrain.base" / "f",
                   {"outputs": {"model": str(folder), "model_source": "local"}})
    system = open_system(art)  # no recipe: the weights its manifest records
    assert isinstance(system.local, LocalModel)
    out = system.answer("What is SIP?", max_new_tokens=4)
    assert out["sources"] == [] and out["cited"] == []
    assert out["answer"] == system.local.generate("What is SIP?", 4)  # asked as the eval asks the model
    from sdk.systems.opening import MODEL_OPENER

    assert MODEL_OPENER == K.get_kind("finetune").opener
    plugin_model = K.Kind(name="plugin_model", block=object, role="model", backend="x")
    monkeypatch.setitem(K._KINDS, "plugin_model", plugin_model)  # a plugin's model kind naming no opener
    opened = open_system(Artifact("plugin_model.m", art.path, art.manifest))
    assert plugin_model.opener is None and opened.answer("What is SIP?", max_new_tokens=4) == out
    with pytest.raises(DslError, match="base_model.tiny is an architecture with no weights yet"):
        open_system(Artifact("base_model.tiny", tmp_path, {"outputs": {"model_source": "scratch"}}))


def test_a_recipe_that_does_not_load_is_served_from_the_workdir_beside_it(tmp_path: Path) -> None:
    from dsl.commands._applied import _beside, applied_version

    for name in ("desk", "other"):
        (tmp_path / ".dsl" / name).mkdir(parents=True)
        (tmp_path / ".dsl" / name / "state.json").write_text("{}")
    broken = tmp_path / "r.dsl"
    broken.write_text("# help desk\ndomain desk {\n  faq help {\n")
    assert _beside(broken, "1 error") == tmp_path / ".dsl" / "desk"  # the domain read from the broken text
    assert _beside(tmp_path / "other.dsl", "missing") == tmp_path / ".dsl" / "other"  # deleted: its stem
    with pytest.raises(DslError, match="--workdir") as e:
        _beside(tmp_path / "gone.dsl", "missing")
    assert "desk, other" in str(e.value)
    line = applied_version({"finished_at": 0.0, "fingerprint": "abcdef0123456789"})
    assert line == "the recipe version served: as applied at 1970-01-01 00:00:00 UTC (fingerprint abcdef012345)"


def test_streamed_chunks_carry_the_target_on_every_chunk_and_sources_once() -> None:
    from sdk.serving.chunks import DONE, ChatChunks, completion_chunks

    out = {"target": "rag.docs", "fallback": False, "text": "a b", "sources": [{"index": 1}],
           "routing": {"target": "domain", "probability": 0.91234567}}
    events = ChatChunks("id1", 5, "auto", out).whole(out["text"])
    assert events[-1] == DONE
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "a", " b", None]
    assert all(c["dsl_target"] == "rag.docs" and c["model"] == "auto" for c in chunks)
    assert "sources" in chunks[0] and chunks[0]["dsl_routing"]["probability"] == 0.9123
    assert not any("sources" in c for c in chunks[1:]) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    two = completion_chunks("id2", 5, "m", [{"target": "m", "fallback": False, "text": "x"},
                                            {"target": "m", "fallback": True, "text": "y"}])
    parsed = [json.loads(e.removeprefix("data: ")) for e in two[:-1]]
    assert [(p["choices"][0]["index"], p["choices"][0]["text"]) for p in parsed] == [(0, "x"), (0, ""), (1, "y"), (1, "")]
    # a prompt's text chunk says its own answer's fallback; the others the last answer's (as before the split)
    assert [p["dsl_fallback"] for p in parsed] == [False, True, True, True]


@pytest.mark.slow
def test_dsl_serve_answers_from_a_rag_system_whose_recipe_was_deleted(tmp_path: Path) -> None:
    """The rag system is opened from the workdir alone: its index, prompt and generator as applied."""
    import os
    import subprocess
    import sys

    from openai import OpenAI

    import sdk
    from dsl.parser import load
    from tests._tiny import tiny_model_dir
    from tests.conftest import ROOT, run_dsl
    from tests.test_serve import free_port, wait_http

    tiny_model_dir(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sip.txt").write_text("An INVITE request starts a SIP call. BYE ends it.")
    port = free_port()
    recipe = tmp_path / "r.dsl"
    recipe.write_text(f'''domain gone {{
  base_model tiny {{ path = "tiny-model" }}
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag docs {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = base_model.tiny }}
  serve {{ port = {port}  max_tokens = 4 }}
}}
''')
    result = sdk.apply(load(recipe))
    assert result.ok, [o.error for o in result.failed]
    asked = run_dsl("ask", str(recipe), "Which request starts a SIP call?", "--system", "base_model.tiny", "--json")
    assert asked.returncode == 0, asked.stderr  # a model is asked through its kind's opener: no sources
    assert json.loads(asked.stdout)["system"] == "base_model.tiny" and json.loads(asked.stdout)["sources"] == []
    recipe.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "serve", str(recipe)], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=60, max_retries=0)
        assert "rag.docs" in {m.id for m in client.models.list().data}
        raw = client.chat.completions.with_raw_response.create(
            model="rag.docs", messages=[{"role": "user", "content": "Which request starts a SIP call?"}], max_tokens=4)
        body = json.loads(raw.text)
        assert raw.headers["x-dsl-target"] == "rag.docs" and isinstance(raw.parse().choices[0].message.content, str)
        assert body["sources"][0]["source"] == "docs/sip.txt" and "INVITE" in body["sources"][0]["content"]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "cannot be loaded" in out and "the recipe version served: as applied at" in out and "Traceback" not in out


def test_the_gateway_runs_a_model_from_its_manifest_and_refuses_one_edited_since_the_serve_step(tmp_path: Path) -> None:
    """A served model's weights and tokenizer come from its applied manifest, as the serve step recorded it among its
    inputs; an edited manifest is refused naming the artifact, even when the state was made to agree with it."""
    import hashlib

    import sdk
    from dsl.parser import load
    from sdk.backends.serve.serve import load_config
    from sdk.serving.gateway import Gateway
    from sdk.systems import served_artifacts
    from sdk.workspace import open_workspace
    from tests._tiny import tiny_model_dir
    from tests.conftest import run_dsl
    from tests.test_serve import free_port

    model = tiny_model_dir(tmp_path)
    recipe = tmp_path / "r.dsl"
    recipe.write_text(f'domain g {{\n  base_model tiny {{ path = "tiny-model" }}\n'
                      f'  serve {{ port = {free_port()} }}\n}}\n')
    result = sdk.apply(load(recipe))
    assert result.ok, [o.error for o in result.failed]
    ws = open_workspace(recipe)
    serve = ws.artifact("serve.default")
    config = load_config(serve)
    served = served_artifacts(serve, config["variants"])
    assert list(served) == ["base_model.tiny"] and served["base_model.tiny"].path == ws.artifact("base_model.tiny").path
    config["variants"]["base_model.tiny"]["model"] = str(tmp_path / "not-this-one")  # what runs is the manifest's
    gateway = Gateway(config, None, served, preload=False)
    assert gateway.model_handle("base_model.tiny").model == str(model.resolve())
    out = gateway.complete("base_model.tiny", [{"role": "user", "content": "What is SIP?"}], 2)
    assert isinstance(out["text"], str) and out["completion_tokens"] <= 2  # in the batched engine
    assert Gateway(config, preload=False).model_handle("base_model.tiny").model.endswith("not-this-one")  # no artifact

    manifest = served["base_model.tiny"].path / "manifest.json"
    data = json.loads(manifest.read_text())
    data["outputs"]["model"] = str(tmp_path / "elsewhere")  # other weights, same shape
    manifest.write_text(json.dumps(data, indent=2, sort_keys=True))
    with pytest.raises(DslError, match=r"base_model.tiny used by serve.default is damaged \(manifest.json content "
                                       r"differs.*\): .*base_model.tiny"):
        served_artifacts(serve, config["variants"])
    state = tmp_path / ".dsl" / "g" / "state.json"  # the state made to agree: only the serve step's record can tell
    entries = json.loads(state.read_text())
    entries["steps"]["base_model.tiny"]["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    state.write_text(json.dumps(entries))
    r = run_dsl("serve", str(recipe))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "base_model.tiny used by serve.default is damaged (manifest.json content differs" in r.stderr, r.stderr
