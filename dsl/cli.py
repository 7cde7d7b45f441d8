"""The ``dsl`` command. Thin: parse arguments, call the SDK, print diagnostics.

Exit codes: 0 success; 1 invalid spec or bad input; 2 usage error; 3 a step failed; 4 a gate failed.
No traceback is printed unless ``--debug`` is given.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import click

EXIT_INVALID, EXIT_USAGE, EXIT_STEP_FAILED, EXIT_GATE_FAILED = 1, 2, 3, 4

# Commands that live in their own modules (dsl/commands/<module>.py, attribute `command`), loaded on use.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "fmt": ("dsl.commands.fmt", "Print recipes in canonical form (comments kept)."),
    "ask": ("dsl.commands.ask", "Ask a RAG system a question; prints the answer and its sources."),
    "route": ("dsl.commands.route", "Route a query: prints the target and its probability."),
    "serve": ("dsl.commands.serve", "Start the OpenAI-compatible gateway for an applied recipe."),
    "report": ("dsl.commands.report", "Show the evaluation report of an applied recipe."),
    "status": ("dsl.commands.status", "Show each step (state, promotion, drift); STEP or --lineage: artifact and lineage."),
    "verify": ("dsl.commands.verify", "Check applied artifacts against the hashes their manifests recorded."),
    "eval-set": ("dsl.commands.eval_set", "Check an eval set, or export it (e.g. to lm-evaluation-harness)."),
    "prefs": ("dsl.commands.prefs", "Check a preference file (pairs, or labelled answers) before align uses it."),
    "doctor": ("dsl.commands.doctor", "Check the machine for every step: packages, models, CUDA, servers, env vars."),
    "ui": ("dsl.commands.ui", "Open the recipe's pages in a browser: plan, runs (live), reports and a playground."),
    "review": ("dsl.commands.review", "Review a synth step's rows offline: export them to a file, import the decisions."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        present = [n for n, (mod, _) in LAZY_COMMANDS.items() if importlib.util.find_spec(mod) is not None]
        return sorted(set(super().list_commands(ctx)) | set(present))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name in LAZY_COMMANDS:
            module_name, help_text = LAZY_COMMANDS[name]
            if importlib.util.find_spec(module_name) is None:
                return None
            if ctx.resilient_parsing or ("--help" in sys.argv and sys.argv[-1] == "--help" and len(sys.argv) == 2):
                return click.Command(name, help=help_text, short_help=help_text)
            return importlib.import_module(module_name).command  # type: ignore[no-any-return]
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=80)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _shown(text: str) -> str:
    """An error or a diagnostic as the terminal gets it: a file name or a quoted value may carry escapes."""
    from dsl.redact import shown

    return shown(text)


def _fail(error: Exception, code: int = EXIT_INVALID) -> None:
    from sdk.errors import DslError

    text = error.format() if isinstance(error, DslError) else str(error)
    click.echo(_shown(text), err=True)
    raise SystemExit(code)


def _load(path: str) -> Any:
    from dsl.parser import load_recipe

    return load_recipe(path)


def _workdir(recipe: Any, workdir: Optional[str]) -> Path:
    from sdk.workdirs import workdir_for

    return workdir_for(recipe.spec, workdir, say=lambda m: click.echo(m, err=True))


def _warn(recipe: Any) -> Any:
    """An ``on_warning`` callback printing located warnings (environment checks under --skip-checks)."""
    from dataclasses import replace as _replace

    def warn(problems: list[Any]) -> None:
        for d in recipe.diagnostics(problems):
            d = _replace(d, severity="warning")
            click.echo(_shown(d.format(recipe.sources.get(d.span.path) if d.span else None)), err=True)

    return warn


def _plan(recipe: Any, workdir: Path, backend: Optional[str], replace: tuple[str, ...],
          target: tuple[str, ...], skip_checks: bool = False) -> Any:
    from sdk.errors import SpecError
    from sdk.planner import PlanProblems, plan
    from sdk.state import StateStore

    try:
        return plan(recipe.spec, StateStore(workdir).load(), backend=backend, replace=replace, target=target or None,
                    skip_checks=skip_checks, on_warning=_warn(recipe))
    except PlanProblems as e:
        raise SpecError(str(e), recipe.diagnostics(e.problems), recipe.sources) from None


def _diag_json(d: Any) -> dict[str, Any]:
    span = d.span
    return {"path": span.path if span else None, "line": span.line if span else None,
            "col": span.col if span else None, "message": d.message, "hint": d.hint, "severity": d.severity}


# ----------------------------------------------------------------------------------------------- commands


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option("0.1.0", prog_name="dsl")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Build, evaluate, route and serve domain-specific LLMs from one declarative recipe."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand != "apply" and not sys.stderr.isatty():  # apply decides by its --progress option
        _quiet_progress_bars()  # no library bar fragments in logs (ask, serve, route, report load models too)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check recipes: syntax, types, references, files. Exit 1 when any is invalid."""
    from sdk.errors import DslError

    results, failed = [], False
    for f in files:
        try:
            recipe = _load(f)
            results.append({"file": f, "valid": True, "domain": recipe.spec.name, "errors": []})
            if not as_json:
                n = len(recipe.spec.blocks())
                click.echo(f"{f}: valid ({recipe.spec.name}, {n} blocks)")
        except DslError as e:
            failed = True
            results.append({"file": f, "valid": False, "errors": [_diag_json(d) for d in e.diagnostics]})
            if not as_json:
                click.echo(_shown(e.format()), err=True)
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
    if failed:
        raise SystemExit(EXIT_INVALID)


def _common_plan_options(fn: Any) -> Any:
    fn = click.option("--workdir", type=click.Path(file_okay=False), help="State and artifacts (default: .dsl/<domain>/ beside the recipe).")(fn)
    fn = click.option("--backend", help="Run every step with this backend (e.g. test).")(fn)
    fn = click.option("--target", multiple=True, help="Only this step and its dependencies (repeatable).")(fn)
    fn = click.option("--replace", multiple=True, help="Force this step to re-run (repeatable).")(fn)
    fn = click.option("--skip-checks", is_flag=True,
                      help="Report failing environment checks (packages, models, CUDA, servers, env vars) as warnings.")(fn)
    return fn


@cli.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@_common_plan_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan, for dsl apply --plan.")
def plan_cmd(file: str, workdir: Optional[str], backend: Optional[str], target: tuple[str, ...],
             replace: tuple[str, ...], skip_checks: bool, as_json: bool, out: Optional[str]) -> None:
    """Show what apply would run, and why (checking the machine for the steps that will run)."""
    recipe = _load(file)
    the_plan = _plan(recipe, _workdir(recipe, workdir), backend, replace, target, skip_checks)
    if out:
        from sdk.state import write_atomic

        write_atomic(Path(out), the_plan.dumps())
    if as_json:
        click.echo(json.dumps(the_plan.to_json(), indent=2))
    else:
        _print_plan(the_plan)


def _print_plan(the_plan: Any) -> None:
    from dsl.redact import plain as escape  # reasons quote file names and values: no markup, no escapes

    console = _out_console()
    styles = {"+": "green", "~": "yellow", "=": "dim", "-": "red"}
    for line in the_plan.render().splitlines():
        stripped = line.strip()
        style = styles.get(stripped[:1]) if line.startswith("  ") and not line.startswith("    ") else None
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))


def _summary(result: Any, recipe: Any, wd: Path, workdir: Optional[str] = None) -> None:
    from dsl.summary import print_summary

    print_summary(result, recipe, wd, workdir)


def _out_console() -> Any:
    from dsl.commands._common import out_console

    return out_console()


@cli.command("apply")
@click.argument("file", type=click.Path(dir_okay=False))
@_common_plan_options
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False), help="Apply a plan saved by dsl plan --out (refused if stale).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: bars on a terminal, plain lines in a log; --no-progress: none).")
def apply_cmd(file: str, workdir: Optional[str], backend: Optional[str], target: tuple[str, ...],
              replace: tuple[str, ...], skip_checks: bool, plan_file: Optional[str], as_json: bool,
              progress: Optional[bool]) -> None:
    """Run every step that is not up to date, in dependency order."""
    from sdk.errors import SpecError
    from sdk.executor import apply
    from sdk.planner import PlanProblems
    from sdk.plans import Plan
    from sdk.progress import Progress

    if progress is False or (progress is None and not sys.stderr.isatty()):
        # no library bar fragments ("Loading weights: 0%|") in logs; plain progress lines (sdk.progress) instead
        _quiet_progress_bars()
    recipe = _load(file)
    wd = _workdir(recipe, workdir)
    console = _err_console()
    saved = Plan.loads(Path(plan_file).read_text(encoding="utf-8")) if plan_file else None
    from dsl.redact import plain as escape  # reasons and logs quote file names and data

    def on_step(step: Any, event: str) -> None:
        if as_json:
            return
        sym = step.action.symbol
        if event == "start":
            console.print(f"[bold]{sym} {step.id}[/] ({step.backend}) {escape(step.reason)}")
        elif event == "ran":
            console.print(f"  [green]done[/] {step.id}")
        elif event == "failed":
            console.print(f"  [red]failed[/] {step.id}")
        elif event == "gate_failed":
            console.print(f"  [red]gate failed[/] {step.id}")
        elif event == "skipped":
            console.print(f"[dim]- {step.id} skipped[/]")
        elif event == "up_to_date":
            console.print(f"[dim]= {step.id} up to date[/]")
        elif event == "deleted":
            console.print(f"[red]- {step.id} deleted[/]")

    try:
        result = apply(recipe.spec, workdir=wd, backend=backend, replace=replace, target=target or None,
                       progress=Progress(enabled=progress), log=lambda m: console.print(f"    {escape(m)}"),
                       on_step=on_step, saved_plan=saved, skip_checks=skip_checks, on_warning=_warn(recipe),
                       recipe=str(Path(file).resolve()))
    except PlanProblems as e:
        raise SpecError(str(e), recipe.diagnostics(e.problems), recipe.sources) from None
    outcomes = [o.__dict__ for o in result.outcomes]
    if as_json:
        click.echo(json.dumps({"domain": recipe.spec.name, "workdir": str(wd), "ok": result.ok,
                               "steps": outcomes}, indent=2, default=str))
    else:
        _summary(result, recipe, wd, workdir)
    from dsl.redact import shown

    if result.failed:
        for o in result.failed:
            click.echo(shown(f"error: {o.error}"), err=True)
        raise SystemExit(EXIT_STEP_FAILED)
    if result.gate_failures:
        for o in result.gate_failures:
            click.echo(shown(f"error: {o.error}"), err=True)
        raise SystemExit(EXIT_GATE_FAILED)


def _quiet_progress_bars() -> None:
    from dsl.commands._common import quiet_progress_bars

    quiet_progress_bars()


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editor completion)."""
    from sdk.spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def main(argv: Optional[list[str]] = None) -> None:
    from dsl.commands._common import BAR_SWITCHES

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv

    switches = {name: os.environ.get(name) for name in BAR_SWITCHES}
    try:
        _main(argv, debug)
    finally:  # the bar switches a command set (for itself and the processes it launched) end with it
        for name, value in switches.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _main(argv: list[str], debug: bool) -> None:
    from sdk.errors import DslError, LockError, SpecError

    try:
        cli.main(args=argv, prog_name="dsl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(130) from None
    except click.exceptions.Exit as e:
        raise SystemExit(e.exit_code) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code if e.exit_code != 1 else EXIT_USAGE) from None
    except (SpecError, LockError) as e:
        if debug:
            raise
        _fail(e, EXIT_INVALID)
    except DslError as e:
        if debug:
            raise
        _fail(e, EXIT_INVALID)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        if type(e).__name__ == "SecurityError":  # jinja2's sandbox refused a template: damaged data, not a bug
            click.echo(f"error: a template was refused by the sandbox ({e}); a chat template in an artifact may have "
                       "been changed: dsl verify names the damaged artifact", err=True)
            raise SystemExit(EXIT_INVALID) from None
        click.echo(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
        raise SystemExit(70) from None


def run() -> None:
    """The ``dsl`` program: :func:`main`, then leave the way a finished command should, without Python's teardown.

    Once torch, transformers and TRL are imported, the interpreter spends about two seconds at exit finalising
    thousands of modules and their C++ objects, long after the command has finished its work. So, when the command
    has returned or exited and no thread of ours still runs, the exit handlers run (logging, temporary folders,
    progress bars), the standard streams are flushed, and the process ends with ``os._exit``. Every file the command
    writes is written and closed (or renamed into place) before it returns, so nothing is lost. ``main`` itself,
    called from Python, raises ``SystemExit`` as before."""
    try:
        main()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        raise SystemExit(code)  # a thread that must finish: Python's own exit waits for it
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
