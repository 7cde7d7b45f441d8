"""dsl fmt FILE... [--check | --write]: print recipes in canonical form, comments kept."""

from __future__ import annotations

from pathlib import Path

import click

EXIT_INVALID = 1


@click.command("fmt")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Exit 1 if a file is not in canonical form.")
@click.option("--write", is_flag=True, help="Rewrite files in canonical form.")
def command(files: tuple[str, ...], check: bool, write: bool) -> None:
    """Print recipes in canonical form (comments kept)."""
    from dsl.printer import format_text
    from sdk.state import write_atomic

    if check and write:
        raise click.UsageError("--check and --write cannot be used together")
    unformatted = []
    for f in files:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except OSError as e:
            click.echo(f"{f}: {e.strerror}", err=True)
            raise SystemExit(EXIT_INVALID) from None
        out = format_text(text, f)
        if check:
            if out != text:
                unformatted.append(f)
                click.echo(f"{f}: not canonical (run dsl fmt --write {f})", err=True)
        elif write:
            if out != text:
                write_atomic(Path(f), out)
                click.echo(f"{f}: formatted")
        else:
            click.echo(out, nl=False)
    if unformatted:
        raise SystemExit(EXIT_INVALID)
