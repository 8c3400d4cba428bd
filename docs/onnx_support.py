"""Generate docs/onnx.md: which mixers and presets export to ONNX with onnxruntime parity.

Run as `.venv/bin/python docs/onnx_support.py` (a few minutes on 2 CPUs). Every registered
mixer is built into a small model (token ids, or image patches for mixers that need a 2-D
grid) and every preset at small width; each is exported with dynamic batch and sequence
axes, then run in onnxruntime at two batch sizes and two lengths that differ from the
traced ones, so a graph specialised to its example shape fails here. An entry whose length
cannot vary is exported again with the batch axis alone and listed as such.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import AnyformerError
from anyformer.interop import onnx as ox

OUT = Path(__file__).resolve().parent / "onnx.md"
COMMAND = ".venv/bin/python docs/onnx_support.py"
THRESHOLD = 1e-4
DIM, HEADS, MAX_LEN = 32, 4, 32
# Small images keep every grid arch valid: 16 / 4 = a 4x4 grid (halved twice by multistage).
IMAGE = {"image_size": 16, "patch_size": 4}
PRESET_IMAGE = {"multistage": {"image_size": 16, "patch_size": 2}, "nest": {"image_size": 32, "patch_size": 4}}
# Token ids may be padded, which a mixer without mask support refuses: those read series.
SERIES = {"name": "series", "channels": 3}
# Encoder-decoder forecasters: a shorter window keeps the run small.
PRESET_OVERRIDES: dict[str, dict[str, Any]] = {
    "informer": {"max_len": 48, "label_len": 24, "horizon": 24},
    "fedformer": {"max_len": 48, "label_len": 24, "horizon": 24, "moving_avg": 13, "modes": 8},
}
# Encoder modalities no preset above covers, each in a 2-layer `transformer`.
ENCODERS: dict[str, dict[str, Any]] = {
    "series": {"encoder": {"name": "series", "channels": 3}, "head": {"name": "mean", "num_classes": 2}},
    "series-patch": {"encoder": {"name": "series", "channels": 3, "mode": "patch", "patch_len": 8, "stride": 4, "revin": True},
                     "head": {"name": "forecast", "horizon": 8}},
    "series-variate": {"encoder": {"name": "series", "channels": 3, "mode": "variate", "revin": True},
                       "head": {"name": "forecast", "horizon": 8}},
    "tabular": {"encoder": {"name": "tabular", "num_numeric": 3, "categories": [4, 2]}, "head": {"name": "mean", "num_classes": 2}},
    "tabular-numeric": {"encoder": {"name": "tabular", "num_numeric": 3}, "head": {"name": "mean", "num_classes": 2}},
}
KINDS = ("mixer", "preset", "encoder")
HEADER = ("name", "kind", "exports", "dynamic axes", "max abs diff", "reason")


@dataclass
class Row:
    """One line of the table; `diff` is the worst parity over the checks (None: not run)."""

    name: str
    kind: str
    exports: bool
    axes: str
    diff: float | None
    reason: str

    def cells(self) -> tuple[str, ...]:
        diff = "" if self.diff is None else f"{self.diff:.1e}"
        return (self.name, self.kind, "yes" if self.exports else "no", self.axes, diff, self.reason.replace("|", "/"))


def mixer_model(name: str) -> torch.nn.Module:
    """A 2-layer model around mixer `name` with its declared example options: token ids (a
    series of 3 channels for a mixer that cannot take a padding mask), or image patches
    without [CLS] (vit-gap) for a mixer that needs the 2-D grid."""
    cls = registry.get("mixer", name)
    mixer = {"name": name, **getattr(cls, "example_options", {})}
    if cls.needs_grid:
        return af.create("vit-gap", mixer=mixer, dim=DIM, heads=HEADS, depth=2, **IMAGE)
    encoder = {} if cls.supports_mask else {"encoder": SERIES}
    return af.create("transformer", mixer=mixer, dim=DIM, heads=HEADS, depth=2, max_len=MAX_LEN, **encoder)


def preset_model(name: str) -> torch.nn.Module:
    """Preset `name` at width 32: its own depth and parts, smaller inputs."""
    cfg = af.model_config(name)
    extra = dict(PRESET_OVERRIDES.get(name, {}))
    if cfg.encoder is not None and cfg.encoder.name in ("patches", "dhvt-patches"):
        extra.update(PRESET_IMAGE.get(name, IMAGE))
    elif "max_len" not in extra:
        extra["max_len"] = MAX_LEN
    return af.create(name, dim=DIM, heads=HEADS, **extra)


def encoder_model(name: str) -> torch.nn.Module:
    """A 2-layer softmax `transformer` reading the input family `name` (ENCODERS)."""
    return af.create("transformer", dim=DIM, heads=HEADS, depth=2, max_len=MAX_LEN, **ENCODERS[name])


def lengths(model: torch.nn.Module) -> tuple[int | None, list[int | None]]:
    """(traced length, checked lengths): the trace below the maximum, checks on both sides."""
    if not ox.has_sequence_axis(model):
        return None, [None, None]
    top = ox.max_length(model)
    return max(2, top * 3 // 4), [max(1, top // 2), top]


def try_entry(name: str, kind: str, build, workdir: Path) -> Row:
    """Build, export and check one entry; every failure becomes the row's reason."""
    torch.manual_seed(0)
    try:
        model = build(name).eval()
    except AnyformerError as err:
        return Row(name, kind, False, "", None, f"does not build at test size: {err}")
    path = workdir / f"{kind}-{name}.onnx"
    traced, checked = lengths(model)
    note = ""
    try:
        ox.export_model(model, ox.sample_input(model, 2, traced), path, dynamic=True)
    except AnyformerError as err:
        if traced is None:
            return Row(name, kind, False, "", None, str(err))
        note = f"length fixed: {err}"
        try:  # the sequence axis would not vary: batch alone, at the full length
            ox.export_model(model, ox.sample_input(model, 2), path, dynamic="batch")
        except AnyformerError as err2:
            return Row(name, kind, False, "", None, str(err2))
        checked = [None, None]
    axes = ox.dynamic_axes(path)
    worst = 0.0
    for batch, length in zip((1, 3), checked):
        try:
            worst = max(worst, ox.check_parity(model, path, ox.sample_input(model, batch, length)))
        except AnyformerError as err:
            return Row(name, kind, False, axes, None, f"{note}; {err}" if note else str(err))
    if not worst <= THRESHOLD:  # also catches NaN
        return Row(name, kind, False, axes, worst, f"onnxruntime differs from PyTorch by {worst:.1e} > {THRESHOLD:.0e}")
    return Row(name, kind, True, axes, worst, note)


def entries() -> list[tuple[str, str, Any]]:
    """(name, kind, builder) for every registered mixer, every preset and the encoder
    modalities the presets leave out."""
    return ([(n, "mixer", mixer_model) for n in af.list_components("mixer")]
            + [(n, "preset", preset_model) for n in af.list_presets()]
            + [(n, "encoder", encoder_model) for n in ENCODERS])


def rows(names: list[str] | None = None, verbose: bool = False) -> list[Row]:
    """The table's rows (all, or only the entries named), in table order."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, build in entries():
            if names is not None and name not in names and f"{kind}:{name}" not in names:
                continue
            start = time.perf_counter()
            out.append(try_entry(name, kind, build, Path(tmp)))
            if verbose:
                print(f"{kind:7s} {name:15s} {time.perf_counter() - start:5.1f}s  {out[-1].cells()[2:]}", file=sys.stderr)
    return out


def render(table: list[Row]) -> str:
    ok = [r for r in table if r.exports]
    worst = max((r.diff for r in ok if r.diff is not None), default=0.0)
    by_kind = {k: (sum(r.exports for r in table if r.kind == k), sum(r.kind == k for r in table)) for k in KINDS}
    lines = [
        "# ONNX export support",
        "",
        f"Generated by `{COMMAND}`; do not edit by hand.",
        "",
        f"Each entry is exported with `anyformer.interop.onnx.export_model` (torch.onnx, dynamo=True) at width {DIM}, "
        "then run in onnxruntime (CPUExecutionProvider) at batch 1 and 3 and, where the sequence axis is dynamic, "
        f"at two lengths other than the traced one; *exports* means every run matched PyTorch within {THRESHOLD:.0e} "
        "(max abs diff of the outputs). Mixers are built in a 2-layer `transformer` on token ids, or in `vit-gap` "
        "when they need the 2-D patch grid (then the token count is fixed by the image size and only the batch varies); "
        "a mixer that cannot take a padding mask reads a 3-channel series instead of token ids. Presets keep their "
        "parts and depth at smaller inputs; *encoder* rows cover the input families no preset uses (series per step, "
        "per patch and per variate with RevIN, tabular rows). A reason starting *length fixed* means the file was "
        "written with the batch axis alone, the length fixed at the maximum.",
        "",
        "Exporting with parity: " + "; ".join(f"{by_kind[k][0]} of {by_kind[k][1]} {k}s" for k in KINDS)
        + f"; worst parity among them: {worst:.1e}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in table]
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """docs/onnx.md's table -> {(kind, name): {column: cell}}, for the staleness test."""
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == len(HEADER) and cells[0] != "name":
            table[(cells[1], cells[0])] = dict(zip(HEADER, cells))
    return table


def main() -> None:
    table = rows(verbose=True)
    OUT.write_text(render(table))
    print(f"wrote {OUT} ({sum(r.exports for r in table)} of {len(table)} export)", file=sys.stderr)


if __name__ == "__main__":
    main()
