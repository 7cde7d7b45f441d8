"""Issue 23, played as the maintainers do: new mistakes of each class (bad data rows, numbers, semantics,
characters), each a located error at validate or plan, before any step runs, never a traceback.

The numbers are checked from the kind registry: every int and float attribute of every kind (and of the objects
inside them) refuses inf and nan, and every int attribute has an upper bound."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from dsl.parser import load_recipe
from sdk import spec as S
from sdk.errors import SpecError
from tests.test_plan_checks import CHAT, ITEM, _plan_errors, _recipe

# ------------------------------------------------------------------------------- numbers, from the registry


def _bad_values(tp: Any) -> list[Any]:
    """Values that every number inside ``tp`` must refuse: inf and nan for a float, 10**30 for an int."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool or origin is typing.Literal or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    if tp is int:
        return [10**30, float("inf")]
    if tp is float:
        return [float("inf"), float("nan"), float("-inf")]
    if origin is typing.Annotated:
        return _bad_values(args[0])
    if origin in (list, tuple):
        return [[b] for b in _bad_values(args[0])] if args else []
    if origin is dict:
        return [{"k": b} for b in _bad_values(args[1])]
    return [b for a in args for b in _bad_values(a)]  # a union: each member's


def _numbers() -> list[tuple[type, str, Any]]:
    """(class, attribute as written, bad value) for every number of every kind, object and domain attribute."""
    out, seen, todo = [], set(), [S.BLOCK_TYPES[k] for k in S.KINDS] + [S.Spec]
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        for name, field in cls.model_fields.items():
            if cls is S.Spec and name in S.KINDS:
                continue
            stack = [field.annotation]
            while stack:  # nested objects (llama, lora, adapt, human, ...) are checked as classes of their own
                t = stack.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                else:
                    stack += [a for a in typing.get_args(t) if isinstance(a, type) or typing.get_args(a)]
            out += [(cls, field.alias or name, bad) for bad in _bad_values(field.annotation)]
    return out


NUMBERS = _numbers()


def test_the_registry_has_numbers_to_check() -> None:
    names = {f"{c.__name__}.{n}" for c, n, _ in NUMBERS}
    assert {"TrainCommon.seed", "RewardBlock.rewards", "Adapt.matryoshka", "Spec.max_line_bytes",
            "Llama.vocab"} <= {n.replace("FinetuneBlock", "TrainCommon") for n in names} | names
    assert len(NUMBERS) > 150


@pytest.mark.parametrize("cls,name,bad", NUMBERS, ids=[f"{c.__name__}.{n}={b!r}" for c, n, b in NUMBERS])
def test_every_number_refuses_inf_nan_and_has_a_bound(cls: type, name: str, bad: Any) -> None:
    with pytest.raises(ValidationError) as e:
        cls.model_validate({name: bad})
    at_field = [err for err in e.value.errors() if err["loc"][:1] == (name,)]
    assert at_field, f"{cls.__name__}.{name} accepts {bad!r}"
    if bad == 10**30 or bad == [10**30] or bad == {"k": 10**30}:
        assert any("less than" in err["msg"] for err in at_field), at_field  # the bound is in the message


# ------------------------------------------------------------------------------------ validate: the recipe

PAIRS = {"p.jsonl": [{"prompt": "q", "chosen": "a", "rejected": "b"}]}
ROUTE = {"x.jsonl": [{"text": f"q{i}", "target": "domain" if i % 2 else "general"} for i in range(8)]}

# (block, files, part of the message): each refused by `dsl validate`, located in the recipe
VALIDATE = {
    "finetune_from_an_architecture": (('dataset d { path = "d.jsonl" }\n  finetune f { from = base_model.b  '
                                      'data = dataset.d }'), {"d.jsonl": [CHAT]},
                                      ("base_model.b is an architecture with no weights (llama { ... }), and "
                                      "finetune.f.from needs a model with weights")),
    "synth_teacher_an_architecture": ('synth s { task = qa  corpus = corpus.c  teacher = base_model.b }', {},
                                      "and synth.s.teacher needs a model with weights"),
    "route_general_an_architecture": (('rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "x.jsonl"'
                                      '  domain = rag.r  general = base_model.b }'), ROUTE,
                                      "and route.default.general needs a model with weights"),
    "merge_with_full": ('align a { from = pretrain.p  pairs = "p.jsonl"  tune = full  merge = true }', PAIRS,
                        "merge applies to an adapter (tune = lora or qlora)"),
    "embedder_with_bm25": ('rag r { corpus = corpus.c  retriever = bm25  embedding_backend = onnx-int8 }', {},
                           "embedding_backend applies to dense and hybrid retrieval, and retriever = bm25"),
    "max_new_tokens_without_generator": ('rag r { corpus = corpus.c  retriever = bm25  max_new_tokens = 9 }', {},
                                         "max_new_tokens applies to a generator"),
    "near_threshold_without_near": ('corpus k { paths = ["notes.txt"]  near_threshold = 0.5 }', {},
                                    "near_threshold applies to dedupe = near"),
    "reward_weight_unbounded": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { f1 = 1e300 } }',
                                {"g.jsonl": [{"question": "q", "answer": "a"}]}, "less than or equal to 100"),
    "infinite_number_in_a_gate": (('eval e { data = "e.jsonl"  systems = [pretrain.p]  '
                                  'gate = pretrain.p.f1 >= 1e400 * 0 }'), {"e.jsonl": [ITEM]},
                                  "a number in the expression is not finite"),
    "infinite_integer_in_a_list": (('dataset d { path = "d.jsonl" }\n  rag r { corpus = corpus.c  retriever = dense'
                                   '  adapt = { pairs = dataset.d  matryoshka = [1e400] } }'), {"d.jsonl": [CHAT]},
                                   "got a number that is not finite"),
    "contamination_options_when_it_is_off": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  contamination = '
                                             'false  ngram = 8 }', {"e.jsonl": [ITEM]},
                                             "ngram applies to the contamination check"),
    "judge_agreement_without_the_judge": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  judge_agreement = { '
                                          'kappa = 0.7 } }', {"e.jsonl": [ITEM]},
                                          "judge_agreement applies only with the judge metric"),
    "launcher_options_without_a_launcher": ("compute { num_processes = 4 }", {},
                                            "num_processes applies to a launcher, and launcher = none"),
    "liger_on_the_cpu": ("compute { cpu = true  kernels = liger }", {}, "kernels = liger runs on a CUDA GPU only"),
    "sglang_options_with_the_local_engine": ("serve { sglang = { tp = 2 }  engine_port = 31000 }", {},
                                             "sglang and engine_port apply to engine = sglang"),
    "answer_pattern_not_a_regex": (('eval e { data = "e.jsonl"  systems = [pretrain.p]  fields = { answer_pattern'
                                   ' = "(" } }'), {"e.jsonl": [ITEM]}, "answer_pattern is not a regular expression"),
    "answer_pattern_without_a_group": (('eval e { data = "e.jsonl"  systems = [pretrain.p]  fields = { '
                                       'answer_pattern = "option" } }'), {"e.jsonl": [ITEM]},
                                       "answer_pattern has no group"),
}


def assert_located_at_validate(tmp_path: Path, body: str, files: dict[str, Any], expected: str) -> None:
    """`body` in a recipe (with `files` beside it) is refused by validate with `expected`, located in the body."""
    with pytest.raises(SpecError) as e:
        load_recipe(_recipe(tmp_path, body, files))
    located = [d for d in e.value.diagnostics if expected in d.message]
    assert located and all(d.span is not None and d.span.line >= 5 for d in located), e.value.format()


@pytest.mark.parametrize("case", sorted(VALIDATE))
def test_mistakes_in_the_recipe_are_located_at_validate(tmp_path: Path, case: str) -> None:
    assert_located_at_validate(tmp_path, *VALIDATE[case])


def test_an_architecture_is_fine_where_its_kind_is_named() -> None:
    from sdk.spec.weights import declared_kinds

    assert declared_kinds(S.BLOCK_TYPES["pretrain"], ("from",)) == {"base_model", "pretrain"}
    assert declared_kinds(S.BLOCK_TYPES["rag"], ("generator",)) == {"@model"}
    assert declared_kinds(S.BLOCK_TYPES["route"], ("targets", "law")) == {"@system"}
    assert declared_kinds(S.BLOCK_TYPES["rag"], ("adapt", "pairs")) == {"dataset", "eval", "synth"}


# ----------------------------------------------------------------------------- plan: the files steps read


def _grades(tmp: Path, text: str) -> dict[str, Any]:
    return {"e.jsonl": [ITEM], "grades/t/e.jsonl": text}


PLAN = {
    "route_one_target": (('rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "x.jsonl"  '
                         'domain = rag.r }'), {"x.jsonl": [{"text": f"q{i}", "target": "domain"} for i in range(8)]},
                         "the router needs examples of at least two targets, found only domain"),
    "route_too_few": (('rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "x.jsonl"  '
                      'domain = rag.r }'), {"x.jsonl": ROUTE["x.jsonl"][:2]}, "2 examples are too few to train"),
    "grades_bad_line": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  human = { mode = pass_fail } }',
                        {"e.jsonl": [ITEM], "grades/t/e.jsonl": '{"item": "1"}\n'},
                        "grades/t/e.jsonl:1: 'grader' must be a non-empty string"),
    "decisions_bad_line": (('synth s { task = qa  corpus = corpus.c  teacher = endpoint { url = "http://localhost:1/v1"'
                           ', model = "m" }  review = optional }'), {"reviews/t/s.jsonl": "{bad\n"},
                           "reviews/t/s.jsonl:1: malformed JSON"),
    "adapt_eval_without_train_items": (('eval e { data = "e.jsonl"  systems = [pretrain.p] }\n  rag r { corpus = '
                                       'corpus.c  retriever = dense  adapt = { pairs = eval.e } }'),
                                       {"e.jsonl": [ITEM]}, "its eval set declares no training split"),
    "adapt_dataset_without_sources": (('dataset d { path = "d.jsonl" }\n  rag r { corpus = corpus.c  retriever = '
                                      'dense  adapt = { pairs = dataset.d } }'), {"d.jsonl": [CHAT] * 3},
                                      "no row of d.jsonl names its gold chunk (chunk_id)"),
    "eval_of_training_items_only": ('eval e { data = "e.jsonl"  systems = [pretrain.p] }',
                                    {"e.jsonl": [{**ITEM, "tags": ["train"]}]},
                                    "e.jsonl: every item is tagged 'train' (the training split)"),
    "reward_without_prompts": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { f1 = 1.0 } }',
                               {"g.jsonl": "\n"}, "g.jsonl: no prompts"),
    "reward_prompt_and_question_differ": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { f1 = 1.0 } }',
                                          {"g.jsonl": [{"prompt": "p?", "question": "q?", "answer": "a"}]},
                                          "g.jsonl:1: the row has both 'prompt' and 'question', which differ"),
}


@pytest.mark.parametrize("case", sorted(PLAN))
def test_mistakes_in_the_files_a_step_reads_are_located_at_plan(tmp_path: Path, case: str) -> None:
    body, files, expected = PLAN[case]
    for name in [n for n in files if "/" in n]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    errors = _plan_errors(_recipe(tmp_path, body, files))
    assert len(errors) == 1 and expected in errors[0], errors


def test_good_route_examples_grades_and_pairs_plan(tmp_path: Path) -> None:
    body = ('rag r { corpus = corpus.c  retriever = dense  adapt = { pairs = eval.e } }\n  '
            'eval e { data = "e.jsonl"  systems = [pretrain.p]  human = { mode = pass_fail } }\n  '
            'route { examples = "x.jsonl"  domain = rag.r }')
    (tmp_path / "grades" / "t").mkdir(parents=True)
    path = _recipe(tmp_path, body, {**ROUTE, "e.jsonl": [ITEM, {**ITEM, "id": "2", "tags": ["train"]}],
                                    "grades/t/e.jsonl": ""})
    assert _plan_errors(path) == []
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in ROUTE["x.jsonl"][:3]) + "\n")
    [error] = _plan_errors(path)
    assert "3 examples are too few to train and hold out 1" in error
