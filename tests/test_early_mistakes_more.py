"""Issue 23, a second round of maintainers' probes: new mistakes of each class, each a located error (or a located
warning where the choice is legitimate) at validate or plan, before any step runs, never a traceback.

Recipe mistakes (endpoint URLs, hosts and ports, mixed precision on the CPU, machine ranks, gates beyond a metric's
edge, a zip password on a plain file, rewards that all weigh 0, one system routed twice), and data files in another
encoding or format (UTF-16, Latin-1, a byte order mark, a JSON array or a CSV where JSONL is read), preference files
with nothing to learn, a validation split that leaves no training row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsl.parser import load_recipe
from sdk.errors import SpecError
from sdk.planner import PlanProblems, plan
from tests.test_early_mistakes import assert_located_at_validate
from tests.test_plan_checks import CHAT, ITEM, PAIR, _plan_errors, _recipe

RAG = "rag r { corpus = corpus.c  retriever = bm25  generator = pretrain.p }"
ROUTE = {"x.jsonl": [{"text": f"q{i}", "target": "domain" if i % 2 else "general"} for i in range(8)]}
E = {"e.jsonl": [ITEM]}
DS = 'dataset d { path = "d.jsonl" }'

# (block, files, part of the message): each refused by `dsl validate`, located in the recipe
VALIDATE = {
    "endpoint_url_without_scheme": ('rag r { corpus = corpus.c  retriever = bm25  generator = endpoint { url = '
                                    '"localhost:8000/v1", model = "m" } }', {},
                                    "url 'localhost:8000/v1' is not an http(s) URL with a host (e.g. "
                                    "http://localhost:8000/v1)"),
    "endpoint_url_with_a_password": ('eval e { data = "e.jsonl"  systems = [endpoint { url = "http://u:pw@h/v1", '
                                     'model = "m" }] }', E, "the url holds a password"),
    "serve_host_with_a_scheme": ('serve { host = "http://0.0.0.0" }', {},
                                 "'http://0.0.0.0' is not a host name or IP address (write '0.0.0.0'"),
    "serve_port_is_the_engine_port": ("serve { engine = sglang  port = 30000 }", {},
                                      "port and engine_port are both 30000"),
    "fp16_on_the_cpu": ("compute { cpu = true  mixed_precision = fp16 }", {}, "mixed_precision = fp16 needs a GPU"),
    "machine_rank_past_the_machines": ('compute { launcher = torchrun  num_machines = 2  machine_rank = 2  '
                                       'main_process_ip = "10.0.0.1" }', {},
                                       "machine_rank (2) must be below num_machines (2)"),
    "main_process_ip_not_a_host": ('compute { launcher = torchrun  num_machines = 2  main_process_ip = "rank 0" }',
                                   {}, "'rank 0' is not a host name or IP address"),
    "gate_beyond_the_edge": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  gate = pretrain.p.f1.ci_low > 1 }',
                             E, "`pretrain.p.f1.ci_low > 1` is decided before anything runs (no value is above 1)"),
    "gate_below_the_edge": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  gate = 0 > pretrain.p.f1 }', E,
                            "(no value is below 0)"),
    "password_on_a_plain_file": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  password = env("ZIP_PW") }', E,
                                 "password applies to an encrypted zip, and 'e.jsonl' is no zip"),
    "rewards_all_weigh_zero": ('reward g { from = pretrain.p  prompts = "g.jsonl"  rewards = { f1 = 0.0 } }',
                               {"g.jsonl": [{"question": "q", "answer": "a"}]}, "every reward weighs 0"),
    "route_general_is_the_domain": (RAG + '\n  route { examples = "x.jsonl"  domain = rag.r  general = rag.r }', ROUTE,
                                    "general and domain both name rag.r"),
    "rag_prompt_without_documents": ('rag r { corpus = corpus.c  retriever = bm25  generator = pretrain.p  prompt = '
                                     '"Q: {{ question }}" }', {}, "the prompt template never uses documents: the "
                                     "model would never see the passages retrieved for it"),
    "eval_prompt_with_a_misspelled_question": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  prompt = '
                                               '"Q: {{ questoin }}" }', E, "never uses question: every question would "
                                               "be asked as the same text (its variables are question; 'questoin' is "
                                               "none of them)"),
    "text_field_without_jsonl": ('corpus k { paths = ["notes.txt"]  text_field = "body" }', {},
                                 "text_field applies to JSONL files, and no file of corpus.k is JSONL"),
    "synth_prompt_with_a_misspelled_chunk": ('synth s { task = qa  corpus = corpus.c  teacher = pretrain.p  prompt = '
                                             '"Ask about {{ chunkk }}" }', {}, "never uses chunk: the teacher would "
                                             "never see the passage its row is grounded in"),
    "template_file_not_utf8": (DS + '\n  finetune f { from = pretrain.p  data = dataset.d  chat_template = file('
                               '"t.j2") }', {"d.jsonl": [CHAT], "t.j2": "caf\xe9 {{ messages }}".encode("latin-1")},
                               "file('t.j2') is not UTF-8 text (invalid continuation byte at byte 3): save it as UTF-8"),
    "dataset_path_a_glob": ('dataset d { path = "data/*.jsonl" }', {},
                            "'data/*.jsonl' is a glob, and this attribute names one file"),
    "hub_id_a_url": ('base_model m { id = "https://huggingface.co/Qwen/Qwen2.5-0.5B" }', {},
                     "is not a hub model id (org/name: letters, digits, '-', '_' and '.'); write 'Qwen/Qwen2.5-0.5B'"),
    "hub_id_with_spaces": ('base_model m { id = "meta llama/Llama 3" }', {}, "'meta llama/Llama 3' is not a hub model id"),
    "pairwise_grading_of_one_system": ('eval e { data = "e.jsonl"  systems = [pretrain.p]  human = { mode = pairwise '
                                       '} }', E, "human = { mode = pairwise } asks experts which of two answers is "
                                       "better, and this eval has one system"),
    "exo_pair_without_label_smoothing": ('align a { from = pretrain.p  pairs = "p.jsonl"  loss = exo_pair }',
                                         {"p.jsonl": [PAIR]}, "loss = exo_pair needs label_smoothing > 0"),
    "label_smoothing_half_or_more": ('align a { from = pretrain.p  pairs = "p.jsonl"  label_smoothing = 0.7 }',
                                     {"p.jsonl": [PAIR]}, "label_smoothing = 0.7 assumes at least half the pairs"),
    "route_target_named_general": (RAG + '\n  route { examples = "x.jsonl"  domain = rag.r  targets = { general = '
                                   'pretrain.p } }', ROUTE, "general is the name of the route's own general target"),
}


@pytest.mark.parametrize("case", sorted(VALIDATE))
def test_mistakes_in_the_recipe_are_located_at_validate(tmp_path: Path, case: str) -> None:
    assert_located_at_validate(tmp_path, *VALIDATE[case])


def test_good_urls_hosts_and_ports_are_accepted(tmp_path: Path) -> None:
    body = ('rag r { corpus = corpus.c  retriever = bm25  generator = endpoint { url = "https://api.example.com/v1", '
            'model = "m" } }\n  serve { host = "0.0.0.0"  engine = sglang  port = 8000 }\n  compute { launcher = '
            'torchrun  num_machines = 2  machine_rank = 1  main_process_ip = "node-0.cluster"  mixed_precision = bf16 }')
    spec = load_recipe(_recipe(tmp_path, body, {})).spec
    assert spec.serve["default"].host == "0.0.0.0" and spec.compute["default"].machine_rank == 1


def _plan_diagnostics(path: Path) -> tuple[list[Any], list[Any]]:
    """(errors, warnings) of the plan, each a located diagnostic."""
    recipe = load_recipe(path)
    warnings: list[Any] = []
    try:
        plan(recipe.spec, None, backend="test", on_warning=warnings.extend)
        errors: list[Any] = []
    except PlanProblems as e:
        errors = recipe.diagnostics(e.problems)
    found = errors + recipe.diagnostics(warnings)
    assert all(d.span is not None and d.span.line >= 5 for d in found), found
    return errors, recipe.diagnostics(warnings)


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# (block, files, part of the message, part of the hint): data in another encoding or format, located at plan
HINTED = {
    "utf16": (DS, {"d.jsonl": _jsonl([CHAT]).encode("utf-16")}, "d.jsonl: not UTF-8 text", "the file is UTF-16"),
    "latin1": (DS, {"d.jsonl": _jsonl([CHAT]).replace("Hello.", "Café.").encode("latin-1")}, "d.jsonl: not UTF-8",
               "it may be Latin-1"),
    "byte_order_mark": ('eval e { data = "e.jsonl"  systems = [pretrain.p] }',
                        {"e.jsonl": b"\xef\xbb\xbf" + _jsonl([ITEM]).encode()}, "e.jsonl:1: malformed JSON",
                        "byte order mark"),
    "json_array": ('align a { from = pretrain.p  pairs = "p.jsonl" }', {"p.jsonl": json.dumps([PAIR, PAIR], indent=1)},
                   "p.jsonl:1: malformed JSON", "this looks like a JSON array"),
    "csv": ('dataset d { path = "d.csv"  format = instruction }', {"d.csv": "instruction,output\nq,a\n"},
            "d.csv:1: malformed JSON", "this looks like CSV or TSV"),
    "gzip": (DS, {"d.jsonl": __import__("gzip").compress(b"{}\n")}, "d.jsonl: not UTF-8 text", "gzip-compressed"),
    "parquet": (DS, {"d.jsonl": b"PAR1\x00\x01"}, "d.jsonl:1: malformed JSON", "the file is Parquet"),
    "jsonl_named_json": ('eval e { data = "e.json"  systems = [pretrain.p] }',
                         {"e.json": _jsonl([ITEM, {**ITEM, "id": "2"}])}, "e.json:2: malformed JSON: Extra data",
                         "name it .jsonl, or set format = jsonl"),
}


@pytest.mark.parametrize("case", sorted(HINTED))
def test_a_file_in_another_encoding_or_format_is_named_at_plan(tmp_path: Path, case: str) -> None:
    body, files, message, hint = HINTED[case]
    errors, _ = _plan_diagnostics(_recipe(tmp_path, body, files))
    assert len(errors) == 1 and message in errors[0].message and hint in (errors[0].hint or ""), errors


def test_preference_pairs_with_nothing_to_learn(tmp_path: Path) -> None:
    same = {**PAIR, "rejected": PAIR["chosen"]}
    path = _recipe(tmp_path, 'align a { from = pretrain.p  pairs = "p.jsonl" }', {"p.jsonl": [PAIR, same]})
    errors, warnings = _plan_diagnostics(path)  # one pair of two: legitimate, but worth a word
    assert errors == [] and [w.message for w in warnings] == ["1 pair has chosen == rejected (nothing to learn): "
                                                              "p.jsonl:2"]
    (tmp_path / "p.jsonl").write_text(_jsonl([same, same]))
    [error] = _plan_errors(path)
    assert "p.jsonl: every pair has chosen == rejected (2 of 2), so there is no preference to learn" in error


def test_a_validation_split_that_leaves_no_training_row_names_the_file_and_the_attribute(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'dataset d { path = "d.jsonl"  validation_split = 0.1 }', {"d.jsonl": [CHAT]})
    [error] = _plan_errors(path)
    assert error == "5: d.jsonl: validation_split leaves no training rows (1 row, validation_split = 0.1)"


EV = 'eval e { data = "e.jsonl"  systems = [pretrain.p] }'
# (block, files, part of the message): eval items whose shape the reader used to drop silently, located at plan
ITEMS = {
    "tags_a_string": (EV, {"e.jsonl": [ITEM, {**ITEM, "id": "2", "tags": "train"}]}, "e.jsonl:2: 'tags' must be a list"),
    "choices_a_string": (EV, {"e.jsonl": [{**ITEM, "choices": "ends it, starts it"}]},
                         "e.jsonl:1: 'choices' must be a list of choices"),
    "corpus_of_empty_files": ('corpus k { paths = ["k/*.txt"] }', {"k/a.txt": "", "k/b.txt": "\n  \n"},
                              "k/a.txt and the 1 other files of corpus.k: no text (every file is empty or blank)"),
    "tsv_with_commas": ('eval e { data = "e.tsv"  systems = [pretrain.p] }', {"e.tsv": "id,question,answer\n1,q,a\n"},
                        "e.tsv:1: the header 'id,question,answer' has no tab"),
}


@pytest.mark.parametrize("case", sorted(ITEMS))
def test_eval_items_of_the_wrong_shape_are_located_at_plan(tmp_path: Path, case: str) -> None:
    body, files, expected = ITEMS[case]
    (tmp_path / "k").mkdir()
    errors = _plan_errors(_recipe(tmp_path, body, files))
    assert len(errors) == 1 and expected in errors[0], errors


def test_a_tsv_eval_set_with_a_byte_order_mark_keeps_its_first_column(tmp_path: Path) -> None:
    from sdk.evalsets import load_items

    path = _recipe(tmp_path, 'eval e { data = "e.tsv"  systems = [pretrain.p] }',
                   {"e.tsv": b"\xef\xbb\xbfid\tquestion\tanswer\nq7\tWhat?\ta\n"})
    assert _plan_errors(path) == []
    spec = load_recipe(path).spec
    assert [it.id for it in load_items(tmp_path / "e.tsv", spec.eval["e"])] == ["q7"]  # not '\ufeffid' unmapped


def _safetensors(folder: Path, names: list[str]) -> None:
    """A model folder whose safetensors header lists ``names`` (the check reads the header only)."""
    import struct

    folder.mkdir()
    header = json.dumps({n: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for n in names}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (folder / "config.json").write_text("{}")


def test_lora_target_modules_the_model_lacks_are_located_at_plan(tmp_path: Path) -> None:
    body = (DS + '\n  finetune f { from = pretrain.p  data = dataset.d  lora = { target_modules = ["query_key_value", '
            '"q_proj"] } }')
    path = _recipe(tmp_path, body, {"d.jsonl": [CHAT]})
    [error] = _plan_errors(path)  # pretrain.p trains a llama architecture: its modules are known
    assert "target_modules 'query_key_value' name no module of the model pretrain.p starts from" in error
    path.write_text(path.read_text().replace('"query_key_value", ', ""))
    assert _plan_errors(path) == []
    _safetensors(tmp_path / "gpt", ["transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"])
    path.write_text(path.read_text().replace("finetune f { from = pretrain.p", 'base_model g { path = "gpt" }\n  '
                                             "finetune f { from = base_model.g"))
    [error] = _plan_errors(path)  # a local folder: the names in its safetensors header
    assert "target_modules 'q_proj' name no module of the model base_model.g" in error
    path.write_text(path.read_text().replace('"q_proj"', '"c_attn", "lm_head"'))
    assert _plan_errors(path) == []
    (tmp_path / "p.jsonl").write_text(_jsonl([PAIR]))  # DPO refuses an adapter on lm_head when it starts
    path.write_text(path.read_text().replace("finetune f { from = base_model.g  data = dataset.d",
                                             'align a { from = base_model.g  pairs = "p.jsonl"'))
    [error] = _plan_errors(path)
    assert "target_modules names lm_head, and TRL's DPO trainer refuses an adapter on lm_head" in error


def test_an_empty_route_file_and_unmeasurable_retrieval_metrics(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25 }\n  route { examples = "x.jsonl"  domain = '
                             'rag.r }', {"x.jsonl": ""})
    assert _plan_errors(path) == ["6: x.jsonl: no examples"]  # not "found only none"
    path = _recipe(tmp_path, 'rag r { corpus = corpus.c  retriever = bm25 }\n  eval e { data = "e.jsonl"  systems = '
                             '[rag.r]  metrics = [recall_at_k, mrr] }', E)
    errors, warnings = _plan_diagnostics(path)  # no gate on them: a warning, and the plan goes on
    assert errors == [] and [w.message for w in warnings] == [
        "no item of e.jsonl names its gold sources, so recall_at_k, mrr are never measured"]


def test_a_value_of_the_wrong_type_is_one_error_not_one_per_character(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_recipe(_recipe(tmp_path, 'corpus k { paths = "notes.txt" }', {}))
    assert [d.message for d in e.value.diagnostics] == ["corpus.k.paths: expected a list [ ... ], got a string"]


STRICT = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception("
          "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}<|{{ m['role'] }}|>"
          "{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_rows_the_chat_template_refuses_are_located_at_plan(tmp_path: Path) -> None:
    """A template that raises on roles out of order (Mistral's, Gemma's) refuses the row at plan, by the renderer
    the training step uses, not after the steps before it have trained."""
    first = {"messages": [{"role": "assistant", "content": "Hello."}, *CHAT["messages"]]}
    path = _recipe(tmp_path, DS + '\n  finetune f { from = pretrain.p  data = dataset.d  chat_template = file("t.j2") }',
                   {"d.jsonl": [CHAT, CHAT], "t.j2": STRICT})
    assert _plan_errors(path) == []
    (tmp_path / "d.jsonl").write_text(_jsonl([CHAT, first]))
    assert _plan_errors(path) == ["6: d.jsonl:2: finetune.f: the chat template (messages) cannot be rendered "
                                  "(TemplateError: Conversation roles must alternate user/assistant/user/assistant/...)"]
    (tmp_path / "p.jsonl").write_text(_jsonl([{**PAIR, "prompt": [{"role": "system", "content": "s"}]}]))
    path.write_text(path.read_text().replace("finetune f { from = pretrain.p  data = dataset.d",
                                             'align a { from = pretrain.p  pairs = "p.jsonl"'))
    [error] = _plan_errors(path)
    assert "p.jsonl:1: align.a: the chat template (prompt) cannot be rendered" in error


def test_adapt_pairs_whose_sources_name_no_corpus_file_are_located_at_plan(tmp_path: Path) -> None:
    body = DS + '\n  rag r { corpus = corpus.c  retriever = dense  adapt = { pairs = dataset.d } }'
    path = _recipe(tmp_path, body, {"d.jsonl": [{**CHAT, "sources": ["other.md"]}] * 3})
    [error] = _plan_errors(path)
    assert "no source named by the rows of d.jsonl is a file of corpus.c (e.g. 'other.md')" in error
    (tmp_path / "d.jsonl").write_text(_jsonl([{**CHAT, "sources": ["notes.md"]}] * 3))  # matched by stem: notes.txt
    assert _plan_errors(path) == []


def test_a_retrieval_gate_whose_gold_sources_name_no_corpus_file_is_located_at_plan(tmp_path: Path) -> None:
    body = ('rag r { corpus = corpus.c  retriever = bm25 }\n  eval e { data = "e.jsonl"  systems = [rag.r]  metrics = '
            '[recall_at_k]  gate = rag.r.recall_at_k >= 0.5 }')
    path = _recipe(tmp_path, body, {"e.jsonl": [{**ITEM, "sources": ["handbook.md"]}]})
    [error] = _plan_errors(path)
    assert "no gold source named by the items of e.jsonl is a file of corpus.c (e.g. 'handbook.md'), so " \
           "rag.r.recall_at_k is 0 on every item" in error
    (tmp_path / "e.jsonl").write_text(_jsonl([{**ITEM, "sources": ["docs/notes.md"]}]))  # by stem, as the eval
    assert _plan_errors(path) == []
