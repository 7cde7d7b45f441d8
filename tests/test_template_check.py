"""A chat template that teaches no end of turn is a plan-time error (dsl plan, dsl apply) at the attribute that names it (or the `from`
whose model carries it), with a hint: a model trained with it would never stop generating."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_dsl

RECIPE = '''domain d {
  base_model m {
    path = "model"
  }
  dataset qa {
    path = "qa.jsonl"
  }
  finetune sip {
    from = base_model.m
    data = dataset.qa
TEMPLATE  }
}
'''


def _folder(tmp_path: Path, saved_template: str) -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "chat_template.jinja").write_text(saved_template)
    (tmp_path / "qa.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}) + "\n")
    return tmp_path / "r.dsl"


def test_a_template_with_no_end_of_turn_is_refused_where_it_is_named(tmp_path: Path) -> None:
    path = _folder(tmp_path, "{% for m in messages %}{{ m['content'] + '<|end|>' }}{% endfor %}")
    path.write_text(RECIPE.replace("TEMPLATE", '''    chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"\n'''))
    r = run_dsl("plan", str(path))
    assert r.returncode == 1 and "r.dsl:11:21" in r.stderr and "never" in r.stderr and "eos_token" in r.stderr, r.stderr


def test_the_base_models_saved_template_is_checked_through_from(tmp_path: Path) -> None:
    path = _folder(tmp_path, "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    path.write_text(RECIPE.replace("TEMPLATE", ""))
    r = run_dsl("plan", str(path))
    assert r.returncode == 1 and "r.dsl:9:12" in r.stderr and "will not stop generating" in r.stderr, r.stderr
    (tmp_path / "model" / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['content'] + '<|end|>' + eos_token }}{% endfor %}")
    assert run_dsl("plan", str(path)).returncode == 0
