"""``gentool --version``: the installed version, printed before anything heavy is imported."""

from __future__ import annotations

import typer

from gentool.cli.app import app


def _print_version(value: bool) -> None:
    if value:
        from gentool import __version__

        typer.echo(f"gentool {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print gentool's version and exit."),
) -> None:
    """gentool: plugin-based denoising diffusion models (DDPM and successors)."""
