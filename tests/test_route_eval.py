"""The router is a system of an eval: `route.default` among an eval's systems answers each item by the system it
routes the item to (as the gateway's model="auto" does), the report shows each routing decision, and a gate can
compare it with the domain system. Also: the route step's explicit held-out split, the documented default of a
route without a general target (the domain system, never None), and a constant threshold outside [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

import sdk
import sdk.workspace
from dsl.parser import load
from tests._eval import tiny_model
from tests.conftest import run_dsl
from tests.test_route import DOMAIN, GENERAL, _examples

ITEMS = [
    {"id": "d1", "question": "How does SIP INVITE set up a call?", "answer": "INVITE"},
    {"id": "d2", "question": "What does the S-CSCF store for IMS?", "answer": "state"},
    {"id": "d3", "question": "Which QCI carries VoLTE voice?", "answer": "QCI 1"},
    {"id": "g1", "question": "What is a good pasta recipe for dinner?", "answer": "carbonara"},
    {"id": "g2", "question": "Who painted the Mona Lisa in Florence?", "answer": "Leonardo"},
]


def _recipe(tmp: Path, route: str, systems: str = "[rag.docs, base_model.a, route.default]",
            gate: str = "route.default.exact_match >= rag.docs.exact_match - 1") -> Path:
    model = tiny_model(tmp, 0)
    (tmp / "docs").mkdir(exist_ok=True)
    (tmp / "docs" / "sip.md").write_text("# sip\n\nAn INVITE request starts a SIP call. The S-CSCF keeps state.\n")
    _examples(tmp / "route.jsonl")
    (tmp / "eval.jsonl").write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    path = tmp / "r.dsl"
    path.write_text(f'''domain r {{
  base_model a {{ path = "{model}" }}
  corpus c {{ paths = ["docs/*.md"] }}
  rag docs {{ corpus = corpus.c  retriever = bm25  top_k = 1  generator = base_model.a  max_new_tokens = 4 }}
  route {{ {route} }}
  eval expert {{ data = "eval.jsonl"  systems = {systems}  metrics = [exact_match, f1]  max_new_tokens = 4
                bootstrap = 100  gate = {gate} }}
}}
''')
    return path


def test_an_eval_answers_through_the_router_and_reports_each_decision(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  general = base_model.a  holdout = 0.25')
    result = sdk.apply(load(path))
    assert result.ok, [(o.id, o.error) for o in result.outcomes]
    art = sdk.workspace.open_workspace(path).artifact("eval.expert")
    rows = [json.loads(x) for x in (art.path / "predictions.jsonl").read_text().splitlines()]
    by = {(r["system"], r["id"]): r for r in rows}
    routed = [r for r in rows if r["system"] == "route.default"]
    assert len(routed) == len(ITEMS)
    for r in routed:
        decision = r["routing"]
        assert decision["system"] in ("rag.docs", "base_model.a") and 0.0 <= decision["probability"] <= 1.0
        assert decision["target"] == ("domain" if decision["system"] == "rag.docs" else "general")
        # the routed answer is the answer of the system it was routed to
        assert r["prediction"] == by[(decision["system"], r["id"])]["prediction"]
    assert {r["id"]: r["routing"]["system"] for r in routed} == {"d1": "rag.docs", "d2": "rag.docs",
                                                                 "d3": "rag.docs", "g1": "base_model.a",
                                                                 "g2": "base_model.a"}
    assert all("routing" not in r for r in rows if r["system"] != "route.default")
    summary = json.loads((art.path / "summary.json").read_text())
    assert summary["routing"]["route.default"]["systems"]["rag.docs"]["items"] == 3
    assert "exact_match" in summary["metrics"]["route.default"] and summary["gate"]["passed"]
    report = (art.path / "report.md").read_text()
    assert "## Routing of route.default" in report and "| d1 | How does SIP INVITE set up a call? | rag.docs (domain) |" in report
    assert "Routing of route.default" in (art.path / "report.html").read_text()

    # the route step's split is explicit: what trained it, what measured it, nothing in both
    route = sdk.workspace.open_workspace(path).artifact("route.default")
    split = json.loads((route.path / route.outputs["split"]).read_text())
    train, held = {r["text"] for r in split["train"]}, {r["text"] for r in split["holdout"]}
    assert not train & held and len(held) == route.metrics["holdout"] and len(train) == route.metrics["train"]
    assert route.metrics["domain_recall"] is not None and "did not train on" in route.manifest["summary"]


def test_a_route_without_general_answers_with_the_domain_system(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  holdout = 0.25', systems="[rag.docs]",
                   gate="rag.docs.f1 >= 0")
    (tmp_path / "route.jsonl").write_text("".join(json.dumps({"text": t, "target": "domain"}) + "\n" for t in DOMAIN)
                                          + "".join(json.dumps({"text": t, "target": "general"}) + "\n"
                                                    for t in GENERAL + GENERAL[:3]))  # repeats are dropped
    assert sdk.apply(load(path), target=["route.default"]).ok
    route = sdk.workspace.open_workspace(path).artifact("route.default")
    assert route.outputs["targets"]["general"] == "rag.docs" and route.metrics["duplicates_dropped"] == 3
    proc = run_dsl("route", str(path), "What is a good pasta recipe?")
    assert proc.returncode == 0 and proc.stdout.startswith("general -> rag.docs") and "None" not in proc.stdout


def test_a_constant_threshold_outside_zero_one_is_located(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  threshold = 1.5')
    proc = run_dsl("validate", str(path))
    assert proc.returncode != 0 and "r.dsl:5:" in proc.stderr and "not a probability between 0 and 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_router_that_sends_its_domain_away_fails_its_gate_and_auto_is_not_served(tmp_path: Path) -> None:
    from sdk.serving.gateway import Gateway

    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  general = base_model.a  holdout = 0.25  '
                   'threshold = 0.999', systems="[base_model.a]", gate="base_model.a.exact_match >= 0")
    path.write_text(path.read_text().rstrip().removesuffix("}") + "  serve { engine = local }\n}\n")
    result = sdk.apply(load(path))
    outcome = {o.id: o for o in result.outcomes}
    assert outcome["route.default"].status == "gate_failed", outcome["route.default"]
    assert "of the domain's held-out examples away" in outcome["route.default"].error
    assert "min_domain_recall 0.5" in outcome["route.default"].error
    assert outcome["serve.default"].status == "ran"  # the rest is still served, named
    ws = sdk.workspace.open_workspace(path)
    config = json.loads((ws.artifact("serve.default").path / "serve.json").read_text())
    assert config["router"] is None and config["withheld"]["auto"].startswith("route.default failed its gate")
    gateway = Gateway(config, preload=False)
    assert "auto" not in gateway.models and "rag.docs" in gateway.models
    try:
        gateway.resolve("auto", [{"role": "user", "content": "How does SIP INVITE set up a call?"}])
        raise AssertionError("auto answered although its router failed its gate")
    except Exception as e:  # noqa: BLE001 - the gateway's Withheld, a 404 naming the reason
        assert type(e).__name__ == "Withheld" and "failed its gate" in str(e)
