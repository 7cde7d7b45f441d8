"""Plan-time environment checks: what a step needs from the machine it will run on (packages, cached hub models,
model folders, CUDA, a reachable pgvector server, set environment variables), checked before any step runs.

Backends call these helpers from :meth:`sdk.backends.base.Backend.environment`; each helper records what it
checked in ``ctx.checked`` (``dsl doctor`` prints it) and returns :class:`EnvProblem`s located by spec path. No
heavy import at module level: torch is imported only by :func:`cuda_available`, huggingface_hub only by
:func:`hub_cached`. Messages never hold the value of an ``env()`` variable.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import BaseModel

from sdk.spec.values import Problem, Ref, SecretRef


class EnvProblem(Problem):
    """A problem with the environment rather than the recipe; a ``warning`` never stops a plan."""

    severity: Literal["error", "warning"] = "error"


def _note(ctx: Any, what: str, ok: bool) -> None:
    checked = getattr(ctx, "checked", None)
    if checked is not None:
        checked.append({"check": what, "ok": ok})


# --------------------------------------------------------------------------------------------- primitives


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (torch imported here only; False when torch is not installed)."""
    if not importable("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cached(repo_id: str, revision: Optional[str] = None) -> bool:
    """Whether the local hub cache (HF_HUB_CACHE / HF_HOME) holds ``repo_id``'s config.json. No network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def tcp_answers(host: str, port: int, timeout: float = 3.0) -> Optional[str]:
    """None when something accepts a TCP connection at host:port, else a short reason (no address in it)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return "timed out"
    except OSError as e:
        return (e.strerror or type(e).__name__).lower()


def pg_address(conninfo: str) -> tuple[str, int, Optional[str]]:
    """(host, port, unix socket folder or None) of a PostgreSQL URL or ``key=value`` connection string."""
    from urllib.parse import parse_qs, urlparse

    if "://" in conninfo:
        url = urlparse(conninfo)
        try:
            port = url.port or 5432
        except ValueError:
            port = 5432
        sock = (parse_qs(url.query).get("host") or [""])[0]
        return url.hostname or "localhost", port, sock if sock.startswith("/") else None
    pairs = dict(p.split("=", 1) for p in conninfo.split() if "=" in p)
    host = pairs.get("host", "localhost")
    port = int(pairs["port"]) if pairs.get("port", "").isdigit() else 5432
    return host, port, host if host.startswith("/") else None


# ----------------------------------------------------------------------------------------------- checks


def packages(ctx: Any, backend: Any, path: tuple[Any, ...]) -> list[EnvProblem]:
    """Every module the backend requires is importable (named with its install hint)."""
    if not backend.requires:
        return []
    missing = backend.missing_requirements()
    _note(ctx, f"packages importable: {', '.join(backend.requires)}", not missing)
    if not missing:
        return []
    return [EnvProblem(path=path, message=f"backend {backend.name!r} needs {', '.join(missing)}, which is not installed",
                       hint=f"install with: {backend.install_hint}" if backend.install_hint else None)]


def package(ctx: Any, module: str, path: tuple[Any, ...], why: str, hint: str) -> list[EnvProblem]:
    ok = importable(module)
    _note(ctx, f"package importable: {module}", ok)
    return [] if ok else [EnvProblem(path=path, message=f"{why} needs {module}, which is not installed", hint=hint)]


def cuda(ctx: Any, path: tuple[Any, ...], why: str, hint: Optional[str] = None) -> list[EnvProblem]:
    ok = cuda_available()
    _note(ctx, f"CUDA present ({why})", ok)
    return [] if ok else [EnvProblem(path=path, message=f"{why} needs a CUDA GPU, and none is visible here",
                                     hint=hint)]


def hub_model(ctx: Any, repo_id: str, path: tuple[Any, ...], revision: Optional[str] = None,
              what: str = "model") -> list[EnvProblem]:
    """With HF_HUB_OFFLINE=1, the hub model must be in the local cache (nothing can be downloaded)."""
    if not offline():
        _note(ctx, f"hub {what} {repo_id}: online, downloaded when needed (gated repos need HF_TOKEN)", True)
        return []
    if not importable("huggingface_hub"):
        return []
    ok = hub_cached(repo_id, revision)
    _note(ctx, f"hub {what} {repo_id} in the local cache (HF_HUB_OFFLINE=1)", ok)
    if ok:
        return []
    return [EnvProblem(path=path, message=f"hub {what} {repo_id!r} is not in the local cache, and HF_HUB_OFFLINE=1 "
                       "forbids downloading it",
                       hint=f"run huggingface-cli download {repo_id} where the network is reachable (or point "
                            "HF_HUB_CACHE at a cache holding it), or unset HF_HUB_OFFLINE")]


def model_folder(ctx: Any, folder: Path, written: str, path: tuple[Any, ...], what: str = "model",
                 config: bool = True) -> list[EnvProblem]:
    """A local model folder exists (and holds a config.json when ``config``)."""
    ok = folder.is_dir() and (not config or (folder / "config.json").is_file())
    _note(ctx, f"{what} folder {written}" + (" holds config.json" if config else " exists"), ok)
    if ok:
        return []
    if not folder.is_dir():
        return [EnvProblem(path=path, message=f"{what} folder {written!r} does not exist",
                           hint="paths are relative to the recipe's folder")]
    return [EnvProblem(path=path, message=f"{written!r} has no config.json: not a transformers model folder")]


def compute(ctx: Any) -> list[EnvProblem]:
    """What the compute block a training step launches with needs: its launcher's package, DeepSpeed, and CUDA for
    DeepSpeed or FSDP unless ``cpu = true`` (FSDP runs on CPU processes with gloo)."""
    from sdk.spec.blocks.pretrain import compute_for

    c = compute_for(ctx.spec, ctx.block)
    if c is None:
        return []
    label = next((lbl for lbl, b in ctx.spec.compute.items() if b is c), None)
    at = ("compute", label) if label is not None else ctx.path
    out: list[EnvProblem] = []
    if c.launcher == "accelerate":
        out += package(ctx, "accelerate", at + ("launcher",), "launcher = accelerate", "pip install accelerate")
    if c.deepspeed is not None:
        out += package(ctx, "deepspeed", at + ("deepspeed",), "deepspeed", "pip install deepspeed (on a CUDA machine)")
        if not c.cpu:
            out += cuda(ctx, at + ("deepspeed",), "deepspeed", "run where a GPU is visible")
    if c.fsdp is not None and not c.cpu:
        out += cuda(ctx, at + ("fsdp",), "fsdp on GPU", "run where a GPU is visible, or set cpu = true")
    if c.kernels == "liger":  # Triton kernels: a CUDA GPU, always (with --skip-checks the step trains without them)
        out += package(ctx, "liger_kernel", at + ("kernels",), "kernels = liger", "pip install 'domain-dsl[gpu]'")
        out += cuda(ctx, at + ("kernels",), "kernels = liger", "run where a GPU is visible, or drop kernels = liger")
    return out


def secrets_in(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], SecretRef]]:
    """Every ``env("NAME")`` inside a block or object, with its spec path (attribute names as written)."""
    if isinstance(value, SecretRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            yield from secrets_in(getattr(value, name), path + (field.alias or name,))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from secrets_in(item, path + (i,))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from secrets_in(item, path + (k,))


def secrets_read(spec: Any, kind: str, label: str, block: Any) -> list[tuple[tuple[Any, ...], SecretRef]]:
    """The env() variables a step reads: its own block's, and the generators of the rag systems it refers to
    (an eval step runs them)."""
    found = list(secrets_in(block, (kind, label)))
    seen = {p for p, _ in found}
    for ref in _refs(block):
        if ref.kind == "rag" and ref.label in getattr(spec, "rag", {}) and kind != "rag":
            gen = spec.rag[ref.label].generator
            for p, s in secrets_in(gen, ("rag", ref.label, "generator")):
                if p not in seen:
                    seen.add(p)
                    found.append((p, s))
    return found


def _refs(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _refs(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _refs(item)


def env_vars(ctx: Any, found: list[tuple[tuple[Any, ...], SecretRef]]) -> list[EnvProblem]:
    out = []
    for path, ref in found:
        ok = bool(os.environ.get(ref.env))
        _note(ctx, f"environment variable {ref.env} set", ok)
        if not ok:
            out.append(EnvProblem(path=path, message=f"environment variable {ref.env} is not set (read by "
                                  f'env("{ref.env}") when this step runs)',
                                  hint=f"export {ref.env}=... before dsl apply"))
    return out


def pgvector(ctx: Any, store: Any, path: tuple[Any, ...], timeout: float = 3.0) -> list[EnvProblem]:
    """A PostgreSQL server answers at the store's connection (a TCP connect with a timeout; nothing of the
    connection string is printed: it is a secret)."""
    name = store.connection.env
    conninfo = os.environ.get(name)
    if not conninfo:
        return []  # env_vars reports it
    host, port, sock = pg_address(conninfo)
    if sock is not None:
        reason = None if Path(sock, f".s.PGSQL.{port}").exists() else "no socket file"
    else:
        reason = tcp_answers(host, port, timeout)
    _note(ctx, f'pgvector server answers (connection from env("{name}"))', reason is None)
    if reason is None:
        return []
    return [EnvProblem(path=path, message=f'no PostgreSQL server answers at the connection in env("{name}") '
                       f"({reason})", hint="start the server (or fix the connection string), or use store = memory {}")]
