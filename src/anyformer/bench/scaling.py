"""Scaling with sequence length: a sweep that keeps what it measured before a failure, the
crossover length where an efficient mixer overtakes softmax attention, log-log plots and
JSON output."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from anyformer.bench.profiler import profile
from anyformer.rundir import atomic_write_json
from anyformer.runtime import free_memory, is_out_of_memory, resolve_device

Builder = Callable[[int], "tuple[nn.Module, Any] | tuple[nn.Module, Any, torch.Tensor | None]"]


def sweep(build: Builder, lengths: Sequence[int], *, device: str | torch.device = "cpu",
          repeats: int = 3, warmup: int = 1, train_step: bool = True, compile: bool = False,
          max_step_s: float | None = None, on_result: Callable[[dict[str, Any]], None] | None = None,
          **profile_kwargs: Any) -> dict[str, Any]:
    """Profile `build(L) -> (model, input[, mask])` at each length, shortest first.

    Stops at the first failure (out of memory or any error), recording it with what was
    measured before ('failure' holds the exception object under 'exception': pop it before
    saving), and after a length whose median step exceeds `max_step_s` (longer ones
    would only take longer). Returns {'rows': [profile + 'length'], 'failure': {...} | None,
    'stopped': reason | None, 'largest_ok': L | None}. `profile_kwargs` go to `profile`
    (e.g. precision='fp32'; the default 'auto' resolves as the trainer does)."""
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"rows": rows, "failure": None, "stopped": None, "largest_ok": None}
    for L in sorted(lengths):
        try:
            built = build(L)
            model, x = built[0], built[1]
            mask = built[2] if len(built) > 2 else None
            row = profile(model, x, mask=mask, device=dev, repeats=repeats, warmup=warmup,
                          train_step=train_step, compile=compile, **profile_kwargs)
        except Exception as err:  # noqa: BLE001 - every failure is recorded, then the sweep stops
            oom = is_out_of_memory(err)
            free_memory(dev)
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            out["failure"] = {"length": L, "kind": "out_of_memory" if oom else type(err).__name__,
                              "message": message, "exception": err}
            out["stopped"] = f"failed at length {L}: {message}"
            break
        row["length"] = L
        rows.append(row)
        out["largest_ok"] = L
        if on_result is not None:
            on_result(row)
        step = row.get("forward_backward", row.get("forward", {})).get("median_ms", 0.0) / 1e3
        if max_step_s is not None and step > max_step_s and L != max(lengths):
            out["stopped"] = f"one step took {step:.1f} s at length {L} (limit {max_step_s} s); longer lengths skipped"
            break
    return out


def step_ms(row: Mapping[str, Any], metric: str = "forward_backward") -> float | None:
    return row.get(metric, {}).get("median_ms")


def crossover(times: Mapping[str, Mapping[int, float | None]], baseline: str = "softmax") -> dict[str, int | None]:
    """For each model other than `baseline`: the smallest length from which its time stays
    below the baseline's at every longer measured length (a baseline that failed, None,
    counts as slower). None when it never gets there. `times` is {model: {length: ms}}."""
    base = times[baseline]
    result: dict[str, int | None] = {}
    for name, series in times.items():
        if name == baseline:
            continue
        common = sorted(L for L in series if L in base and series[L] is not None)
        found: int | None = None
        for L in reversed(common):
            b = base[L]
            if b is None or series[L] < b:
                found = L
            else:
                break
        result[name] = found
    return result


def sweep_times(sweeps: Mapping[str, Mapping[str, Any]], metric: str = "forward_backward") -> dict[str, dict[int, float | None]]:
    """{model: {length: median ms}} from sweep() results; a failed length maps to None."""
    out: dict[str, dict[int, float | None]] = {}
    for name, sw in sweeps.items():
        series = {row["length"]: step_ms(row, metric) for row in sw["rows"]}
        if sw.get("failure"):
            series[sw["failure"]["length"]] = None
        out[name] = series
    return out


def plot_sweeps(sweeps: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Time per step and peak memory vs length, log-log, one line per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12.5, 4.6))
    # Many models: 20 distinct colours and a marker cycle, so no two lines look alike.
    colours = plt.get_cmap("tab20").colors
    markers = "os^vDP*Xhp"
    for i, (name, sw) in enumerate(sweeps.items()):
        rows = sw["rows"]
        if not rows:
            continue
        style = dict(color=colours[i % len(colours)], marker=markers[i % len(markers)], ms=4, label=name)
        phase = "forward_backward" if "forward_backward" in rows[0] else "forward"
        Ls = [r["length"] for r in rows]
        ax_t.plot(Ls, [r[phase]["median_ms"] for r in rows], **style)
        mem_key = "train_step_peak_bytes" if phase == "forward_backward" else "forward_peak_bytes"
        mem = [r.get("memory", {}).get(mem_key) for r in rows]
        if all(m is not None and m > 0 for m in mem):
            ax_m.plot(Ls, [m / 2**20 for m in mem], **style)
    for ax, label in ((ax_t, "time per step (ms, median)"), (ax_m, "peak memory of a step (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_t.get_legend_handles_labels()
    if handles:  # one legend for both panels, outside them, so no line is hidden
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.86 if handles else 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_json(obj: Any, path: str | Path) -> Path:
    """A benchmark or bench result as JSON, written atomically (`rundir.atomic_write_json`)."""
    return atomic_write_json(path, obj)
