"""`anyformer continual SEQUENCE.yaml`: continual fine-tuning with selective initialisation
(anyformer.studies.continual)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from anyformer.cli.app import app, console, err_console
from anyformer.config import parse_assignments
from anyformer.studies.continual import continual, continual_table


@app.command("continual")
def continual_cmd(
    sequence: str = typer.Argument(..., help="sequence YAML: model, train, probe, seeds and tasks (see configs/continual/)"),
    out: Optional[str] = typer.Option(None, "--out", help="output folder (default runs/continual/<sequence file stem>); a rerun continues it"),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="repeats of the whole sequence (default: the file's seeds)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda (default: the file's train.device)"),
    set_: list[str] = typer.Option([], "--set", help="seeds=N, train.*, probe.* or a model field, e.g. train.steps=100 probe.steps=10"),
) -> None:
    """Fisch et al. 2023: train tasks in turn, each from the past checkpoint (or scratch) a short probe picks; report the transfer matrix."""
    folder = out or str(Path("runs") / "continual" / Path(sequence).stem)
    result = continual(sequence, folder, seeds=seeds, device=device, overrides=parse_assignments(set_), console=err_console)
    console.print(continual_table(result))
    console.print(f"results: {folder}/continual.json, {folder}/transfer_matrix.csv, figure {folder}/transfer_matrix.png",
                  highlight=False, soft_wrap=True)
