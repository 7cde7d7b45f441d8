"""The page's Review view: a synth step's candidate rows (its artifact's ``candidates.jsonl``) beside their source
chunks, each accepted, rejected or edited with a reason, one edit applied to every row a search matches, filters by
status, and counts. Decisions go to the recipe's decisions log through :mod:`sdk.reviews` (the same log
``dsl review import`` writes); the reviewer's name is a form field the page remembers in a cookie.

Writes are POSTs made by htmx: besides the app's token and Origin checks (:mod:`sdk.ui.app`), each must carry htmx's
``HX-Request`` header (a form posted from another site cannot) and, when the browser says where it came from
(``Sec-Fetch-Site``), come from the page itself."""

from typing import Any, Callable
from urllib.parse import parse_qs

from sdk.spec.paths import shown_path

REVIEWER_COOKIE = "dsl_reviewer"
SHOWN = 200  # rows rendered at once (the counts cover all of them)


def _label_view(ws: Any, label: str) -> dict[str, Any]:
    from sdk import reviewio as IO
    from sdk.errors import DslError
    from sdk.ui.views import NotFound

    steps = {s["label"]: s for s in IO.synth_steps(ws)}
    label = next((s["label"] for s in steps.values() if s["id"] == label), label)  # the step id names it too
    if label not in steps:
        raise NotFound(f"no synth step {label!r} (have: {', '.join(steps) or 'none'})")
    step = steps[label]
    if not step["applied"]:
        return {**step, "rows": None, "error": f"{step['id']} is not applied yet: run {ws.source}"}
    try:
        rows = IO.candidates(ws, label)
    except DslError as e:
        return {**step, "rows": None, "error": str(e)}
    return {**step, "rows": rows, "error": None, "fields": IO.text_fields(rows)}


def _filtered(step: dict[str, Any], decisions: dict[str, Any], status: str, q: str,
              regex: bool) -> tuple[list[dict[str, Any]], str]:
    """(rows the filters keep, a message about a bad search or '')."""
    from sdk import reviews as RV
    from sdk.errors import DslError

    rows = step["rows"] or []
    if status in RV.STATUSES:
        rows = [r for r in rows if RV.status(decisions.get(r["id"])) == status]
    if q:
        try:
            rows = RV.matching(rows, decisions, q, regex)
        except DslError as e:
            return [], str(e)
    return rows, ""


def _rows_ctx(ws: Any, step: dict[str, Any], params: dict[str, str], message: str = "",
             fragment: bool = False) -> dict[str, Any]:
    from sdk import reviews as RV

    decisions = RV.load(step["decisions"])
    status, q, regex = params.get("status", ""), params.get("q", ""), params.get("regex") in ("1", "on", "true")
    rows, problem = _filtered(step, decisions, status, q, regex)
    shown = [_row(r, decisions.get(r["id"]), step["fields"]) for r in rows[:SHOWN]]
    bulk_n = sum(1 for r in rows if RV.status(decisions.get(r["id"])) != "rejected") if q and not problem else 0
    return {"step": step, "rows": shown, "total": len(rows), "counts": RV.counts(step["rows"], decisions),
            "all": len(step["rows"]), "q": q, "status": status, "regex": regex, "problem": problem,
            "bulk_n": bulk_n, "message": message, "fragment": fragment,
            "decisions_file": shown_path(step["decisions"], ws.spec.base_dir)}


def _row(row: dict[str, Any], decision: Any, fields: list[str]) -> dict[str, Any]:
    from sdk import reviews as RV

    current = RV.edited(row, decision)
    return {"id": row["id"], "status": RV.status(decision), "decision": decision or {},
            "fields": [{"name": f, "value": current.get(f, ""), "original": row.get(f, ""),
                        "edited": current.get(f) != row.get(f)} for f in fields if isinstance(row.get(f), str)],
            "source": row.get("source", ""), "chunk": row.get("chunk", ""), "task": row.get("task", ""),
            "extra": {k: row[k] for k in ("golden", "distractors") if k in row}}


async def _form(request: Any) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _forged(request: Any) -> bool:
    """A write not made by the page's own htmx (see the module's docstring)."""
    if request.headers.get("hx-request") != "true":
        return True
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


def _decide(step: dict[str, Any], form: dict[str, str], reviewer: str) -> tuple[dict[str, Any], str]:
    """(the row the form is about, an error message or '') after appending the decision the form asks for."""
    from sdk import reviews as RV
    from sdk.errors import DslError

    by_id = {r["id"]: r for r in step["rows"]}
    row = by_id.get(form.get("id", ""))
    if row is None:
        raise KeyError(form.get("id", ""))
    decision = form.get("decision", "")
    if not reviewer:
        return row, "enter your name as reviewer first (top of the page)"
    if decision not in RV.DECISIONS:
        return row, f"unknown decision {decision!r}"
    current = RV.edited(row, RV.load(step["decisions"]).get(row["id"]))
    changed = {f: form[f].replace("\r\n", "\n") for f in step["fields"]
               if f in form and form[f].replace("\r\n", "\n") != current.get(f)}
    fields = {f: form[f].replace("\r\n", "\n") for f in step["fields"]
              if f in form and form[f].replace("\r\n", "\n") != row.get(f)}
    if decision == "edit" and not fields:
        return row, "nothing was edited: change the text, then save the edit"
    if decision == "accept" and changed:
        return row, "the text was changed: save the edit, or reload to accept the row as generated"
    entry = {"id": row["id"], "decision": decision, "reason": form.get("reason", "").strip(), "reviewer": reviewer,
             "at": RV.now(), **({"fields": fields} if decision == "edit" else {})}
    try:
        RV.append(step["decisions"], [entry])
    except DslError as e:
        return row, str(e)
    return row, ""


def register(app: Any, pages: Any, page: Callable[..., Any], guarded: Callable[..., Any]) -> None:
    """Add the Review routes to the ``dsl ui`` app (``page`` renders a template, ``guarded`` turns unknown ids
    and unreadable recipes into error pages)."""
    from fastapi import Request
    from fastapi.responses import Response

    from sdk import reviews as RV

    def reviewer_of(request: Request, form: dict[str, str]) -> str:
        return (form.get("reviewer") or request.cookies.get(REVIEWER_COOKIE, "")).strip()[:200]

    def remember(response: Any, name: str) -> Any:
        if name:
            response.set_cookie(REVIEWER_COOKIE, name, max_age=365 * 86400, httponly=True, samesite="strict")
        return response

    def refused() -> Any:
        return Response("refused: a review decision is posted by the page itself (htmx), from its own origin\n",
                        status_code=403, media_type="text/plain")

    @app.get("/review")
    @guarded
    async def review_list(request: Request) -> Any:
        from sdk import reviewio as IO

        ws = pages.ws()
        steps = []
        for s in IO.synth_steps(ws):
            counts = None
            if s["applied"]:
                try:
                    counts = RV.counts(IO.candidates(ws, s["label"]), RV.load(s["decisions"]))
                except Exception as e:  # noqa: BLE001 - one damaged step must not hide the others
                    s = {**s, "error": str(e)}
            steps.append({**s, "counts": counts, "decisions_file": shown_path(s["decisions"], ws.spec.base_dir)})
        return page("review.html", tab="review", steps=steps, applied=bool(ws.state.steps))

    @app.get("/review/{label}")
    @guarded
    async def review_step(request: Request, label: str) -> Any:
        ws = pages.ws()
        step = _label_view(ws, label)
        ctx = _rows_ctx(ws, step, dict(request.query_params)) if step["rows"] is not None else None
        return page("review_step.html", tab="review", step=step, r=ctx,
                    reviewer=request.cookies.get(REVIEWER_COOKIE, ""))

    @app.get("/review/{label}/rows")
    @guarded
    async def review_rows(request: Request, label: str) -> Any:
        ws = pages.ws()
        step = _label_view(ws, label)
        if step["rows"] is None:
            return page("error.html", 409, title="Not applied", message=step["error"], hint="", tab="review")
        return page("review_rows.html", r=_rows_ctx(ws, step, dict(request.query_params), fragment=True))

    async def posted(request: Request, label: str) -> tuple[Any, Any, Any, Any]:
        """What a POST on a synth step's rows acts on: (form, workspace, step, None), or the response refusing it
        (a forged request: 403; a step not applied: 409) as the last item."""
        if _forged(request):
            return None, None, None, refused()
        form = await _form(request)
        ws = pages.ws()
        step = _label_view(ws, label)
        if step["rows"] is None:
            return form, ws, step, page("error.html", 409, title="Not applied", message=step["error"], hint="",
                                        tab="review")
        return form, ws, step, None

    @app.post("/review/{label}/decide")
    @guarded
    async def review_decide(request: Request, label: str) -> Any:
        from sdk.ui.views import NotFound

        form, _, step, refusal = await posted(request, label)
        if refusal is not None:
            return refusal
        name = reviewer_of(request, form)
        try:
            row, error = _decide(step, form, name)
        except KeyError:
            raise NotFound(f"{step['id']} has no row {form.get('id', '')!r}") from None
        decisions = RV.load(step["decisions"])
        return remember(page("review_row.html", row=_row(row, decisions.get(row["id"]), step["fields"]),
                             step=step, error=error, oob=True, counts=RV.counts(step["rows"], decisions)), name)

    @app.post("/review/{label}/bulk")
    @guarded
    async def review_bulk(request: Request, label: str) -> Any:
        from sdk.errors import DslError

        form, ws, step, refusal = await posted(request, label)
        if refusal is not None:
            return refusal
        name = reviewer_of(request, form)
        decisions = RV.load(step["decisions"])
        regex = form.get("regex") in ("1", "on", "true")
        rows, problem = _filtered(step, decisions, form.get("status", ""), form.get("q", ""), regex)
        message = problem
        if not name:
            message = "enter your name as reviewer first (top of the page)"
        elif not problem:
            try:
                entries = RV.edit_matching(rows, decisions, form.get("q", ""), form.get("replacement", ""),
                                           reviewer=name, reason=form.get("bulk_reason", "").strip(), regex=regex,
                                           fields=tuple(f for f in RV.SEARCHED if f in step["fields"]))
                RV.append(step["decisions"], entries)
                message = f"edited {len(entries)} of {len(rows)} matching rows"
            except DslError as e:
                message = str(e)
        params = {k: form.get(k, "") for k in ("status", "q", "regex")}
        return remember(page("review_rows.html", r=_rows_ctx(ws, step, params, message, fragment=True)), name)
