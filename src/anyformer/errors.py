"""Error kinds. Every message is one line that says what is wrong and how to fix it;
the CLI prints it and exits 2 (a traceback only with --debug)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class AnyformerError(Exception):
    """Base of every error anyformer raises on purpose."""

    exit_code = 2


class ConfigError(AnyformerError, ValueError):
    """A config, component name, option or combination that cannot be built."""


class ShapeError(AnyformerError, ValueError):
    """An input tensor of the wrong rank, size or dtype."""


class DataError(AnyformerError, ValueError):
    """A dataset or user file that cannot be read as asked."""


class TrainingError(AnyformerError, RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, ...)."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean X?)' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def unknown(what: str, name: str, choices: Iterable[str]) -> ConfigError:
    """The standard 'unknown X' error: names the bad value, the closest and all valid ones."""
    choices = sorted(choices)
    return ConfigError(
        f"unknown {what} {name!r}{suggest(name, choices)}; valid: {', '.join(choices)}"
    )
