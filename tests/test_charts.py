"""Training charts and the way ``dsl`` ends.

- A training job in a fresh process draws its charts in a chart process started before torch is imported; a chart
  that process does not draw (it died, or failed) is drawn in the job's own process, so no artifact lacks one.
- ``dsl`` (``dsl.cli.run``) skips Python's teardown but still runs exit handlers, flushes its output, keeps each
  exit code, and exits normally while a non-daemon thread still runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests._specs import write_small
from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def _script(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = "import sys\nsys.path.insert(0, %r)\n" % str(ROOT) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_fresh_job_draws_its_charts_in_the_chart_process(tmp_path: Path) -> None:
    proc = _script(f"""
        from pathlib import Path
        from sdk.backends import charts
        out = Path({str(tmp_path)!r})
        charts.start()
        server = charts._SERVER
        assert server is not None, "no chart process in a process without torch"
        charts.write_loss_curve(out, [{{"step": 1, "loss": 2.0}}, {{"step": 5, "loss": 1.0}}], "loss",
                                [{{"step": 5, "loss": 1.5}}])
        charts.write_curve(out, "margins", [{{"step": 1, "margin": 0.1, "chosen": None}},
                                            {{"step": 5, "margin": 0.4, "chosen": 0.3}}], "rewards", "reward")
        charts.write_curve(out, "empty", [{{"step": 1, "margin": None}}], "nothing", "reward")
        charts.finish()
        print("RC", server.returncode, "MPL", "matplotlib" in sys.modules)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # drawn by the chart process (exit 0), and this process never imported matplotlib
    assert proc.stdout.split() == ["RC", "0", "MPL", "False"]
    for name in ("loss.png", "margins.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG and (tmp_path / name).stat().st_size > 1000
    assert json.loads((tmp_path / "loss.json").read_text())[1] == {"step": 5, "loss": 1.0}
    assert not (tmp_path / "empty.png").exists()  # every series empty: no chart
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.json", "loss.png", "margins.png"]  # no temp file


def test_charts_the_chart_process_did_not_draw_are_drawn_here(tmp_path: Path) -> None:
    proc = _script(f"""
        from pathlib import Path
        from sdk.backends import charts
        out = Path({str(tmp_path)!r})
        charts.start()
        charts._SERVER.kill()
        charts._SERVER.wait()
        charts.write_curve(out, "rewards", [{{"step": 1, "reward": 0.1}}, {{"step": 2, "reward": 0.5}}], "r", "reward")
        charts.finish()
        print("MPL", "matplotlib" in sys.modules)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MPL", "True"]  # drawn in this process
    assert (tmp_path / "rewards.png").read_bytes()[:8] == PNG


def test_a_job_that_sent_no_chart_does_not_wait_for_the_chart_process(tmp_path: Path) -> None:
    proc = _script("""
        import signal
        from sdk.backends import charts
        charts.start()
        server = charts._SERVER
        charts.finish()  # a job that failed before its charts: the chart process is stopped, not awaited
        print("KILLED", server.returncode == -signal.SIGKILL, "LEFT", charts._SERVER)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["KILLED", "True", "LEFT", "None"]


def test_no_chart_process_where_torch_is_already_imported(tmp_path: Path) -> None:
    import torch  # noqa: F401 - a test process, a notebook or a second step: nothing left to hide

    from sdk.backends import charts

    charts.start()
    assert charts._SERVER is None
    charts.plot(tmp_path / "x.png", {"loss": [(1, 1.0), (2, 0.5)]}, "t", "loss")  # drawn at once
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG
    charts.finish()


def test_dsl_runs_exit_handlers_flushes_and_keeps_exit_codes(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    for args, code in ((["validate", str(path)], 0), (["validate", str(tmp_path / "none.dsl")], 1),
                       (["--no-such-option"], 2), (["schema"], 0)):
        proc = _script(f"""
            import atexit
            atexit.register(lambda: print("exit handler ran", file=sys.stderr))
            sys.argv = ["dsl"] + {args!r}
            from dsl.cli import run
            run()
            print("run() returned")
        """, tmp_path)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert "exit handler ran" in proc.stderr and "run() returned" not in proc.stdout
    assert json.loads(proc.stdout)["title"] == "Spec"  # a long output arrives whole through a pipe


def test_dsl_exits_normally_while_a_thread_of_its_own_runs(tmp_path: Path) -> None:
    path = write_small(tmp_path)
    proc = _script(f"""
        import threading
        def late():  # ends only once the main thread has ended: Python's own exit must wait for it
            threading.main_thread().join(timeout=60)
            print("thread finished" if not threading.main_thread().is_alive() else "timed out", flush=True)
        threading.Thread(target=late).start()
        sys.argv = ["dsl", "validate", {str(path)!r}]
        from dsl.cli import run
        run()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("thread finished")  # Python's exit waited for it
