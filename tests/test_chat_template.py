"""The same chat template from training to serving: the template a model was trained with is saved in its artifact
and used verbatim by the eval, Haystack's generator (rag systems), the gateway's local engine and SGLang's launch
command. One conversation rendered through each path gives identical token ids."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sdk.artifacts import Artifact
from tests._tiny import tiny_model_dir

CONVERSATION = [{"role": "user", "content": "Which interface carries SIP between the P-CSCF and the S-CSCF?"}]


def test_every_path_renders_the_trained_template_to_the_same_tokens(tmp_path: Path) -> None:
    from sdk.backends.serve.engines import sglang_plan
    from sdk.backends.eval.clients import LocalModel
    from sdk.backends.models import handle
    from sdk.backends.rag.system import LocalChatGenerator
    from sdk.serving.engine import LocalEngine

    folder = tiny_model_dir(tmp_path / "m")
    art = Artifact("pretrain.base", tmp_path, {"outputs": {"model": str(folder), "model_source": "local",
                                                            "tokenizer": str(folder)}})
    h = handle(art)
    evaluated = LocalModel(h)
    eval_ids = evaluated.encode(evaluated.chat(CONVERSATION[0]["content"]))

    engine = LocalEngine(h, max_batch_size=1, name="pretrain.base")
    try:
        engine_ids = engine.tokenizer(engine.prompt(CONVERSATION), add_special_tokens=False)["input_ids"]
    finally:
        engine.close()

    tok = LocalChatGenerator.from_artifact(art).component.pipeline.tokenizer  # what Haystack's generator renders
    haystack_ids = tok.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=False)
    haystack_ids = tok(haystack_ids, add_special_tokens=False)["input_ids"]

    variants = {"pretrain.base": {"type": "model", "model": str(folder), "adapter": None, "tokenizer": str(folder)}}
    block = SimpleNamespace(engine_port=30000, sglang=SimpleNamespace(model_dump=lambda: {"tp": 1}))
    planned, _ = sglang_plan(variants, {}, block)
    command = planned["command"]
    template_file = command[command.index("--chat-template") + 1]
    assert Path(template_file) == folder / "chat_template.jinja"
    sglang_text = tok.apply_chat_template(CONVERSATION, chat_template=Path(template_file).read_text(),
                                          add_generation_prompt=True, tokenize=False)
    sglang_ids = tok(sglang_text, add_special_tokens=False)["input_ids"]

    assert eval_ids == engine_ids == haystack_ids == sglang_ids
    assert len(eval_ids) > 10


def test_the_trained_template_ends_an_assistant_turn_with_eos(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir(tmp_path / "m"))
    text = tok.apply_chat_template(CONVERSATION + [{"role": "assistant", "content": "Mw"}], tokenize=False)
    assert "Mw<|end|></s>" in text  # generation learns to stop: every path stops at eos
