"""Post-training quantization of a run's linear layers with torchao's `quantize_` ("Quantization
and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", Jacob et
al. 2018): int8 weight-only, int8 dynamic activation + int8 weight, int4 weight-only (CUDA),
chosen per layer by a policy (anyformer.nn.quantization).

The written run keeps the float weights and holds the policy in its config.yaml (top-level
`quantization`); `catalog.load_run` applies it at load, so the job's reload measures the
quantized model, and so does every command that loads the run. The weights file therefore
stays float on disk; the notes report what the quantized weights take in memory (int data +
scales + zero points) beside the float bytes, and the latency of the quantized and the float
model on the judged batch, eager and torch.compile'd (torchao's int8 kernels pay mostly
once compiled: eager, the dynamic int8 path quantizes activations op by op)."""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from anyformer.bench.profiler import time_call
from anyformer.compress.data import Judged, run_batch
from anyformer.errors import ConfigError
from anyformer.nn.quantization import (SCHEMES, apply_quantization, check_policy, linear_layers, needs_cuda, plan,
                                       storage_bytes)
from anyformer.runtime import synchronize

DEFAULT = "int8-dynamic"
REPEATS = 10


def read_policy(policy: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """A policy from a dict, a scheme name (every linear layer), a YAML file, or inline
    YAML (`{default: int8-dynamic, layers: {'head.*': fp32}}`); None: int8-dynamic."""
    if policy is None:
        return check_policy({"default": DEFAULT})
    if isinstance(policy, dict):
        return check_policy(policy)
    text = str(policy)
    if text in SCHEMES:
        return check_policy({"default": text})
    path = Path(text).expanduser()
    if path.is_file():
        source = path.read_text()
    elif text.lstrip().startswith("{"):
        source = text
    else:
        what = "does not exist" if path.suffix in (".yaml", ".yml", ".json") else "is neither a scheme nor a policy file"
        raise ConfigError(f"--policy {text!r} {what}; give a scheme ({', '.join(SCHEMES)}) or a YAML file "
                          "{default: SCHEME, layers: {PATTERN: SCHEME}}")
    try:
        loaded = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise ConfigError(f"--policy {text!r}: not valid YAML ({str(e).splitlines()[0]})") from None
    return check_policy(loaded)


def _latency(model: nn.Module, data: Judged, device: torch.device) -> float:
    """Median ms of the judged batch."""
    return time_call(lambda: run_batch(model, data.example, device), device, warmup=2, repeats=REPEATS)["median_ms"]


def _compiled(model: nn.Module, data: Judged, device: torch.device) -> dict[str, float]:
    """{latency_ms, compile_s} of a torch.compile'd model; compile_s is the first call."""
    runner = torch.compile(model)
    synchronize(device)
    t0 = time.perf_counter()
    run_batch(runner, data.example, device)
    synchronize(device)
    compile_s = time.perf_counter() - t0
    return {"latency_ms": _latency(runner, data, device), "compile_s": round(compile_s, 3)}


def timings(float_model: nn.Module, quantized: nn.Module, data: Judged, device: torch.device,
            compiled: bool = True) -> dict[str, Any]:
    """Eager (and compiled) latency of both models, the compile times, and quantized-over-float
    speedups (> 1: the quantized model is faster)."""
    out: dict[str, Any] = {"eager_ms": {"float": _latency(float_model, data, device), "quantized": _latency(quantized, data, device)}}
    out["speedup_eager"] = out["eager_ms"]["float"] / out["eager_ms"]["quantized"]
    if compiled:
        try:
            runs = {"float": _compiled(float_model, data, device), "quantized": _compiled(quantized, data, device)}
        except Exception as e:  # noqa: BLE001  (a compiler that fails here, no C++ toolchain say, must not lose the run)
            out["compile_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        else:
            out["compiled_ms"] = {k: r["latency_ms"] for k, r in runs.items()}
            out["compile_s"] = {k: r["compile_s"] for k, r in runs.items()}
            out["speedup_compiled"] = out["compiled_ms"]["float"] / out["compiled_ms"]["quantized"]
    return out


def weight_bytes(float_model: nn.Module, quantized: nn.Module, layers: dict[str, str]) -> dict[str, Any]:
    """Bytes in memory of the quantized layers' weights (int data + scales + zero points)
    against the same weights in float, and of the whole model (every parameter and buffer,
    each tensor once) quantized and float."""
    names = [n for n, s in layers.items() if s != "fp32"]
    before, after = linear_layers(float_model), linear_layers(quantized)
    q = sum(storage_bytes(after[n].weight) for n in names)
    f = sum(storage_bytes(before[n].weight) for n in names)

    def total(model: nn.Module) -> int:
        tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
        return sum(storage_bytes(t) for t in tensors.values())

    return {"quantized_weights": q, "float_weights": f, "weights_ratio": q / f if f else None,
            "model_quantized": total(quantized), "model_float": total(float_model)}


def apply(model: nn.Module, config: dict[str, Any], data: Judged, device: torch.device,
          policy: str | dict[str, Any] | None = None, compiled: bool = True) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(the float model unchanged, its model config unchanged, notes: the policy under
    'quantization', which the job writes to the run's config, each layer's scheme, bytes in
    memory and latencies). `compiled=False` skips the torch.compile timings (tens of seconds)."""
    policy = read_policy(policy)
    layers = plan(model, policy)  # a bad pattern fails here, before any copy is made
    if needs_cuda(layers.values()) and device.type != "cuda":
        raise ConfigError(f"--policy: int4-weight runs on CUDA only (torchao 0.18 has no CPU int4 kernel) and this "
                          f"compression runs on {device}; use --device cuda, or int8-weight / int8-dynamic")
    model.eval()
    quantized = copy.deepcopy(model)
    apply_quantization(quantized, policy)
    quantized.to(device).eval()
    notes = {"quantization": policy, "layers": layers, "bytes": weight_bytes(model, quantized, layers),
             **timings(model, quantized, data, device, compiled)}
    del quantized
    return model, config, notes
