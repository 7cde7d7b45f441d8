"""The page's Grade view: experts grade the answers of an eval's last applied run, blind. Each item shows its
question and reference answer (experts grade correctness against it), and the distinct answers the systems under
test gave, with no system named anywhere in the page and in an order shuffled per grader and item (seeded by both,
so it stays put for that grader). pass_fail: pass or fail with an error category; pairwise: which of two answers
is better, or a tie. Grades go to the recipe's grades file through :mod:`sdk.grades`; the grader's name is a form
field the page remembers in a cookie. Writes carry the same guards as the Review view's (token, Origin, htmx)."""

import hashlib
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from sdk.records.state import Status
from sdk.spec import EvalBlock
from sdk.spec.paths import shown_path
from sdk.spec.values import Ref

GRADER_COOKIE = "dsl_grader"


def _eval_blocks(ws: Any) -> dict[str, tuple[str, Any]]:
    """label -> (step id, block) of the recipe's eval blocks, found by their type (no kind named by a string)."""
    return {label: (Ref(kind, label).id, block) for kind, label, block in ws.spec.blocks()
            if isinstance(block, EvalBlock)}


def eval_label(ws: Any, name: str) -> str:
    """The label a page's path names: ``expert`` as given, or the step id ``eval.expert``'s label."""
    return next((label for label, (sid, _) in _eval_blocks(ws).items() if sid == name), name)


def graded_evals(ws: Any) -> list[dict[str, Any]]:
    """The evals an expert can grade: those declaring human grading or using a judge (its calibration)."""
    out = []
    for label, (sid, block) in _eval_blocks(ws).items():
        if block.human is None and block.judge is None:
            continue
        entry = ws.state.steps.get(sid) or {}
        out.append({"label": label, "id": sid, "mode": block.human.mode if block.human else "pass_fail",
                    "applied": entry.get("status") in Status.finished(),
                    "status": ((entry.get("metrics") or {}).get("human") or {}).get("status", "")})
    return out


def _rows(ws: Any, label: str) -> list[dict[str, Any]]:
    import json

    art = ws.artifact(_eval_blocks(ws)[label][0])
    path = art.path / art.outputs.get("predictions", "predictions.jsonl")
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def _order(grader: str, item: str, things: list[Any]) -> list[Any]:
    seed = int(hashlib.sha256(f"{grader}\0{item}".encode()).hexdigest()[:16], 16)
    out = list(things)
    random.Random(seed).shuffle(out)
    return out


def items_view(ws: Any, label: str, grader: str) -> dict[str, Any]:
    """Every item with its blind answers (pass_fail) or pairs (pairwise), this grader's grades, and progress."""
    from sdk import grades as G
    from sdk.ui.views import NotFound

    evals = {e["label"]: e for e in graded_evals(ws)}
    if label not in evals:
        raise NotFound(f"no eval {label!r} with human grading or a judge (have: {', '.join(evals) or 'none'})")
    block, info = _eval_blocks(ws)[label][1], evals[label]
    path = G.grades_path(ws.spec.base_dir, ws.spec.name, label)
    base = {"eval": info, "grades_file": shown_path(path, ws.spec.base_dir), "grader": grader,
            "categories": G.CATEGORIES}
    if not info["applied"]:
        return {**base, "items": None, "error": f"{info['id']} is not applied yet: run {ws.source}"}
    rows = _rows(ws, label)
    systems = list(dict.fromkeys(str(s) if not hasattr(s, "url") else f"endpoint:{s.model}" for s in block.systems))
    by_item: dict[str, dict[str, Any]] = {}
    for r in rows:
        it = by_item.setdefault(str(r["id"]), {"id": str(r["id"]), "question": r.get("question", ""),
                                               "reference": r.get("gold", ""), "answers": {}})
        it["answers"][r["system"]] = {"hash": G.answer_hash(r.get("prediction") or ""),
                                      "text": str(r.get("prediction") or "")}
    grades = G.load(path)
    mine = [g for g in grades if g["grader"] == grader] if grader else []
    verdicts, prefs = G.verdicts(mine), G.preferences(mine)
    items, done = [], 0
    for item_id in sorted(by_item):
        it = by_item[item_id]
        it["tasks"] = _tasks(info["mode"], systems, it["answers"], item_id, grader, verdicts, prefs)
        del it["answers"]  # system ids stay on the server
        it["graded"] = bool(it["tasks"]) and all(t["mine"] is not None for t in it["tasks"])
        done += it["graded"]
        items.append(it)
    return {**base, "items": items, "error": None, "done": done, "total": len(items)}


def _tasks(mode: str, systems: list[str], answers: dict[str, dict[str, str]], item: str, grader: str,
           verdicts: dict[Any, Any], prefs: dict[Any, Any]) -> list[dict[str, Any]]:
    """What one item asks of a grader: each distinct answer (pass_fail), or each pair of the first system's answer
    with another system's different answer (pairwise); shuffled for this grader."""
    if mode == "pairwise":
        first = answers.get(systems[0]) if systems else None
        pairs: dict[frozenset[str], list[dict[str, str]]] = {}
        for sid in systems[1:]:
            other = answers.get(sid)
            if first and other and other["hash"] != first["hash"]:
                pairs.setdefault(frozenset((first["hash"], other["hash"])), [first, other])
        out = []
        for key, pair in pairs.items():
            a, b = _order(grader, item + "".join(sorted(key)), pair)
            got = prefs.get((item, key), {}).get(grader)
            out.append({"kind": "pair", "a": a, "b": b, "mine": got})
        return _order(grader, item, out)
    distinct = {a["hash"]: a for sid in systems if (a := answers.get(sid))}
    return [{"kind": "answer", "answer": a, "mine": verdicts.get((item, a["hash"]), {}).get(grader)}
            for a in _order(grader, item, list(distinct.values()))]


def _system_of(ws: Any, label: str, item: str, answer: str) -> str:
    """The system that gave ``answer`` to ``item`` (stored with the grade, never shown)."""
    from sdk import grades as G

    for r in _rows(ws, label):
        if str(r["id"]) == item and G.answer_hash(r.get("prediction") or "") == answer:
            return str(r["system"])
    raise KeyError(answer)


def grade(ws: Any, label: str, form: dict[str, str], grader: str) -> str:
    """Append the grade the form gives; returns an error message or ''."""
    from sdk import grades as G
    from sdk.errors import DslError

    if not grader:
        return "enter your name as grader first (top of the page)"
    item = form.get("item", "")
    try:
        if form.get("prefer"):
            pair = [form.get("a", ""), form.get("b", "")]
            for h in pair:
                _system_of(ws, label, item, h)
            entry: dict[str, Any] = {"item": item, "answers": sorted(pair), "prefer": form["prefer"], "grader": grader}
        else:
            verdict = form.get("verdict", "")
            entry = {"item": item, "answer": form.get("answer", ""), "grader": grader, "verdict": verdict,
                     "system": _system_of(ws, label, item, form.get("answer", ""))}
            if verdict == "fail":
                entry["category"] = form.get("category") or "other"
        G.append(G.grades_path(ws.spec.base_dir, ws.spec.name, label), [entry])
    except KeyError:
        return f"item {item!r} has no such answer in the last run of {_eval_blocks(ws).get(label, (label,))[0]}"
    except (ValueError, DslError) as e:
        return str(e)
    return ""


def register(app: Any, pages: Any, page: Callable[..., Any], guarded: Callable[..., Any]) -> None:
    """Add the Grade routes to the ``dsl ui`` app."""
    from fastapi import Request
    from fastapi.responses import Response

    def grader_of(request: Request, form: dict[str, str] | None = None) -> str:
        return ((form or {}).get("grader") or request.cookies.get(GRADER_COOKIE, "")).strip()[:200]

    @app.get("/grade")
    @guarded
    async def grade_list(request: Request) -> Any:
        ws = pages.ws()
        return page("grade.html", tab="grade", evals=graded_evals(ws))

    @app.get("/grade/{label}")
    @guarded
    async def grade_eval(request: Request, label: str) -> Any:
        ws = pages.ws()
        view = items_view(ws, eval_label(ws, label), grader_of(request))
        return page("grade_eval.html", tab="grade", g=view)

    @app.post("/grade/{label}/grade")
    @guarded
    async def grade_post(request: Request, label: str) -> Any:
        if request.headers.get("hx-request") != "true" or \
                request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return Response("refused: a grade is posted by the page itself (htmx), from its own origin\n",
                            status_code=403, media_type="text/plain")
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        ws, name = pages.ws(), grader_of(request, form)
        label = eval_label(ws, label)
        error = grade(ws, label, form, name)
        view = items_view(ws, label, name)
        it = next((i for i in view["items"] or [] if i["id"] == form.get("item")), None)
        response = page("grade_item.html", g=view, it=it, error=error, oob=True)
        if name:
            response.set_cookie(GRADER_COOKIE, name, max_age=365 * 86400, httponly=True, samesite="strict")
        return response
