"""The typer app every command registers on, its consoles and the --debug switch."""
from __future__ import annotations

import sys

import typer
from rich.console import Console


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build, train, measure and compare Transformer variants.")
# Piped output (CI logs, files) gets a wide table rather than rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors")) -> None:
    STATE["debug"] = debug


def _yes_no(v: object) -> str:
    return "-" if v is None else ("yes" if v else "no")


