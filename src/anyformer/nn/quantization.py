"""Per-layer post-training quantization of a model's linear layers with torchao's
`quantize_` (int8 weight-only, int8 dynamic activation + int8 weight, int4 weight-only).

A policy is a plain JSON-able dict, so that a search can draw it and a run's config.yaml
can hold it: `{default: SCHEME, layers: {PATTERN: SCHEME, ...}}`. A pattern is an fnmatch
pattern over the names of the model's linear layers (`model.named_modules()`); the first
pattern that matches a layer decides its scheme, `default` (fp32 when absent) the others;
`fp32` keeps a layer float.

Only the float weights and the policy are stored: torchao's quantized weights are tensor
subclasses (int data, scales, a kernel-specific packing) that safetensors cannot hold as
plain tensors without a format of our own, and quantizing the same float weights with the
same policy is deterministic, so applying the policy at load (`catalog.load_run`) gives the
same model every time and the weights file stays readable by every other tool.

torchao is optional (`pip install anyformer[compress]`) and imported only when a policy
quantizes some layer.
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Any

import torch
from torch import nn

from anyformer.errors import ConfigError, unknown

FLOAT = "fp32"
SCHEMES = (FLOAT, "int8-weight", "int8-dynamic", "int4-weight")
INT4 = "int4-weight"
# tinygemm (torchao's int4 kernel) takes groups of 32..256 input features; larger groups
# store fewer scales, so the largest that divides a layer's inputs is taken.
INT4_GROUPS = (128, 64, 32)
KEYS = ("default", "layers")


def check_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy in full form `{default, layers}` (a new dict), or a one-line ConfigError
    naming the bad key, pattern or scheme."""
    if not isinstance(policy, dict):
        raise ConfigError(f"quantization policy must be a mapping {{default: SCHEME, layers: {{PATTERN: SCHEME}}}}, "
                          f"got {type(policy).__name__}")
    stray = [k for k in policy if k not in KEYS]
    if stray:
        raise ConfigError(f"quantization policy: unknown key {stray[0]!r}; valid: {', '.join(KEYS)}")
    default = policy.get("default", FLOAT)
    if default not in SCHEMES:
        raise unknown("quantization scheme (policy default)", default, SCHEMES)
    layers = policy.get("layers") or {}
    if not isinstance(layers, dict):
        raise ConfigError(f"quantization policy: layers must map a layer-name pattern to a scheme, got {type(layers).__name__}")
    for pattern, scheme in layers.items():
        if not isinstance(pattern, str):
            raise ConfigError(f"quantization policy: layer pattern {pattern!r} must be a string (an fnmatch pattern)")
        if scheme not in SCHEMES:
            raise unknown(f"quantization scheme (policy layer {pattern!r})", scheme, SCHEMES)
    return {"default": default, "layers": dict(layers)}


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """name -> linear layer that quantization may replace the weight of. A shared layer
    appears once, under its first name. torch's NonDynamicallyQuantizableLinear (say,
    nn.MultiheadAttention.out_proj) is left out: its parent reads the weight directly
    instead of calling the layer, which a quantized weight does not support."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)}


def plan(model: nn.Module, policy: dict[str, Any]) -> dict[str, str]:
    """name -> scheme for every linear layer of `model` under `policy` (first match wins);
    a pattern that matches no layer is a ConfigError listing some layer names."""
    policy = check_policy(policy)
    names = list(linear_layers(model))
    for pattern in policy["layers"]:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            # The first and the last few: names from the encoder, the first block and the head.
            shown = ", ".join(names) if len(names) <= 7 else ", ".join([*names[:4], "...", *names[-2:]]) + f" ({len(names)} in all)"
            raise ConfigError(f"quantization policy: pattern {pattern!r} matches no linear layer of the model; "
                              f"its linear layers: {shown or 'none'}")
    return {n: next((s for p, s in policy["layers"].items() if fnmatch.fnmatchcase(n, p)), policy["default"])
            for n in names}


def _torchao() -> Any:
    try:
        # On a machine without CUDA torchao's CUDA-only kernel libraries fail to load and
        # it logs a warning per library; nothing here uses them there, so the noise goes.
        # torch's pytree also warns once per enum torchao registers (a deprecation of torch's, not ours).
        logs = [logging.getLogger("torch.utils._pytree")] + ([] if torch.cuda.is_available() else [logging.getLogger("torchao")])
        levels = [log.level for log in logs]
        for log in logs:
            log.setLevel(logging.ERROR)
        try:
            import torchao.quantization as tq
        finally:
            for log, level in zip(logs, levels):
                log.setLevel(level)
    except ImportError:
        raise ConfigError("quantization needs torchao: pip install anyformer[compress]") from None
    return tq


def needs_cuda(schemes: Any) -> bool:
    """Whether these schemes run on CUDA only (int4: torchao 0.18 has no CPU int4 layout)."""
    return INT4 in set(schemes)


def _int4_group(name: str, layer: nn.Linear) -> int:
    for group in INT4_GROUPS:
        if layer.in_features % group == 0:
            return group
    raise ConfigError(f"quantization policy: int4-weight needs a layer's input features divisible by 32; "
                      f"layer {name!r} has {layer.in_features} (give it int8-weight or fp32)")


def _config(tq: Any, scheme: str, name: str, layer: nn.Linear) -> Any:
    if scheme == "int8-weight":
        return tq.Int8WeightOnlyConfig()
    if scheme == "int8-dynamic":
        return tq.Int8DynamicActivationInt8WeightConfig()
    # tinygemm's tile-packed layout: the int4 format whose kernel ships with torch itself
    # (the 'plain' and 'preshuffled' formats need the separate mslk package).
    return tq.Int4WeightOnlyConfig(group_size=_int4_group(name, layer), int4_packing_format="tile_packed_to_4d")


def is_quantized(weight: torch.Tensor) -> bool:
    """Whether a weight is a quantized tensor subclass (its data held in inner tensors)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass
    return is_traceable_wrapper_subclass(weight)


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds in memory: a quantized one's inner tensors (int data, scales,
    zero points), a plain one's elements."""
    if is_quantized(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(storage_bytes(getattr(tensor, n)) for n in names if getattr(tensor, n) is not None)
    return tensor.numel() * tensor.element_size()


@torch.no_grad()
def apply_quantization(model: nn.Module, policy: dict[str, Any]) -> dict[str, str]:
    """Quantize `model`'s linear layers in place as `policy` says; name -> scheme. With an
    int4-weight layer the model moves to the GPU: int4 weights are packed for the CUDA
    kernel, and there is no CPU one (a ConfigError on a machine without CUDA)."""
    layers = plan(model, policy)
    quantized = {n: s for n, s in layers.items() if s != FLOAT}
    if not quantized:
        return layers
    if needs_cuda(quantized.values()):
        if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
            raise ConfigError("quantization policy: int4-weight needs a CUDA GPU of compute capability 8.0 or more "
                              "(torchao 0.18 has no CPU int4 kernel); use int8-weight or int8-dynamic here")
        model.to("cuda")
    tq = _torchao()
    modules = linear_layers(model)
    for name, scheme in quantized.items():
        layer = modules[name]
        if scheme == INT4:
            layer.to(torch.bfloat16)  # the kernel's weight dtype; it casts inputs and outputs itself
        tq.quantize_(layer, _config(tq, scheme, name, layer))
        if not is_quantized(layer.weight):  # torchao skips a shape it cannot take, silently
            raise ConfigError(f"quantization policy: torchao left layer {name!r} ({layer.in_features} -> "
                              f"{layer.out_features}) float under {scheme}; give it fp32 or another scheme")
    return layers
