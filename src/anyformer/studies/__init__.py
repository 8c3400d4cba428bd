"""Multi-step experiments built from the jobs (compare's per-model training under one budget,
compress's methods): `pipeline` (one run config: train -> compress steps -> eval) and
`train_large_then_compress` (several sizes under one budget, each compressed to one size).
Every run they make is an ordinary run directory, and a rerun continues where one stopped.

    import anyformer as af
    af.pipeline("configs/digits-compress.yaml", "runs/digits-compress")
    af.study("train-large-then-compress", task="digits", sizes="32x1,64x2", budget_s=30, out="runs/tltc")
    af.continual("configs/continual/modular-related.yaml", "runs/continual")  # selective initialisation
"""
from __future__ import annotations

from typing import Any, Callable

from anyformer.errors import unknown
from anyformer.studies.continual import continual
from anyformer.studies.pipeline import pipeline
from anyformer.studies.train_large_then_compress import train_large_then_compress

# study name (as `anyformer study NAME` takes it) -> the function running it
STUDIES: dict[str, Callable[..., dict[str, Any]]] = {"train-large-then-compress": train_large_then_compress}


def study(name: str, **options: Any) -> dict[str, Any]:
    """Run the study `name` (see STUDIES) with its options; its results."""
    if name not in STUDIES:
        raise unknown("study", name, STUDIES)
    return STUDIES[name](**options)


__all__ = ["STUDIES", "continual", "pipeline", "study", "train_large_then_compress"]
