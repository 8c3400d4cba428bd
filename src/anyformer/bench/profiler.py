"""The cost profile of a model on one input: parameters, FLOPs, latency, throughput, peak
memory and model FLOPs utilisation (MFU) against a GEMM roof measured in the same process."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from anyformer.bench.flops import count_flops
from anyformer.bench.guard import check_fits
from anyformer.bench.memory import peak_bytes
from anyformer.errors import AnyformerError, TrainingError
from anyformer.runtime import (autocast, decide_precision, free_memory, is_out_of_memory, probe_key, resolve_device,
                               step_probe, synchronize)

_ROOFS: dict[tuple[str, str, int], float] = {}


def count_params(model: nn.Module) -> dict[str, int]:
    """{'total', 'non_embedding'}: shared/tied tensors counted once; non-embedding leaves out
    every nn.Embedding table and learned position table (modules registered as positions)."""
    embedding: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding) or getattr(module, "registry_kind", None) == "position":
            embedding.update(id(p) for p in module.parameters())
    seen: dict[int, int] = {id(p): p.numel() for p in model.parameters()}
    total = sum(seen.values())
    return {"total": total, "non_embedding": total - sum(n for i, n in seen.items() if i in embedding)}


def timing_stats(seconds: list[float]) -> dict[str, float]:
    """Median and spread (min, max, quartiles) in milliseconds."""
    ms = sorted(s * 1e3 for s in seconds)
    q1, q3 = (statistics.quantiles(ms, n=4)[0], statistics.quantiles(ms, n=4)[2]) if len(ms) > 1 else (ms[0], ms[0])
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1],
            "q1_ms": q1, "q3_ms": q3, "repeats": len(ms)}


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup: int = 1, repeats: int = 5,
              budget_s: float | None = None) -> dict[str, float]:
    """Wall time of `fn` after `warmup` calls: `repeats` timings, fewer when `budget_s` runs
    out (at least one)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return timing_stats(times)


def gemm_roof(device: str | torch.device = "cpu", size: int | None = None, repeats: int = 5,
              precision: str | None = None) -> float:
    """Measured matmul FLOP/s in `precision` ('fp32' | 'bf16'; default bf16 on CUDA, fp32 on
    CPU), n=8192 on CUDA and n=1024 on CPU; the best of `repeats`. Cached per device, dtype
    and thread count for the process."""
    dev = resolve_device(device)
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    key = (str(dev), str(dtype), torch.get_num_threads())
    if key in _ROOFS and size is None:
        return _ROOFS[key]
    n = size or (8192 if dev.type == "cuda" else 1024)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    stats = time_call(lambda: a @ b, dev, warmup=2, repeats=repeats)
    roof = 2 * n**3 / (stats["min_ms"] / 1e3)
    if size is None:
        _ROOFS[key] = roof
    return roof


def scalar_loss(out: Any) -> torch.Tensor:
    """A scalar to backpropagate from any model output (tensor, tuple or dict of tensors)."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    items = out.values() if isinstance(out, dict) else out
    parts = [scalar_loss(o) for o in items if isinstance(o, (torch.Tensor, tuple, list, dict))]
    return torch.stack(parts).sum()


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def batch_and_tokens(model: nn.Module, example_input: Any) -> tuple[int, int]:
    """Batch size and tokens per sample the layers see (the encoder's output length when the
    model has an encoder, else the input's second dim)."""
    first = example_input
    while isinstance(first, (tuple, list)):
        first = first[0]
    if isinstance(first, dict):
        first = next(iter(first.values()))
    batch = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 1
    tokens = int(first.shape[1]) if isinstance(first, torch.Tensor) and first.dim() > 1 else 1
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        seen: list[int] = []
        handle = encoder.register_forward_hook(lambda m, i, o: seen.append(int(o[0].shape[1])))
        try:
            with torch.no_grad():
                model.eval()
                call(model, example_input, None)
        finally:
            handle.remove()
        if seen:
            # Channel-independent encoders fold channels into the batch: count them as tokens.
            folded = getattr(encoder, "channel_independent", False)
            tokens = seen[0] * (getattr(encoder, "channels", 1) if folded else 1)
    return batch, tokens


def profile(model: nn.Module, example_input: Any, *, mask: torch.Tensor | None = None,
            device: str | torch.device = "cpu", repeats: int = 5, warmup: int = 1,
            train_step: bool = True, compile: bool = False, budget_s: float | None = 30.0,
            memory: bool = True, flops: bool = True, precision: str = "auto") -> dict[str, Any]:
    """Cost of `model(example_input, mask)`: params, FLOPs per sample (inference and
    forward+backward), latency (median and spread over `repeats` after `warmup`),
    throughput, peak memory of one step and MFU against `gemm_roof` on the same device.

    `precision` ('auto' | 'fp32' | 'bf16') is resolved by `anyformer.runtime` as the trainer
    resolves it, so a profile costs the model in the precision it trains in; the result
    records it ('precision', 'precision_reason') and MFU is against a GEMM roof in the same
    precision.

    `compile` times a `torch.compile`d copy (FLOPs and memory are counted on the eager
    model, which the dispatch-level counters can see; the first compiled call's time is
    reported as `compile_s`). A batch and length estimated not to fit in the memory free
    (`bench.guard`) are refused first with a ConfigError; an out-of-memory failure raises
    TrainingError naming the batch and tokens that did not fit."""
    dev = resolve_device(device)
    check_fits(model, example_input, dev, train_step)  # before the model moves or runs
    model = model.to(dev)
    x = to_device(example_input, dev)
    mask = mask.to(dev) if mask is not None else None
    was_training = model.training
    batch, tokens = batch_and_tokens(model, x)
    # The same decision the trainer takes for this model and batch (shared per process).
    step = step_probe(model, lambda: scalar_loss(call(model, x, mask)), dev)
    decision = decide_precision(dev, precision, step, probe_key(model, batch))
    prec = decision.precision
    result: dict[str, Any] = {"device": str(dev), "batch": batch, "tokens_per_sample": tokens,
                              "params": count_params(model), "precision": prec, "precision_reason": decision.reason,
                              "threads": torch.get_num_threads(), "compiled": compile}
    runner: nn.Module = model
    try:
        if compile:
            runner = torch.compile(model)

        def forward_eval() -> None:
            with torch.no_grad(), autocast(dev, prec):
                call(runner, x, mask)

        def forward_backward(m: nn.Module = runner) -> None:
            for p in model.parameters():
                p.grad = None
            with autocast(dev, prec):
                loss = scalar_loss(call(m, x, mask))
            loss.backward()

        model.eval()
        if flops:
            fwd_flops, fwd_ops = count_flops(lambda: _eager_eval(model, x, mask, dev, prec))
            result["flops"] = {"forward_per_sample": fwd_flops / batch, "by_op_forward": fwd_ops}
        if compile:
            t0 = time.perf_counter()
            forward_eval()
            synchronize(dev)
            result["compile_s"] = time.perf_counter() - t0
        result["forward"] = time_call(forward_eval, dev, warmup=warmup, repeats=repeats, budget_s=budget_s)
        if memory:
            result["memory"] = {"forward_peak_bytes": peak_bytes(lambda: _eager_eval(model, x, mask, dev, prec), dev)}
        if train_step:
            model.train()
            if flops:
                train_flops, train_ops = count_flops(lambda: forward_backward(model))
                result["flops"]["train_step_per_sample"] = train_flops / batch
                result["flops"]["by_op_train_step"] = train_ops
            if compile:
                t0 = time.perf_counter()
                forward_backward()
                synchronize(dev)
                result["compile_s"] = result.get("compile_s", 0.0) + time.perf_counter() - t0
            result["forward_backward"] = time_call(forward_backward, dev, warmup=warmup, repeats=repeats, budget_s=budget_s)
            if memory:
                result.setdefault("memory", {})["train_step_peak_bytes"] = peak_bytes(lambda: forward_backward(model), dev)
            for p in model.parameters():
                p.grad = None
    except AnyformerError:
        raise
    except Exception as err:
        if is_out_of_memory(err):
            free_memory(dev)
            raise TrainingError(
                f"out of memory on {dev} at batch {batch} x {tokens} tokens; lower --batch or --lengths"
            ) from None
        raise
    finally:
        model.train(was_training)
    _throughput_and_mfu(result, dev)
    return result


def _eager_eval(model: nn.Module, x: Any, mask: torch.Tensor | None, dev: torch.device, precision: str) -> None:
    with torch.no_grad(), autocast(dev, precision):
        call(model, x, mask)


def call(model: nn.Module, x: Any, mask: torch.Tensor | None) -> Any:
    """model(x, mask), or model(x) when there is no mask (plain nn.Modules take one input)."""
    return model(x) if mask is None else model(x, mask)


def _throughput_and_mfu(result: dict[str, Any], dev: torch.device) -> None:
    roof = gemm_roof(dev, precision=result["precision"])
    result["roof_flops_per_s"] = roof
    result["roof"] = f"{result['precision']} GEMM n={8192 if dev.type == 'cuda' else 1024}"
    batch, tokens = result["batch"], result["tokens_per_sample"]
    for phase, flop_key in (("forward", "forward_per_sample"), ("forward_backward", "train_step_per_sample")):
        if phase not in result:
            continue
        sec = result[phase]["median_ms"] / 1e3
        result[phase]["samples_per_s"] = batch / sec
        result[phase]["tokens_per_s"] = batch * tokens / sec
        flop = result.get("flops", {}).get(flop_key)
        if flop is not None:
            result[phase]["flops_per_s"] = flop * batch / sec
            result[phase]["mfu"] = flop * batch / sec / roof
