"""``dsl prefs check``: the figures of a preference file (rows, shape, identical pairs, duplicate prompts, length
bias, label balance) as text and as JSON; bad rows and one-label unpaired files exit 1 with a located message."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_dsl


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _pairs() -> list[dict]:
    """12 text pairs: the chosen answer longer in 11, line 5 identical, lines 7 and 9 repeat line 1's prompt."""
    rows = [{"prompt": f"Question {i}?", "chosen": f"A long and careful answer {i}.", "rejected": f"No {i}."}
            for i in range(12)]
    rows[4]["rejected"] = rows[4]["chosen"]
    rows[6]["prompt"] = rows[8]["prompt"] = rows[0]["prompt"]
    return rows


def test_paired_figures_as_text_and_json(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.jsonl", _pairs())
    r = run_dsl("prefs", "check", str(f))
    assert r.returncode == 0, r.stderr
    assert f"{f}: 12 rows, paired, text" in r.stdout
    assert f"identical pairs (chosen == rejected): 1: {f}:5" in r.stdout
    assert f"duplicate prompts (rows whose prompt an earlier row has): 2: {f}:7 (as line 1), {f}:9 (as line 1)" \
        in r.stdout
    assert "chosen is the longer answer in 92% of the pairs" in r.stdout
    assert "warning: the chosen answer is the longer one in 92%" in r.stderr and "length bias" in r.stderr
    assert "Traceback" not in r.stderr

    r = run_dsl("prefs", "check", str(f), "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["rows"] == data["pairs"] == 12
    assert (data["shape"], data["format"]) == ("paired", "text")
    assert data["identical_pairs"] == 1 and data["identical_lines"] == [5]
    assert data["duplicate_prompts"] == 2 and data["duplicate_lines"] == [[7, 1], [9, 1]]
    assert data["chosen_longer_share"] == 0.917 and data["mean_chosen_chars"] > data["mean_rejected_chars"]
    assert len(data["warnings"]) == 2 and data["errors"] == []


def test_unpaired_chat_rows_with_a_field_mapping_report_the_label_balance(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Hi?"}]
    other = [{"role": "user", "content": "Other?"}]
    f = _write(tmp_path / "u.jsonl", [{"q": chat, "a": "Yes.", "ok": True}, {"q": chat, "a": "No.", "ok": False},
                                      {"q": chat, "a": "Yes.", "ok": False}, {"q": other, "a": "Sure.", "ok": True},
                                      {"q": other + other, "a": "Fine.", "ok": True}])
    r = run_dsl("prefs", "check", str(f), "--fields", "prompt=q,completion=a", "--fields", "label=ok")
    assert r.returncode == 0, r.stderr
    assert f"{f}: 5 rows, unpaired, chat" in r.stdout
    assert "labels: 3 desirable, 2 undesirable (60% desirable)" in r.stdout
    assert f"contradicting labels (same prompt and answer): 1: {f}:3 (as line 1)" in r.stdout
    r = run_dsl("prefs", "check", str(f), "--fields", "prompt=q,completion=a,label=ok", "--json")
    data = json.loads(r.stdout)
    assert (data["shape"], data["format"], data["desirable"], data["undesirable"]) == ("unpaired", "chat", 3, 2)
    assert data["desirable_share"] == 0.6 and data["conflicting_lines"] == [[3, 1]] and data["duplicate_prompts"] == 2


def test_data_errors_exit_1_with_a_located_message(tmp_path: Path) -> None:
    one_label = _write(tmp_path / "one.jsonl", [{"prompt": "a", "completion": "b", "label": True}] * 3)
    r = run_dsl("prefs", "check", str(one_label))
    assert r.returncode == 1 and f"{one_label}: error: all 3 examples are desirable (label true)" in r.stderr
    assert json.loads(run_dsl("prefs", "check", str(one_label), "--json").stdout)["errors"]

    bad_label = _write(tmp_path / "lab.jsonl", [{"prompt": "a", "completion": "b", "label": True},
                                                {"prompt": "a", "completion": "c", "label": "no"}])
    r = run_dsl("prefs", "check", str(bad_label), "--json")
    assert r.returncode == 1 and f"{bad_label}:2" in r.stderr and "'label' must be true" in r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr

    bad_pair = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, "{oops"])
    r = run_dsl("prefs", "check", str(bad_pair))
    assert r.returncode == 1 and f"{bad_pair}:2" in r.stderr and "malformed JSON" in r.stderr
    assert "Traceback" not in r.stderr

    r = run_dsl("prefs", "check", str(bad_pair), "--fields", "answer=x")
    assert r.returncode == 1 and "'answer' is not a preference field" in r.stderr
    r = run_dsl("prefs", "check", str(tmp_path / "none.jsonl"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_file_method_and_fields_from_a_recipe_step(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    _write(tmp_path / "fb.jsonl", [{"question": f"Q{i}?", "answer": "A.", "good": i < 6} for i in range(8)])
    _write(tmp_path / "prefs.jsonl", _pairs())
    (tmp_path / "r.dsl").write_text(
        'domain t {\n  base_model local { path = "model" }\n'
        '  align dpo { from = base_model.local  pairs = "prefs.jsonl" }\n'
        '  align kto { from = base_model.local  pairs = "fb.jsonl"  method = kto  desirable_weight = 2.0\n'
        '              fields = { prompt = "question"  completion = "answer"  label = "good" } }\n}\n')
    r = run_dsl("prefs", "check", "--recipe", str(tmp_path / "r.dsl"), "--step", "align.kto", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert data["method"] == "kto" and (data["desirable"], data["undesirable"]) == (6, 2)
    # 6 x 2.0 against 2 x 1.0 is far outside the KTO paper's 1 .. 4/3: the step's weights get a suggestion
    assert any("desirable_weight = 0.33 .. 0.44" in w for w in data["warnings"]), data["warnings"]
    r = run_dsl("prefs", "check", "--recipe", str(tmp_path / "r.dsl"))
    assert r.returncode == 1 and "choose an align step with --step align.NAME (have: align.dpo, align.kto)" in r.stderr
    r = run_dsl("prefs", "check", "--recipe", str(tmp_path / "r.dsl"), "--step", "dpo", "--fields", "prompt=q")
    assert r.returncode == 1 and "--fields comes from the recipe's align step" in r.stderr


def test_dsl_plan_refuses_the_rows_prefs_check_refuses(tmp_path: Path) -> None:
    """A KTO label written "true" fails `dsl prefs check` and, with the same message, `dsl plan` (before any
    training), located at the align block's pairs."""
    f = _write(tmp_path / "k.jsonl", [{"prompt": "q", "completion": "a", "label": True},
                                      {"prompt": "r", "completion": "b", "label": "true"}])
    r = run_dsl("prefs", "check", str(f))
    message = "'label' must be true (a desirable answer) or false (an undesirable one), not \"true\""
    assert r.returncode == 1 and f"k.jsonl:2:1: error: {message}" in r.stderr, r.stderr
    (tmp_path / "notes.txt").write_text("x\n")
    (tmp_path / "r.dsl").write_text('domain t {\n  base_model b { architecture = llama { layers = 2, hidden = 64, '
                                    'heads = 4 } }\n  corpus c { paths = ["notes.txt"] }\n  pretrain p { from = '
                                    'base_model.b  corpus = corpus.c }\n  align a { from = pretrain.p  pairs = '
                                    '"k.jsonl"  method = kto }\n}\n')
    r = run_dsl("plan", "--backend", "test", "--workdir", str(tmp_path / "wd"), "r.dsl", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"r.dsl:5:40: error: k.jsonl:2: {message}"), r.stderr
