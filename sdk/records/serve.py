"""The serve configuration: ``serve.json``, written by the serve step and read by ``dsl serve`` and the gateway.

Every serve default is stated here, once: the serve block (:mod:`sdk.spec.blocks.serve`) takes its defaults from
:class:`ServeConfig`, the gateway fills a partial configuration from it, and no reader restates one
(``config.get("timeout", 60)`` is what this module replaces). Read settings from a validated configuration
(:func:`serve_config`), never with a default of your own."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from sdk.records.files import load_record, save_record

SERVE_JSON = "serve.json"


class ServeConfig(BaseModel):
    """What the gateway serves and how. ``extra="allow"``: an engine writes its own section under its name
    (``"sglang": {"command", "port", ...}``, or a plugin engine's), which the engine alone reads."""

    model_config = ConfigDict(extra="allow", strict=True)

    domain: Optional[str] = None
    engine: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key_env: Optional[str] = None
    max_batch_size: int = Field(default=8, ge=1, description="Requests batched together by the local engine")
    max_tokens: int = Field(default=256, ge=1, description="Upper bound on max_tokens per request")
    max_request_bytes: int = Field(default=1_000_000, ge=1, description="Larger requests get 413")
    timeout: float = Field(default=60.0, gt=0, le=86_400, description="Seconds for an upstream call (at most a day)")
    header_timeout: float = Field(default=10.0, gt=0, le=3600,
                                  description="Seconds a client has to send its request headers (else closed)")
    body_timeout: float = Field(default=30.0, gt=0, le=3600,
                                description="Seconds a client has to send its request body (else 408)")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    router: Optional[str] = None
    general: Union[str, dict[str, Any], None] = None
    withheld: dict[str, str] = Field(default_factory=dict)
    domain_target: Optional[str] = None


SETTINGS = ("max_batch_size", "max_tokens", "max_request_bytes", "timeout", "header_timeout", "body_timeout")


def default(name: str) -> Any:
    """The default of one serve setting (the serve block states its defaults through this)."""
    return ServeConfig.model_fields[name].default


def serve_config(config: Union[ServeConfig, dict[str, Any]], path: Optional[Path] = None) -> dict[str, Any]:
    """A configuration with every setting present (defaults filled from :class:`ServeConfig`), validated: the
    dict the gateway and the HTTP app read with ``config["timeout"]``, never ``.get(..., default)``."""
    if isinstance(config, dict):
        from sdk.records.files import validate

        config = validate(ServeConfig, config, path or Path(SERVE_JSON), "the serve configuration")
    return config.model_dump(mode="json")


def save_serve(config: ServeConfig, folder: Path) -> Path:
    path = Path(folder) / SERVE_JSON
    save_record(config, path)  # atomic: a planted link or hard link at serve.json is replaced, never written through
    return path


def load_serve(path: Path, step_id: str = "serve") -> ServeConfig:
    """serve.json, validated: a damaged one is an error naming the file and the field, and how to rebuild it."""
    return load_record(ServeConfig, path, "the serve configuration", hint=f"run dsl apply --replace {step_id}")

