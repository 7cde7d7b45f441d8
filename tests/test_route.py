"""The router: trained with scikit-learn, saved without pickle, predicted with numpy (equal to scikit-learn's),
calibrated to a domain share, several targets, and the `dsl route` command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import sdk
import sdk.workspace
from dsl.parser import load
from sdk.backends.routing.route import Router, train
from sdk.planner import PlanProblems
from tests.conftest import run_dsl

DOMAIN = ["How does SIP INVITE work?", "What is the role of the S-CSCF?", "Which QCI carries VoLTE voice?",
          "How does ICE select RTP candidates?", "What is a Diameter routing agent?", "Explain SDP offer answer",
          "Why is there one-way audio behind NAT?", "What does the HSS store?", "How does SRVCC hand over calls?",
          "What codec does VoLTE use?", "How is a SIP dialog identified?", "What is the P-CSCF for?"]
GENERAL = ["What is a good pasta recipe?", "How do I fix a flat tyre?", "Who painted the Mona Lisa?",
           "What is the capital of Peru?", "How do I learn to swim?", "Recommend a novel about the sea",
           "How many legs does a spider have?", "What is compound interest?", "How do I bake bread?",
           "Plan a trip to Rome", "Why is the sky blue?", "How do I centre a div in CSS?"]
LAW = ["Is this statement hearsay?", "What is an excited utterance?", "Is a verbal act hearsay?",
       "Can business records be admitted?", "What is a dying declaration?", "Is a threat a verbal act?"]


def _examples(path: Path, with_law: bool = False) -> None:
    rows = [{"text": t, "target": "domain"} for t in DOMAIN] + [{"text": t, "target": "general"} for t in GENERAL]
    if with_law:
        rows += [{"text": t, "target": "law"} for t in LAW]
    random.Random(0).shuffle(rows)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _recipe(tmp: Path, route: str, with_law: bool = False) -> Path:
    (tmp / "docs").mkdir(parents=True, exist_ok=True)
    (tmp / "docs" / "a.txt").write_text("SIP and IMS notes for the router test.")
    _examples(tmp / "route.jsonl", with_law)
    path = tmp / "r.dsl"
    path.write_text(f'''domain r {{
  corpus c {{ paths = ["docs/*.txt"]  min_chars = 5 }}
  rag docs {{ corpus = corpus.c  retriever = bm25 }}
  rag law {{ corpus = corpus.c  retriever = bm25 }}
  route {{ {route} }}
}}
''')
    return path


@pytest.mark.parametrize("classifier", ["tfidf", "embedding"])
def test_numpy_prediction_equals_scikit_learn(classifier: str) -> None:
    texts = DOMAIN + GENERAL + LAW
    labels = ["domain"] * len(DOMAIN) + ["general"] * len(GENERAL) + ["law"] * len(LAW)
    meta, arrays, clf = train(texts, labels, classifier, 0, "sentence-transformers/all-MiniLM-L6-v2")
    meta.update(targets={}, threshold=0.5)
    router = Router(meta, arrays)
    queries = ["How does the I-CSCF query the HSS?", "Best hiking trails near Lisbon", "Is gossip hearsay in court?"]
    ours = router.predict_proba(queries)
    if classifier == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w\w+\b")
        vec.fit(texts)
        theirs = clf.predict_proba(vec.transform(queries))
    else:
        theirs = clf.predict_proba(router.embed(queries))
    assert np.allclose(ours, theirs, atol=1e-6)


def test_route_step_saves_no_pickle_and_reports_accuracy(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  holdout = 0.25')
    assert sdk.apply(load(path)).ok
    art = sdk.workspace.open_workspace(path).artifact("route.default")
    meta = json.loads((art.path / "router.json").read_text())
    assert meta["classes"] == ["domain", "general"] and meta["targets"]["domain"] == "rag.docs"
    with np.load(art.path / "router.npz", allow_pickle=False) as data:
        assert set(data.files) == {"idf", "coef", "intercept"}
    m = art.metrics
    assert 0 <= m["accuracy"] <= 1 and set(m["per_target"]) == {"domain", "general"}
    assert sum(sum(row.values()) for row in m["confusion"].values()) == m["holdout"]
    proc = run_dsl("route", str(path), "Which QCI carries SIP signalling in VoLTE?", "--json")
    decision = json.loads(proc.stdout)
    assert proc.returncode == 0 and decision["target"] == "domain" and decision["system"] == "rag.docs"
    assert 0.5 <= decision["probability"] <= 1


def test_domain_share_calibrates_the_threshold(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  domain_share = 0.2  holdout = 0.5')
    assert sdk.apply(load(path)).ok
    m = sdk.workspace.open_workspace(path).artifact("route.default").metrics
    assert m["domain_share"] == pytest.approx(0.2, abs=0.1) and m["threshold"] > 0.3


def test_more_than_two_targets(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs  targets = { law = rag.law }  holdout = 0.3', True)
    assert sdk.apply(load(path)).ok
    art = sdk.workspace.open_workspace(path).artifact("route.default")
    router = Router.load(art.path)
    assert set(router.classes) == {"domain", "general", "law"}
    assert router.route("Is an excited utterance hearsay?")["system"] == "rag.law"


def test_bad_examples_are_located(tmp_path: Path) -> None:
    path = _recipe(tmp_path, 'examples = "route.jsonl"  domain = rag.docs')
    (tmp_path / "route.jsonl").write_text('{"text": "a", "target": "domain"}\n{"text": "b", "target": "sports"}\n')
    with pytest.raises(PlanProblems, match="unknown target"):
        sdk.plan(load(path))
    (tmp_path / "route.jsonl").write_text('{"text": "a", "target": "domain"}\nnot json\n')
    with pytest.raises(PlanProblems, match="route.jsonl:2: malformed JSON"):
        sdk.plan(load(path))


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[1] / "recipes").glob("*.dsl") if p.is_file()))
def test_every_recipes_route_examples_are_its_own_domain(name: str) -> None:
    """A router trained on a recipe's examples as its route step trains it (examples, plus the questions of its
    eval_sets; tfidf here, whatever the recipe's classifier) sends most questions of the recipe's own evals of the
    domain system to the domain: examples from another domain would send them away."""
    from sdk.backends.routing.route import known_targets, read_examples
    from sdk.evalsets import load_items

    spec = load(Path(__file__).parents[1] / "recipes" / name)
    for route in spec.route.values():
        rows = read_examples(spec.resolve_path(route.examples), route.examples, known_targets(route))
        for ref in route.eval_sets:
            ev = spec.eval[ref.label]
            rows += [(it.question, "domain") for it in load_items(spec.resolve_path(ev.data), ev, ev.data)]
        meta, arrays, _ = train([t for t, _ in rows], [y for _, y in rows], "tfidf", 0, "")
        meta.update(targets={}, threshold=0.5)
        router = Router(meta, arrays)
        for label, ev in spec.eval.items():
            if str(route.domain) not in {str(s) for s in ev.systems}:
                continue
            questions = [it.question for it in load_items(spec.resolve_path(ev.data), ev, ev.data)]
            sent = [d["target"] for d in router.route_many(questions)]
            assert sent.count("domain") > len(sent) / 2, (name, label, list(zip(questions, sent)))


def test_a_target_with_one_example_still_trains_whatever_the_seed(tmp_path: Path) -> None:
    """The seeded draw may hold out a target's only example; the split then trades it for a training example of the
    most frequent target, so every target trains, the held-out count stays, and nothing fails after the plan."""
    from sklearn.model_selection import train_test_split

    from sdk.backends.routing.route import split_examples

    labels = ["domain"] * 9 + ["general"] * 9 + ["law"]
    n_hold = round(0.25 * len(labels))
    unlucky = [s for s in range(40) if 18 in train_test_split(list(range(19)), test_size=n_hold, random_state=s)[1]]
    assert unlucky, "no seed holds the single 'law' example out: the case below would not be exercised"
    for seed in range(40):
        tr, ho = split_examples(labels, 0.25, seed)
        assert sorted(tr + ho) == list(range(19)) and len(ho) == n_hold
        assert {labels[i] for i in tr} == {"domain", "general", "law"}, seed
    rows = [{"text": t, "target": "domain"} for t in DOMAIN] + [{"text": t, "target": "general"} for t in GENERAL]
    rows.append({"text": LAW[0], "target": "law"})  # row 24 of 25, 6 held out: a seed whose draw holds it out
    seed = next(s for s in range(100) if 24 in train_test_split(list(range(25)), test_size=6, random_state=s)[1])
    path = _recipe(tmp_path, f'examples = "route.jsonl"  domain = rag.docs  targets = {{ law = rag.law }}  '
                             f'holdout = 0.25  seed = {seed}  min_domain_recall = 0')
    (tmp_path / "route.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert sdk.apply(load(path)).ok
    assert set(Router.load(sdk.workspace.open_workspace(path).artifact("route.default").path).classes) == {
        "domain", "general", "law"}
