"""``dsl ui``: the product's one web app (plan, runs, reports, playground), a FastAPI app on uvicorn like the
gateway, with server-rendered Jinja2 templates (the project's sandboxed environment) and vendored htmx. It reads the
typed records (state, manifests, eval summaries) and the apply event log; it writes nothing."""
