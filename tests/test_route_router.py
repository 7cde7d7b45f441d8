"""The router beyond the basics: a router file can never run code (pickled payloads and malformed arrays are
refused), eval-set questions as domain examples, a threshold expression over eval metrics, the quality-versus-cost
curve from the evals' numbers, located unknown targets, and `dsl route` without --json."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dsl.parser import load
from sdk.backends.base import Artifact, StepContext
from sdk.backends.routing.route import RouteBackend, Router, train
from sdk.errors import DataError, DslError
from sdk.progress import Progress
from tests.conftest import run_dsl
from tests.test_route import DOMAIN, GENERAL, LAW

MARKER_NAME = "pwned.txt"


class _Payload:
    """Unpickling this would create a marker file: the router loader must never do it."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.target), "code ran"))


def _save(folder: Path, meta: dict[str, Any], arrays: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "router.json").write_text(json.dumps(meta))
    np.savez(folder / "router.npz", **arrays)
    return folder


@pytest.fixture(scope="module")
def trained() -> tuple[dict[str, Any], dict[str, Any]]:
    meta, arrays, _ = train(DOMAIN + GENERAL + LAW, ["domain"] * len(DOMAIN) + ["general"] * len(GENERAL) +
                            ["law"] * len(LAW), "tfidf", 0, "unused")
    meta.update(targets={"domain": "rag.docs", "law": "rag.law", "general": "base_model.g"}, threshold=0.5)
    return meta, arrays


def test_router_round_trip_and_pickled_payload_is_refused(tmp_path: Path, trained: Any) -> None:
    meta, arrays = trained
    good = Router.load(_save(tmp_path / "good", meta, arrays))
    assert good.route("Is an excited utterance hearsay?")["system"] == "rag.law"
    assert good.route("What is a good pasta recipe?")["system"] == "base_model.g"

    marker = tmp_path / MARKER_NAME
    evil = dict(arrays, coef=np.array([_Payload(str(marker))], dtype=object))
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "router.json").write_text(json.dumps(meta))
    np.savez(folder / "router.npz", **evil)  # numpy pickles object arrays when saving
    with pytest.raises(DslError, match="refused"):
        Router.load(folder)
    assert not marker.exists()
    # a raw pickle renamed to router.npz is not even a zip: refused too, and nothing runs
    (folder / "router.npz").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(DslError, match="router"):
        Router.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda m, a: a.update(coef=a["coef"][:1]), "do not fit"),
    (lambda m, a: a.update(idf=a["idf"][:-3]), "vocabulary / idf"),
    (lambda m, a: m.update(classifier="pickle"), "classifier"),
    (lambda m, a: m.update(classes=["domain"]), "at least two"),
    (lambda m, a: m["vocabulary"].update(zzz=10 ** 9), "out of range"),
    (lambda m, a: a.update(intercept=np.array(["a", "b", "c"])), "not numeric"),
])
def test_malformed_router_files_get_clear_errors(tmp_path: Path, trained: Any, change: Any, message: str) -> None:
    meta, arrays = json.loads(json.dumps(trained[0])), dict(trained[1])
    change(meta, arrays)
    with pytest.raises(DslError, match=message):
        Router.load(_save(tmp_path / "r", meta, arrays))


def _recipe(tmp: Path, route: str) -> Path:
    (tmp / "docs").mkdir(parents=True, exist_ok=True)
    (tmp / "docs" / "a.txt").write_text("SIP and IMS notes for the router test.")
    (tmp / "expert.jsonl").write_text("\n".join(json.dumps({"question": q, "answer": "x"}) for q in DOMAIN) + "\n")
    (tmp / "general.jsonl").write_text("\n".join(json.dumps({"text": q, "target": "general"}) for q in GENERAL) + "\n")
    path = tmp / "r.dsl"
    path.write_text(f'''domain r {{
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag docs {{ corpus = corpus.c  retriever = bm25 }}
  rag web {{ corpus = corpus.c  retriever = bm25 }}
  eval expert {{ data = "expert.jsonl"  systems = [rag.docs, rag.web]  metrics = [exact_match] }}
  route {{ {route} }}
}}
''')
    return path


def _run_route(path: Path, tmp: Path, evals: dict[str, Any]) -> tuple[Any, Path]:
    """Run the route backend on the recipe's route block, with hand-built eval artifacts as finished steps."""
    spec = load(path)
    out = tmp / "out"
    out.mkdir()
    artifacts = {}
    for step_id, metrics in evals.items():
        (tmp / step_id).mkdir()
        applied = spec.eval[step_id.partition(".")[2]].model_dump(mode="json", by_alias=True)  # as applied
        artifacts[step_id] = Artifact(step_id, tmp / step_id, {"metrics": metrics, "outputs": {}, "config": applied})
    ctx = StepContext(spec=spec, step_id="route.default", kind="route", label="default", block=spec.route["default"],
                      fingerprint="f", out_dir=out, workdir=tmp, checkpoint_dir=tmp / "ckpt", inputs=dict(artifacts),
                      progress=Progress(enabled=False), log=lambda _: None)
    return RouteBackend().run(ctx), out


EVAL_METRICS = {"rag.docs": {"exact_match": {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}},
                "rag.web": {"exact_match": {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4}},
                "n_items": 12, "task": "generate"}


def test_eval_set_questions_threshold_expression_and_quality_curve(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'eval_sets = [eval.expert]  examples = "general.jsonl"  domain = rag.docs  general = rag.web'
                             '  threshold = rag.docs.exact_match - 0.2  holdout = 0.34')
    result, out = _run_route(path, tmp_path, {"eval.expert": EVAL_METRICS})
    m = result.metrics
    assert m["threshold"] == pytest.approx(0.6)  # 0.8 - 0.2, from the eval's numbers
    assert set(m["per_target"]) == {"domain", "general"} and m["train"] + m["holdout"] == len(DOMAIN) + len(GENERAL)
    assert m["quality"] == {"domain": 0.8, "general": 0.3}
    assert (out / "quality_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads((out / "quality_cost.json").read_text())
    by_t = {p["threshold"]: p for p in curve["points"]}
    # threshold 0 sends everything to the domain model: all domain questions get its quality
    assert by_t[0.0]["share"] == 1.0 and by_t[0.0]["expected_quality"] == pytest.approx(0.8)
    # past every probability nothing goes there: the general model's quality at zero cost
    assert by_t[1.0]["share"] == 0.0 and by_t[1.0]["expected_quality"] == pytest.approx(0.3)
    shares = [p["share"] for p in curve["points"]]
    assert shares == sorted(shares, reverse=True)  # a higher threshold never sends more traffic
    assert curve["expected_quality"] == m["expected_quality"] and 0.3 <= m["expected_quality"] <= 0.8
    router = Router.load(out)
    assert router.threshold == pytest.approx(0.6)
    assert router.route("How does SIP INVITE set up a VoLTE call?")["system"] == "rag.docs"


def test_no_curve_without_both_qualities_and_bad_threshold_values(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'eval_sets = [eval.expert]  examples = "general.jsonl"  domain = rag.docs  general = rag.web')
    result, out = _run_route(path, tmp_path, {"eval.expert": {"rag.docs": EVAL_METRICS["rag.docs"], "n_items": 12}})
    assert "quality_cost_curve" not in result.outputs and not (out / "quality_cost.png").exists()
    assert result.metrics["threshold"] == 0.5

    for i, (expr, message) in enumerate([("rag.docs.exact_match + 0.5", "between 0 and 1"),
                                         ("rag.docs.f1", "no eval computes f1 for rag.docs")]):
        sub = tmp_path / f"t{i}"
        sub.mkdir()
        p = _recipe(sub, f'eval_sets = [eval.expert]  examples = "general.jsonl"  domain = rag.docs  threshold = {expr}')
        with pytest.raises(DslError, match=message):
            _run_route(p, sub, {"eval.expert": EVAL_METRICS})


def test_eval_sets_alone_have_one_target_and_say_what_to_add(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'eval_sets = [eval.expert]  domain = rag.docs')
    with pytest.raises(DslError, match="add general examples"):
        _run_route(path, tmp_path, {"eval.expert": {"n_items": 12}})  # the eval it reads is an input


def test_unknown_target_is_located_at_its_line(tmp_path: Path) -> None:
    from sdk.backends.routing.route import read_examples

    f = tmp_path / "ex.jsonl"
    f.write_text('{"text": "a", "target": "domain"}\n\n{"text": "b", "target": "general"}\n{"text": "c", "target": "sports"}\n')
    with pytest.raises(DataError) as info:
        read_examples(f, "ex.jsonl", {"domain", "general"})
    assert str(info.value).startswith("ex.jsonl:4:") and "'sports'" in str(info.value)
    assert len(read_examples(f, "ex.jsonl")) == 3  # without known targets every well-formed row is read


def test_dsl_route_plain_output(tmp_path: Path) -> None:
    import sdk
    from tests.test_route import _recipe as plain_recipe

    path = plain_recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  targets = { law = rag.law }  holdout = 0.3',
                        True)
    assert sdk.apply(load(path)).ok
    proc = run_dsl("route", str(path), "Is a dying declaration hearsay?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("law -> rag.law  (p = ")
    missing = run_dsl("route", str(tmp_path / "nope.dsl"), "x")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
