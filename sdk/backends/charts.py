"""Training charts: PNG line charts of (optimizer step, value) series (``loss.png``, ``margins.png``, ``rewards.png``).

Importing matplotlib and loading its fonts costs about 0.6 s, as much as the steps of a small training run. So a
training job that starts in a fresh process (``dsl apply``, a launched rank 0) first starts a *chart process*
(:func:`start`): while the job spends seconds importing torch, transformers and TRL on one core, the chart process
imports matplotlib and draws a warm-up figure on another, then waits. The job sends it each chart as a JSON line
(:func:`plot`) and :func:`finish` waits for the drawings before the step's artifact is hashed. Whatever the chart
process did not draw (it failed, or could not start) is drawn in this process, so an artifact never lacks a chart.
Where torch or matplotlib is already imported here (a test, a notebook, a second step), there is no import to hide
and charts are drawn in this process.

The chart process runs this file with ``python -I`` (isolated: neither the working folder nor this folder is on its
path), imports nothing of this project, and writes each PNG through a temporary file, so a chart is whole or absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

_SERVER: Optional[subprocess.Popen] = None
_SENT: list[dict[str, Any]] = []


def write_loss_curve(out_dir: Path, history: list[dict[str, float]], title: str,
                     eval_history: Optional[list[dict[str, float]]] = None) -> None:
    """``loss.json`` and ``loss.png``: the training loss by step, and the validation loss where there is one."""
    (out_dir / "loss.json").write_text(json.dumps(history, indent=1))
    lines = {"train loss": [(h["step"], h["loss"]) for h in history]}
    if eval_history:
        lines["eval loss"] = [(h["step"], h["loss"]) for h in eval_history]
    plot(out_dir / "loss.png", lines, title, "loss")


def write_curve(out_dir: Path, name: str, rows: list[dict[str, Any]], title: str, ylabel: str) -> None:
    """``NAME.png``: one line per numeric key of ``rows`` (``{"step", key: value or None, ...}``, e.g. the reward
    margin and the chosen and rejected rewards of preference tuning, or each reward of reward tuning)."""
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if k != "step" and isinstance(v, (int, float))))
    plot(out_dir / f"{name}.png", {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
                                   for k in keys}, title, ylabel)


def start() -> None:
    """Start the chart process, where it can hide matplotlib's import: called by a training job's process that
    draws the charts (rank 0), before it imports torch."""
    global _SERVER
    if _SERVER is not None or "torch" in sys.modules or "matplotlib" in sys.modules:
        return
    _SERVER = spawn()


def spawn() -> Optional[subprocess.Popen]:
    """A chart process reading chart specs from its stdin, or None where one cannot start."""
    try:
        return subprocess.Popen([sys.executable, "-I", str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None


def plot(path: Path, lines: dict[str, list[tuple[float, float]]], title: str, ylabel: str) -> None:
    """A line chart of (optimizer step, value) series at ``path``; nothing when every series is empty. Sent to the
    chart process where one runs (drawn by :func:`finish` at the latest), else drawn now."""
    lines = {k: [list(p) for p in v] for k, v in lines.items() if v}
    if not lines:
        return
    spec = {"path": str(path), "lines": lines, "title": title, "ylabel": ylabel}
    if _SERVER is None:
        draw(spec)
        return
    _SENT.append(spec)
    try:
        assert _SERVER.stdin is not None
        _SERVER.stdin.write(json.dumps(spec) + "\n")
        _SERVER.stdin.flush()
    except OSError:  # the chart process is gone: finish() draws what it was sent here
        pass


def finish(timeout: float = 300.0) -> None:
    """Wait until the chart process has drawn every chart sent to it, and draw here any it did not."""
    global _SERVER
    server, sent = _SERVER, list(_SENT)
    _SERVER = None
    _SENT.clear()
    if server is None:
        return
    if not sent:  # the job failed, or drew nothing: no reason to wait for matplotlib's import
        server.kill()
        server.wait()
        return
    try:
        assert server.stdin is not None
        server.stdin.close()
    except OSError:
        pass
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if server.returncode != 0:
        for spec in sent:
            draw(spec)


def figure(spec: dict[str, Any]) -> Any:
    """The matplotlib figure (Agg canvas) of one chart spec (``lines``, ``title``, ``ylabel``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in spec["lines"].items():
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-" if len(points) < 3 else "-", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(spec["ylabel"])
    ax.set_title(spec["title"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def draw(spec: dict[str, Any]) -> None:
    """Draw one chart spec at its ``path``, written through a temporary file and renamed into place."""
    fig = figure(spec)
    path = Path(spec["path"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def serve() -> None:
    """The chart process: import matplotlib, draw a warm-up chart in memory (fonts, text layout), then draw each
    spec read from stdin until it closes. Exits 1 on the first chart it cannot draw."""
    import io

    figure({"lines": {"warm-up": [[0, 1], [1, 0]]}, "title": "warm-up", "ylabel": "loss"}).savefig(io.BytesIO(),
                                                                                                    format="png")
    for line in sys.stdin:
        if line.strip():
            draw(json.loads(line))
    os._exit(0)  # every chart is renamed into place; finalising matplotlib's modules would only delay finish()


if __name__ == "__main__":
    serve()
