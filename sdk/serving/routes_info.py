"""``/health``, ``/metrics`` (Prometheus) and ``/v1/models`` (what is served, and what is withheld and why)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sdk.serving.routes_common import gateway_of

router = APIRouter()


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    return {"status": "ok", "domain": gateway.config.get("domain"), "models": gateway.models,
            "withheld": gateway.withheld}


@router.get("/metrics")
def metrics(request: Request) -> Any:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(gateway_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
def models(request: Request) -> dict[str, Any]:
    gateway = gateway_of(request)
    now = int(time.time())
    return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "dsl"}
                                       for m in gateway.models],
            "withheld": [{"id": n, "reason": r} for n, r in sorted(gateway.withheld.items())]}
