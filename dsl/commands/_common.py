"""Helpers shared by the commands that read an applied recipe."""

from __future__ import annotations

from typing import Any, Optional

import click

workdir_option = click.option("--workdir", type=click.Path(file_okay=False),
                              help="State and artifacts (default: .dsl/<domain>/ beside the recipe).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def out_console() -> Any:
    """A rich console for stdout: no highlighting, lines as long as they are when not on a terminal; tables as
    wide as the terminal, or as ``COLUMNS`` says, else 160 columns."""
    import os
    import sys

    from rich.console import Console

    wide = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(highlight=False, soft_wrap=True, width=None if wide else 160)


def open_ws(file: str, workdir: Optional[str]) -> Any:
    from dsl.parser import load_recipe
    from sdk.workspace import open_workspace

    recipe = load_recipe(file)
    return open_workspace(recipe.spec, workdir, loaded=recipe)


def say_drift(ws: Any, step_id: str) -> Optional[str]:
    """Print (to stderr) one line when the recipe changed since ``step_id`` was applied; return it."""
    line = ws.drift(step_id)
    if line:
        click.echo(f"note: {line}", err=True)
    return line


def only_label(ws: Any, kind: str, given: Optional[str], option: str) -> str:
    """The label of the ``kind`` block the user means: given as KIND.LABEL or LABEL (by ``option``), or the only
    one."""
    from sdk.errors import DslError

    labels = list(getattr(ws.spec, kind))
    if given:
        label = given.split(".", 1)[1] if given.startswith(f"{kind}.") else given
        if label not in labels:
            raise DslError(f"no {kind} block {label!r} in {ws.recipe.path} (have: {', '.join(labels) or 'none'})")
        return label
    if not labels:
        raise DslError(f"{ws.recipe.path} has no {kind} block")
    if len(labels) > 1:
        raise DslError(f"{ws.recipe.path} has several {kind} blocks ({', '.join(labels)}): choose one with {option}")
    return labels[0]


# the progress-bar switches of huggingface_hub, datasets and tqdm (transformers follows huggingface_hub's)
BAR_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")


def quiet_progress_bars() -> None:
    """--no-progress: silence the progress bars of huggingface_hub, datasets, transformers and tqdm too (their own
    switches: environment variables read when they are imported, here and in launched training processes; the
    libraries already imported are told directly). Nothing is imported here."""
    import os
    import sys

    for name in BAR_SWITCHES:
        os.environ[name] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
