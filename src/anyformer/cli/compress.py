"""`anyformer compress`: one method on one run, the before/after table printed."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from anyformer.cli.app import app, console
from anyformer.compress.job import compress
from anyformer.compress.measure import COSTS

# The cost rows of the table (the latency's quartiles stay in compress.json).
ROWS = tuple(c for c in COSTS if c != "latency_iqr_ms")


@app.command("compress")
def compress_cmd(
    run_dir: str = typer.Argument(..., help="a run directory (trained, or imported from Hugging Face)"),
    method: str = typer.Option(..., "--method", help="drop, quantize or prune"),
    out: str = typer.Option(..., "--out", help="the new run directory to write (the input is never changed)"),
    data: Optional[str] = typer.Option(None, "--data", help="calibrate and judge on this: a file of sentences (one a line) "
                                                             "or a task NAME[:ARG]; default: the run's own task"),
    what: Optional[str] = typer.Option(None, "--what", help="drop: attention, mlp, block or joint"),
    k: Optional[int] = typer.Option(None, "--k", help="drop: how many to drop"),
    fraction: Optional[float] = typer.Option(None, "--fraction", help="drop: the share of them to drop, in (0, 1]"),
    policy: Optional[str] = typer.Option(None, "--policy", help="quantize: a policy YAML file, or a scheme for every "
                                                                 "linear layer (int8-dynamic, int8-weight, int4-weight)"),
    heads: Optional[int] = typer.Option(None, "--heads", help="prune: attention heads to remove per layer"),
    heads_fraction: Optional[float] = typer.Option(None, "--heads-fraction", help="prune: share of all heads to remove"),
    neurons_fraction: Optional[float] = typer.Option(None, "--neurons-fraction", help="prune: share of FFN neurons to remove"),
    neurons_criterion: Optional[str] = typer.Option(None, "--neurons-criterion", help="prune: magnitude, activation, or memorising (modular: low Fourier IPR, Doshi et al. 2023)"),
    finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps", help="prune: fine-tune this many steps after"),
    compiled: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="quantize: also time both models under "
                                                                                "torch.compile (tens of seconds on a CPU; default on)"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Compress a run (drop redundant layers, quantize, prune heads / neurons) into a new run, measured before and after."""
    options = {name: value for name, value in (
        ("what", what), ("k", k), ("fraction", fraction), ("policy", policy), ("heads", heads),
        ("heads_fraction", heads_fraction), ("neurons_fraction", neurons_fraction),
        ("neurons_criterion", neurons_criterion), ("finetune_steps", finetune_steps), ("compiled", compiled)) if value is not None}
    result = compress(run_dir, method, out, data=data, device=device, **options)
    before, after = result["before"], result["after"]
    table = Table(title=f"{method} {run_dir} -> {out}")
    for c in ("", "before", "after", "after / before"):
        table.add_column(c, justify="left" if not c else "right")
    quality = [key for key in before if key not in COSTS]
    for key in [*quality, *ROWS]:
        b, a = before.get(key), after.get(key)
        if b is None or a is None:
            continue
        shown = (lambda v: f"{v:,}") if key == "parameters" else (lambda v: f"{v:.4f}")
        table.add_row(key + (" (judged by)" if key == result["metric"] else ""), shown(b), shown(a),
                      f"{a / b:.3f}" if b else "")
    console.print(table)
    notes = result.get("notes") or {}
    if "speedup_eager" in notes:  # quantize: what eager timing hides, and what stays on disk
        line = (f"quantized weights {notes['bytes']['weights_ratio']:.3f}x the float bytes in memory (the file keeps float "
                f"weights); speed vs fp32: eager {notes['speedup_eager']:.2f}x")
        if "speedup_compiled" in notes:
            line += (f", both compiled {notes['speedup_compiled']:.2f}x (compile {notes['compile_s']['quantized']:.1f} s "
                     f"quantized, {notes['compile_s']['float']:.1f} s float)")
        console.print(line, highlight=False, soft_wrap=True)
