"""ONNX export of anyformer models, and the onnxruntime parity check that proves it.

`torch.onnx.export(..., dynamo=True)` traces the model with torch.export and translates the
graph with onnxscript. The batch axis is always dynamic; the sequence axis is too where the
encoder reads a variable number of steps: token ids [B, L] and per-step series [B, L, C].
Images [B, C, H, W], patched or per-variate series and tabular rows have a fixed token
count, so only their batch varies. Tabular dicts become one ONNX input per entry.

Engine layer: uses nn (through catalog) and the bottom, never train, bench or report. onnx,
onnxruntime and onnxscript are the `[onnx]` extra, imported only where they are needed."""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from anyformer.catalog import load_run
from anyformer.errors import ConfigError
from anyformer.interop.hf.convert import refuse_quantized
from anyformer.interop.onnx_errors import chain, explain, first_line

Dynamic = bool | Literal["batch"]
# ONNX input names per encoder modality: what a deployment feeds, not torch's `x`.
INPUT_NAMES = {"tokens": "ids", "images": "images", "series": "series"}
TABULAR_KEYS = ("numeric", "categorical")


def require_onnx() -> None:
    """A one-line ConfigError when an `[onnx]` extra dependency is not installed."""
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"ONNX export needs {module}, which is not installed; pip install anyformer[onnx]") from None


def has_sequence_axis(model: nn.Module) -> bool:
    """Whether the model's input length may vary: token ids, and series read one token per
    step (patched or per-variate series are tied to the length they were built for)."""
    encoder = model.encoder
    return encoder.modality == "tokens" or (encoder.modality == "series" and getattr(encoder, "mode", "") == "step")


def max_length(model: nn.Module) -> int:
    """The longest input the encoder takes (token ids or series steps)."""
    encoder = model.encoder
    return int(getattr(encoder, "max_len", None) or getattr(encoder, "input_len"))


def sample_input(model: nn.Module, batch: int = 2, length: int | None = None) -> Any:
    """A random valid input for `model`: the encoder's example at `batch` samples, cut to
    `length` steps where the sequence axis may vary (ids [B, L], series [B, L, C])."""
    example = model.encoder.example_input(batch)
    if length is not None and has_sequence_axis(model):
        # contiguous: a sliced view keeps the strides of the full length, which the tracer
        # would read as a relation between the length and its maximum.
        example = example[:, :length].contiguous()
    return example


def _flatten(example: Any, modality: str) -> tuple[list[str], list[torch.Tensor]]:
    """A raw batch -> (ONNX input names, tensors in the same order)."""
    if isinstance(example, dict):
        keys = [k for k in TABULAR_KEYS if k in example] + [k for k in example if k not in TABULAR_KEYS]
        return keys, [example[k] for k in keys]
    return [INPUT_NAMES.get(modality, "numeric" if modality == "tabular" else "input")], [example]


class _Entry(nn.Module):
    """The model behind positional tensor inputs, so a dict batch (tabular) exports as one
    named ONNX input per entry; a plain tensor passes straight through."""

    def __init__(self, model: nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.model(dict(zip(self.keys, tensors)) if self.keys else tensors[0])


def _dynamic_shapes(model: nn.Module, tensors: list[torch.Tensor], dynamic: Dynamic) -> tuple[tuple[dict[int, Any], ...]] | None:
    if not dynamic:
        return None
    # From 2, not 1: torch's decompositions (matmul, broadcasting) branch on a size being
    # 1, and a range starting at 1 turns each branch into a violated constraint. The graph
    # traced for sizes >= 2 runs at size 1 too; check_parity at batch 1 is how that is known.
    batch = torch.export.Dim("batch", min=2, max=4096)
    sequence = dynamic is True and has_sequence_axis(model)
    length = torch.export.Dim("length", min=2, max=max_length(model)) if sequence else None
    # One entry per forward parameter: `_Entry.forward(*tensors)` has one, the tuple.
    return (tuple({0: batch, **({1: length} if length is not None and t.dim() >= 2 else {})} for t in tensors),)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's warnings and progress logs: the result (a file or one
    ConfigError line) is what the caller reports."""
    # torch's loggers have levels of their own, so only the global switch quiets them all
    # (a failed trace logs its whole graph at error level).
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def export_model(model: nn.Module, example_input: Any, path: str | Path, dynamic: Dynamic = True) -> Path:
    """Write `model` (set to eval mode) as ONNX at `path`, traced on `example_input` (a
    tensor, or a tabular dict). dynamic=True: batch and, where the encoder allows it,
    sequence axes vary; "batch": only the batch; False: every shape as in the example.
    Trace on a batch >= 2 and a length below the maximum, so neither axis is specialised
    to its bounds. Raises a one-line ConfigError when the export fails."""
    require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    keys, tensors = _flatten(example_input, model.encoder.modality)
    tensors = [t.contiguous() for t in tensors]  # see sample_input: strides become guards
    entry = _Entry(model, keys if isinstance(example_input, dict) else None).eval()
    # torch.export first, on its own, as torch.onnx's first capture strategy does it
    # (non-strict, size-oblivious so a dynamic size is not split at 0/1 or at its bounds)
    # but without its fallbacks: the error (and traceback) then names the code that failed,
    # and no "suggested fix" can quietly fix an axis that was asked to vary.
    try:
        with _quiet(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
            program = torch.export.export(entry, tuple(tensors), dynamic_shapes=_dynamic_shapes(model, tensors, dynamic), strict=False)
    except Exception as err:  # the tracer raises many kinds; each becomes one line
        raise explain(err, model) from None
    try:
        with _quiet():
            torch.onnx.export(program, (), str(path), dynamo=True, input_names=keys, output_names=["output"],
                              verbose=False, report=False)
    except Exception as err:
        raise explain(err, model, program) from None
    _record_axes(path, model, dynamic)
    return path


def _record_axes(path: Path, model: nn.Module, dynamic: Dynamic) -> None:
    """Note in the file's metadata which axes vary, for whoever deploys it."""
    import onnx

    axes = "none" if not dynamic else "batch, length" if dynamic is True and has_sequence_axis(model) else "batch"
    proto = onnx.load(str(path), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.add(key="anyformer.dynamic_axes", value=axes)
    onnx.save(proto, str(path))


def dynamic_axes(path: str | Path) -> str:
    """'batch, length', 'batch' or 'none': the axes an exported file lets vary."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("anyformer.dynamic_axes", "unknown")


def run_onnx(path: str | Path, inputs: Any, modality: str) -> list[np.ndarray]:
    """onnxruntime (CPUExecutionProvider) outputs of the file at `path` on a raw batch."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's graph-optimiser notices are noise here
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    keys, tensors = _flatten(inputs, modality)
    wanted = {i.name for i in session.get_inputs()}
    feed = {k: t.detach().cpu().numpy() for k, t in zip(keys, tensors) if k in wanted}
    try:
        return session.run(None, feed)
    except Exception as err:  # onnxruntime's errors are multi-line; keep the first
        shapes = ", ".join(f"{k} {list(t.shape)}" for k, t in zip(keys, tensors))
        raise ConfigError(f"onnxruntime could not run {Path(path).name} on {shapes}: {first_line(chain(err))}") from None


def check_parity(model: nn.Module, path: str | Path, inputs: Any) -> float:
    """Max abs difference between onnxruntime's outputs of `path` and `model`'s in eval
    mode on the same raw batch `inputs` (every output tensor, flattened in order)."""
    model.eval()
    with torch.no_grad():
        expected = [t for t in torch.utils._pytree.tree_leaves(model(inputs)) if isinstance(t, torch.Tensor)]
    got = run_onnx(path, inputs, model.encoder.modality)
    if len(got) != len(expected):
        raise ConfigError(f"{Path(path).name} returns {len(got)} outputs where the model returns {len(expected)}")
    diff = 0.0
    for ref, out in zip(expected, got):
        ref = ref.detach().float().cpu().numpy()
        if ref.shape != out.shape:
            raise ConfigError(f"{Path(path).name} returns shape {list(out.shape)} where the model returns {list(ref.shape)}")
        diff = max(diff, float(np.abs(ref - out.astype(np.float32)).max(initial=0.0)))
    return diff


def export_onnx(run_dir: str | Path, out: str | Path) -> Path:
    """A trained run directory -> an ONNX file; `out` is a file name ending in .onnx or a
    directory (then `<out>/model.onnx`). Dynamic batch and sequence axes; when the model's
    sequence length cannot vary in the graph (a mixer tied to its built length), the file
    keeps the batch axis dynamic and the length fixed at the model's maximum (its
    metadata `anyformer.dynamic_axes` says which). Returns the path written."""
    require_onnx()
    model, config = load_run(run_dir)
    refuse_quantized(config, run_dir, "an ONNX graph")
    out = Path(out)
    path = out if out.suffix == ".onnx" else out / "model.onnx"
    batch = 2
    length = max(2, max_length(model) * 3 // 4) if has_sequence_axis(model) else None
    try:
        return export_model(model, sample_input(model, batch, length), path, dynamic=True)
    except ConfigError as full:
        if not has_sequence_axis(model):
            raise
        try:
            return export_model(model, sample_input(model, batch), path, dynamic="batch")
        except ConfigError:
            raise full from None
