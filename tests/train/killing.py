"""A run killed in this process right after its first checkpoint is on disk, for the tests of
exact resume that need no second process."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from anyformer.train.loop import Trainer


class Killed(Exception):
    """Raised where a real kill would have stopped the run."""


@contextlib.contextmanager
def killed_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block, the first checkpoint a Trainer writes is its last: the block's run
    must raise Killed, which is caught here; the Trainer is whole again afterwards."""
    save = Trainer._checkpoint

    def die_after_first(self, elapsed):
        save(self, elapsed)
        raise Killed

    monkeypatch.setattr(Trainer, "_checkpoint", die_after_first)
    try:
        with pytest.raises(Killed):
            yield
    finally:
        monkeypatch.setattr(Trainer, "_checkpoint", save)
