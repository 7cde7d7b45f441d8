"""MLflow tracking: each ``dsl apply`` that ran something is an MLflow run, with a nested run per step that ran.

What is logged comes from the apply's event log (:mod:`sdk.events`: the loss curves as training logged them, each
step's status and wall time) and from the state entries and artifacts of the steps that ran, at the end of the
apply, so the page (``dsl ui``) and MLflow show the same run:

- params: the step's applied configuration, flattened (``lora.rank = 4``); secret values never (the values of every
  ``env(...)`` the recipe names, and anything that looks like a credential, are masked);
- metrics: every curve of the event log by training step (``train_loss``, ``eval_loss``, rewards...), the step's
  own figures flattened (eval metrics with ``ci_low``/``ci_high``, retrieval and router figures), ``seconds``;
- tags: ``dsl.fingerprint``, ``dsl.backend``/``dsl.backend_version``, ``dsl.inputs`` and ``dsl.lineage`` (step
  ids), ``dsl.status``, ``dsl.curves`` (which metrics are curves), ``dsl.gate`` (eval steps with a gate),
  ``dsl.promoted`` (systems);
- artifacts: the step's small report files (model card, charts, eval report, predictions, manifest).

Where: the domain's ``tracking`` attribute (``local``, ``off`` or a tracking URI), else ``MLFLOW_TRACKING_URI``,
else the workdir's own store ``<workdir>/mlruns`` (SQLite, nothing to start). ``DSL_TRACKING=off`` turns tracking
off for a process (the test suite does). A server that cannot be reached (one ``GET /health`` of at most
:data:`CONNECT_TIMEOUT` seconds, its answer remembered by the process), or that refuses the run, is a warning: the
run is then recorded in the workdir's store, tagged with where it was meant to go. ``mlflow`` is imported
only here and in :mod:`sdk.tracking_store` (which reads the runs back), and only when a step ran.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from sdk import events as EV
from sdk.records.state import Status

LOCAL_STORE = "mlruns"
OFF_ENV = "DSL_TRACKING"  # "off": no tracking in this process
ARTIFACT_NAMES = re.compile(r"^(README\.md|manifest\.json|report\.(md|html|json)|.*\.(png|svg)|predictions.*|"
                            r".*results.*\.json|metrics.*\.json|misses.*)$")
MAX_ARTIFACT_BYTES = 5 * 2**20
_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")
CONNECT_TIMEOUT = 1.0  # seconds: the one attempt to reach a tracking server before an apply logs to it
REACH_TTL = 30.0  # seconds a server's answer (up or down) is kept in the process
_REACHED: dict[str, tuple[float, Optional[str]]] = {}
_REACH_LOCK = threading.Lock()
_SECRETISH = re.compile(r"(?i)(api[_-]?key|password|passwd|secret|token|connection|credential)")


# ------------------------------------------------------------------------------------------ where to track


def local_store(workdir: "str | Path") -> Path:
    return Path(workdir).resolve() / LOCAL_STORE


def local_uri(workdir: "str | Path") -> str:
    """The workdir's own tracking store: ``sqlite:///<workdir>/mlruns/mlflow.db`` (artifacts beside it)."""
    return f"sqlite:///{local_store(workdir) / 'mlflow.db'}"


def target_uri(spec: Any, workdir: "str | Path") -> Optional[str]:
    """Where this apply is tracked, or None when tracking is off."""
    if os.environ.get(OFF_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    chosen = getattr(spec, "tracking", None) or os.environ.get("MLFLOW_TRACKING_URI") or "local"
    if chosen == "off":
        return None
    return local_uri(workdir) if chosen == "local" else chosen


def shown_uri(uri: str) -> str:
    """A URI as it may be printed (no user or password)."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


# ------------------------------------------------------------------------------------------ what to log


def secret_values(spec: Any) -> list[str]:
    """The values of every ``env(...)`` the spec names that is set here (to be masked wherever they appear)."""
    from pydantic import BaseModel

    from sdk.spec.values import SecretRef

    found: set[str] = set()
    todo: list[Any] = [spec]
    seen: set[int] = set()
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, SecretRef):
            if os.environ.get(v.env):
                found.add(os.environ[v.env])
        elif isinstance(v, BaseModel):
            todo += [getattr(v, n, None) for n in type(v).model_fields]
        elif isinstance(v, dict):
            todo += list(v.values())
        elif isinstance(v, (list, tuple, set)):
            todo += list(v)
    return sorted(found)


def _redact(text: str, secrets: list[str]) -> str:
    from sdk.cleantext import redact

    return redact(text, secrets)


def _key(text: str) -> str:
    return _KEY.sub("_", text)[:250]


def flatten(value: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts and lists as ``{"a.b.0": leaf}``; a secret reference ``{"env": NAME}`` stays one leaf."""
    if isinstance(value, dict) and value and not (set(value) == {"env"} and isinstance(value["env"], str)):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{sep}{i}" if prefix else str(i), sep))
        return out
    return {prefix or "value": value}


def params_of(config: Any, secrets: list[str]) -> dict[str, str]:
    """A step's configuration as MLflow params: flattened, secrets masked, values cut to MLflow's 6000."""
    out: dict[str, str] = {}
    for k, v in flatten(config if isinstance(config, dict) else {"config": config}).items():
        if isinstance(v, dict) and set(v) == {"env"}:
            text = f"env({v['env']})"
        elif _SECRETISH.search(k) and isinstance(v, str) and v:
            text = "***"
        else:
            text = v if isinstance(v, str) else repr(v) if not isinstance(v, (int, float, bool, list)) else str(v)
        out[_key(_redact(k, secrets))] = _redact(str(text), secrets)[:6000]
    return out


def numbers_of(metrics: Any, secrets: list[str] = ()) -> dict[str, float]:  # type: ignore[assignment]
    """A step's own figures as MLflow metrics: numeric leaves, ``system/metric`` and ``system/metric/ci_low`` for an
    eval's ``{system: {metric: {value, ci_low, ci_high}}}``."""
    out: dict[str, float] = {}
    for k, v in flatten(metrics if isinstance(metrics, dict) else {}, sep="/").items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            key = k[: -len("/value")] if k.endswith("/value") else k
            out[_key(_redact(key, secrets))] = float(v)
    return out


def _artifacts(folder: Optional[Path]) -> list[tuple[Path, Optional[str]]]:
    """(file, its folder inside the artifact or None) for the small report files of a step's artifact."""
    if folder is None or not folder.is_dir():
        return []
    files = [p for p in sorted(folder.iterdir()) + sorted(folder.glob("*/*"))
             if p.is_file() and not p.is_symlink() and ARTIFACT_NAMES.match(p.name)
             and p.stat().st_size <= MAX_ARTIFACT_BYTES]
    return [(p, None if p.parent == folder else p.parent.name) for p in files[:50]]


def collect(spec: Any, workdir: "str | Path", run_id: str, state: Any) -> dict[str, Any]:
    """Everything one apply logs, read from its event log and the state (no MLflow): ``run`` (name, start, end,
    ok, tags) and ``steps`` (one dict per step that ran: params, metrics, tags, artifacts, status, times)."""
    from sdk.promotion import promotion
    from sdk.spec.kinds import evaluates

    events, _ = EV.read_events(workdir, run_id)
    secrets = secret_values(spec)
    series = EV.metric_series(workdir, run_id)
    started = {e["step"]: e["time"] for e in events if e["event"] == "step_started"}
    first = next((e for e in events if e["event"] == "run_started"), None)
    last = next((e for e in reversed(events) if e["event"] == "run_finished"), None)
    promoted = promotion(state.steps) if state is not None else {}
    steps = []
    for e in events:
        if e["event"] != "step_finished":
            continue
        sid, data = e["step"], e["data"]
        entry = (state.steps.get(sid) or {}) if state is not None else {}
        metrics = [(_key(_redact(name, secrets)), v, int(n)) for name, points in series.get(sid, {}).items()
                   for n, v in points]
        figures = numbers_of(entry.get("metrics"), secrets) if entry.get("fingerprint") == data.get("fingerprint") \
            else {}
        figures = {(k + "_final" if k in series.get(sid, {}) else k): v for k, v in figures.items()}
        figures["seconds"] = float(data.get("seconds") or 0.0)
        tags = {"dsl.step": sid, "dsl.kind": sid.partition(".")[0], "dsl.status": str(data.get("status")),
                "dsl.fingerprint": str(data.get("fingerprint") or ""), "dsl.backend": str(entry.get("backend", "")),
                "dsl.backend_version": str(entry.get("backend_version", "")),
                "dsl.inputs": ",".join(sorted(entry.get("inputs") or {})),
                "dsl.lineage": ",".join((entry.get("lineage") or {}).get("steps", [])),
                "dsl.curves": ",".join(dict.fromkeys(name for name, _, _ in metrics))}
        if evaluates(sid) and (entry.get("config") or {}).get("gate"):  # a kind declared to evaluate, not a name
            tags["dsl.gate"] = "failed" if data.get("status") == Status.GATE_FAILED.value else (
                "passed" if data.get("status") == Status.DONE.value else "not run")
            tags["dsl.gate_expression"] = str(entry["config"]["gate"])
        if sid in promoted:
            tags["dsl.promoted"] = "true" if promoted[sid]["promoted"] else "false"
            tags["dsl.promotion"] = promoted[sid]["reason"]
        if data.get("error"):
            tags["dsl.error"] = str(data["error"])[:4000]
        ran_ok = data.get("status") in Status.finished() and entry.get("fingerprint") == data.get("fingerprint")
        steps.append({
            "id": sid, "status": data.get("status"), "start": started.get(sid, e["time"]), "end": e["time"],
            "params": params_of(entry.get("config"), secrets) if ran_ok else {},
            "metrics": metrics, "figures": figures,
            "tags": {k: _redact(v, secrets)[:8000] for k, v in tags.items()},
            "artifacts": _artifacts(state.artifact_path(sid)) if ran_ok and state is not None else [],
        })
    run = {"name": run_id, "start": first["time"] if first else time.time(),
           "end": last["time"] if last else time.time(), "ok": bool(last and last["data"].get("ok")),
           "tags": {"dsl.run_id": run_id, "dsl.domain": str(getattr(spec, "name", "")),
                    "dsl.recipe": str((first or {}).get("data", {}).get("recipe") or ""),
                    "dsl.workdir": str(Path(workdir).resolve()), "dsl.steps": ",".join(s["id"] for s in steps)}}
    return {"run": run, "steps": steps}


# ------------------------------------------------------------------------------------------ logging it


@contextlib.contextmanager
def quiet_mlflow(remote: bool) -> Iterator[None]:
    """MLflow's own chatter off stdout (it belongs to ``dsl apply --json``), few retries against a server."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    if remote:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reachable(uri: str, timeout: float = CONNECT_TIMEOUT, *, fresh: bool = False) -> Optional[str]:
    """None when an http(s) tracking server answers (any HTTP status), else why not. One attempt (``GET /health``),
    bounded as a whole by ``timeout`` seconds, the name lookup included; the answer is kept for the process
    (:data:`REACH_TTL` seconds), so a down server costs an apply, or the page, one short wait, not one per call.
    ``fresh``: ask again (a test waiting for a server to start)."""
    if not uri.lower().startswith(("http://", "https://")):
        return None
    key = uri.rstrip("/")
    if not fresh:
        with _REACH_LOCK:
            hit = _REACHED.get(key)
        if hit is not None and time.monotonic() - hit[0] < REACH_TTL:
            return hit[1]
    why = _probe(key, timeout)
    with _REACH_LOCK:
        _REACHED[key] = (time.monotonic(), why)
    return why


def _probe(uri: str, timeout: float) -> Optional[str]:
    """One ``GET /health`` in a daemon thread, waited for ``timeout`` seconds at most (a name lookup that hangs, a
    server that accepts and never answers: it is left behind and ends on its own socket timeout)."""
    import urllib.error
    import urllib.request

    answer: list[Optional[str]] = []

    def attempt() -> None:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=timeout):  # noqa: S310 - the recipe's URI
                answer.append(None)
        except urllib.error.HTTPError:
            answer.append(None)  # it answered
        except (urllib.error.URLError, OSError, ValueError) as e:  # its own socket timing out is the same silence
            reason = getattr(e, "reason", e)
            answer.append(f"no answer in {timeout:g} s" if isinstance(reason, TimeoutError) else str(reason))

    thread = threading.Thread(target=attempt, name="dsl-tracking-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"no answer in {timeout:g} s"


def _log(uri: str, local: Optional[Path], experiment: str, payload: dict[str, Any],
         extra_tags: dict[str, str]) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = (local / "artifacts").as_uri() if local is not None else None
        exp_id = client.create_experiment(experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    ms = lambda t: int(float(t) * 1000)  # noqa: E731
    run = payload["run"]
    parent = client.create_run(exp_id, start_time=ms(run["start"]), run_name=run["name"],
                               tags={**run["tags"], **extra_tags})
    for step in payload["steps"]:
        child = client.create_run(exp_id, start_time=ms(step["start"]), run_name=step["id"],
                                  tags={**step["tags"], "mlflow.parentRunId": parent.info.run_id})
        cid, now = child.info.run_id, ms(step["end"])
        metrics = [Metric(k, v, now, n) for k, v, n in step["metrics"]] + \
                  [Metric(k, v, now, 0) for k, v in step["figures"].items()]
        params = [Param(k, v) for k, v in step["params"].items()]
        for i in range(0, max(len(metrics), 1), 1000):
            client.log_batch(cid, metrics=metrics[i:i + 1000])
        for i in range(0, len(params), 100):
            client.log_batch(cid, params=params[i:i + 100])
        for path, sub in step["artifacts"]:
            client.log_artifact(cid, str(path), artifact_path=sub)
        client.set_terminated(cid, "FINISHED" if step["status"] == Status.DONE.value else "FAILED", end_time=now)
    client.log_batch(parent.info.run_id, tags=[RunTag("dsl.ok", str(run["ok"]).lower())])
    client.set_terminated(parent.info.run_id, "FINISHED" if run["ok"] else "FAILED", end_time=ms(run["end"]))
    return str(parent.info.run_id)


def record_run(spec: Any, workdir: "str | Path", run_id: str, *, state: Any = None,
               warn: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """Log the apply ``run_id`` (its event log, its steps' state entries and artifacts) to MLflow and return the
    MLflow run id; None when tracking is off, nothing ran, or it could not be recorded anywhere (a warning says
    why). Never raises: tracking never fails an apply."""
    warn = warn or (lambda m: None)
    uri = target_uri(spec, workdir)
    if uri is None:
        return None
    try:
        payload = collect(spec, workdir, run_id, state)
    except (OSError, EV.UnknownRun, ValueError) as e:
        warn(f"tracking: cannot read the run's event log ({e}); this apply is not tracked")
        return None
    if not payload["steps"]:
        return None  # a no-op apply logs nothing
    try:
        import mlflow  # noqa: F401 - only to say plainly when it is missing
    except ImportError:
        warn("tracking: mlflow is not installed (pip install mlflow); this apply is not tracked")
        return None
    local = local_uri(workdir)
    experiment = str(getattr(spec, "name", "dsl"))
    if uri != local:
        why = reachable(uri)
        if why is None:
            try:
                with quiet_mlflow(remote=True):
                    return _log(uri, None, experiment, payload, {})
            except Exception as e:  # noqa: BLE001 - any failure of the server is a warning, never a failed apply
                why = f"{type(e).__name__}: {str(e)[:300]}"
        warn(f"tracking: {shown_uri(uri)} did not take the run ({_redact(why, [])}); it is recorded in the "
             f"workdir's store instead ({local_store(workdir)})")
    try:
        local_store(workdir).mkdir(parents=True, exist_ok=True)
        with quiet_mlflow(remote=False):
            return _log(local, local_store(workdir), experiment, payload,
                        {"dsl.meant_for": shown_uri(uri)} if uri != local else {})
    except Exception as e:  # noqa: BLE001 - tracking never fails an apply
        warn(f"tracking: the run could not be recorded in {local_store(workdir)} ({type(e).__name__}: {e})")
        return None

