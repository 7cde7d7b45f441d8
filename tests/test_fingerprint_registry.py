"""Every attribute of every built-in kind is in the fingerprint of the right step, checked from the kind registry
(the schema knows every attribute): each is changed in turn and the plan must mark the step of its block (or, for
a setting such as compute, the steps that launch with it) and nothing but that step and what depends on it. A
new attribute is covered the day it is declared; one that cannot be changed here fails the test, naming it.

And with the real backends, a dependent re-runs exactly when an output it reads changed: a new base-model chat
template re-runs the fine-tune that trains with it (tiny model), a base_model change that leaves its output alone
does not, and a corpus change re-runs its rag step only when the chunks differ."""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import sdk
from sdk.plans import Action
from sdk.spec import kinds as K
from tests._specs import write_small

# Extra blocks beside tests/_specs.SMALL, so that every kind appears, and each mutually exclusive attribute (a
# base model's id, path or architecture; a reward's prompts or data) has a block where it is the one given.
EXTRA: dict[str, dict[str, Any]] = {
    "base_model": {"hub": {"id": "org/model", "revision": "main"}, "local": {"path": "local-model"}},
    "corpus": {"more": {"paths": ["corpus/a.txt"]}},
    "dataset": {"more": {"path": "more.jsonl", "format": "chat"}},
    "align": {"prefs": {"from": "finetune.sip", "pairs": "prefs.jsonl", "max_steps": 2}},
    "reward": {"grpo": {"from": "finetune.sip", "prompts": "prompts.jsonl", "rewards": {"f1": 1.0}},
               "ds": {"from": "finetune.sip", "data": "dataset.qa", "rewards": {"exact_match": 1.0}}},
    "compute": {"default": {}},
    "synth": {"gen": {"corpus": "corpus.docs", "teacher": {"url": "http://127.0.0.1:1/v1", "model": "t"}}},
}

# Attributes that stay out of the fingerprint on purpose, and why: the plan must leave everything up to date.
EXEMPT = {
    ("eval", "batch_size"): "changes how fast the answers come, not which",
    ("synth", "concurrency"): "changes how fast the teacher's replies come, not which (they are journaled)",
    **{(k, "compute"): "names the domain's one compute block, which applies named or not (its attributes are in "
                       "the step's configuration)" for k in ("pretrain", "finetune", "align", "reward")},
}
SINGLE = {("reward", "method")}  # one value only (grpo): nothing to change it to yet

# Changes the generator cannot find alone (a valid value needs another attribute changed with it).
PATCHES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("reward", "judge"): ("grpo", {"judge": {"url": "http://127.0.0.1:1/v1", "model": "j"},
                                   "rewards": {"f1": 1.0, "judge": 1.0}}),
    ("reward", "rubric"): ("grpo", {"judge": {"url": "http://127.0.0.1:1/v1", "model": "j"},
                                    "rewards": {"f1": 1.0, "judge": 1.0}, "rubric": "5: right; 1: wrong"}),
    ("eval", "judge"): ("expert", {"judge": {"url": "http://127.0.0.1:1/v1", "model": "j"},
                                   "metrics": ["exact_match", "f1", "judge"]}),  # judge applies with its metric
    ("eval", "rubric"): ("expert", {"judge": {"url": "http://127.0.0.1:1/v1", "model": "j"},
                                    "metrics": ["exact_match", "f1", "judge"], "rubric": "5: right; 1: wrong"}),
    ("dataset", "keep_bare"): ("more", {"retrieval": "rag.docs", "keep_bare": False}),  # applies with retrieval
    ("align", "gamma"): ("prefs", {"method": "simpo", "gamma": 0.7}),
    ("corpus", "near_threshold"): ("docs", {"dedupe": "near", "near_threshold": 0.5}),  # applies with near
    # a launcher's options apply with a launcher
    ("compute", "num_processes"): ("default", {"launcher": "torchrun", "num_processes": 2}),
    ("compute", "machine_rank"): ("default", {"launcher": "torchrun", "num_machines": 2, "main_process_ip": "10.0.0.2",
                                              "machine_rank": 1}),  # a rank below num_machines
    ("eval", "password"): ("expert", {"data": "eval.zip", "password": {"env": "ZIP_PW"}}),  # a zip's password only
    ("compute", "main_process_ip"): ("default", {"launcher": "torchrun", "main_process_ip": "10.0.0.2"}),
    ("compute", "main_process_port"): ("default", {"launcher": "torchrun", "main_process_port": 29501}),
    # SGLang's options apply with the sglang engine
    ("serve", "sglang"): ("default", {"engine": "sglang", "sglang": {"tp": 2}}),
    ("serve", "engine_port"): ("default", {"engine": "sglang", "engine_port": 31000}),
    ("eval", "judge_agreement"): ("expert", {"judge": {"url": "http://127.0.0.1:1/v1", "model": "j"},
                                             "metrics": ["exact_match", "f1", "judge"],
                                             "judge_agreement": {"kappa": 0.7}}),  # applies with its metric
    ("synth", "rag"): ("gen", {"task": "raft", "rag": "rag.docs"}),  # raft only, and raft needs a rag
    ("synth", "distractors"): ("gen", {"task": "raft", "rag": "rag.docs", "distractors": 1}),
    ("synth", "no_golden_share"): ("gen", {"task": "raft", "rag": "rag.docs", "no_golden_share": 0.5}),
    ("synth", "answer_prompt"): ("gen", {"task": "raft", "rag": "rag.docs",
                                         "answer_prompt": "{{ chunk }} {{ question }}"}),
    ("synth", "student"): ("gen", {"task": "preference", "student": "finetune.sip"}),
    ("synth", "price"): ("gen", {"price": {"input": 1.0, "output": 2.0}}),
    ("align", "desirable_weight"): ("prefs", {"method": "kto", "desirable_weight": 2.0}),
    ("align", "undesirable_weight"): ("prefs", {"method": "kto", "undesirable_weight": 2.0}),
    ("compute", "num_machines"): ("default", {"launcher": "torchrun", "num_machines": 2,
                                              "main_process_ip": "10.0.0.1"}),
    ("compute", "deepspeed"): ("default", {"launcher": "accelerate", "deepspeed": {"stage": 2}}),
    ("compute", "fsdp"): ("default", {"launcher": "accelerate", "fsdp": {}}),
}

TEXTS = ["eval.jsonl", "sft.jsonl", "route.jsonl", "more.jsonl", "x", "org/other", "corpus/*.txt", "127.0.0.2"]
GATES = ["rag.docs.f1 >= 0.5", "rag.docs.exact_match >= 0"]


def _workdir(folder: Path) -> Path:
    write_small(folder)
    rows = [{"messages": [{"role": "user", "content": "What is IMS?"},
                          {"role": "assistant", "content": "The IP multimedia subsystem."}]}]
    (folder / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "prefs.jsonl").write_text(json.dumps({"prompt": "What is SIP?", "chosen": "A protocol.",
                                                    "rejected": "A fruit."}) + "\n")
    (folder / "prompts.jsonl").write_text(json.dumps({"question": "What is SIP?", "answer": "A protocol"}) + "\n")
    return folder / "recipe.dsl"


def _data(spec: Any) -> dict[str, Any]:
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for kind, blocks in EXTRA.items():
        data.setdefault(kind, {}).update(copy.deepcopy(blocks))
    for kind in K.step_kinds():  # the test backend, chosen explicitly by every block (its real one is a change)
        for block in data.get(kind, {}).values():
            block["backend"] = "test"
    return data


def _validate(data: dict[str, Any], base: Path) -> Any:
    from sdk.validation import validate

    return validate(data, base, check_files=False)


def _candidates(ann: Any, current: Any, refs: list[str], depth: int = 0) -> list[Any]:
    """Values of type ``ann`` that differ from ``current``, simplest first (the spec rejects those that do not fit)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    out: list[Any] = []
    if origin is typing.Annotated:
        return _candidates(args[0], current, refs, depth)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            out += [None] if a is type(None) else _candidates(a, current, refs, depth)
    elif origin is typing.Literal:
        out += list(args)
    elif ann is bool:
        out += [not current if isinstance(current, bool) else True, False]
    elif ann is int:
        out += [(current or 0) + 1, 2, 1, 8, 64, 1000]
    elif ann is float:
        out += [(current or 0.0) * 2 or 0.5, 0.5, 0.25, 0.9, 2.0, 0.01]
    elif ann is str:
        out += [(current + "2") if isinstance(current, str) else "x"] + TEXTS + GATES
    elif origin is list:
        elems = [e for e in _candidates(args[0], None, refs, depth + 1) if e is not None][:40]
        now = current if isinstance(current, list) else []
        if len(now) > 1:
            out.append(now[:-1])
        out += [now + [e] for e in elems] + [[e] for e in elems]
    elif origin is dict:
        vals = [v for v in _candidates(args[1], None, refs, depth + 1) if v is not None][:4]
        base = dict(current) if isinstance(current, dict) else {}
        keys = ("accuracy", "f1", "question", "answer", "messages", "prompt", "chosen", "rejected", "rule")
        out += [{**base, k: v} for k in keys for v in vals]
        if len(base) > 1:
            out.append(dict(list(base.items())[:-1]))
    elif isinstance(ann, type) and issubclass(ann, BaseModel) and depth < 3:
        base = dict(current) if isinstance(current, dict) else {}
        if current is None:
            out.append({})
        for name, f in ann.model_fields.items():
            key = f.alias or name
            out += [{**base, key: v} for v in _candidates(f.annotation, base.get(key), refs, depth + 1)[:8]]
    else:  # references, expressions, files and secrets: what the spec's own parsers take
        out += refs + GATES + [{"file": "more.jsonl"}, {"env": "OTHER_KEY"}, "x"]
    return out


def _change(data: dict[str, Any], kind: str, attr: str, base: Path) -> tuple[str, Any]:
    """(label, spec) with ``attr`` of one block of ``kind`` changed to another valid value."""
    if (kind, attr) in PATCHES:
        label, patch = PATCHES[(kind, attr)]
        changed = copy.deepcopy(data)
        changed[kind][label].update(patch)
        return label, _validate(changed, base)
    refs = [f"{k}.{label}" for k in K.kind_names() for label in data.get(k, {})]
    original = _validate(data, base)
    for label in data.get(kind, {}):
        block = getattr(original, kind)[label]
        field = type(block).model_fields[attr]
        key = field.alias or attr
        current = block.model_dump(mode="json", by_alias=True).get(key)
        for value in _candidates(field.annotation, current, refs):
            if value == current:
                continue
            changed = copy.deepcopy(data)
            changed[kind][label][key] = value
            try:
                spec = _validate(changed, base)
            except Exception:  # noqa: BLE001, S112 - not a valid value here: try the next
                continue
            if getattr(spec, kind)[label] != block:
                return label, spec
    raise AssertionError(f"no valid change of {kind}.{attr} found: add a row to PATCHES (or EXEMPT, with why)")


ATTRIBUTES = [(k.name, a) for k in K.all_kinds() for a in k.block.model_fields
              if a != "backend" and (k.name, a) not in SINGLE]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Any]:
    from dsl.parser import load
    from sdk.state import StateStore

    path = _workdir(tmp_path_factory.mktemp("fingerprints"))
    data = _data(load(path))
    spec = _validate(data, path.parent)
    result = sdk.apply(spec)
    assert result.ok, [o.error for o in result.failed]
    state = StateStore(path.parent / ".dsl" / "demo").load()
    assert all(s.action is Action.NOOP for s in sdk.planner.plan(spec, state, check=False).steps)
    return data, path.parent, state


def test_every_kind_and_attribute_is_covered() -> None:
    kinds = {k for k, _ in ATTRIBUTES}
    assert kinds == set(K.kind_names()) - {k for k in K.kind_names() if not K.get_kind(k).block.model_fields}
    assert set(EXTRA) | {"corpus", "rag", "eval", "route", "serve", "pretrain", "finetune"} >= kinds


@pytest.mark.parametrize("kind, attr", ATTRIBUTES, ids=[f"{k}.{a}" for k, a in ATTRIBUTES])
def test_changing_an_attribute_marks_its_step(kind: str, attr: str, applied: tuple[dict[str, Any], Path, Any]) -> None:
    data, base, state = applied
    label, spec = _change(data, kind, attr, base)
    plan = sdk.planner.plan(spec, state, check=False)
    marked = {s.id for s in plan.steps if s.action is not Action.NOOP}
    if (kind, attr) in EXEMPT:
        assert not marked, f"{kind}.{attr} is exempt ({EXEMPT[(kind, attr)]}) but re-runs {sorted(marked)}"
        return
    graph = sdk.planner.build_graph(spec)
    if K.get_kind(kind).is_step:
        roots = {f"{kind}.{label}"}
    else:  # a setting: the steps whose configuration holds it
        setting = getattr(spec, kind)[label].model_dump(mode="json")
        roots = {f"{k}.{lb}" for k, lb, b in spec.blocks()
                 if K.get_kind(k).is_step and setting in K.config_of(spec, k, b).values()}
        assert roots, f"no step's configuration holds {kind}.{label}"
    for root in roots:
        step = plan.step(root)
        assert step.action is Action.REPLACE and "configuration changed" in step.reason, (root, step.reason)
    allowed = set(roots).union(*(graph.dependents(r) for r in roots))
    if (kind, attr) in (("eval", "data"), ("eval", "password")):  # (a password goes with a zip's data) a synth
        # step reads every eval set of the recipe (its contamination filter)
        allowed |= {f"synth.{lb}" for lb, b in spec.synth.items() if b.filters.contamination}
    assert marked <= allowed, f"changing {kind}.{label}.{attr} also marks {sorted(marked - allowed)}"


def test_the_real_backend_is_a_change_of_its_own(applied: tuple[dict[str, Any], Path, Any]) -> None:
    data, base, state = applied
    changed = copy.deepcopy(data)
    changed["finetune"]["sip"]["backend"] = K.get_kind("finetune").backend
    plan = sdk.planner.plan(_validate(changed, base), state, check=False)
    assert plan.step("finetune.sip").reason == "backend changed"
    assert plan.step("pretrain.base").action is Action.NOOP


TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' + eos_token }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def test_a_new_base_model_chat_template_retrains_the_fine_tune_and_nothing_else_does(tmp_path: Path) -> None:
    """The template row with the real backends (hf, jsonl, trl) on a tiny model: the fine-tune reads the template
    from the base_model's artifact, so a new template re-runs it; a base_model change that leaves its output as it
    was (trust_remote_code) re-runs the base_model alone (early cutoff)."""
    from dsl.parser import load
    from tests._tiny import tiny_model_dir

    model = tiny_model_dir(tmp_path)
    rows = [{"messages": [{"role": "user", "content": f"What starts call {i}?"},
                          {"role": "assistant", "content": "INVITE."}]} for i in range(4)]
    (tmp_path / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = ('domain t {\n  base_model m { path = "%s"  chat_template = "%s"  trust_remote_code = TRUST }\n'
              '  dataset qa { path = "sft.jsonl" }\n'
              '  finetune ft { from = base_model.m  data = dataset.qa  method = lora  max_steps = 1  batch_size = 2 '
              ' lora = { rank = 2, alpha = 4 } }\n}\n')
    path = tmp_path / "r.dsl"

    def apply(template: str, trust: str = "false") -> list[str]:
        path.write_text((recipe % (model.name, template.replace('"', '\\"'))).replace("TRUST", trust))
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        return result.ran

    assert apply(TEMPLATE) == ["base_model.m", "dataset.qa", "finetune.ft"]
    new = TEMPLATE.replace("<|end|>", "<|stop|>")
    plan = sdk.plan(load(path))
    assert all(s.action is Action.NOOP for s in plan.steps)
    assert apply(new) == ["base_model.m", "finetune.ft"]
    saved = json.loads(next((tmp_path / ".dsl").rglob("adapter/tokenizer_config.json")).read_text())
    template = saved.get("chat_template") or next((tmp_path / ".dsl").rglob("adapter/chat_template.jinja")).read_text()
    assert "<|stop|>" in template  # trained with the new template
    assert apply(new, "true") == ["base_model.m"]  # same output: the fine-tune is up to date


def test_a_rag_step_reruns_when_its_chunks_change_and_only_then(tmp_path: Path) -> None:
    """Early cutoff with the real corpus and rag backends: a corpus change that gives the same chunks re-runs the
    corpus step alone; one that gives other chunks re-runs the rag step too."""
    from dsl.parser import load

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("SIP sets up calls between user agents. IMS carries them.\n")
    (tmp_path / "docs" / "b.txt").write_text("RTP carries the media of a call once SIP has set it up.\n")
    path = tmp_path / "r.dsl"

    def apply(corpus: str) -> list[str]:
        path.write_text('domain r {\n  corpus c { paths = ["docs/*.txt"]  %s }\n'
                        '  rag docs { corpus = corpus.c  retriever = bm25  top_k = 1 }\n}\n' % corpus)
        result = sdk.apply(load(path))
        assert result.ok, [o.error for o in result.failed]
        return result.ran

    assert apply("min_chars = 10") == ["corpus.c", "rag.docs"]
    assert apply("min_chars = 5") == ["corpus.c"]  # no chunk is that short: the same chunks
    assert apply("min_chars = 5  split = { by = word, length = 4, overlap = 0 }") == ["corpus.c", "rag.docs"]
