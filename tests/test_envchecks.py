"""Plan-time environment checks (sdk/envchecks.py, Backend.environment): each one fails through the real
``dsl plan`` / ``dsl doctor`` with a located error, ``--skip-checks`` turns failures into warnings, and only the
steps that will run are checked by plan."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests._specs import write_small
from tests.conftest import run_dsl

OFFLINE = {"HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}


def _recipe(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("SIP is the session initiation protocol.\n")
    path = folder / "r.dsl"
    path.write_text("domain t {\n" + body + "\n}\n")
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _fake_hub_cache(cache: Path, repo: str) -> None:
    """The layout huggingface_hub's cache uses: refs/main -> a commit, snapshots/<commit>/config.json."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "snapshots" / commit / "config.json").write_text("{}")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_hub_model_not_in_the_offline_cache_is_located_and_a_cached_one_passes(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { id = "acme/tiny-model" }')
    env = {**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "cache")}
    proc = run_dsl("plan", str(path), env=env)
    assert proc.returncode == 1
    assert f"r.dsl:{_line_of(path, 'acme/tiny-model')}:" in proc.stderr
    assert "hub model 'acme/tiny-model' is not in the local cache" in proc.stderr and "Traceback" not in proc.stderr
    _fake_hub_cache(tmp_path / "cache", "acme/tiny-model")
    proc = run_dsl("plan", str(path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "+ base_model.m" in proc.stdout


def test_only_steps_that_will_run_are_checked_by_plan_and_doctor_checks_all(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { id = "acme/tiny-model" }')
    cache = tmp_path / "cache"
    env = {**OFFLINE, "HF_HUB_CACHE": str(cache)}
    _fake_hub_cache(cache, "acme/tiny-model")
    assert run_dsl("apply", str(path), env=env).returncode == 0
    (cache / "models--acme--tiny-model" / "refs" / "main").unlink()  # the model left the cache
    proc = run_dsl("plan", str(path), env=env)
    assert proc.returncode == 0 and "= base_model.m" in proc.stdout, proc.stderr  # up to date: not checked
    doc = run_dsl("doctor", str(path), env=env)
    assert doc.returncode == 1 and "FAIL hub model acme/tiny-model in the local cache" in doc.stdout
    assert "not in the local cache" in doc.stderr
    proc = run_dsl("plan", str(path), "--replace", "base_model.m", env=env)
    assert proc.returncode == 1 and "not in the local cache" in proc.stderr


def test_local_model_folder_without_config_json(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { path = "weights" }')
    (tmp_path / "r" / "weights").mkdir()
    proc = run_dsl("doctor", str(path), env=OFFLINE)
    assert proc.returncode == 1 and "FAIL model folder weights holds config.json" in proc.stdout
    assert f"r.dsl:{_line_of(path, 'weights')}:" in proc.stderr and "has no config.json" in proc.stderr
    (tmp_path / "r" / "weights" / "config.json").write_text("{}")
    proc = run_dsl("doctor", str(path), env=OFFLINE)
    assert proc.returncode == 0 and "ok   model folder weights holds config.json" in proc.stdout


def test_rag_reranker_folder_and_hub_embedder(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  corpus c { paths = ["a.txt"] }\n'
                                   '  rag docs {\n    corpus = corpus.c\n    embedder = "acme/embedder"\n'
                                   '    reranker = "./rerank"\n  }')
    proc = run_dsl("plan", str(path), env={**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1
    assert f"r.dsl:{_line_of(path, 'acme/embedder')}:" in proc.stderr
    assert "hub embedder 'acme/embedder' is not in the local cache" in proc.stderr
    assert f"r.dsl:{_line_of(path, './rerank')}:" in proc.stderr
    assert "reranker folder './rerank' does not exist" in proc.stderr


def test_unset_env_vars_the_steps_read_are_located(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  corpus c { paths = ["a.txt"] }\n'
                                   '  rag docs {\n    corpus = corpus.c\n    generator = endpoint {\n'
                                   '      url = "http://127.0.0.1:9/v1"\n      model = "m"\n'
                                   '      api_key = env("ENVCHECK_UNSET_KEY")\n    }\n  }')
    env = {**OFFLINE}
    os.environ.pop("ENVCHECK_UNSET_KEY", None)
    proc = run_dsl("plan", str(path), env=env)
    assert proc.returncode == 1
    assert f"r.dsl:{_line_of(path, 'ENVCHECK_UNSET_KEY')}:" in proc.stderr
    assert "environment variable ENVCHECK_UNSET_KEY is not set" in proc.stderr
    proc = run_dsl("plan", str(path), env={**env, "ENVCHECK_UNSET_KEY": "sk-marker-123"})
    assert proc.returncode == 0, proc.stderr
    assert "sk-marker-123" not in proc.stdout + proc.stderr


def test_pgvector_server_that_does_not_answer_never_shows_the_connection(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  corpus c { paths = ["a.txt"] }\n'
                                   '  rag docs {\n    corpus = corpus.c\n    retriever = bm25\n'
                                   '    store = pgvector { connection = env("ENVCHECK_PG") }\n  }')
    conn = f"postgresql://user:pw-marker-987@127.0.0.1:{_closed_port()}/db"
    proc = run_dsl("plan", str(path), env={**OFFLINE, "ENVCHECK_PG": conn})
    if "needs haystack_integrations.document_stores.pgvector" in proc.stderr:
        pytest.skip("pgvector-haystack is not installed")
    assert proc.returncode == 1
    assert f"r.dsl:{_line_of(path, 'ENVCHECK_PG')}:" in proc.stderr
    assert 'no PostgreSQL server answers at the connection in env("ENVCHECK_PG")' in proc.stderr
    assert "pw-marker-987" not in proc.stderr + proc.stdout and "127.0.0.1" not in proc.stderr


@pytest.mark.skipif(_cuda(), reason="CUDA is present here")
def test_sglang_needs_cuda_and_the_package(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { path = "weights" }\n  serve { engine = sglang }')
    (tmp_path / "r" / "weights").mkdir()
    (tmp_path / "r" / "weights" / "config.json").write_text("{}")
    proc = run_dsl("plan", str(path), env=OFFLINE)
    assert proc.returncode == 1
    where = f"r.dsl:{_line_of(path, 'sglang')}:"
    assert f"{where}" in proc.stderr and "engine = sglang needs a CUDA GPU, and none is visible here" in proc.stderr
    from sdk.envchecks import importable

    if not importable("sglang"):
        assert "engine = sglang needs sglang, which is not installed" in proc.stderr


@pytest.mark.skipif(_cuda(), reason="CUDA is present here")
def test_fsdp_on_gpu_needs_cuda_but_on_cpu_does_not(tmp_path: Path) -> None:
    from tests._specs import SMALL

    body = SMALL.replace("  serve {", "  compute {\n    launcher = accelerate\n    num_processes = 2\n"
                                     "    fsdp = { sharding = full_shard }\n  }\n\n  serve {", 1)
    path = write_small(tmp_path, body)
    proc = run_dsl("plan", str(path), env=OFFLINE)
    assert proc.returncode == 1
    assert f"recipe.dsl:{_line_of(path, 'fsdp =')}:" in proc.stderr
    assert "fsdp on GPU needs a CUDA GPU" in proc.stderr and "set cpu = true" in proc.stderr
    path.write_text(body.replace("    num_processes = 2\n", "    num_processes = 2\n    cpu = true\n"))
    proc = run_dsl("plan", str(path), env=OFFLINE)
    assert proc.returncode == 0, proc.stderr


def test_skip_checks_turns_failures_into_located_warnings(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { id = "acme/absent" }')
    env = {**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "cache")}
    proc = run_dsl("plan", str(path), "--skip-checks", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"r.dsl:{_line_of(path, 'acme/absent')}:" in proc.stderr and "warning: hub model 'acme/absent'" in proc.stderr
    assert "+ base_model.m" in proc.stdout


def test_doctor_json_lists_every_check_with_locations(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "r", '  base_model m { id = "acme/absent" }\n  corpus c { paths = ["a.txt"] }')
    proc = run_dsl("doctor", str(path), "--json", env={**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    steps = {s["step"]: s for s in out["steps"]}
    assert set(steps) == {"base_model.m", "corpus.c"}
    assert steps["corpus.c"]["checks"] == [{"check": "packages importable: haystack", "ok": True}]
    [diag] = steps["base_model.m"]["diagnostics"]
    assert diag["line"] == _line_of(path, "acme/absent") and diag["severity"] == "error"


def test_a_missing_package_is_named_with_its_install_hint() -> None:
    from sdk.backends.base import Backend, CheckContext
    from sdk.builder import Domain

    class Needy(Backend):
        name = "needy"
        requires = ("json", "no_such_module_envcheck")
        install_hint = "pip install needy"

    spec = Domain("t").base_model("m", path=".").build()
    ctx = CheckContext(spec, "base_model", "m", spec.base_model["m"])
    [problem] = Needy().environment(ctx)
    assert problem.message == "backend 'needy' needs no_such_module_envcheck, which is not installed"
    assert problem.hint == "install with: pip install needy" and problem.path == ("base_model", "m")
    assert ctx.checked == [{"check": "packages importable: json, no_such_module_envcheck", "ok": False}]


def test_apply_next_hints_keep_the_workdir(tmp_path: Path) -> None:
    path = write_small(tmp_path / "r")
    wd = tmp_path / "elsewhere"
    proc = run_dsl("apply", str(path), "--backend", "test", "--workdir", str(wd), "--no-progress", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    assert f"dsl report {path} --workdir {wd}" in proc.stdout
    assert f"dsl ask {path} --workdir {wd}" in proc.stdout
    status = run_dsl("status", str(path), "--workdir", str(wd), env=OFFLINE)  # the workdir the hints name
    assert status.returncode == 0 and "eval.expert" in status.stdout, status.stderr


def test_no_progress_switches_library_bars_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    from dsl.cli import _quiet_progress_bars

    enable_progress_bars()
    assert not are_progress_bars_disabled()
    try:
        _quiet_progress_bars()  # env switches for what imports later; huggingface_hub is imported: told directly
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "1"
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert are_progress_bars_disabled()
    finally:
        monkeypatch.undo()
        enable_progress_bars()
