"""No error ever shows a secret: a marker written as the value of every secret attribute (api_key, connection,
password), or held by an env() variable, goes through every parser and IR error path the real `dsl validate` and
`dsl plan` reach, and never appears in their output (source lines quoted under an error are masked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsl.redact import mask, secret_names
from tests._specs import SMALL, write_small
from tests.conftest import run_dsl

MARKER = "MARKERsk-live-7f3a9c"

CASES = {
    # IR errors around a literal secret in each secret attribute
    "endpoint_union": 'rag r2 { corpus = corpus.docs  generator = endpoint { url = "http://h/v1", modle = "m", '
                      'api_key = "MARKER" } }',
    "eval_systems": 'eval e2 { data = "eval.jsonl"  systems = [endpoint { url = "http://h/v1", model = 3, '
                     'api_key = "MARKER" }] }',
    "pgvector": 'rag r3 { corpus = corpus.docs  store = pgvector { connection = "postgresql://u:MARKER@h/db", '
                'table = "bad table!" } }',
    "password": 'eval e3 { data = "eval.jsonl"  systems = [rag.docs]  password = "MARKER"  limit = "3" }',
    "number_secret": 'rag r4 { corpus = corpus.docs  generator = endpoint { url = "u", model = "m", '
                     'api_key = MARKER } }',
    "ref_expected": 'rag r5 { corpus = corpus.docs  generator = { url = "u", api_key = "MARKER" } }',
    # syntax errors on the line of a secret
    "syntax_after": 'rag r6 { corpus = corpus.docs  generator = endpoint { api_key = "MARKER" ,, } }',
    "unterminated": 'rag r7 { corpus = corpus.docs  generator = endpoint { api_key = "MARKER }',
    "bare_value": 'rag r8 { corpus = corpus.docs  generator = endpoint { api_key = MARKER-x } }',
    "colon": 'rag r9 { corpus = corpus.docs  generator = endpoint { api_key: "MARKER" } }',
}


def recipe_with(tmp_path: Path, block: str) -> Path:
    text = SMALL.replace("  serve {", f"  {block.replace('MARKER', MARKER)}\n\n  serve {{")
    return write_small(tmp_path, text)


def test_secret_attributes_are_found_from_the_spec() -> None:
    assert {"api_key", "connection", "password"} <= secret_names()


def test_masking_keeps_columns() -> None:
    text = f'x {{ api_key = "{MARKER}"  url = "u" }}'
    masked, found = mask(text)
    assert len(masked) == len(text) and MARKER not in masked and found == [MARKER]
    assert masked.index('url') == text.index('url')
    assert mask('api_key = env("K")')[0] == 'api_key = env("K")'


@pytest.mark.parametrize("case", sorted(CASES))
def test_marker_never_printed_by_validate(tmp_path: Path, case: str) -> None:
    path = recipe_with(tmp_path, CASES[case])
    proc = run_dsl("validate", str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ": error: " in proc.stderr
    assert MARKER not in proc.stdout + proc.stderr
    assert "MARKER" not in proc.stdout + proc.stderr  # not even a part of it
    as_json = run_dsl("validate", "--json", str(path))
    assert as_json.returncode == 1 and "MARKER" not in as_json.stdout + as_json.stderr
    assert json.loads(as_json.stdout)["valid"] is False


def test_endpoint_union_reports_the_endpoint_member_only(tmp_path: Path) -> None:
    proc = run_dsl("validate", str(recipe_with(tmp_path, CASES["endpoint_union"])))
    assert "expected a reference" not in proc.stderr  # an object tagged endpoint is an endpoint
    assert "did you mean 'model'?" in proc.stderr and "secret must be written env" in proc.stderr


def test_env_values_never_printed_by_plan_or_validate(tmp_path: Path) -> None:
    block = 'rag r2 { corpus = corpus.docs  generator = endpoint { url = "http://127.0.0.1:9/v1", model = "m", ' \
            'api_key = env("THE_KEY") } }'
    good = recipe_with(tmp_path / "good", block)
    env = {"THE_KEY": MARKER}
    for args in (("validate", str(good)), ("plan", str(good)), ("plan", "--json", str(good))):
        proc = run_dsl(*args, env=env)
        assert "Traceback" not in proc.stderr and MARKER not in proc.stdout + proc.stderr, args
    bad = recipe_with(tmp_path / "bad", block.replace('model = "m"', "model = 7"))
    proc = run_dsl("plan", str(bad), env=env)
    assert proc.returncode == 1 and MARKER not in proc.stdout + proc.stderr
