"""The ``dsl ui`` ASGI app (FastAPI, like the gateway): plan, runs, reports and playground pages rendered from
the recipe, the state, the artifacts and the apply event log, with Jinja2 templates through the project's sandboxed
environment (:mod:`sdk.templating`, autoescaped) and vendored htmx for the live parts. It writes nothing.

Auth: when the token variable (``DSL_UI_TOKEN``) is set, every page wants ``Authorization: Bearer <token>``, or the
cookie a first visit with ``?token=<token>`` sets (so a browser can use it); :mod:`sdk.ui.server` refuses to bind
anywhere but loopback without one."""

import hmac
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs

HERE = Path(__file__).parent
TOKEN_ENV = "DSL_UI_TOKEN"
COOKIE = "dsl_ui_token"
MAX_FORM_BYTES = 4 * 1024 * 1024  # a posted form (a review edit, a grade, a playground question): larger is 413
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'")
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'"


class Pages:
    """The recipe and workdir a page reads, opened afresh for each request (the recipe may be edited, and an apply
    may run beside the page)."""

    def __init__(self, recipe: Path, workdir: Optional[Path]) -> None:
        from sdk.ui.playground import Playground

        self.recipe, self.workdir_arg = recipe, workdir
        self.playground = Playground()
        self._workdir: Optional[Path] = None

    def ws(self) -> Any:
        from sdk.workspace import open_workspace

        ws = open_workspace(self.recipe, self.workdir_arg)
        self._workdir = ws.workdir
        return ws

    def stores(self) -> list[str]:
        """The tracking stores a past run's curves are read from (the recipe's URI, the workdir's own store)."""
        from sdk.errors import DslError
        from sdk.tracking_store import store_uris

        try:
            spec = self.ws().spec
        except DslError:
            spec = None  # a recipe edited into an error: the workdir's own store still answers
        return store_uris(spec, self.workdir)

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self.ws()
        assert self._workdir is not None
        return self._workdir


def _env() -> Any:
    from jinja2 import FileSystemLoader
    from markupsafe import Markup

    from sdk.templating import environment

    env = environment(autoescape=True, loader=FileSystemLoader(str(HERE / "templates")))

    def num(v: Any, digits: int = 3) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "—"
        return f"{v:.{int(digits)}f}"

    def signed(v: Any) -> str:
        return f"{v:+.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"

    env.filters.update(num=num, signed=signed, svg=Markup, tojson=lambda v: json.dumps(v, default=str))
    return env


def host_allowed(header: str, hosts: Optional[tuple[str, ...]]) -> bool:
    """Whether a request's ``Host`` header names one of ``hosts`` (any port); every host when ``hosts`` is None."""
    if hosts is None:
        return True
    from urllib.parse import urlsplit

    try:
        name = urlsplit("//" + header).hostname
    except ValueError:
        return False
    return name is not None and name in hosts


def create_app(recipe: "str | Path", workdir: "str | Path | None" = None, token_env: str = TOKEN_ENV,
               hosts: Optional[tuple[str, ...]] = None) -> Any:
    """The app. ``hosts``: the host names a request may be addressed to (``dsl ui`` on loopback without a token
    passes its loopback names, so a page of another site that rebinds its DNS name to 127.0.0.1 is refused)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from sdk.errors import DslError
    from sdk.serving.asgi import BodyLimit
    from sdk.ui import reports as R
    from sdk.ui import views as V

    pages = Pages(Path(recipe), Path(workdir) if workdir else None)
    env = _env()
    app = FastAPI(title="dsl ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pages = pages
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(name: str, status: int = 200, **ctx: Any) -> Any:
        html = env.get_template(name).render(recipe=str(pages.recipe), workdir=str(pages._workdir or ""), **ctx)
        return HTMLResponse(html, status_code=status)

    def problem(status: int, title: str, message: str, hint: str = "") -> Any:
        return page("error.html", status, title=title, message=message, hint=hint, tab="")

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Unknown ids are 404 pages; a recipe that does not load (or a damaged state) is a page that says so."""
        import functools

        @functools.wraps(fn)
        async def wrapper(request: Request, **kw: Any) -> Any:
            try:
                return await fn(request, **kw)
            except V.NotFound as e:
                return problem(404, "Not found", str(e))
            except DslError as e:
                text = e.format() if hasattr(e, "format") else str(e)
                return problem(422, "The recipe or its workdir cannot be read", text,
                               f"fix it, then reload; dsl validate {pages.recipe} says the same")
        return wrapper

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if not host_allowed(request.headers.get("host", ""), hosts):
            return Response(f"refused: this page answers at {', '.join(hosts or ())} only, not at the host this "
                            "request names (another site's name pointed at this machine?)\n", status_code=403,
                            media_type="text/plain")
        expected = os.environ.get(token_env, "")
        if expected:
            given = request.query_params.get("token")
            if given is not None and hmac.compare_digest(given.encode(), expected.encode()):
                back = RedirectResponse(request.url.path, status_code=303)
                back.set_cookie(COOKIE, expected, httponly=True, samesite="strict")
                return back
            header = request.headers.get("authorization", "")
            cookie = request.cookies.get(COOKIE, "")
            if not (hmac.compare_digest(header.encode(), f"Bearer {expected}".encode())
                    or hmac.compare_digest(cookie.encode(), expected.encode())):
                return Response("missing or wrong token: send Authorization: Bearer <token>, or open the page once "
                                "with ?token=<token>\n", status_code=401, media_type="text/plain",
                                headers={"WWW-Authenticate": "Bearer"})
        site = request.headers.get("sec-fetch-site", "same-origin")  # absent: not a browser (curl, a test client)
        if site not in ("same-origin", "none") and request.method == "GET" and (
                request.headers.get("sec-fetch-mode", "navigate") != "navigate" or "regex" in request.query_params):
            # another site may link to a page, not load one as an image or script (each a request that costs this
            # machine work), nor make it run a regular expression of its choosing over the rows
            return Response("refused: requested by another site\n", status_code=403, media_type="text/plain")
        if request.method == "POST":  # a form posted from another site is refused
            origin = request.headers.get("origin")
            if (origin and origin.split("://", 1)[-1] != request.headers.get("host", "")) or \
                    request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return Response("cross-origin request refused\n", status_code=403, media_type="text/plain")
        response = await call_next(request)
        report = request.url.path.startswith("/reports/") and request.url.path.endswith("/html")
        # an eval's report.html (charts inline, no script) runs nothing, even edited in its artifact folder
        response.headers.setdefault("Content-Security-Policy", REPORT_CSP if report else CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.add_middleware(BodyLimit, limit=MAX_FORM_BYTES)  # outermost: a huge upload is refused before auth reads it

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        if exc.status_code == 404:
            return problem(404, "Not found", f"there is no page at {request.url.path}", "the tabs above list what there is")
        return problem(exc.status_code, "Error", str(exc.detail))

    from sdk.ui import review

    review.register(app, pages, page, guarded)
    from sdk.ui import grading

    grading.register(app, pages, page, guarded)

    @app.get("/favicon.ico")
    async def favicon(request: Request) -> Any:
        return Response(status_code=204)

    @app.get("/")
    async def home(request: Request) -> Any:
        return RedirectResponse("/plan", status_code=303)

    @app.get("/plan")
    @guarded
    async def plan_page(request: Request) -> Any:
        ws = pages.ws()
        return page("plan.html", tab="plan", **V.plan_view(ws))

    @app.get("/plan/{step_id}")
    @guarded
    async def step_page(request: Request, step_id: str) -> Any:
        ws = pages.ws()
        return page("step.html", tab="plan", step=V.step_view(ws, step_id))

    @app.get("/runs")
    @guarded
    async def runs_page(request: Request) -> Any:
        return page("runs.html", tab="runs", **V.runs_view(pages.workdir))

    @app.get("/runs/table")
    @guarded
    async def runs_table(request: Request) -> Any:
        return page("runs_table.html", **V.runs_view(pages.workdir))

    @app.get("/runs/tracked")
    @guarded
    async def runs_tracked(request: Request) -> Any:
        import asyncio  # MLflow's client blocks: off the event loop

        stores = pages.stores()
        return page("runs_tracked.html", **await asyncio.to_thread(V.tracked_only_view, pages.workdir, stores))

    @app.get("/runs/{run_id}")
    @guarded
    async def run_page(request: Request, run_id: str) -> Any:
        import asyncio  # MLflow's client blocks: off the event loop

        return page("run.html", tab="runs", run=await asyncio.to_thread(V.run_view, pages.workdir, run_id,
                                                                        pages.stores()))

    @app.get("/runs/{run_id}/live")
    @guarded
    async def run_live(request: Request, run_id: str) -> Any:
        import asyncio

        return page("run_live.html", run=await asyncio.to_thread(V.run_view, pages.workdir, run_id, pages.stores()))

    @app.get("/compare")
    @guarded
    async def compare_page(request: Request) -> Any:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a or not b:
            return problem(400, "Pick two runs", "compare needs two run ids: /compare?a=RUN&b=RUN",
                           "tick two runs on the runs page")
        import asyncio

        return page("compare.html", tab="runs", cmp=await asyncio.to_thread(V.compare_view, pages.workdir, a, b,
                                                                            pages.stores()))

    @app.get("/reports")
    @guarded
    async def reports_page(request: Request) -> Any:
        ws = pages.ws()
        return page("reports.html", tab="reports", evals=R.evals(ws), applied=bool(ws.state.steps))

    @app.get("/reports/{eval_id}")
    @guarded
    async def report_page(request: Request, eval_id: str) -> Any:
        ws = pages.ws()
        return page("report.html", tab="reports", rep=R.report_view(ws, eval_id),
                    items=R.items_view(ws, eval_id))

    @app.get("/reports/{eval_id}/items")
    @guarded
    async def items_fragment(request: Request, eval_id: str) -> Any:
        p = request.query_params
        items = R.items_view(pages.ws(), eval_id, q=p.get("q", ""), system=p.get("system", ""),
                             only_wrong=p.get("wrong") in ("1", "on", "true"), sort=p.get("sort", "promoted"))
        return page("items.html", items=items)

    @app.get("/reports/{eval_id}/items/{item_id:path}")  # an item id may hold a "/"
    @guarded
    async def item_page(request: Request, eval_id: str, item_id: str) -> Any:
        p = request.query_params
        return page("item.html", tab="reports", it=R.item_view(pages.ws(), eval_id, item_id, p.get("a", ""), p.get("b", "")))

    @app.get("/reports/{eval_id}/html")
    @guarded
    async def report_html(request: Request, eval_id: str) -> Any:
        art = R._artifact(pages.ws(), eval_id)
        path = Path(art.path) / "report.html"
        if not path.is_file() or path.is_symlink():
            raise V.NotFound(f"{eval_id} has no report.html")
        return FileResponse(path, media_type="text/html")

    @app.get("/playground")
    @guarded
    async def playground_page(request: Request) -> Any:
        ws = pages.ws()
        return page("playground.html", tab="playground", choices=pages.playground.choices(ws),
                    applied=bool(ws.state.steps))

    @app.post("/playground/ask")
    async def playground_ask(request: Request) -> Any:
        import asyncio

        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        try:
            ws = pages.ws()
            out = await asyncio.to_thread(pages.playground.ask, ws, form.get("system", ""), form.get("question", ""))
        except DslError as e:
            return page("answer.html", error=str(e), out=None)
        return page("answer.html", error=None, out=out)

    return app
