"""ORPO and KTO as ``align`` methods: each trains a tiny model through the real ``dsl apply`` (real TRL trainers),
the artifact loads as a model and an eval names it; attributes that do not apply to a method are validation
errors naming it; unpaired (KTO) rows are read and refused at FILE:LINE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import sdk
from dsl.parser import load
from sdk.backends.data.preferences import label_problem, read_unpaired, unpaired_summary
from sdk.errors import DataError
from sdk.planner import PlanProblems
from sdk.spec.blocks.align import AlignBlock
from sdk.state import StateStore
from tests._data import assert_data_errors
from tests.conftest import run_dsl
from tests.test_align import ANSWERS, _pairs, _recipe, _write


def _unpaired(n: int, *, chat: bool = True) -> list[dict]:
    """Alternating desirable / undesirable answers to the ANSWERS questions."""
    rows = []
    for i in range(n):
        q, good, bad = ANSWERS[(i // 2) % len(ANSWERS)]
        prompt = [{"role": "user", "content": f"{q} ({i})"}] if chat else f"{q} ({i})"
        rows.append({"prompt": prompt, "completion": good if i % 2 == 0 else bad, "label": i % 2 == 0})
    return rows


@pytest.mark.slow
def test_simpo_orpo_and_kto_through_dsl_apply_give_models_that_evals_can_name(tmp_path: Path) -> None:
    from sdk.backends.models import handle
    from sdk.backends.models import load as load_model
    from sdk.workspace import open_workspace

    _write(tmp_path / "feedback.jsonl", _unpaired(8))
    _write(tmp_path / "eval.jsonl", [{"id": f"e{i}", "question": q, "answer": good}
                                     for i, (q, good, _) in enumerate(ANSWERS)])
    path = _recipe(tmp_path, '''
  align orpo { from = finetune.sip  pairs = "prefs.jsonl"  method = orpo  beta = 0.2
               max_steps = 2  batch_size = 2  logging_steps = 1  learning_rate = 0.001 }
  align simpo { from = finetune.sip  pairs = "prefs.jsonl"  method = simpo  beta = 2.0  gamma = 1.0
                max_steps = 2  batch_size = 2  logging_steps = 1  learning_rate = 0.001 }
  align kto { from = base_model.local  pairs = "feedback.jsonl"  method = kto  desirable_weight = 1.2
              max_steps = 2  batch_size = 4  logging_steps = 1  learning_rate = 0.001  validation_split = 0.25 }
''', '''
  eval side { data = "eval.jsonl"  metrics = [perplexity]  systems = [base_model.local, align.orpo, align.kto,
                                                                   align.simpo]
              max_new_tokens = 2  bootstrap = 100 }
''')
    r = run_dsl("apply", str(path), timeout=900)
    steps = StateStore(tmp_path / ".dsl" / "t").load().steps
    for step in ("align.orpo", "align.simpo", "align.kto", "eval.side"):
        assert steps[step]["status"] == "done", (step, r.stdout[-2000:], r.stderr[-4000:])
    assert "orpo (lora): 2 steps" in r.stdout + r.stderr and "kto (lora): 2 steps" in r.stdout + r.stderr
    assert "simpo (lora): 2 steps" in r.stdout + r.stderr
    simpo = steps["align.simpo"]["metrics"]
    assert simpo["steps"] == 2 and {"rewards_margins", "rewards_accuracies"} <= set(simpo)

    orpo = steps["align.orpo"]["metrics"]
    assert orpo["steps"] == 2 and orpo["train_pairs"] == 8 and orpo["pairs"] == 8
    assert {"rewards_margins", "rewards_accuracies", "nll_loss", "log_odds_ratio"} <= set(orpo)
    kto = steps["align.kto"]["metrics"]
    assert kto["steps"] == 2 and kto["train_examples"] == 6 and kto["eval_examples"] == 2
    assert kto["desirable"] == 4 and kto["undesirable"] == 4 and "kl" in kto and "eval_loss" in kto

    ws = open_workspace(path)
    for label, title in (("align.orpo", "ORPO"), ("align.simpo", "SimPO"), ("align.kto", "KTO")):
        art = ws.artifact(label)
        assert art.outputs["method"] == label.split(".")[1] and art.outputs["adapter"] == "adapter"
        assert (art.path / "loss.png").is_file() and json.loads((art.path / "loss.json").read_text())
        rewards = json.loads((art.path / "margins.json").read_text())
        assert [m["step"] for m in rewards] == [1, 2] and set(rewards[0]) == {"step", "margin", "chosen", "rejected"}
        card = (art.path / "adapter" / "README.md").read_text()
        assert "train_loss" in card and ("feedback.jsonl" if title == "KTO" else "prefs.jsonl") in card
        model, tok = load_model(handle(art))
        prompt = tok.apply_chat_template([{"role": "user", "content": ANSWERS[0][0]}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)
        assert model.generate(**prompt, max_new_tokens=2, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 2
    # ORPO over a LoRA fine-tune: the merged SFT model is the new adapter's base, kept in the artifact
    assert ws.artifact("align.orpo").outputs["base"] == "base"
    e = steps["eval.side"]["metrics"]
    assert e["align.kto"]["perplexity"]["n"] == e["align.orpo"]["perplexity"]["n"] == len(ANSWERS)
    assert e["align.kto"]["perplexity"]["value"] != pytest.approx(e["base_model.local"]["perplexity"]["value"])


@pytest.mark.slow
def test_kto_on_text_rows_with_a_field_mapping_trains_all_weights(tmp_path: Path) -> None:
    from sdk.backends.models import handle
    from sdk.workspace import open_workspace

    _write(tmp_path / "fb.jsonl", [{"q": r["prompt"], "a": r["completion"], "ok": r["label"]}
                                   for r in _unpaired(6, chat=False)])
    path = _recipe(tmp_path, '  align k { from = base_model.local  pairs = "fb.jsonl"  method = kto  tune = full\n'
                             '            fields = { prompt = "q"  completion = "a"  label = "ok" }\n'
                             '            max_steps = 1  batch_size = 2  precompute_ref = true }\n')
    result = sdk.apply(load(path), target=["align.k"])
    assert result.ok, [o.error for o in result.failed]
    art = open_workspace(path).artifact("align.k")
    assert art.outputs["model"] == "model" and art.metrics["shape"] == "text" and art.metrics["steps"] == 1
    assert handle(art).model == str((art.path / "model").resolve())


@pytest.mark.slow
def test_kto_data_problems_stop_the_step_before_any_model_loads(tmp_path: Path) -> None:
    rows: list = _unpaired(4)
    rows[2] = {"prompt": "Q?", "completion": "A.", "label": "yes"}  # line 3: a label that is not a bool
    _write(tmp_path / "fb.jsonl", rows)
    path = _recipe(tmp_path, '  align k { from = base_model.local  pairs = "fb.jsonl"  method = kto  max_steps = 1 }\n')
    with pytest.raises(PlanProblems) as e:  # the plan reads the rows: nothing runs, no model loads
        sdk.apply(load(path), target=["align.k"])
    error = str(e.value)
    assert "fb.jsonl:3:" in error and "'label' must be true" in error and "Traceback" not in error
    _write(tmp_path / "fb.jsonl", [r for r in _unpaired(6) if r["label"]])  # one label only
    with pytest.raises(PlanProblems) as e:
        sdk.apply(load(path), target=["align.k"])
    assert "all 3 examples are desirable" in str(e.value) and "Traceback" not in str(e.value)


def test_unpaired_rows_are_normalised_and_bad_ones_located(tmp_path: Path) -> None:
    f = tmp_path / "u.jsonl"
    _write(f, [{"q": [{"role": "user", "content": "Hi?"}], "a": "Yes.", "good": True},
               {"q": [{"role": "user", "content": "Hi?"}], "a": "Yes.", "good": False}])
    rows = read_unpaired(f, "u.jsonl", {"prompt": "q", "completion": "a", "label": "good"})
    assert rows[0] == {"prompt": [{"role": "user", "content": "Hi?"}], "label": True, "_line": 1,
                       "completion": [{"role": "assistant", "content": "Yes."}]}
    s = unpaired_summary(rows)
    assert (s["desirable"], s["undesirable"], s["shape"]) == (1, 1, "chat")
    assert s["conflicting_labels"] == 1 and s["conflicting_lines"] == [[2, 1]] and s["duplicate_lines"] == [[2, 1]]
    assert label_problem(s) is None
    assert "all 1 examples are undesirable" in label_problem(unpaired_summary(rows[1:]))  # type: ignore[operator]
    cases = {
        '{"prompt": "a", "completion": "b"}': "u.jsonl:1: missing 'label'",
        '{"prompt": "a", "completion": "b", "label": 1}': "u.jsonl:1: 'label' must be true (a desirable answer) or "
                                                          "false (an undesirable one), not 1",
        '{"prompt": "a", "completion": "b", "label": "true"}': "not \"true\"",
        '{"prompt": "a", "completion": 3, "label": true}': "u.jsonl:1: 'completion' must be text or a non-empty list",
        '{"prompt": "a", "completion": [{"role": "user", "content": "b"}], "label": true}': "must end with an assist",
        '{"prompt": "a", "completion": "b", "label": true}\n{"prompt": [{"role": "user", "content": "a"}], '
        '"completion": "b", "label": false}': "u.jsonl:2: this row is chat but line 1 is text",
        '{"prompt": "a", "chosen": "b", "rejected": "c"}': "u.jsonl:1: missing 'completion'",
    }
    assert_data_errors(f, cases, lambda path: read_unpaired(path, "u.jsonl"))
    f.write_text('{"question": "a", "completion": "b", "label": true}\n')
    with pytest.raises(DataError) as info:
        read_unpaired(f, "u.jsonl", {"prompt": "q"})
    assert "u.jsonl:1: missing 'q' (the prompt field)" in str(info.value)


@pytest.mark.parametrize(("attrs", "message"), [
    ({"method": "orpo", "loss": "ipo"}, "loss does not apply to method = orpo (only to dpo)"),
    ({"method": "kto", "label_smoothing": 0.1}, "label_smoothing does not apply to method = kto (only to dpo and "
                                                "simpo)"),
    ({"gamma": 1.0}, "gamma does not apply to method = dpo (only to simpo)"),
    ({"method": "simpo", "loss": "ipo"}, "loss does not apply to method = simpo (only to dpo)"),
    ({"method": "simpo", "precompute_ref": True}, "precompute_ref does not apply to method = simpo"),
    ({"method": "orpo", "precompute_ref": True}, "precompute_ref does not apply to method = orpo (only to dpo and"),
    ({"desirable_weight": 1.0}, "desirable_weight does not apply to method = dpo (only to kto)"),
    ({"method": "orpo", "undesirable_weight": 2.0}, "undesirable_weight does not apply to method = orpo"),
    ({"method": "kto", "batch_size": 1}, "method = kto needs batch_size >= 2"),
    ({"method": "kto", "fields": {"chosen": "good"}}, "fields chosen are not fields of method = kto"),
    ({"method": "orpo", "fields": {"label": "ok"}}, "fields label are not fields of method = orpo (it maps"),
    ({"method": "kto", "desirable_weight": 0.0}, "greater than 0"),
])
def test_attributes_that_do_not_apply_to_the_method_are_refused(attrs: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        AlignBlock.model_validate({"from": "base_model.x", "pairs": "p.jsonl", **attrs})
    assert message in str(info.value)


def test_each_method_accepts_its_own_attributes() -> None:
    base = {"from": "base_model.x", "pairs": "p.jsonl"}
    kto = AlignBlock.model_validate({**base, "method": "kto", "desirable_weight": 1.5, "undesirable_weight": 0.5,
                                     "precompute_ref": True, "fields": {"label": "ok"}})
    assert (kto.desirable_weight, kto.undesirable_weight) == (1.5, 0.5)
    assert AlignBlock.model_validate({**base, "method": "orpo", "beta": 0.5}).beta == 0.5
    simpo = AlignBlock.model_validate({**base, "method": "simpo", "beta": 2.0, "gamma": 1.0, "label_smoothing": 0.1})
    assert (simpo.beta, simpo.gamma, simpo.label_smoothing) == (2.0, 1.0, 0.1)
    assert AlignBlock.model_validate({**base, "loss": "ipo", "label_smoothing": 0.1}).loss == "ipo"


def test_dsl_validate_names_the_method_an_attribute_does_not_apply_to(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    _write(tmp_path / "prefs.jsonl", _pairs(2))
    (tmp_path / "r.dsl").write_text('domain t {\n  base_model local { path = "model" }\n'
                                    '  align pref {\n    from = base_model.local\n    pairs = "prefs.jsonl"\n'
                                    '    method = orpo\n    loss = ipo\n  }\n}\n')
    r = run_dsl("validate", str(tmp_path / "r.dsl"))
    out = r.stderr + r.stdout
    assert r.returncode == 1 and "r.dsl:7:5" in out and "loss does not apply to method = orpo" in out
    assert "Traceback" not in out
