"""`anyformer study NAME`: multi-step experiments (anyformer.studies)."""
from __future__ import annotations

from typing import Optional

import typer

from anyformer.budget import parse_duration
from anyformer.cli.app import app, console, err_console
from anyformer.config import parse_assignments
from anyformer.studies import train_large_then_compress
from anyformer.studies.train_large_then_compress import study_table

study_app = typer.Typer(no_args_is_help=True, help="Multi-step experiments: train several models, compress them, compare.")
app.add_typer(study_app, name="study")


@study_app.command("train-large-then-compress")
def train_large_then_compress_cmd(
    task: str = typer.Option(..., "--task", help="task name, e.g. digits (see `anyformer list task`)"),
    sizes: str = typer.Option(..., "--sizes", help="comma-separated DIMxDEPTH[xHEADS], e.g. 32x1,64x2,128x4 (heads default dim/16)"),
    out: str = typer.Option(..., "--out", help="study folder: every trained and compressed run, study.json/.csv/.png"),
    budget: Optional[str] = typer.Option(None, "--budget", help="training time per size, seconds or 90s, 10m (the same for every size)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="optimizer steps per size (instead of a time budget)"),
    model: Optional[str] = typer.Option(None, "--model", help="the preset every size starts from (default: the task's baseline)"),
    target_params: Optional[int] = typer.Option(None, "--target-params", min=1, help="the common size every model is pruned to "
                                                "(default: 0.75 x the smallest size's parameters, or "
                                                "5% above the least size pruning can bring every size to)"),
    finetune_steps: int = typer.Option(50, "--finetune-steps", min=0, help="fine-tuning steps after pruning"),
    finetune_lr: float = typer.Option(1e-4, "--finetune-lr", help="learning rate of that fine-tuning"),
    policy: str = typer.Option("int8-dynamic", "--policy", help="quantization: int8-dynamic, int8-weight, or a policy YAML"),
    set_: list[str] = typer.Option([], "--set", help="task.*, train.* or a model field for every size, e.g. train.lr=2e-3"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue the study in --out (a rerun continues too; this insists one is there)"),
) -> None:
    """Li et al. 2020: train sizes under one budget, quantize and prune each to one size, plot quality against cost."""
    result = train_large_then_compress(task, sizes, out, budget_s=parse_duration(budget), steps=steps, preset=model,
                                       target_params=target_params, finetune_steps=finetune_steps, finetune_lr=finetune_lr,
                                       policy=policy, seed=seed, device=device, overrides=parse_assignments(set_),
                                       resume=resume, console=err_console)
    console.print(study_table(result))
    console.print(f"results: {out}/study.json, {out}/study.csv, figure {out}/study.png", highlight=False, soft_wrap=True)
