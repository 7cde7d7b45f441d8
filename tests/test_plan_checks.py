"""Issue 23: nothing that can be known before running is found after training.

Plan reads what apply will read (sdk.datachecks: every data file of a step to run, read by the step's own reader,
for every backend, bounded to the first CHECK_BYTES of a large file); semantic mistakes decidable from the recipe
are located errors; numbers carry bounds (no inf or NaN, seeds and counts bounded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sdk
from dsl.parser import load_recipe
from sdk.errors import DataError, SpecError
from sdk.planner import PlanProblems, plan

ARCH = 'base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }\n  corpus c { paths = ["notes.txt"] }'


def _recipe(tmp: Path, body: str, files: dict[str, Any]) -> Path:
    (tmp / "notes.txt").write_text("INVITE starts a SIP session. BYE ends it.\n")
    for name, rows in files.items():
        if isinstance(rows, bytes):
            (tmp / name).write_bytes(rows)
            continue
        (tmp / name).write_text(rows if isinstance(rows, str) else
                                "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    path = tmp / "r.dsl"
    path.write_text("domain t {\n  " + ARCH + "\n  pretrain p { from = base_model.b  corpus = corpus.c }\n  " + body
                    + "\n}\n")
    return path


def _plan_errors(path: Path) -> list[str]:
    """The located plan errors (`r.dsl:L:C: error: MESSAGE`), or [] when the plan passes (test backend)."""
    recipe = load_recipe(path)
    try:
        plan(recipe.spec, None, backend="test")
    except PlanProblems as e:
        diags = recipe.diagnostics(e.problems)
        assert all(d.span is not None and d.span.line > 0 for d in diags), diags
        return [f"{d.span.line}: {d.message}" for d in diags]
    return []


PAIR = {"prompt": "What does INVITE do?", "chosen": "It starts a session.", "rejected": "It ends one."}
KTO = [{"prompt": "q1", "completion": "good", "label": True}, {"prompt": "q2", "completion": "bad", "label": False}]
ITEM = {"id": "1", "question": "What does BYE do?", "answer": "ends it"}
CHAT = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}

# (block, files, the error's message part): one case per data file a step reads
CASES = {
    "corpus_jsonl_row": ('corpus k { paths = ["k.jsonl"] }', {"k.jsonl": [{"text": "a"}, {"body": "b"}]},
                         "k.jsonl:2: row has no string field 'text'"),
    "corpus_text_not_utf8": ('corpus k { paths = ["k.txt"] }', {"k.txt": b"caf\xe9\n"}, "k.txt: not UTF-8 text"),
    "dataset_bad_json": ('dataset d { path = "d.jsonl" }', {"d.jsonl": [CHAT, '{"messages": ']},
                         "d.jsonl:2: malformed JSON"),
    "dataset_no_assistant": ('dataset d { path = "d.jsonl" }',
                             {"d.jsonl": [CHAT, {"messages": [{"role": "user", "content": "Hi?"}]}]},
                             "d.jsonl:2: the conversation has no non-empty assistant message"),
    "pairs_missing_rejected": ('align a { from = pretrain.p  pairs = "p.jsonl" }',
                               {"p.jsonl": [PAIR, {"prompt": "q", "chosen": "a"}]}, "p.jsonl:2: missing 'rejected'"),
    "kto_string_label": ('align a { from = pretrain.p  pairs = "k.jsonl"  method = kto }',
                         {"k.jsonl": [KTO[0], {**KTO[1], "label": "true"}]}, "k.jsonl:2: 'label' must be true"),
    "kto_one_label": ('align a { from = pretrain.p  pairs = "k.jsonl"  method = kto }',
                      {"k.jsonl": [KTO[0], {**KTO[0], "prompt": "q3"}]}, "k.jsonl: "),
    "pairs_empty": ('align a { from = pretrain.p  pairs = "p.jsonl" }', {"p.jsonl": "\n"},
                    "p.jsonl: no preference pairs"),
    "eval_duplicate_id": ('eval e { data = "e.jsonl"  systems = [pretrain.p] }', {"e.jsonl": [ITEM, ITEM]},
                          "e.jsonl:2: duplicate id '1' (also on line 1)"),
    "eval_no_answer": ('eval e { data = "e.jsonl"  systems = [pretrain.p] }',
                       {"e.jsonl": [ITEM, {"id": "2", "question": "q"}]}, "e.jsonl:2: row has neither"),
    "eval_tsv": ('eval e { data = "e.tsv"  systems = [pretrain.p] }', {"e.tsv": "id\tquestion\tanswer\n1\tq\ta\n2\t\tb\n"},
                 "e.tsv:3: row 2 has no question"),
    "eval_mc_without_choices": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  task = multiple_choice }',
                                {"e.jsonl": [ITEM]}, "e.jsonl:1: item 1 has no choices"),
    "eval_prompt": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  prompt = "{{ question }} {{ choises }}" }',
                    {"e.jsonl": [ITEM]}, "'choises' is undefined"),
    "route_bad_row": ('rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "x.jsonl"  domain = rag.r }',
                      {"x.jsonl": [{"text": "hi", "target": "domain"}, {"text": "hi"}]}, "x.jsonl:2: each row needs"),
    "reward_prompts": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { exact_match = 1.0 } }',
                       {"g.jsonl": [{"question": "q", "answer": "a"}, {"question": "q2"}]}, "g.jsonl:2: missing 'answer'"),
    "reward_citations": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { citation_recall = 1.0 } }',
                         {"g.jsonl": [{"question": "q", "answer": "a"}]}, "g.jsonl:1: reward citation_recall needs"),
    "rag_prompt": ('rag r { corpus = corpus.c  retriever = bm25  prompt = "{{ documents }} {{ question }} {{ qestion }}" '
                   '}', {}, "'qestion' is undefined"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_data_file_is_a_located_plan_error_for_every_backend(tmp_path: Path, case: str) -> None:
    body, files, expected = CASES[case]
    errors = _plan_errors(_recipe(tmp_path, body, files))
    assert len(errors) == 1 and expected in errors[0], errors


def test_good_files_plan_and_the_plan_error_is_what_the_step_would_raise(tmp_path: Path) -> None:
    from sdk.backends.data.preferences import read_preferences

    path = _recipe(tmp_path, 'align a { from = pretrain.p  pairs = "p.jsonl" }\n  '
                             'eval e { data = "e.jsonl"  systems = [pretrain.p, align.a] }',
                   {"p.jsonl": [PAIR, PAIR], "e.jsonl": [ITEM, {**ITEM, "id": "2"}]})
    assert _plan_errors(path) == []
    (tmp_path / "p.jsonl").write_text(json.dumps(PAIR) + '\n{"prompt": "q", "chosen": "a"}\n')
    [error] = _plan_errors(path)
    with pytest.raises(DataError) as e:  # the align step's own reader, as it runs
        read_preferences(tmp_path / "p.jsonl", "p.jsonl", "dpo")
    assert error.endswith(str(e.value))


def test_only_steps_that_will_run_are_read(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'eval e { data = "e.jsonl"  systems = [pretrain.p] }', {"e.jsonl": [ITEM, ITEM]})
    recipe = load_recipe(path)
    with pytest.raises(PlanProblems):
        plan(recipe.spec, None, backend="test")
    # a target that leaves the eval out does not read its file
    assert plan(recipe.spec, None, backend="test", target=["pretrain.p"]).steps


def test_a_large_file_is_checked_on_its_first_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk import datachecks

    good = json.dumps(PAIR)
    rows = [good] * 40
    path = _recipe(tmp_path, 'align a { from = pretrain.p  pairs = "p.jsonl" }', {"p.jsonl": [*rows, "{bad"]})
    monkeypatch.setattr(datachecks, "CHECK_BYTES", 20 * (len(good) + 1) + 5)  # 20 whole lines and a part
    assert _plan_errors(path) == []  # line 41 is past the bound: left to the step
    (tmp_path / "p.jsonl").write_text("\n".join(rows[:10] + ["{bad"] + rows[10:]) + "\n")
    [error] = _plan_errors(path)
    assert "p.jsonl:11: malformed JSON" in error  # the same line number as in the whole file
    monkeypatch.setattr(datachecks, "CHECK_BYTES", 64 * 2**20)
    (tmp_path / "p.jsonl").write_text("\n".join(rows + ["{bad"]) + "\n")
    assert "p.jsonl:41: malformed JSON" in _plan_errors(path)[0]


def test_a_kto_file_cut_at_the_bound_is_not_judged_on_its_labels(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk import datachecks

    rows = [KTO[0]] * 30 + [KTO[1]]  # the undesirable answer comes last, past the bound
    path = _recipe(tmp_path, 'align a { from = pretrain.p  pairs = "k.jsonl"  method = kto }', {"k.jsonl": rows})
    assert _plan_errors(path) == []
    monkeypatch.setattr(datachecks, "CHECK_BYTES", 200)
    assert _plan_errors(path) == []


# ------------------------------------------------------------------------------------------- semantic checks


@pytest.mark.parametrize("gate,expected", [
    ("pretrain.p.exact_match >= 60", "pretrain.p.exact_match is between 0 and 1, so `pretrain.p.exact_match >= 60`"),
    ("pretrain.p.f1.p_value < -0.5", "is between 0 and 1"),
    ("pretrain.p.perplexity < 0.5", "pretrain.p.perplexity is at least 1"),
    ("pretrain.p.recall_at_k >= 0.5", "pretrain.p retrieves nothing"),
])
def test_gates_decided_before_anything_runs_are_errors(tmp_path: Path, gate: str, expected: str) -> None:
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25  generator = pretrain.p }\n  '
                             'eval e { data = "e.jsonl"  systems = [rag.r, pretrain.p]  '
                             f'metrics = [exact_match, f1, perplexity, recall_at_k]  gate = {gate} }}',
                   {"e.jsonl": [ITEM]})
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    assert expected in str(e.value) and "r.dsl:6:122: error: " in str(e.value)


def test_in_range_gates_and_retrieval_of_a_rag_are_fine(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25  generator = pretrain.p }\n  '
                             'eval e { data = "e.jsonl"  systems = [rag.r, pretrain.p]  metrics = [f1, recall_at_k]  '
                             'gate = rag.r.recall_at_k >= 0 and rag.r.f1 > 1 - 1 and pretrain.p.f1.p_value <= 1 }',
                   {"e.jsonl": [ITEM]})
    assert load_recipe(path).spec.eval["e"].gate is not None


def test_an_untrained_architecture_cannot_answer(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25  generator = base_model.b }\n  '
                             'eval e { data = "e.jsonl"  systems = [base_model.b, rag.r] }', {"e.jsonl": [ITEM]})
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    text = str(e.value)
    assert "base_model.b is an architecture with no weights" in text
    assert "base_model.b (the generator of rag.r) is an architecture with no weights" in text
    # the rag step itself builds its pipeline with the generator's weights: an error at the generator too
    assert "base_model.b is an architecture with no weights (llama { ... }), and rag.r.generator needs" in text
    # retrieval alone needs no generator
    path.write_text(path.read_text().replace("  generator = base_model.b", "").replace(
        "systems = [base_model.b, rag.r] }", "systems = [rag.r]  metrics = [recall_at_k, mrr] }"))
    assert load_recipe(path).spec.eval["e"].systems


def test_options_of_another_method_and_systems_twice(tmp_path: Path) -> None:
    build = sdk.Domain("t", base_dir=tmp_path)
    (tmp_path / "e.jsonl").write_text(json.dumps(ITEM) + "\n")
    build.eval("e", data="e.jsonl", systems=[sdk.endpoint(url="http://localhost:1/v1", model="m")],
               judge=sdk.endpoint(url="http://localhost:1/v1", model="j"))
    with pytest.raises(SpecError) as e:
        build.build()
    assert "judge applies only with the judge metric" in str(e.value)
    build = sdk.Domain("t", base_dir=tmp_path)
    build.dataset("d", path="e.jsonl", keep_bare=True)
    with pytest.raises(SpecError) as e:
        build.build()
    assert "keep_bare applies only with retrieval" in str(e.value)


# ------------------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize("attrs,expected", [
    ({"weight_decay": float("inf")}, "finite number"),
    ({"learning_rate": float("nan")}, "finite number"),
    ({"seed": 2**32}, "less than or equal to 4294967295"),
    ({"seed": -1}, "greater than or equal to 0"),
    ({"max_steps": 10**29}, "less than or equal to 2147483647"),
    ({"batch_size": 2**31}, "less than or equal to 2147483647"),
])
def test_numbers_are_bounded_in_the_builder_too(tmp_path: Path, attrs: dict[str, Any], expected: str) -> None:
    build = sdk.Domain("t", base_dir=tmp_path)
    build.base_model("b", architecture=sdk.llama(layers=2, hidden=64, heads=4))
    (tmp_path / "notes.txt").write_text("x\n")
    build.corpus("c", paths=["notes.txt"])
    build.pretrain("p", **{"from": "base_model.b", "corpus": "corpus.c", **attrs})
    with pytest.raises(SpecError) as e:
        build.build()
    assert f"pretrain.p.{next(iter(attrs))}" in str(e.value) and expected in str(e.value)


def test_the_largest_seed_and_count_are_accepted(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "", {})
    path.write_text(path.read_text().replace("corpus = corpus.c }", "corpus = corpus.c  seed = 4294967295  "
                                                                     "max_steps = 2147483647  weight_decay = 1e300 }"))
    p = load_recipe(path).spec.pretrain["p"]
    assert (p.seed, p.max_steps, p.weight_decay) == (2**32 - 1, 2**31 - 1, 1e300)


def test_finetune_options_that_do_not_apply_and_metrics_twice(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'dataset d { path = "t.jsonl"  format = text }\n  '
                             'finetune f { from = pretrain.p  data = dataset.d  assistant_only_loss = true }',
                   {"t.jsonl": [{"text": "INVITE starts a session."}]})
    [error] = _plan_errors(path)
    assert "assistant_only_loss applies to chat and instruction data, and dataset.d is format text" in error
    path.write_text(path.read_text().replace("assistant_only_loss = true", "packing = true  padding_free = true"))
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    assert "padding_free applies without packing" in str(e.value)
    path.write_text(path.read_text().replace("  padding_free = true", "") + "")
    assert _plan_errors(path) == []  # the defaults are not mistakes
    path.write_text(path.read_text().replace("}\n}\n", "}\n  eval e { data = \"t.jsonl\"  systems = [finetune.f]  "
                                             "metrics = [f1, exact_match, f1] }\n}\n"))
    with pytest.raises(SpecError) as e:
        load_recipe(path)
    assert "metric f1 is listed twice" in str(e.value)


def test_the_bound_can_be_changed_and_a_file_without_a_whole_line_in_it_is_read_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [json.dumps(PAIR)] * 30
    path = _recipe(tmp_path, 'align a { from = pretrain.p  pairs = "p.jsonl" }', {"p.jsonl": [*rows, "{bad"]})
    monkeypatch.setenv("DSL_PLAN_CHECK_BYTES", "300")
    assert _plan_errors(path) == []
    monkeypatch.setenv("DSL_PLAN_CHECK_BYTES", "0")  # 0: no bound
    assert "p.jsonl:31: malformed JSON" in _plan_errors(path)[0]
    monkeypatch.setenv("DSL_PLAN_CHECK_BYTES", "10")  # not one whole line within it
    assert "p.jsonl:31: malformed JSON" in _plan_errors(path)[0]
    (tmp_path / "p.jsonl").write_text("\n" * 20 + json.dumps(PAIR) + "\n")  # only blank lines in the bound
    monkeypatch.setenv("DSL_PLAN_CHECK_BYTES", "15")
    assert _plan_errors(path) == []  # "no preference pairs" is not said of a part of the file


def test_a_gate_on_retrieval_needs_items_with_gold_sources(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25 }\n  '
                             'eval e { data = "e.jsonl"  systems = [rag.r]  metrics = [recall_at_k]  '
                             'gate = rag.r.recall_at_k >= 0.5 }',
                   {"e.jsonl": [ITEM, {**ITEM, "id": "2", "sources": ["notes.txt"]}]})
    assert _plan_errors(path) == []  # one item names its sources
    (tmp_path / "e.jsonl").write_text(json.dumps({"id": "1", "question": "q", "answer": "a"}) + "\n")
    [error] = _plan_errors(path)
    assert "no item of e.jsonl names its gold sources, so rag.r.recall_at_k is never measured" in error


def test_timeouts_are_bounded(tmp_path: Path) -> None:
    build = sdk.Domain("t", base_dir=tmp_path)
    build.serve(timeout=1e12)
    with pytest.raises(SpecError) as e:
        build.build()
    assert "serve.default.timeout" in str(e.value) and "less than or equal to 86400" in str(e.value)


def test_a_kind_of_a_plugin_registers_its_own_data_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdk import datachecks
    from sdk.spec import Problem

    monkeypatch.setattr(datachecks, "CHECKS", dict(datachecks.CHECKS))
    datachecks.register("pretrain", lambda spec, label, block: [Problem(path=("pretrain", label, "corpus"),
                                                                        message="notes.txt:1: not a corpus")])
    [error] = _plan_errors(_recipe(tmp_path, "", {}))
    assert error == "4: notes.txt:1: not a corpus"
