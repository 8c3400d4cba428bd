"""The `anyformer` command run in this process, as tests drive it."""
from anyformer.cli import main


def run_cli(args, capsys):
    """main(args) as the `anyformer` script runs it: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr()
    return code, out.out, out.err
