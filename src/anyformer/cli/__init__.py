"""The `anyformer` command. Errors print one line and exit 2; `--debug` shows the traceback.
Each module of this package registers its commands on the one app (cli/app.py)."""
from __future__ import annotations

import sys

import typer
from rich.markup import escape

# Each registers its commands; imported in the order `anyformer --help` lists them.
from anyformer.cli import catalogue, runs, measure, compress, study, continual, search  # noqa: F401, I001
from anyformer.cli.app import app, err_console
from anyformer.errors import AnyformerError


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning anyformer errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except AnyformerError as err:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130) from None
    except (typer.Exit, SystemExit) as done:
        code = getattr(done, "exit_code", getattr(done, "code", 0))
        raise SystemExit(code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    except Exception as err:
        if not callable(getattr(err, "format_message", None)):  # not a parser error: a bug
            if debug:
                raise
            err_console.print(f"[bold red]internal error:[/] {type(err).__name__}: {escape(str(err).splitlines()[0]) if str(err) else ''} "
                              "(a bug in anyformer: rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise SystemExit(1) from None
        # A parser error (missing value, bad number, unknown option; click's, vendored or not,
        # carries format_message) gets the same one line as every other error, not a usage block.
        ctx = getattr(err, "ctx", None)
        where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        message = " ".join(err.format_message().split()).rstrip(".")
        err_console.print(f"[bold red]error:[/] {escape(message)}{where}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
