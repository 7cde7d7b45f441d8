"""Batched evaluation: a local model's batched answers and scores equal its one-at-a-time ones, a killed eval
resumes with only the missing items, each item is answered once per system whatever the metrics, and
``batch_size`` stays out of the fingerprint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.eval.clients import RAW_PROMPT, LocalModel
from sdk.plans import Action

QUESTIONS = [
    "Which SIP request starts a call?", "Which request ends it?", "What carries the media of a voice call over IP?",
    "Who stores the subscriber profiles?", "Which protocol describes the media offer and answer in a session?",
    "What does IMS stand for?", "Which node authenticates?", "What runs voice over LTE with the IP Multimedia Subsystem?",
]


def sharp_model(folder: Path) -> Path:
    """A tiny Llama whose weights are drawn wide enough that greedy answers differ from question to question (a
    freshly initialised one answers every question with the same token): a padding or position mistake shows."""
    import torch
    from transformers import AutoModelForCausalLM

    from sdk.backends.training.common import make_tiny_model

    if not (folder / "config.json").exists():
        make_tiny_model(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = sharp_model(tmp_path_factory.mktemp("m") / "model")
    return LocalModel(model=AutoModelForCausalLM.from_pretrained(folder).eval(),
                      tokenizer=AutoTokenizer.from_pretrained(folder))


def test_batched_generation_equals_one_at_a_time(lm: LocalModel) -> None:
    prompts = [lm.generation_prompt(q) for q in QUESTIONS] + [RAW_PROMPT.format(question=q) for q in QUESTIONS[:3]]
    assert len({len(lm.encode(p)) for p in prompts}) > 3  # batches mix lengths, so rows are padded
    alone = [lm.generate("", 8, prompt=p) for p in prompts]
    assert len(set(alone)) > len(prompts) // 2  # the answers differ: equal answers would prove nothing
    assert lm.generate_many(prompts, 8, batch=4) == alone
    assert lm.generate_many(prompts, 8, batch=64) == alone
    assert lm.generate_many([], 8) == []


def test_batched_scores_equal_unbatched(lm: LocalModel, monkeypatch: pytest.MonkeyPatch) -> None:
    contexts = [RAW_PROMPT.format(question=q) for q in QUESTIONS]
    options = [[" INVITE", " BYE", " ACK"], [" yes", " no"], [" RTP over UDP", " SIP", " Diameter", " HSS"]] * 3
    options = options[:len(contexts)]
    alone = [lm.logliks(c, o) for c, o in zip(contexts, options)]
    batched = lm.scored_many(contexts, options, batch=3)
    assert [len(row) for row in batched] == [len(o) for o in options]
    assert max(abs(a - b) for x, y in zip(alone, batched) for a, b in zip(x, y)) < 1e-4
    nll_alone = [lm.answer_nll(c, "INVITE starts it") for c in contexts]
    nll_batched = lm.answer_nlls(contexts, ["INVITE starts it"] * len(contexts), batch=5)
    assert [n for _, n in nll_batched] == [n for _, n in nll_alone]
    assert max(abs(a - b) for (a, _), (b, _) in zip(nll_alone, nll_batched)) < 1e-4
    monkeypatch.setattr(lm, "max_tokens", 40)  # the token budget splits batches; the scores stay the same
    small = lm.scored_many(contexts, options, batch=16)
    assert max(abs(a - b) for x, y in zip(alone, small) for a, b in zip(x, y)) < 1e-4
    with pytest.raises(TypeError, match="one list of options per context"):
        lm.scored_many(contexts[:2], [" yes", " no"])


# --------------------------------------------------------------------------------------------- the eval step


def _recipe(tmp: Path, metrics: str = "exact_match, f1", batch: int = 3, systems: str = "base_model.a") -> Path:
    sharp_model(tmp / "model")
    (tmp / "g.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": "INVITE"}) + "\n"
                                         for i, q in enumerate(QUESTIONS)))
    path = tmp / "r.dsl"
    path.write_text(f'''domain e {{
  base_model a {{ path = "model" }}
  base_model b {{ path = "model" }}
  eval g {{
    data = "g.jsonl"  systems = [{systems}]  metrics = [{metrics}]  bootstrap = 100  contamination = false
    max_new_tokens = 4  batch_size = {batch}
  }}
}}
''')
    return path


ORIGINAL = (LocalModel.generate_many, LocalModel.answer_nlls)


class Calls:
    """Records what LocalModel.generate_many and answer_nlls are asked; ``kill_at`` raises KeyboardInterrupt (a
    kill) at that generate call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> None:
        self.prompts: list[str] = []
        self.nll_prompts: list[str] = []
        self.batches: list[int] = []
        self.kill_at = kill_at
        generate, nlls = ORIGINAL

        def generate_many(lm: LocalModel, prompts: list[str], *a: Any, **kw: Any) -> list[str]:
            if self.kill_at is not None and len(self.batches) + 1 == self.kill_at:
                raise KeyboardInterrupt
            self.batches.append(len(prompts))
            self.prompts += prompts
            return generate(lm, prompts, *a, **kw)

        def answer_nlls(lm: LocalModel, prompts: list[str], *a: Any, **kw: Any) -> list[tuple[float, int]]:
            self.nll_prompts += prompts
            return nlls(lm, prompts, *a, **kw)

        monkeypatch.setattr(LocalModel, "generate_many", generate_many)
        monkeypatch.setattr(LocalModel, "answer_nlls", answer_nlls)


def _predictions(path: Path) -> dict[tuple[str, str], str]:
    art = sdk.workspace.open_workspace(path).artifact("eval.g")
    rows = [json.loads(x) for x in (art.path / "predictions.jsonl").read_text().splitlines()]
    return {(r["system"], r["id"]): r["prediction"] for r in rows}


def test_a_killed_eval_resumes_with_only_the_missing_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _recipe(tmp_path / "clean")
    calls = Calls(monkeypatch)
    assert sdk.apply(load(clean)).ok
    assert calls.batches == [3, 3, 2]  # batch_size items per generate call
    expected = _predictions(clean)
    assert len(set(expected.values())) > 1

    path = _recipe(tmp_path / "killed")
    calls = Calls(monkeypatch, kill_at=2)  # killed while the second chunk is answered
    with pytest.raises(KeyboardInterrupt):
        sdk.apply(load(path))
    saved = list((tmp_path / "killed" / ".dsl" / "e" / "checkpoints" / "eval.g").glob("*/answers-*.jsonl"))
    assert len(saved) == 1 and len(saved[0].read_text().splitlines()) == 3  # the first chunk is saved
    first = set(calls.prompts)
    # a smaller batch after running out of memory keeps the fingerprint, so the saved answers are used
    path = _recipe(tmp_path / "killed", batch=2)
    calls = Calls(monkeypatch)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    assert calls.batches == [2, 2, 1] and len(calls.prompts) == 5 and not first & set(calls.prompts)
    assert _predictions(path) == expected  # the same answers as a run never killed


def test_each_item_is_answered_once_per_system_whatever_the_metrics(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = _recipe(tmp_path, metrics="exact_match, f1, accuracy, perplexity", batch=16,
                   systems="base_model.a, base_model.b")
    calls = Calls(monkeypatch)
    assert sdk.apply(load(path)).ok
    assert calls.batches == [8, 8]  # one generate call per system, every item in it once
    assert sorted(Counter(calls.prompts).values()) == [2] * len(QUESTIONS)  # each item once per system
    assert len(calls.nll_prompts) == 16  # the reference's perplexity: once per item and system too
    m = sdk.workspace.open_workspace(path).artifact("eval.g").metrics
    assert {"exact_match", "f1", "accuracy", "perplexity"} <= set(m["base_model.a"])
    assert m["base_model.a"]["exact_match"]["n"] == len(QUESTIONS)


def test_batch_size_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    path = _recipe(tmp_path, batch=4)
    assert sdk.apply(load(path), backend="test").ok
    assert sdk.plan(load(_recipe(tmp_path, batch=1)), backend="test").step("eval.g").action is Action.NOOP
    plan = sdk.plan(load(_recipe(tmp_path, batch=1, metrics="exact_match")), backend="test")
    assert plan.step("eval.g").action is Action.REPLACE
