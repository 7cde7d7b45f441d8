"""Preference tuning (``align``): a tiny model fine-tuned and then DPO-tuned through the real ``dsl apply`` (real TRL
DPOTrainer, reference = adapter disabled), the result evaluated as a model; bad preference rows as located
FILE:LINE errors; a bad attribute of align located by ``dsl validate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sdk
from dsl.parser import load
from sdk.backends.data.preferences import pair_summary, read_pairs
from sdk.planner import PlanProblems
from sdk.state import StateStore
from tests._data import assert_data_errors
from tests._tiny import make_tiny_model
from tests.conftest import run_dsl

ANSWERS = [("What starts a SIP call?", "The INVITE request.", "The BYE request."),
           ("What ends a SIP call?", "The BYE request.", "The INVITE request."),
           ("Which protocol carries media?", "RTP carries the media.", "Diameter carries the media."),
           ("What describes the media?", "SDP offers and answers.", "The HSS describes it.")]


def _pairs(n: int) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"{q} ({i})"}], "chosen": good, "rejected": bad}
            for i in range(n) for q, good, bad in [ANSWERS[i % len(ANSWERS)]]]


def _write(path: Path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def _recipe(tmp: Path, align: str, evals: str = "") -> Path:
    if not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    _write(tmp / "sft.jsonl", [{"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": good}]} for q, good, _ in ANSWERS * 2])
    if not (tmp / "prefs.jsonl").exists():
        _write(tmp / "prefs.jsonl", _pairs(8))
    path = tmp / "r.dsl"
    path.write_text('domain t {\n  base_model local { path = "model" }\n  dataset qa { path = "sft.jsonl" }\n'
                    '  finetune sip { from = base_model.local  data = dataset.qa  max_steps = 2  batch_size = 2 }\n'
                    + align + evals + "}\n")
    return path


@pytest.mark.slow
def test_sft_then_dpo_through_dsl_apply_gives_a_model_that_evals_can_name(tmp_path: Path) -> None:
    from sdk.backends.models import handle
    from sdk.backends.models import load as load_model
    from sdk.workspace import open_workspace

    _write(tmp_path / "eval.jsonl", [{"id": f"e{i}", "question": q, "answer": good}
                                     for i, (q, good, _) in enumerate(ANSWERS)])
    path = _recipe(tmp_path, '''
  align pref { from = finetune.sip  pairs = "prefs.jsonl"  method = dpo  beta = 0.1  loss = sigmoid
               max_steps = 3  batch_size = 2  logging_steps = 1  learning_rate = 0.001  validation_split = 0.25 }
''', '''
  eval side { data = "eval.jsonl"  metrics = [exact_match, perplexity]  systems = [finetune.sip, align.pref]
              max_new_tokens = 4  bootstrap = 100 }
''')
    r = run_dsl("apply", str(path), timeout=900)
    steps = StateStore(tmp_path / ".dsl" / "t").load().steps
    assert steps["align.pref"]["status"] == "done", r.stderr
    assert steps["eval.side"]["status"] == "done", r.stderr
    m = steps["align.pref"]["metrics"]
    assert m["steps"] == 3 and m["train_pairs"] == 6 and m["eval_pairs"] == 2 and m["pairs"] == 8
    assert "rewards_margins" in m and "eval_rewards_accuracies" in m and m["identical_pairs"] == 0

    art = open_workspace(path).artifact("align.pref")
    # LoRA over a LoRA fine-tune: the merged SFT model is the new adapter's base, kept in the artifact
    assert art.outputs["adapter"] == "adapter" and art.outputs["base"] == "base" and art.outputs["method"] == "dpo"
    assert (art.path / "loss.png").is_file() and "prefs.jsonl" in (art.path / "adapter" / "README.md").read_text()
    assert [m["step"] for m in json.loads((art.path / "margins.json").read_text())] == [1, 2, 3]
    assert art.outputs["margins_plot"] == "margins.png" and (art.path / "margins.png").stat().st_size > 1000
    h = handle(art)
    assert h.model == str((art.path / "base").resolve())
    model, tok = load_model(h)
    prompt = tok.apply_chat_template([{"role": "user", "content": ANSWERS[0][0]}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    assert model.generate(**prompt, max_new_tokens=2, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 2

    e = steps["eval.side"]["metrics"]
    assert e["align.pref"]["perplexity"]["n"] == len(ANSWERS)
    # DPO moved the model: the two systems score the references differently
    assert e["align.pref"]["perplexity"]["value"] != pytest.approx(e["finetune.sip"]["perplexity"]["value"])


@pytest.mark.slow
def test_a_bad_preference_row_is_a_located_error_before_any_model_loads(tmp_path: Path) -> None:
    rows: list = _pairs(4)
    rows[2] = {"prompt": "Q?", "chosen": "A."}  # line 3: no rejected
    _write(tmp_path / "prefs.jsonl", rows)
    path = _recipe(tmp_path, '  align pref { from = base_model.local  pairs = "prefs.jsonl"  max_steps = 1 }\n')
    with pytest.raises(PlanProblems) as e:  # the plan reads the pairs: nothing runs, no model loads
        sdk.apply(load(path))
    error = str(e.value)
    assert "prefs.jsonl:3:" in error and "missing 'rejected'" in error and "Traceback" not in error
    assert not list(tmp_path.rglob("manifest.json"))  # no step ran


@pytest.mark.slow
def test_full_tuning_with_ipo_writes_a_full_model(tmp_path: Path) -> None:
    from sdk.backends.models import handle
    from sdk.workspace import open_workspace

    path = _recipe(tmp_path, '  align full { from = base_model.local  pairs = "prefs.jsonl"  tune = full  loss = ipo\n'
                             '               max_steps = 1  batch_size = 2 }\n')
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    art = open_workspace(path).artifact("align.full")
    assert art.outputs["model"] == "model" and "adapter" not in art.outputs and art.metrics["steps"] == 1
    assert handle(art).model == str((art.path / "model").resolve()) and (art.path / "model" / "config.json").is_file()


def test_preference_rows_are_normalised_and_bad_ones_located(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    _write(f, [{"q": "Hi?", "good": "Yes.", "bad": [{"role": "assistant", "content": "No."}]}])
    rows = read_pairs(f, "p.jsonl", {"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert rows == [{"prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Yes."}],
                     "rejected": [{"role": "assistant", "content": "No."}], "_line": 1}]
    cases = {
        '{"prompt": "a", "chosen": "b", "rejected": 3}': "p.jsonl:1: 'rejected' must be text or a non-empty list",
        '{"prompt": "a", "chosen": "", "rejected": "c"}': "p.jsonl:1: 'chosen' is empty",
        '{"prompt": [{"role": "robot", "content": "x"}], "chosen": "b", "rejected": "c"}': "has role 'robot'",
        '{"prompt": "a", "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}': "must end with an assistant",
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": [{"role": "user", "content": "a"}], '
        '"chosen": "b", "rejected": "c"}': "p.jsonl:2: this row is chat but line 1 is text",
        '{"prompt": "a", "chosen": "b"': "p.jsonl:1: malformed JSON",
    }
    assert_data_errors(f, cases, lambda path: read_pairs(path, "p.jsonl"))
    summary = pair_summary([{"prompt": "p", "chosen": "same", "rejected": "same", "_line": 4},
                            {"prompt": "p", "chosen": "a longer one", "rejected": "short", "_line": 5}])
    assert summary["identical_pairs"] == 1 and summary["identical_lines"] == [4] and summary["chosen_longer_share"] == 0.5


def test_dsl_validate_locates_a_bad_attribute_of_align(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    _write(tmp_path / "prefs.jsonl", _pairs(2))
    (tmp_path / "r.dsl").write_text('domain t {\n  base_model local { path = "model" }\n'
                                    '  align pref {\n    from = base_model.local\n    pairs = "prefs.jsonl"\n'
                                    '    loss = dpo_plus\n  }\n}\n')
    r = run_dsl("validate", str(tmp_path / "r.dsl"))
    assert r.returncode != 0
    assert "r.dsl:6:12" in r.stderr + r.stdout and "sigmoid" in r.stderr + r.stdout
    # a pairs file outside the recipe's folder is refused at validate time, at the attribute
    (tmp_path / "r.dsl").write_text('domain t {\n  base_model local { path = "model" }\n'
                                    '  align pref { from = base_model.local  pairs = "../elsewhere.jsonl" }\n}\n')
    r = run_dsl("validate", str(tmp_path / "r.dsl"))
    assert r.returncode != 0 and "r.dsl:3:" in r.stderr + r.stdout and "outside" in r.stderr + r.stdout
