"""Chat templates render through our sandbox (sdk.templating.render_chat): the same text as transformers for
benign templates, a clear refusal (never a hang) for hostile ones."""

from __future__ import annotations

import pytest

from sdk.errors import DslError
from sdk.templating import TemplateRefused, render_chat

LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML = """{% for message in messages %}
{% if message['role'] == 'system' and loop.first %}
<|im_start|>system
{{ message['content'] }}<|im_end|>
{% elif message['role'] == 'assistant' %}
<|im_start|>assistant
{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}

{% else %}
{% if message['role'] not in ['user', 'system'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endif %}
{% if loop.index > 50 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}{{ {'k': 'é'} | tojson }}"""
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Ça va ? "},
            {"role": "assistant", "content": "Oui."}, {"role": "user", "content": "Et toi?"}]
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


@pytest.mark.parametrize("template", [LLAMA3, CHATML], ids=["llama3", "chatml-generation"])
@pytest.mark.parametrize("gen", [True, False])
def test_same_text_as_transformers(template: str, gen: bool) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([MESSAGES], chat_template=template, add_generation_prompt=gen, **TOKENS)
    ours = render_chat(template, MESSAGES, gen, **TOKENS)
    assert ours == rendered[0]
    assert "<|im_start|>assistant\nOui.<|im_end|>" in ours or "Oui.<|eot_id|>" in ours


def test_tokenizer_chat_matches_apply_chat_template() -> None:
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2},
                                                                               unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = LLAMA3
    from sdk.templating import tokenizer_chat

    assert tokenizer_chat(tok, MESSAGES) == tok.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                     tokenize=False)


@pytest.mark.parametrize("payload", [
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{% for m in messages %}{% for c in m.content %}{% for d in m.content %}.{% endfor %}{% endfor %}{% endfor %}",
    "{{ messages.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ raise_exception('stop') }}",
])
def test_hostile_chat_template_refused(payload: str) -> None:
    long = [{"role": "user", "content": "y" * 2000}]
    with pytest.raises(DslError) as e:
        render_chat(payload, long, where="base_model.m: chat_template (t.jinja)")
    assert str(e.value).startswith("base_model.m: chat_template (t.jinja)")
    if "raise_exception" not in payload:
        assert isinstance(e.value, TemplateRefused) or "cannot be rendered" in str(e.value)


def test_static_check_sees_through_generation_markers() -> None:
    from sdk.templating import problem

    assert problem(CHATML) is None
    hostile = "{% generation %}{{ messages.__class__ }}{% endgeneration %}"
    assert "__class__" in (problem(hostile) or "")
    assert "unbounded" in (problem("{% generation %}{% for i in range(10**9) %}{% endfor %}{% endgeneration %}") or "")


def test_plan_time_dry_run_refuses_a_hostile_template() -> None:
    from sdk.spec.templates import end_of_turn_problem

    assert end_of_turn_problem(CHATML) is None
    why = end_of_turn_problem(CHATML.replace("{% endfor %}", "{% for i in range(10**9) %}{% endfor %}{% endfor %}"))
    assert why and "refused" in why and "range" in why


def _tokenizer(template: str) -> object:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2},
                                                                               unk_token="<unk>")),
                                  bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_training_rows_are_checked_before_trl_renders_them() -> None:
    from sdk.backends.training.tuning import check_chat_rows

    rows = [{"messages": MESSAGES, "_line": 3},
            {"messages": [{"role": "user", "content": "trigger " * 20}], "_line": 4}]
    check_chat_rows(_tokenizer(CHATML), rows, "finetune.sip")  # benign: passes
    hostile = "{% for m in messages %}{% if 'trigger' in m.content %}{{ 'x' * 10**9 }}{% endif %}{% endfor %}"
    with pytest.raises(TemplateRefused, match=r"^finetune.sip: the chat template \(training row 4, messages\)"):
        check_chat_rows(_tokenizer(hostile), rows, "finetune.sip")


def test_gateway_engine_refuses_a_hostile_template_instead_of_hanging() -> None:
    from sdk.serving.engine import LocalEngine

    engine = LocalEngine.__new__(LocalEngine)  # the prompt step alone: no model loaded
    engine.tokenizer, engine.name = _tokenizer("{% for i in range(10**12) %}{{ i }}{% endfor %}"), "finetune.sip"
    with pytest.raises(TemplateRefused, match="chat template of model 'finetune.sip' is refused"):
        engine.prompt([{"role": "user", "content": "hi"}])
    engine.tokenizer = _tokenizer(LLAMA3)
    assert engine.prompt([{"role": "user", "content": "hi"}]).endswith("assistant<|end_header_id|>\n\n")


def test_plan_refuses_a_hostile_chat_template_from_a_shared_model_folder_or_a_file(tmp_path) -> None:
    import json

    from tests.conftest import run_dsl

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    hostile = "{% for m in messages %}{% generation %}{% for i in range(10**9) %}x{% endfor %}{% endgeneration %}{% endfor %}"
    (tmp_path / "model" / "chat_template.jinja").write_text(hostile)
    (tmp_path / "qa.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}) + "\n")
    recipe = ('domain d {\n  base_model m {\n    path = "model"\n  }\n  dataset qa {\n    path = "qa.jsonl"\n  }\n'
              '  finetune sip {\n    from = base_model.m\n    data = dataset.qa\nTEMPLATE  }\n}\n')
    path = tmp_path / "r.dsl"
    path.write_text(recipe.replace("TEMPLATE", ""))
    r = run_dsl("plan", str(path))
    assert r.returncode == 1 and "r.dsl:9:12" in r.stderr and "refused" in r.stderr and "range" in r.stderr, r.stderr
    (tmp_path / "t.jinja").write_text("{% generation %}{{ 'x' * 10**9 }}{% endgeneration %}")
    path.write_text(recipe.replace("TEMPLATE", '    chat_template = file("t.jinja")\n'))
    r = run_dsl("plan", str(path))
    assert r.returncode == 1 and "r.dsl:11:" in r.stderr and "t.jinja" in r.stderr and "refused" in r.stderr, r.stderr


def test_preference_rows_are_checked_as_trl_joins_them() -> None:
    """TRL renders a preference row's prompt joined to each answer (one conversation), not each part alone: the
    pre-check renders exactly those texts, so a template that misbehaves only on the joined conversation is a
    located error (FILE:LINE of the row) before training."""
    from trl.data_utils import apply_chat_template

    from sdk.backends.training.tuning import check_chat_rows, trl_conversations
    from sdk.errors import DataError
    from sdk.templating import tokenizer_chat

    prompt = [{"role": "user", "content": "Which band does site Bage use?"}]
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "n78"}],
            "rejected": [{"role": "assistant", "content": "n1"}]}
    unpaired = {"prompt": prompt, "completion": [{"role": "assistant", "content": "n78"}], "label": True}
    tok = _tokenizer(LLAMA3)
    for row in (pair, unpaired):  # the texts TRL's data prep renders are the ones the check renders
        ours = {what: tokenizer_chat(tok, msgs, gen, continue_final_message=cont)
                for what, msgs, gen, cont in trl_conversations(row)}
        trl = apply_chat_template(row, tok)
        answers = [k for k in ("chosen", "rejected", "completion") if k in row]
        assert ours["prompt"] == trl["prompt"] and [ours[f"prompt + {k}"] for k in answers] == \
            [trl["prompt"] + trl[k] for k in answers]
    rows = [{**pair, "_line": 3}, {**unpaired, "_line": 4}]
    check_chat_rows(tok, rows, "align.a", "pairs.jsonl")  # benign: passes
    joined_only = LLAMA3.replace("{{- bos_token }}", "{% if messages|length > 1 %}{{ 'x' * 10**9 }}{% endif %}")
    with pytest.raises(DataError, match=r"^pairs\.jsonl:3: align\.a: the chat template \(prompt \+ chosen\) is "
                                        r"refused: repeats building over"):
        check_chat_rows(_tokenizer(joined_only), rows, "align.a", "pairs.jsonl")
    with pytest.raises(TemplateRefused, match=r"^align\.a: the chat template \(training row 4, prompt \+ completion\)"):
        check_chat_rows(_tokenizer(joined_only), rows[1:], "align.a")  # no file given: the row's line


def test_the_rag_generator_renders_once_in_the_sandbox_and_answers_as_before(tmp_path) -> None:
    """The rag pipeline's local generator renders the chat template in our sandbox alone and gives the model the
    rendered text: the answer is the one Haystack's chat generator gave, and transformers never renders it again."""
    from haystack.dataclasses import ChatMessage

    from sdk.artifacts import Artifact
    from sdk.backends.rag.system import LocalChatGenerator
    from tests._tiny import tiny_model_dir

    folder = tiny_model_dir(tmp_path / "m")
    art = Artifact("pretrain.base", tmp_path, {"outputs": {"model": str(folder), "model_source": "local",
                                                            "tokenizer": str(folder)}})
    gen = LocalChatGenerator.from_artifact(art)
    question = "Which interface carries SIP between the P-CSCF and the S-CSCF?"
    before = gen.component.run(messages=[ChatMessage.from_user(question)],
                               generation_kwargs={"max_new_tokens": 8, "do_sample": False})["replies"][0].text
    tok = gen.component.pipeline.tokenizer

    def second_rendering(*args, **kwargs):
        raise AssertionError("the chat template was rendered again, outside the sandbox")

    tok.apply_chat_template = second_rendering
    assert gen(question, 8) == before
    tok.chat_template = "{% for m in messages %}{% for i in range(10**9) %}{% endfor %}{% endfor %}"
    with pytest.raises(TemplateRefused, match="the chat template of pretrain.base is refused"):
        gen(question, 8)
