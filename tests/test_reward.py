"""Reward tuning (``reward``): a tiny model GRPO-tuned through the real ``dsl apply`` (real TRL GRPOTrainer, rewards
from sdk.metrics and a format rule), the per-step mean reward in the manifest, the result evaluated as a model; bad
prompt rows as located FILE:LINE errors; a prompt file sharing a question with a gating eval refused at plan time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdk.backends.training.reward import reward_functions
from sdk.backends.training.reward_data import read_prompts
from sdk.state import StateStore
from tests._data import assert_data_errors
from tests._tiny import make_tiny_model
from tests.conftest import run_dsl

OPTIONS = ["red", "dog", "car", "apple"]
ROWS = [{"question": f"Which one is item {i}?", "choices": OPTIONS, "answer": str(i % 4 + 1)} for i in range(6)]
REWARD = '''
  reward mc { from = base_model.local  prompts = "mc.jsonl"
              rewards = { accuracy = 1.0, format = { pattern = "^[1-4]$"  weight = 0.2 } }
              num_generations = 2  batch_size = 4  max_steps = 2  max_completion_length = 3  logging_steps = 1 }
'''


def _write(path: Path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def _recipe(tmp: Path, body: str, real_model: bool = False, prompts: list | None = None) -> Path:
    if real_model and not (tmp / "model" / "config.json").exists():
        make_tiny_model(tmp / "model")
    elif not real_model:
        (tmp / "model").mkdir(exist_ok=True)
        (tmp / "model" / "config.json").write_text("{}")
    _write(tmp / "mc.jsonl", prompts if prompts is not None else ROWS)
    path = tmp / "r.dsl"
    path.write_text('domain t {\n  base_model local { path = "model" }\n' + body + "}\n")
    return path


@pytest.mark.slow
def test_grpo_through_dsl_apply_records_the_mean_reward_by_step_and_gives_a_model_evals_can_name(
        tmp_path: Path) -> None:
    from sdk.backends.models import handle
    from sdk.workspace import open_workspace

    _write(tmp_path / "eval.jsonl", [{"id": "e1", "question": "Which one is a fruit?", "choices": OPTIONS,
                                      "answer": "4"}])
    path = _recipe(tmp_path, REWARD + '  eval side { data = "eval.jsonl"  metrics = [accuracy]  '
                   'systems = [base_model.local, reward.mc]  bootstrap = 100  contamination = false }\n',
                   real_model=True)
    r = run_dsl("apply", str(path), timeout=900)
    steps = StateStore(tmp_path / ".dsl" / "t").load().steps
    assert steps["reward.mc"]["status"] == "done", r.stderr + r.stdout
    assert steps["eval.side"]["status"] == "done", r.stderr + r.stdout
    m = steps["reward.mc"]["metrics"]
    assert m["steps"] == 2 and m["train_prompts"] == len(ROWS)
    assert [s for s, _ in m["reward_by_step"]] == [1, 2]
    assert all(0.0 <= v <= 1.2 for _, v in m["reward_by_step"]) and m["reward_first"] == m["reward_by_step"][0][1]

    art = open_workspace(path).artifact("reward.mc")
    assert art.outputs["adapter"] == "adapter" and art.outputs["method"] == "grpo" and art.outputs["tune"] == "lora"
    curve = json.loads((art.path / "rewards.json").read_text())
    assert art.outputs["rewards_plot"] == "rewards.png" and (art.path / "rewards.png").stat().st_size > 1000
    # each declared reward's own mean is kept beside the weighted sum
    assert [c["step"] for c in curve] == [1, 2] and {"reward", "accuracy", "format"} <= set(curve[0])
    assert "mc.jsonl" in (art.path / "adapter" / "README.md").read_text()
    assert handle(art).adapter == str((art.path / "adapter").resolve())
    assert steps["eval.side"]["metrics"]["reward.mc"]["accuracy"]["n"] == 1


def test_reward_functions_score_options_and_formats_from_the_metric_registry() -> None:
    funcs, weights = reward_functions({"accuracy": 1.0, "f1": 0.5, "format": {"pattern": "^[1-4]$", "weight": 0.2}})
    assert [f.__name__ for f in funcs] == ["accuracy", "f1", "format"] and weights == [1.0, 0.5, 0.2]
    completions = [[{"role": "assistant", "content": "2"}], [{"role": "assistant", "content": "Option 1."}],
                   [{"role": "assistant", "content": "the dog"}]]
    cols = {"answer": ["dog", "dog", "dog"], "choices": [OPTIONS] * 3, "prompts": [None] * 3}
    assert funcs[0](completions, **cols) == [1.0, 0.0, 1.0]  # the option picked by number, or by its text
    assert funcs[2](completions, **cols) == [1.0, 0.0, 0.0]
    assert funcs[1](["the big dog"], answer=["dog"], choices=[[]]) == [pytest.approx(2 / 3)]  # free text: token F1


def test_prompt_rows_are_normalised_and_bad_ones_located(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    _write(f, [{"question": " Q? ", "choices": ["a", "b"], "answer": 2}, {"prompt": "Say hi.", "answer": "hi"}])
    rows = read_prompts(f, "p.jsonl")
    assert rows[0]["answer"] == "b" and rows[0]["prompt"].startswith("Q?\nOptions:\n1. a\n2. b")
    assert rows[1] == {"question": "Say hi.", "prompt": "Say hi.", "answer": "hi", "choices": None, "context": [],
                       "sources": [], "_line": 2}
    cases = {
        '{"answer": "a"}': "p.jsonl:1: missing 'prompt' or 'question'",
        '{"question": "q"}': "p.jsonl:1: missing 'answer'",
        '{"question": "q", "answer": "z", "choices": ["a", "b"]}': "p.jsonl:1: answer 'z' is not among the choices",
        '{"question": "q", "answer": "a", "choices": "a b"}': "'choices' must be a list",
        '{"question": "q", "answer": "a"': "p.jsonl:1: malformed JSON",
        '{"question": "q", "answer": "a", "sources": "x.md"}': "p.jsonl:1: 'sources' must be a list",
        '{"question": "q", "answer": "a", "context": []}': "p.jsonl:1: 'context' must be a non-empty list",
        '{"question": "q", "answer": "a", "context": [{"source": "x.md"}]}': "p.jsonl:1: context[0] must be text",
        '{"question": "q", "answer": "a", "context": ["t"], "sources": ["y"]}': "source 'y' is not one of the row's",
    }
    assert_data_errors(f, cases, lambda path: read_prompts(path, "p.jsonl"))


def test_dsl_plan_locates_a_bad_prompt_row(tmp_path: Path) -> None:
    rows: list = list(ROWS)
    rows[2] = {"question": "Which one?", "choices": OPTIONS, "answer": "7"}
    path = _recipe(tmp_path, REWARD, prompts=rows)
    r = run_dsl("plan", str(path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "mc.jsonl:3:" in out and "not among the choices" in out and "Traceback" not in out


def test_plan_refuses_prompts_that_share_a_question_with_a_gating_eval(tmp_path: Path) -> None:
    # the same question as prompt line 4, differently cased and punctuated: equal after sdk.metrics.normalize
    _write(tmp_path / "gate.jsonl", [{"id": "g1", "question": "Which one is a fruit?", "choices": OPTIONS,
                                      "answer": "4"},
                                     {"id": "g2", "question": "WHICH ONE IS ITEM 3", "choices": OPTIONS,
                                      "answer": "4"}])
    evals = ('  eval gate { data = "gate.jsonl"  metrics = [accuracy]  systems = [reward.mc]  bootstrap = 100\n'
             '              gate = reward.mc.accuracy >= 0.5 }\n')
    path = _recipe(tmp_path, REWARD + evals)
    r = run_dsl("plan", str(path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "share their question with eval.gate" in out
    assert "mc.jsonl:4" in out and "gate.jsonl:2" in out and "training split" in out
    # without the shared question the plan goes through
    _write(tmp_path / "gate.jsonl", [{"id": "g1", "question": "Which one is a fruit?", "choices": OPTIONS,
                                      "answer": "4"}])
    r = run_dsl("plan", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_dsl_validate_locates_bad_rewards(tmp_path: Path) -> None:
    cases = {'rewards = { bleu = 1.0 }': "reward bleu is not a metric a reward can use",
             'rewards = { fmt = { pattern = "([" } }': "pattern is not a regular expression",
             'rewards = { exact_match = 1.0 }  num_generations = 3  batch_size = 4': "must be a multiple of "
                                                                                      "num_generations"}
    for attrs, message in cases.items():
        path = _recipe(tmp_path, f'  reward mc {{\n    from = base_model.local\n    prompts = "mc.jsonl"\n'
                                 f'    {attrs}\n  }}\n')
        r = run_dsl("validate", str(path))
        out = r.stdout + r.stderr
        assert r.returncode != 0 and message in out and "r.dsl:" in out, (attrs, out)


CITED = [{"question": f"What starts a SIP call {i}?", "answer": "INVITE",
          "context": [{"source": "docs/bye.md", "text": "BYE ends a call."},
                      {"source": "docs/invite.md", "text": "INVITE starts a call."}],
          "sources": ["invite.md"]} for i in range(4)]


def test_citation_rewards_score_what_an_answer_cites_among_its_own_passages(tmp_path: Path) -> None:
    from sdk.backends.rag.system import DEFAULT_PROMPT
    from sdk.backends.training.reward_data import asked

    _write(tmp_path / "c.jsonl", CITED[:1])
    row = read_prompts(tmp_path / "c.jsonl", "c.jsonl")[0]
    assert row["sources"] == ["invite"] and [p["source"] for p in row["context"]] == ["docs/bye.md", "docs/invite.md"]
    text = asked(row, DEFAULT_PROMPT)  # asked as the rag step asks its generator: passages numbered from 1
    assert "[1] BYE ends a call." in text and "[2] INVITE starts a call." in text and text.endswith("Answer:")
    funcs, _ = reward_functions({"citation_precision": 1.0, "citation_recall": 0.5})
    cols = {"answer": ["INVITE"] * 4, "choices": [[]] * 4, "context_sources": [["bye", "invite"]] * 4,
            "gold_sources": [["invite"]] * 4}
    answers = ["INVITE [2]", "INVITE [1][2]", "INVITE [1]", "INVITE, no citation"]
    assert funcs[0](answers, **cols) == [1.0, 0.5, 0.0, 0.0]  # nothing cited: no precision to reward
    assert funcs[1](answers, **cols) == [1.0, 1.0, 0.0, 0.0]


def test_plan_refuses_a_citation_reward_over_rows_without_context(tmp_path: Path) -> None:
    rows: list = [dict(r) for r in CITED]
    del rows[2]["context"], rows[2]["sources"]
    body = REWARD.replace("rewards = { accuracy = 1.0,", "rewards = { citation_precision = 1.0,")
    path = _recipe(tmp_path, body, prompts=rows)
    r = run_dsl("plan", str(path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "mc.jsonl:3:" in out and "needs 'context' passages" in out, out
    assert "Traceback" not in out
    _write(tmp_path / "mc.jsonl", CITED)
    assert run_dsl("plan", str(path)).returncode == 0


@pytest.mark.slow
def test_grpo_with_citation_rewards_applies_and_records_each_reward(tmp_path: Path) -> None:
    import sdk
    from dsl.parser import load
    from sdk.workspace import open_workspace

    (tmp_path / "ask.jinja").write_text("Sources:\n{% for doc in documents %}[{{ loop.index }}] {{ doc.content }}\n"
                                        "{% endfor %}Q: {{ question }}\nA:")
    body = REWARD.replace("rewards = { accuracy = 1.0,", 'prompt = file("ask.jinja")\n'
                          "              rewards = { citation_precision = 1.0, citation_recall = 0.5,")
    path = _recipe(tmp_path, body, real_model=True, prompts=CITED)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    curve = json.loads((open_workspace(path).artifact("reward.mc").path / "rewards.json").read_text())
    assert [c["step"] for c in curve] == [1, 2]
    assert {"citation_precision", "citation_recall", "format"} <= set(curve[0])
    assert all(0.0 <= c["citation_recall"] <= 1.0 for c in curve)


@pytest.mark.slow
def test_grpo_with_a_judge_reward_grades_answers_through_the_judge_endpoint(tmp_path: Path) -> None:
    import sdk
    from dsl.parser import load
    from sdk.workspace import open_workspace
    from tests._eval import openai_server

    asked: list[str] = []

    def judge(messages: list[dict], n: int) -> str:
        asked.append(messages[-1]["content"])
        return "4 - mostly right"

    (tmp_path / "rubric.txt").write_text("5: names the right item; 1: anything else.")
    with openai_server(judge) as url:
        body = REWARD.replace("rewards = { accuracy = 1.0,", f'judge = endpoint {{ url = "{url}"  model = "j" }}\n'
                              '              rubric = file("rubric.txt")\n'
                              "              rewards = { judge = 1.0,")
        path = _recipe(tmp_path, body, real_model=True)
        result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    curve = json.loads((open_workspace(path).artifact("reward.mc").path / "rewards.json").read_text())
    assert [c["judge"] for c in curve] == [0.75, 0.75]  # "4" on the judge's 1..5 scale, every answer
    assert len(asked) == 2 * 4  # two steps of four answers, each graded once
    assert "names the right item" in asked[0] and "Which one is item" in asked[0]


def test_a_judge_reward_needs_a_judge_endpoint_and_a_judge_needs_its_reward(tmp_path: Path) -> None:
    path = _recipe(tmp_path, REWARD.replace("rewards = { accuracy = 1.0,", "rewards = { judge = 1.0,"))
    r = run_dsl("validate", str(path))
    assert r.returncode != 0 and "reward judge needs judge = endpoint" in r.stdout + r.stderr
    path = _recipe(tmp_path, REWARD.replace("rewards = {", 'judge = endpoint { url = "http://127.0.0.1:9/v1"  '
                                            'model = "j" }\n              rewards = {'))
    r = run_dsl("validate", str(path))
    assert r.returncode != 0 and "judge is set but no reward uses it" in r.stdout + r.stderr


def _sft_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Answer with one word."},
                          {"role": "user", "content": f"Which one is item {i}?"},
                          {"role": "assistant", "content": OPTIONS[i % 4]}]} for i in range(n)]


def test_prompts_from_a_dataset_are_its_conversations_before_the_answer() -> None:
    from sdk.backends.training.reward_data import dataset_prompts

    rows = dataset_prompts([{**r, "_line": i + 1} for i, r in enumerate(_sft_rows(2))])
    assert rows[1]["question"] == "Which one is item 1?" and rows[1]["answer"] == "dog" and rows[1]["_line"] == 2
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user"]  # the turns before the answer


def test_plan_checks_prompts_taken_from_a_dataset(tmp_path: Path) -> None:
    _write(tmp_path / "sft.jsonl", _sft_rows(8))
    _write(tmp_path / "gate.jsonl", [{"id": "g1", "question": "which one is ITEM 5", "answer": "dog"}])
    body = (REWARD.replace('prompts = "mc.jsonl"', "data = dataset.qa")
            .replace("rewards = { accuracy = 1.0,", "rewards = { exact_match = 1.0,")
            + '  dataset qa { path = "sft.jsonl" }\n'
            + '  eval gate { data = "gate.jsonl"  metrics = [exact_match]  systems = [reward.mc]  bootstrap = 100\n'
              '              gate = reward.mc.exact_match >= 0.5 }\n')
    path = _recipe(tmp_path, body)
    r = run_dsl("plan", str(path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "share their question with eval.gate" in out and "sft.jsonl:6" in out, out
    _write(tmp_path / "gate.jsonl", [{"id": "g1", "question": "Which one is a fruit?", "answer": "apple"}])
    r = run_dsl("plan", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dataset.qa" in r.stdout and "reward.mc" in r.stdout
    both = REWARD.replace('prompts = "mc.jsonl"', 'prompts = "mc.jsonl"  data = dataset.qa')
    r = run_dsl("validate", str(_recipe(tmp_path, both + '  dataset qa { path = "sft.jsonl" }\n')))
    assert r.returncode != 0 and "one of them" in r.stdout + r.stderr
    text = REWARD.replace('prompts = "mc.jsonl"', "data = dataset.t") + \
        '  dataset t { path = "sft.jsonl"  format = text }\n'
    _write(tmp_path / "sft.jsonl", [{"text": "plain text"}])
    r = run_dsl("plan", str(_recipe(tmp_path, text)))
    assert r.returncode != 0 and "dataset.t is format text" in r.stdout + r.stderr


@pytest.mark.slow
def test_grpo_on_a_datasets_training_rows_applies(tmp_path: Path) -> None:
    import sdk
    from dsl.parser import load
    from sdk.workspace import open_workspace

    _write(tmp_path / "sft.jsonl", _sft_rows(10))
    body = (REWARD.replace('prompts = "mc.jsonl"', "data = dataset.qa")
            .replace("rewards = { accuracy = 1.0,", "rewards = { exact_match = 1.0, f1 = 0.5,")
            + '  dataset qa { path = "sft.jsonl"  validation_split = 0.2 }\n')
    path = _recipe(tmp_path, body, real_model=True)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    ws = open_workspace(path)
    m = ws.artifact("reward.mc").metrics
    assert m["train_prompts"] == ws.artifact("dataset.qa").metrics["train_rows"] < 10  # never the validation rows
    assert "sft.jsonl" in (ws.artifact("reward.mc").path / "adapter" / "README.md").read_text()


@pytest.mark.slow
def test_grpo_with_retrieval_scores_citations_against_the_passages_a_rag_step_retrieves(tmp_path: Path) -> None:
    import sdk
    from dsl.parser import load
    from sdk.workspace import open_workspace

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "invite.md").write_text("The INVITE request starts a SIP call between two user agents.")
    (tmp_path / "docs" / "bye.md").write_text("The BYE request ends a SIP call and releases the media.")
    rows = [{"question": f"Which request starts a SIP call ({i})?", "answer": "INVITE", "sources": ["invite.md"]}
            for i in range(4)]
    body = (REWARD.replace("rewards = { accuracy = 1.0,", "retrieval = rag.docs\n"
                           "              rewards = { citation_precision = 1.0, citation_recall = 0.5,")
            + '  corpus docs { paths = ["docs/*.md"] }\n'
            + "  rag docs { corpus = corpus.docs  retriever = bm25  top_k = 2 }\n")
    path = _recipe(tmp_path, body, real_model=True, prompts=rows)
    result = sdk.apply(load(path))
    assert result.ok, [o.error for o in result.failed]
    art = open_workspace(path).artifact("reward.mc")
    assert art.metrics["passages_per_prompt"] == 2.0  # both chunks retrieved for every prompt (top_k = 2)
    curve = json.loads((art.path / "rewards.json").read_text())
    assert {"citation_precision", "citation_recall"} <= set(curve[0])
    _write(tmp_path / "mc.jsonl", [{k: v for k, v in r.items() if k != "sources"} for r in rows])
    r = run_dsl("plan", str(path))
    assert r.returncode != 0 and "mc.jsonl:1:" in r.stdout + r.stderr and "needs the gold 'sources'" in r.stdout + r.stderr
    both = body.replace("retrieval = rag.docs", 'retrieval = rag.docs  prompt = "{{ question }}"')
    r = run_dsl("validate", str(_recipe(tmp_path, both, prompts=rows)))
    assert r.returncode != 0 and "prompt does not apply with retrieval" in r.stdout + r.stderr


def test_each_kind_of_row_is_asked_as_the_model_will_be_asked() -> None:
    from sdk.backends.rag.system import DEFAULT_PROMPT
    from sdk.backends.training.reward_data import dataset_prompts, prompt_for

    plain = {"question": "Q?", "prompt": "Q?", "context": [], "sources": []}
    assert prompt_for(plain, DEFAULT_PROMPT, chat=True) == [{"role": "user", "content": "Q?"}]
    assert prompt_for(plain, DEFAULT_PROMPT, chat=False) == "Question: Q?\nAnswer:"  # the eval's raw convention
    row = dataset_prompts([{**_sft_rows(1)[0], "_line": 1}])[0]
    assert prompt_for(row, DEFAULT_PROMPT, chat=True) == row["messages"]  # the conversation, system turn included
    retrieved = {**row, "context": [{"source": "a.md", "content": "A."}], "asked": "[1] A.\nQuestion: Q?"}
    msgs = prompt_for(retrieved, DEFAULT_PROMPT, chat=True)
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"] == "[1] A.\nQuestion: Q?"
    assert prompt_for(retrieved, DEFAULT_PROMPT, chat=False) == "[1] A.\nQuestion: Q?"
