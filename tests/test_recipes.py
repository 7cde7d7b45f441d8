"""Every recipe under recipes/: it validates, it is canonical (`dsl fmt --check`), its plan (test backend and
real backends) has the expected steps, and a builder twin written with ``sdk.Domain`` produces the same spec.
The bundled data is checked too: eval answers appear in the note they cite, eval questions share no 13-gram
with the training data, routing examples are balanced, and the Jinja prompts render with the variables that
the backends pass."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest

import sdk
from sdk import endpoint, env, file, llama, pgvector
from tests.conftest import RECIPES, run_dsl

# ------------------------------------------------------------------------------------------ builder twins


def quickstart() -> sdk.Spec:
    gate = ("route.default.exact_match >= rag.tuned.exact_match - 0.05 and rag.tuned.exact_match >= 0.6"
            " and rag.tuned.exact_match > finetune.sip.exact_match and finetune.sip.exact_match.p_value < 0.05"
            " and rag.tuned.exact_match > rag.docs.exact_match and rag.docs.exact_match.p_value < 0.05"
            " and rag.tuned.exact_match > pretrain.base.exact_match and pretrain.base.exact_match.p_value < 0.05")
    lines = {"by": "line", "length": 1, "overlap": 0}
    return (
        sdk.Domain("quickstart", description="Northwind Mobile cell-site assistant, trained from scratch on a CPU",
                   base_dir=RECIPES)
        .base_model("tiny", architecture=llama(layers=2, hidden=128, heads=4, vocab=1000, context=512))
        .corpus("archive", paths=["quickstart/corpus/archive/*.md"], split=lines)
        .corpus("handbook", paths=["quickstart/corpus/*/*.md"], split=lines)
        .pretrain("base", from_="base_model.tiny", corpus="corpus.archive", max_steps=100, batch_size=8,
                  block_size=128, learning_rate=2e-3, warmup_ratio=0.05, save_steps=100)
        .rag("docs", corpus="corpus.handbook", retriever="bm25", top_k=1, prompt=file("quickstart/prompt.j2"),
             generator="pretrain.base", max_new_tokens=8)
        .dataset("qa", path="quickstart/sft.jsonl", format="chat", validation_split=0.05, retrieval="rag.docs",
                 keep_bare=False)
        .finetune("sip", from_="pretrain.base", data="dataset.qa", method="full",
                  max_steps=700, batch_size=16, learning_rate=3e-3, warmup_ratio=0.05, max_length=96, save_steps=100)
        .rag("tuned", corpus="corpus.handbook", retriever="bm25", top_k=1, prompt=file("quickstart/prompt.j2"),
             generator="finetune.sip", max_new_tokens=8)
        .eval("expert", data="quickstart/eval.jsonl", metrics=["exact_match", "f1", "recall_at_k"],
              systems=["rag.tuned", "route.default", "pretrain.base", "finetune.sip", "rag.docs"], max_new_tokens=8,
              gate=gate)
        .route(classifier="tfidf", examples="quickstart/route.jsonl", domain="rag.tuned", general="pretrain.base")
        .serve(engine="local", port=8000)
        .build()
    )


def medicine() -> sdk.Spec:
    return (
        sdk.Domain("medicine", description="Clinical guidelines assistant: hypertension, diabetes and antibiotic stewardship",
                   base_dir=RECIPES)
        .base_model("llama3", id="meta-llama/Meta-Llama-3-8B-Instruct", dtype="bfloat16")
        .corpus("guidelines", paths=["medicine/corpus/*.md"], split={"by": "word", "length": 250, "overlap": 40},
                dedupe="near")
        .dataset("qa", path="medicine/sft.jsonl", format="chat",
                 system_prompt="You are a careful clinical assistant. Answer briefly and follow current guidelines.",
                 validation_split=0.1)
        .finetune("clinical", from_="base_model.llama3", data="dataset.qa", method="qlora",
                  lora={"rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all_linear"}, epochs=3,
                  learning_rate=2e-4, batch_size=4, gradient_accumulation=4, warmup_ratio=0.03, max_length=2048,
                  compute="compute.default")
        .rag("guidelines", corpus="corpus.guidelines", retriever="hybrid", top_k=5,
             reranker="cross-encoder/ms-marco-MiniLM-L-6-v2",
             store=pgvector(connection=env("PG_CONN"), table="medicine_chunks", search_strategy="hnsw"),
             generator="finetune.clinical", max_new_tokens=256)
        .eval("clinical", data="medicine/eval.jsonl", metrics=["exact_match", "f1", "citation_recall", "judge"],
              systems=["base_model.llama3", "finetune.clinical", "rag.guidelines"],
              judge=endpoint(url="https://api.openai.com/v1", model="gpt-4o", api_key=env("JUDGE_API_KEY")),
              rubric=file("medicine/prompts/rubric.md"), max_new_tokens=128,
              gate="rag.guidelines.judge >= base_model.llama3.judge + 0.05 and rag.guidelines.citation_recall >= 0.8",
              judge_agreement={"required": False})
        .route(classifier="embedding", examples="medicine/route.jsonl", eval_sets=["eval.clinical"],
               domain="rag.guidelines",
               general=endpoint(url="https://api.openai.com/v1", model="gpt-4o-mini", api_key=env("GENERAL_API_KEY")),
               domain_share=0.3)
        .serve(engine="sglang", host="0.0.0.0", port=8000, api_key=env("GATEWAY_API_KEY"),
               sglang={"tp": 1, "dp": 2, "mem_fraction": 0.85, "max_loras_per_batch": 4})
        .compute(launcher="accelerate", num_processes=8, mixed_precision="bf16", deepspeed={"stage": 2})
        .build()
    )


def law() -> sdk.Spec:
    return (
        sdk.Domain("law", description="US evidence and contract law research assistant", base_dir=RECIPES)
        .base_model("mistral", id="mistralai/Mistral-7B-Instruct-v0.3", dtype="bfloat16")
        .corpus("casebook", paths=["law/corpus/*.md"], split={"by": "passage", "length": 4, "overlap": 1})
        .dataset("qa", path="law/sft.jsonl", format="chat", validation_split=0.1)
        .finetune("counsel", from_="base_model.mistral", data="dataset.qa", method="lora",
                  lora={"rank": 32, "alpha": 64, "dropout": 0.1,
                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                  epochs=2, learning_rate=1e-4, batch_size=2, gradient_accumulation=8, scheduler="cosine",
                  max_length=4096, merge=True)
        .rag("research", corpus="corpus.casebook", retriever="hybrid", top_k=6, generator="finetune.counsel",
             prompt=file("law/prompts/rag.j2"), max_new_tokens=384)
        .eval("research", data="law/eval.jsonl",
              metrics=["exact_match", "f1", "citation_precision", "citation_recall"],
              systems=["base_model.mistral", "finetune.counsel", "rag.research"],
              gate="rag.research.f1.ci_low > base_model.mistral.f1")
        .eval("hearsay", data="law/hearsay.jsonl", task="classification", metrics=["accuracy", "macro_f1"],
              systems=["base_model.mistral", "finetune.counsel"], gate="finetune.counsel.accuracy >= 0.7")
        .route(classifier="tfidf", examples="law/route.jsonl", eval_sets=["eval.research"], domain="rag.research",
               general=endpoint(url="https://api.mistral.ai/v1", model="mistral-large-latest",
                                api_key=env("GENERAL_API_KEY"), timeout=60),
               threshold=0.6)
        .serve(engine="local", port=8080, max_batch_size=4, max_tokens=512)
        .compute(launcher="accelerate", num_processes=8, mixed_precision="bf16",
                 fsdp={"sharding": "full_shard", "auto_wrap": "transformer"})
        .build()
    )


def finance() -> sdk.Spec:
    return (
        sdk.Domain("finance", description="Bonds, interest rates and financial statement analysis", base_dir=RECIPES)
        .base_model("qwen2", id="Qwen/Qwen2-7B-Instruct", dtype="bfloat16")
        .corpus("filings", paths=["finance/corpus/**/*.md"], split={"by": "word", "length": 200, "overlap": 30},
                dedupe="exact", min_chars=50)
        .dataset("qa", path="finance/sft.jsonl", format="chat", validation_split=0.15)
        .finetune("analyst", from_="base_model.qwen2", data="dataset.qa", method="qlora",
                  lora={"rank": 64, "alpha": 16, "dropout": 0.05}, epochs=2, learning_rate=1e-4, batch_size=8,
                  gradient_accumulation=2, weight_decay=0.01, warmup_ratio=0.05, max_length=2048, packing=True,
                  seed=7)
        .rag("filings", corpus="corpus.filings", retriever="dense", top_k=4, generator="finetune.analyst")
        .eval("cfa", data="finance/eval.jsonl", task="multiple_choice", metrics=["accuracy"],
              systems=["base_model.qwen2", "finetune.analyst", "rag.filings"], prompt=file("finance/prompts/mc.j2"),
              bootstrap=2000, confidence=0.9, gate="finetune.analyst.accuracy >= base_model.qwen2.accuracy")
        .route(classifier="tfidf", examples="finance/route.jsonl", domain="rag.filings", general="base_model.qwen2")
        .serve(engine="sglang", port=8000, engine_port=30000,
               sglang={"tp": 2, "mem_fraction": 0.8, "extra_args": ["--enable-torch-compile"]})
        .compute(launcher="accelerate", num_processes=8, mixed_precision="bf16",
                 deepspeed={"stage": 3, "offload": True})
        .build()
    )


def _telecom(name: str, description: str, gpu: bool) -> sdk.Spec:
    """telecom.dsl, or (gpu=True) telecom-gpu.dsl: the same blocks with the child's attributes merged in."""
    pretrain = dict(epochs=1, learning_rate=2e-5, batch_size=4, gradient_accumulation=4, block_size=1024,
                    warmup_ratio=0.03, save_steps=200)
    finetune = dict(method="lora", lora={"rank": 16, "alpha": 32}, epochs=3, learning_rate=2e-4, batch_size=4,
                    max_length=2048)
    ops_gate = "rag.ops.f1 >= base_model.llama3.f1 + 0.05"
    sglang = {"tp": 1, "dp": 4, "max_loras_per_batch": 8}
    compute = dict(launcher="accelerate", num_processes=8, mixed_precision="bf16", fsdp={"sharding": "full_shard"})
    teacher = endpoint(url="https://api.openai.com/v1", model="gpt-4o", api_key=env("GENERAL_API_KEY"))
    if gpu:
        pretrain.update(epochs=3, batch_size=8)
        finetune.update(method="qlora", lora={"rank": 64, "alpha": 128, "dropout": 0.05}, batch_size=16)
        ops_gate = "rag.ops.f1.ci_low >= base_model.llama3.f1"
        sglang = {"tp": 2, "dp": 4, "mem_fraction": 0.9, "max_loras_per_batch": 8}
        compute.update(num_machines=2, main_process_ip="10.0.0.1", main_process_port=29500,
                       fsdp={"sharding": "hybrid_shard", "auto_wrap": "transformer"})
    return (
        sdk.Domain(name, description=description, base_dir=RECIPES)
        .base_model("llama3", id="meta-llama/Meta-Llama-3-8B-Instruct", dtype="bfloat16")
        .corpus("notes", paths=["telecom/corpus/*.md"],
                split={"by": "word", "length": 300, "overlap": 30}, dedupe="near", near_threshold=0.9)
        .dataset("ops", path="telecom/sft.jsonl", format="chat",
                 system_prompt="You are a telecom network engineer. Answer precisely and name the interface or "
                               "message involved.",
                 validation_split=0.1)
        .pretrain("notes", from_="base_model.llama3", corpus="corpus.notes", **pretrain)
        .finetune("ops", from_="pretrain.notes", data="dataset.ops", **finetune)
        .rag("search", corpus="corpus.notes", retriever="hybrid", top_k=5)
        .synth("ops_raft", task="raft", corpus="corpus.notes", teacher=teacher, rows=400, budget_tokens=2000000,
               rag="rag.search", distractors=3, no_golden_share=0.2, review="optional")
        .synth("ops_eval", task="eval", corpus="corpus.notes", teacher=teacher, rows=60, review="required")
        .finetune("ops_raft", from_="pretrain.notes", data="synth.ops_raft", method="lora",
                  lora={"rank": 16, "alpha": 32}, epochs=2, learning_rate=2e-4, batch_size=4, max_length=2048)
        .align("ops_dpo", from_="finetune.ops", pairs="telecom/prefs.jsonl", method="dpo", beta=0.1, epochs=2)
        .reward("ops_grpo", from_="finetune.ops", prompts="telecom/mc.jsonl",
                rewards={"accuracy": 1.0, "format": {"pattern": "^[1-4]$", "weight": 0.2}}, num_generations=4,
                max_steps=200)
        .rag("ops", corpus="corpus.notes", retriever="hybrid", top_k=5, generator="finetune.ops", max_new_tokens=256)
        .eval("ops", data="telecom/eval.jsonl", metrics=["exact_match", "f1", "citation_recall", "recall_at_k", "mrr"],
              systems=["base_model.llama3", "finetune.ops", "finetune.ops_raft", "align.ops_dpo", "reward.ops_grpo",
                       "rag.ops"],
              gate=ops_gate)
        .eval("expert", data="telecom/expert.jsonl", metrics=["exact_match", "f1", "citation_recall"],
              systems=["base_model.llama3", "pretrain.notes", "rag.ops"], limit=40, fail_on_contamination=True)
        .route(classifier="embedding", examples="telecom/route.jsonl", eval_sets=["eval.ops", "eval.expert"],
               domain="rag.ops",
               general=endpoint(url="https://api.openai.com/v1", model="gpt-4o-mini", api_key=env("GENERAL_API_KEY")),
               threshold=0.5)
        .serve(engine="sglang", host="0.0.0.0", port=8000, sglang=sglang)
        .compute(**compute)
        .build()
    )


def telecom() -> sdk.Spec:
    return _telecom("telecom", "SIP, IMS and VoLTE operations assistant", gpu=False)


def telecom_gpu() -> sdk.Spec:
    return _telecom("telecom_gpu", "SIP, IMS and VoLTE operations assistant", gpu=True)


def code() -> sdk.Spec:
    return (
        sdk.Domain("code", description="Python packaging and Git helper", base_dir=RECIPES)
        .base_model("phi3", id="microsoft/Phi-3-mini-4k-instruct", revision="main", dtype="bfloat16")
        .corpus("docs", paths=["code/corpus/*.md"], format="markdown", split={"by": "passage", "length": 3, "overlap": 1})
        .dataset("howto", path="code/sft.jsonl", format="chat")
        .finetune("helper", from_="base_model.phi3", data="dataset.howto", method="full", epochs=3, learning_rate=1e-5,
                  batch_size=2, gradient_accumulation=8, scheduler="linear", max_length=4096, logging_steps=10)
        .rag("docs", corpus="corpus.docs", retriever="bm25", top_k=3, generator="finetune.helper")
        .eval("howto", data="code/eval.jsonl", metrics=["exact_match", "f1", "recall_at_k", "mrr"],
              systems=["base_model.phi3", "finetune.helper", "rag.docs"],
              gate="rag.docs.recall_at_k >= 0.75 and rag.docs.f1 >= base_model.phi3.f1")
        .route(classifier="tfidf", examples="code/route.jsonl", domain="rag.docs",
               general=endpoint(url="https://api.together.xyz/v1", model="meta-llama/Llama-3-70b-chat-hf",
                                api_key=env("GENERAL_API_KEY"), max_retries=5))
        .serve(engine="local", port=8000, api_key=env("GATEWAY_API_KEY"), max_batch_size=16)
        .compute(launcher="accelerate", num_processes=8, mixed_precision="bf16", deepspeed={"stage": 3})
        .build()
    )


TWINS: dict[str, Callable[[], sdk.Spec]] = {
    "quickstart.dsl": quickstart,
    "medicine.dsl": medicine,
    "law.dsl": law,
    "finance.dsl": finance,
    "telecom.dsl": telecom,
    "telecom-gpu.dsl": telecom_gpu,
    "code.dsl": code,
}

_TELECOM_STEPS = ["base_model.llama3", "corpus.notes", "dataset.ops", "rag.search", "synth.ops_raft", "synth.ops_eval",
                  "pretrain.notes", "finetune.ops", "finetune.ops_raft", "align.ops_dpo", "reward.ops_grpo", "rag.ops",
                  "eval.ops", "eval.expert", "route.default", "serve.default"]
STEPS: dict[str, list[str]] = {
    "quickstart.dsl": ["base_model.tiny", "corpus.archive", "corpus.handbook", "pretrain.base", "rag.docs", "dataset.qa",
                       "finetune.sip", "rag.tuned", "route.default", "eval.expert", "serve.default"],
    "medicine.dsl": ["base_model.llama3", "corpus.guidelines", "dataset.qa", "finetune.clinical", "rag.guidelines",
                     "eval.clinical", "route.default", "serve.default"],
    "law.dsl": ["base_model.mistral", "corpus.casebook", "dataset.qa", "finetune.counsel", "rag.research",
                "eval.research", "eval.hearsay", "route.default", "serve.default"],
    "finance.dsl": ["base_model.qwen2", "corpus.filings", "dataset.qa", "finetune.analyst", "rag.filings", "eval.cfa",
                    "route.default", "serve.default"],
    "telecom.dsl": _TELECOM_STEPS,
    "telecom-gpu.dsl": _TELECOM_STEPS,
    "code.dsl": ["base_model.phi3", "corpus.docs", "dataset.howto", "finetune.helper", "rag.docs", "eval.howto",
                 "route.default", "serve.default"],
}

RECIPE_FILES = sorted(p.name for p in RECIPES.glob("*.dsl") if p.is_file())  # not the .dsl workdir


def test_every_recipe_has_a_twin_and_expected_steps() -> None:
    assert RECIPE_FILES, "no recipe under recipes/"
    assert set(RECIPE_FILES) == set(TWINS) == set(STEPS)


# ------------------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_validate_and_fmt_check(name: str) -> None:
    ok = run_dsl("validate", f"recipes/{name}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "valid" in ok.stdout
    fmt = run_dsl("fmt", "--check", f"recipes/{name}")
    assert fmt.returncode == 0, f"{name} is not canonical: run dsl fmt --write recipes/{name}\n{fmt.stdout}{fmt.stderr}"


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_plan_json_with_test_backend(name: str, tmp_path: Path) -> None:
    out = run_dsl("plan", f"recipes/{name}", "--json", "--backend", "test", "--workdir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["domain"] == TWINS[name]().name
    steps = plan["steps"]
    assert [s["id"] for s in steps] == STEPS[name]
    assert {s["backend"] for s in steps} == {"test"}
    assert {s["action"] for s in steps} == {"create"}  # empty workdir: everything is new
    index = {s["id"]: i for i, s in enumerate(steps)}
    for s in steps:  # dependencies come first
        assert all(index[d] < index[s["id"]] for d in s["depends_on"]), s


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_plan_json_with_real_backends(name: str, tmp_path: Path) -> None:
    """Plain `dsl plan --json`: the default backends import and check the recipe without running anything (the
    environment checks are warnings here: the GPU recipes target a cluster, not this machine)."""
    out = run_dsl("plan", f"recipes/{name}", "--json", "--workdir", str(tmp_path), "--skip-checks")
    assert out.returncode == 0, out.stderr
    steps = json.loads(out.stdout)["steps"]
    assert [s["id"] for s in steps] == STEPS[name]
    assert "test" not in {s["backend"] for s in steps}
    kinds = {s["id"]: s["backend"] for s in steps}
    assert kinds[STEPS[name][-1]] == "gateway" and kinds["route.default"] == "sklearn"


# ------------------------------------------------------------------------------------------- builder twins


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_builder_twin_equals_recipe(name: str) -> None:
    loaded = sdk.load(RECIPES / name)
    built = TWINS[name]()
    assert built.model_dump() == loaded.model_dump()
    assert built.model_dump(mode="json", by_alias=True) == loaded.model_dump(mode="json", by_alias=True)
    assert built == loaded
    assert built.base_dir == loaded.base_dir == RECIPES.resolve()


def test_telecom_gpu_overrides_only_what_it_writes() -> None:
    base = sdk.load(RECIPES / "telecom.dsl").model_dump()
    child = sdk.load(RECIPES / "telecom-gpu.dsl").model_dump()
    assert child["name"] == "telecom_gpu" and child["description"] == base["description"]
    assert child["finetune"]["ops"]["method"] == "qlora" and base["finetune"]["ops"]["method"] == "lora"
    assert child["finetune"]["ops"]["learning_rate"] == base["finetune"]["ops"]["learning_rate"]  # inherited
    assert child["pretrain"]["notes"]["epochs"] == 3 and child["pretrain"]["notes"]["block_size"] == 1024
    assert child["compute"]["default"]["num_machines"] == 2
    assert child["compute"]["default"]["num_processes"] == 8  # inherited
    changed = {kind for kind in base if base[kind] != child[kind]}
    assert changed == {"name", "pretrain", "finetune", "eval", "serve", "compute"}


def test_secrets_stay_references(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """env("NAME") is kept as a reference: a value set in the environment shows in no dump and no plan."""
    names = ("PG_CONN", "JUDGE_API_KEY", "GENERAL_API_KEY", "GATEWAY_API_KEY")
    for name in names:
        monkeypatch.setenv(name, f"sentinel-secret-{name}")
    spec = sdk.load(RECIPES / "medicine.dsl")
    assert spec.rag["guidelines"].store.connection == env("PG_CONN")
    assert spec.route["default"].general.api_key == env("GENERAL_API_KEY")
    assert spec.serve["default"].api_key.resolve() == "sentinel-secret-GATEWAY_API_KEY"
    dumped = json.dumps(spec.model_dump(mode="json")) + repr(spec)
    plan = run_dsl("plan", "recipes/medicine.dsl", "--json", "--workdir", str(tmp_path), "--skip-checks")
    assert plan.returncode == 0, plan.stderr
    for name in names:
        assert name in dumped
        assert f"sentinel-secret-{name}" not in dumped + plan.stdout + plan.stderr


def test_endpoints_dump_as_objects() -> None:
    spec = sdk.load(RECIPES / "medicine.dsl")
    general = spec.model_dump(mode="json")["route"]["default"]["general"]
    assert general == {"type": "endpoint", "url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                       "api_key": {"env": "GENERAL_API_KEY"}, "timeout": 30.0, "max_retries": 3}


# -------------------------------------------------------------------------------------------- bundled data


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            assert isinstance(row, dict), f"{path}:{n}"
            rows.append(row)
    return rows


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


DATA_FOLDERS = ["quickstart", "medicine", "law", "finance", "telecom", "code"]


@pytest.mark.parametrize("folder", DATA_FOLDERS)
def test_sample_data_is_well_formed(folder: str) -> None:
    base = RECIPES / folder
    corpus = sorted((base / "corpus").glob("*.md"))
    if folder == "quickstart":  # generated sheets, one line per parameter, in three folders (make_data.py)
        corpus = sorted((base / "corpus").glob("*/*.md"))
        assert corpus and all(line.startswith(("Site ", "The ", "VoLTE ")) for p in corpus
                              for line in p.read_text(encoding="utf-8").splitlines())
    else:
        assert corpus and all(p.read_text(encoding="utf-8").startswith("# ") for p in corpus)
    for row in _jsonl(base / "sft.jsonl"):
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] and all(m["content"].strip() for m in row["messages"])
    items = _jsonl(base / "eval.jsonl")
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        answers = item["answer"] if isinstance(item["answer"], list) else [item["answer"]]
        assert item["sources"], item["id"]
        text = "\n".join((RECIPES / s).read_text(encoding="utf-8") for s in item["sources"])
        if "choices" in item:
            assert answers[0] in item["choices"], item["id"]
            continue
        assert answers[0] in text, f"{folder}/{item['id']}: {answers[0]!r} is not in {item['sources']}"
        for alias in answers:
            assert alias.lower() in text.lower(), f"{folder}/{item['id']}: alias {alias!r}"
    route = _jsonl(base / "route.jsonl")
    assert {r["target"] for r in route} == {"domain", "general"}
    assert all(r["text"].strip() for r in route)


def test_quickstart_sizes() -> None:
    base = RECIPES / "quickstart"
    sets = {part: sorted((base / "corpus" / part).glob("*.md")) for part in ("archive", "tuning", "new")}
    assert sum(p.stat().st_size for ps in sets.values() for p in ps) <= 400_000
    assert len(sets["new"]) == 20
    assert 1000 <= len(_jsonl(base / "sft.jsonl")) <= 4000
    assert 40 <= len(_jsonl(base / "eval.jsonl")) <= 60
    route = _jsonl(base / "route.jsonl")
    assert 300 <= len(route) <= 450
    domain = sum(r["target"] == "domain" for r in route)
    assert abs(domain - (len(route) - domain)) <= len(route) // 10
    assert len({r["text"] for r in route}) == len(route)


def test_quickstart_data_is_what_make_data_writes(tmp_path: Path) -> None:
    """The committed data is exactly the generator's output (it is deterministic)."""
    import shutil
    import subprocess
    import sys

    base = RECIPES / "quickstart"
    shutil.copy(base / "make_data.py", tmp_path / "make_data.py")
    subprocess.run([sys.executable, str(tmp_path / "make_data.py")], check=True, timeout=60)
    for made in sorted(tmp_path.rglob("*.*")):
        if made.suffix in (".md", ".jsonl"):
            rel = made.relative_to(tmp_path)
            assert made.read_text(encoding="utf-8") == (base / rel).read_text(encoding="utf-8"), rel


def test_quickstart_eval_is_not_in_the_training_data() -> None:
    """The eval asks about the new sites only: no training text (the archive the model is pre-trained on, the
    fine-tuning questions and answers) names them, no eval question is an SFT question, and no eval question shares
    a 13-gram (the eval's contamination n) with any training text."""
    base = RECIPES / "quickstart"
    new_sites = {p.stem for p in (base / "corpus" / "new").glob("*.md")}
    train: set[tuple[str, ...]] = set()
    words: set[str] = set()
    for p in (base / "corpus" / "archive").glob("*.md"):
        train |= _grams(p.read_text(encoding="utf-8"))
        words |= set(_words(p.read_text(encoding="utf-8")))
    sft_questions = set()
    for row in _jsonl(base / "sft.jsonl"):
        for m in row["messages"]:
            train |= _grams(m["content"])
            words |= set(_words(m["content"]))
        sft_questions.add(" ".join(_words(row["messages"][0]["content"])))
    assert not {s.lower() for s in new_sites} & words
    for item in _jsonl(base / "eval.jsonl"):
        assert not (_grams(item["question"]) & train), item["id"]
        assert " ".join(_words(item["question"])) not in sft_questions, item["id"]
        assert [Path(s).stem for s in item["sources"]] == [item["id"].split("-")[0]]
    # every new site is the source of some question
    assert {Path(s).stem for item in _jsonl(base / "eval.jsonl") for s in item["sources"]} == new_sites


def test_law_hearsay_set_is_labelled() -> None:
    rows = _jsonl(RECIPES / "law" / "hearsay.jsonl")
    assert {r["label"] for r in rows} == {"Yes", "No"}
    assert len({r["id"] for r in rows}) == len(rows)


def test_prompt_templates_render_with_backend_variables() -> None:
    """The RAG template gets `documents` and `question`; the eval template `question`, `choices`, `context`
    (both rendered with StrictUndefined, as the backends do)."""
    from jinja2 import Environment, StrictUndefined

    jinja = Environment(undefined=StrictUndefined, autoescape=False)
    doc = type("Doc", (), {"content": "Hearsay is inadmissible.", "meta": {"source": "law/corpus/hearsay.md"},
                           "id": "x"})()
    rag = sdk.load(RECIPES / "law.dsl").rag["research"].prompt
    text = jinja.from_string(rag.read(RECIPES)).render(documents=[doc], question="Is hearsay admissible?")
    assert "[1] (law/corpus/hearsay.md) Hearsay is inadmissible." in text and text.rstrip().endswith("Answer:")
    mc = sdk.load(RECIPES / "finance.dsl").eval["cfa"].prompt
    text = jinja.from_string(mc.read(RECIPES)).render(question="Q?", choices=["a", "b"], context="")
    assert text == "Question: Q?\n1. a\n2. b\nAnswer:"
    text = jinja.from_string(mc.read(RECIPES)).render(question="Q?", choices=["a"], context="C")
    assert text.startswith("Context:\nC\n\nQuestion: Q?")
    rubric = sdk.load(RECIPES / "medicine.dsl").eval["clinical"].rubric
    assert "0 to 1" in rubric.read(RECIPES)
