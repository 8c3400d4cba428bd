"""`anyformer compress`: one method on one run, the before/after table printed."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anyformer.cli.app import app, console
from anyformer.compress.job import compress
from anyformer.compress.measure import COSTS
from anyformer.errors import ConfigError

# The cost rows of the table (the latency's quartiles stay in compress.json).
ROWS = tuple(c for c in COSTS if c != "latency_iqr_ms")


@app.command("compress")
def compress_cmd(
    run_dir: Optional[str] = typer.Argument(None, help="a run directory (trained, or imported from Hugging Face); "
                                                        "distill: the teacher (or --teacher)"),
    method: str = typer.Option(..., "--method", help="drop, quantize, prune, distill, token-filter or fuse"),
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
    finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps", help="prune, token-filter, fuse: fine-tune this many steps after"),
    keep: Optional[float] = typer.Option(None, "--keep", help="token-filter: share of each sample's tokens kept, in (0, 1]"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="token-filter: keep the tokens whose predicted loss "
                                                                       "increase when masked is at least this"),
    compiled: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="quantize: also time both models under "
                                                                                "torch.compile (tens of seconds on a CPU; default on)"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="distill: the teacher run (the same as RUN)"),
    student: Optional[str] = typer.Option(None, "--student", help="distill: the student, a preset name or a YAML path"),
    steps: Optional[int] = typer.Option(None, "--steps", help="distill: the student's training steps (default: the teacher's)"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="distill: weight of the logit KL in [0, 1] (the task loss "
                                                                 "gets 1 - alpha; default 0.5)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="distill: softmax temperature of the logit KL (default 1)"),
    feature_weight: Optional[float] = typer.Option(None, "--feature-weight", help="distill: weight of the feature mimicking "
                                                                                   "(default 0.1; 0: logits only)"),
    layers: Optional[str] = typer.Option(None, "--layers", help="distill: student:teacher layer pairs to mimic, e.g. "
                                                                 "0:1,-1:-1 (default -1:-1, the last of each)"),
    perception: Optional[bool] = typer.Option(None, "--perception/--no-perception", help="distill: run a pair's projection "
                                                                                          "through the teacher's later layers (default on)"),
    alone: Optional[bool] = typer.Option(None, "--alone/--no-alone", help="distill: also train the student alone to compare "
                                                                           "(default on)"),
    other: Optional[str] = typer.Option(None, "--other", help="fuse: the run fused into RUN (same config, e.g. another seed)"),
    align: Optional[str] = typer.Option(None, "--align", help="fuse: align channels by activations (default) or weights"),
    solver: Optional[str] = typer.Option(None, "--solver", help="fuse: optimal transport by emd (exact, default) or sinkhorn (soft)"),
    reg: Optional[float] = typer.Option(None, "--reg", help="fuse: sinkhorn's regularisation on the cost scaled to max 1 (default 0.08, the reference's)"),
    other_weight: Optional[float] = typer.Option(None, "--other-weight", help="fuse: share of --other in the average, in [0, 1] (default 0.5)"),
    width: Optional[int] = typer.Option(None, "--width", help="fuse: model.dim of the fused model, at most RUN's (heterogeneous fusion)"),
    fused_heads: Optional[int] = typer.Option(None, "--fused-heads", help="fuse: attention heads per layer of the fused model"),
    ffn_hidden: Optional[int] = typer.Option(None, "--ffn-hidden", help="fuse: hidden units per ffn of the fused model"),
    baselines: Optional[bool] = typer.Option(None, "--baselines/--no-baselines", help="fuse: also score vanilla averaging and "
                                                                                      "each parent, fine-tuned alike (default on)"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Compress a run (drop redundant layers, quantize, prune heads / neurons) into a new run, measured before and after."""
    options = {name: value for name, value in (
        ("what", what), ("k", k), ("fraction", fraction), ("policy", policy), ("heads", heads),
        ("heads_fraction", heads_fraction), ("neurons_fraction", neurons_fraction),
        ("neurons_criterion", neurons_criterion), ("finetune_steps", finetune_steps), ("compiled", compiled),
        ("keep", keep), ("threshold", threshold), ("student", student), ("steps", steps), ("alpha", alpha),
        ("temperature", temperature), ("feature_weight", feature_weight), ("layers", layers), ("perception", perception),
        ("alone", alone), ("other", other), ("align", align), ("solver", solver), ("reg", reg),
        ("other_weight", other_weight), ("width", width), ("fused_heads", fused_heads), ("ffn_hidden", ffn_hidden),
        ("baselines", baselines)) if value is not None}
    if teacher is not None and run_dir is not None and Path(teacher).resolve() != Path(run_dir).resolve():
        raise ConfigError(f"RUN {run_dir} and --teacher {teacher} differ; give the run to compress once (either)")
    run_dir = run_dir if run_dir is not None else teacher
    if run_dir is None:
        raise ConfigError("give the run directory to compress: RUN (for distill also --teacher RUN)")
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
    if "distilled" in notes:  # distill: the student alone, for what the teacher bought it
        metric, alone_row = notes["metric"], notes["alone"]
        alone_text = f"{alone_row['test'][metric]:.4f}" if isinstance(alone_row, dict) else "not trained"
        console.print(f"{metric} after {notes['steps']} steps: teacher {notes['teacher']['test'][metric]:.4f}, student alone "
                      f"{alone_text}, student distilled {notes['distilled']['test'][metric]:.4f}", highlight=False, soft_wrap=True)
    if "other_weight" in notes:  # fuse: the fused model beside vanilla averaging and each parent
        metric, rows = notes["compare"]["metric"], notes["compare"]["models"]
        for stage in ("before", "after"):
            cells = [f"{name} {row[stage][metric]:.4f}" for name, row in rows.items() if isinstance(row, dict) and stage in row]
            if cells:
                when = "one-shot" if stage == "before" else f"after {notes['compare']['finetune_steps']} fine-tuning steps"
                console.print(f"{metric} {when}: " + ", ".join(cells), highlight=False, soft_wrap=True)
