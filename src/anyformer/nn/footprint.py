"""The memory a model needs for its parameters, counted before anything is allocated, and
the guard every model build passes: an absurd size is refused with a one-line ConfigError
(the estimate, the memory free, the config path to lower) instead of an allocator failure
or a build that runs for minutes.

Parameters and buffers are counted exactly by building the model on the meta device
(shapes, no storage), under two bounds that keep that build short: `MAX_DEPTH` layers and
`MAX_MODULES` modules. Training needs 3x the trainable parameters more (gradients, AdamW's
two moments) before activations, which nn/step_memory.py estimates for a given batch.

    fp = estimate(config)   # Footprint: params, bytes, modules; None if not meta-buildable
    check_build(config)     # every arch calls it first (nn/model.py's require_parts)
"""
from __future__ import annotations

import contextlib
import math
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from anyformer import registry, runtime
from anyformer.config import COMPONENT_FIELDS, ModelConfig
from anyformer.errors import AnyformerError, ConfigError

# Layers a model may have: 10x the deepest Transformers trained (DeepNet, 1000 layers).
# Past it even a weight-shared stack only loops for minutes per step.
MAX_DEPTH = 10_000
# Modules the meta build may create before it gives up (~80 us each on a 2-core CPU, so
# ~2.5 s): a 1000-layer GPT has ~17,000. Bounds what no config field alone bounds (FIT's
# local_layers x depth, decoder depths, stages).
MAX_MODULES = 30_000
ADAMW_MOMENTS = 2
# Halving a size that shrinks the model less than this is not what makes it too large.
BLAME_MIN_GAIN = 1.3
BLAME_MAX_MODULES = 5_000  # skip naming the culprit when each re-estimate would be slow


@dataclass(frozen=True)
class Footprint:
    """Sizes of a built (or meta-built) model; shared and tied tensors counted once."""

    params: int
    param_bytes: int
    buffer_bytes: int
    trainable_bytes: int
    modules: int
    largest_part: str | None = None  # top-level child holding the most bytes

    @property
    def model_bytes(self) -> int:
        return self.param_bytes + self.buffer_bytes

    @property
    def train_state_bytes(self) -> int:
        """Gradients and AdamW's two moments of the trainable parameters."""
        return self.trainable_bytes * (1 + ADAMW_MOMENTS)

    @property
    def train_bytes(self) -> int:
        """Parameters, buffers and optimizer state: training before any activation."""
        return self.model_bytes + self.train_state_bytes


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor's elements take (its storage, on any device, meta included)."""
    return t.numel() * t.element_size()


def measure(model: nn.Module) -> Footprint:
    """The footprint of a model on any device (meta included)."""
    params = {id(p): p for p in model.parameters()}
    buffers = {id(b): b for b in model.buffers()}
    parts = {name: sum(tensor_bytes(t) for t in [*m.parameters(), *m.buffers()]) for name, m in model.named_children()}
    return Footprint(
        params=sum(p.numel() for p in params.values()),
        param_bytes=sum(tensor_bytes(p) for p in params.values()),
        buffer_bytes=sum(tensor_bytes(b) for b in buffers.values()),
        trainable_bytes=sum(tensor_bytes(p) for p in params.values() if p.requires_grad),
        modules=sum(1 for _ in model.modules()),
        largest_part=max(parts, key=parts.get) if parts else None,
    )


# ------------------------------------------------------------------ the meta build
class _TooManyModules(Exception):
    pass


class _Overflow(Exception):
    """A tensor past 2^63 bytes; args[0]: its sizes."""


_BUILD = threading.local()  # .modules: count of the meta build running in this thread


def _count_module(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    # A global registration hook: it sees every thread's modules, so it counts only while
    # this thread runs a meta build.
    count = getattr(_BUILD, "modules", None)
    if count is not None:
        _BUILD.modules = count + 1
        if count + 1 > MAX_MODULES:
            raise _TooManyModules


_T = torch.Tensor
_SCALARS = {_T.item: None, _T.__float__: float, _T.__int__: int, _T.__index__: int, _T.__bool__: bool}


class _ValueFree(TorchFunctionMode):
    """Meta tensors have shapes but no values: a component computing a constant at init
    (KAN's activation moment) gets a dummy 1 instead of a failure. Only used when the
    plain meta build fails; a value-dependent shape then comes out wrong, within reason."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta
        if meta and func in _SCALARS:
            dtype = args[0].dtype
            one = True if dtype == torch.bool else (1.0 if dtype.is_floating_point or dtype.is_complex else 1)
            cast = _SCALARS[func]
            return cast(one) if cast is not None else one
        if meta and func is _T.tolist:
            return torch.ones(args[0].shape, dtype=args[0].dtype).tolist()
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _guarded() -> Iterator[None]:
    """Count modules (give up past MAX_MODULES) and leave every RNG as it was: a component
    drawing from numpy or Python at init must not shift the real build's draws."""
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    handle = nn.modules.module.register_module_module_registration_hook(_count_module)
    _BUILD.modules = 0
    try:
        yield
    finally:
        _BUILD.modules = None
        handle.remove()
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])


def _meta_model(config: ModelConfig) -> nn.Module | None:
    """The model built on the meta device; None when a component cannot be built there. An
    invalid config raises its error here, before the real build allocates anything."""
    for mode in (contextlib.nullcontext, _ValueFree):
        with _guarded():
            try:
                with torch.device("meta"), mode():
                    return registry.build("arch", config.arch.name, config=config, **config.arch.options)
            except (_TooManyModules, MemoryError, AnyformerError):
                # A config error found on meta is the real build's too, which would only
                # meet it after allocating the parts built before it (a 1e12-id embedding).
                raise
            except (RuntimeError, TypeError) as err:
                # 'Storage size calculation overflowed with sizes=[...]', or on meta, where the
                # strides are computed first, 'Overflow when unpacking long long' (no sizes).
                if "overflow" in str(err).lower():
                    raise _Overflow([int(n) for n in re.findall(r"\d+", str(err).partition("sizes=")[2])]) from None
            except Exception:  # noqa: BLE001 - ConfigError and the like: the real build reports it
                return None
    return None


def _knobs(config: ModelConfig) -> str:
    """'model.depth=3, model.arch.local_layers=1000000': the counts that multiply layers."""
    counts = sorted(((v, k) for k, v in config.arch.options.items() if isinstance(v, int) and not isinstance(v, bool)),
                    reverse=True)[:2]
    return ", ".join([f"model.depth={config.depth}"] + [f"model.arch.{k}={v}" for v, k in counts])


def estimate(config: ModelConfig) -> Footprint | None:
    """Parameters and buffers of the model `config` describes, counted on the meta device.
    A ConfigError when the structure alone is absurd (over MAX_DEPTH layers, over
    MAX_MODULES modules, sizes past 2^63 bytes); None when it cannot be built on meta."""
    if config.depth > MAX_DEPTH:
        raise ConfigError(f"model.depth={config.depth}: over {MAX_DEPTH:,} layers is no model anyone trains "
                          "(the deepest published Transformers have ~1,000); lower model.depth")
    # An arch that builds several layers per model.depth declares how many (`layer_count`).
    layer_count = getattr(registry.get("arch", config.arch.name), "layer_count", None)
    try:
        layers = layer_count(config, **config.arch.options) if layer_count is not None else config.depth
    except TypeError:  # options of the wrong type: the real build names them
        layers = config.depth
    if isinstance(layers, int) and layers > MAX_DEPTH:
        raise ConfigError(f"{_knobs(config)}: {layers:,} layers, over {MAX_DEPTH:,}, is no model anyone trains "
                          "(the deepest published Transformers have ~1,000); lower model.depth or the arch's layer counts")
    try:
        model = _meta_model(config)
    except _TooManyModules:
        raise ConfigError(f"{_knobs(config)}: the model would have over {MAX_MODULES:,} modules (a 1,000-layer GPT has "
                          "~17,000) and take minutes to build; lower model.depth or the arch's layer counts") from None
    except _Overflow as err:
        raise ConfigError(_overflow_message(config, err.args[0])) from None
    except MemoryError:
        raise ConfigError(f"{_knobs(config)}: the model's layer schedule alone does not fit in memory; lower "
                          "model.depth or the arch's layer counts") from None
    return measure(model) if model is not None else None


# ------------------------------------------------------------------ messages
def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def where(device: torch.device) -> str:
    """'this machine has' / 'cuda:0 has', for messages about the memory free."""
    return "this machine has" if device.type == "cpu" else f"{device} has"


def _overflow_message(config: ModelConfig, sizes: list[int]) -> str:
    # The culprits are the size fields whose value is one of the tensor's sizes.
    # Without the sizes (a stride overflowed first), sizes no model has: past 2^40.
    culprits = [f"{path}={value}" for path, value, _ in _size_fields(config) if (value in sizes if sizes else value >= 2 ** 40)]
    subject = " / ".join(culprits) or f"model (dim={config.dim}, max_len={config.max_len}, {_knobs(config)})"
    device = torch.get_default_device()
    need = human_bytes(math.prod(sizes) * 4) if sizes else "8 EiB"
    tensor = f"one tensor of {sizes} alone" if sizes else "one tensor alone"
    return (f"{subject}: the model needs over {need} for its parameters ({tensor}, more than torch "
            f"can address), {where(device)} {human_bytes(runtime.available_memory(device))} free; "
            f"lower {' or '.join(c.split('=')[0] for c in culprits) or 'them'}")


def _size_fields(config: ModelConfig) -> list[tuple[str, int, dict[str, Any]]]:
    """(path, value, the config dict with that value halved) for every integer size: the
    model's dim, depth and max_len, then each component's integer options."""
    base = config.to_dict()
    out: list[tuple[str, int, dict[str, Any]]] = []
    for key in ("dim", "depth", "max_len"):
        out.append((f"model.{key}", base[key], {**base, key: max(1, base[key] // 2)}))
    for kind in COMPONENT_FIELDS:
        spec = base.get(kind)
        for opt, value in (spec.items() if isinstance(spec, dict) else ()):
            if isinstance(value, int) and not isinstance(value, bool) and value > 1:
                out.append((f"model.{kind}.{opt}", value, {**base, kind: {**spec, opt: value // 2}}))
    return [field for field in out if field[1] > 1]


def _blame(config: ModelConfig, fp: Footprint) -> list[str]:
    """The size fields whose halving shrinks the model most ('model.dim=1000000000'), found
    by re-estimating with each halved; [] when none stands out or that would be slow."""
    if fp.modules > BLAME_MAX_MODULES:
        return []
    gains: dict[str, float] = {}
    for path, value, data in _size_fields(config):
        try:
            smaller = estimate(ModelConfig.model_validate(data))
        except (ConfigError, pydantic.ValidationError):
            continue
        if smaller is not None:
            gains[f"{path}={value}"] = fp.model_bytes / max(1, smaller.model_bytes)
    best = max(gains.values(), default=0.0)
    if best < BLAME_MIN_GAIN:
        return []
    tied = [name for name, gain in gains.items() if gain >= 0.95 * best]
    return sorted(tied, key=lambda name: -int(name.rpartition("=")[2]))  # the absurd value first


def check_build(config: ModelConfig) -> None:
    """Refuse (ConfigError) a model whose parameters and buffers exceed the memory free on
    the device it is being built on; a no-op inside a meta build."""
    device = torch.get_default_device()
    if device.type == "meta":
        return
    fp = estimate(config)
    if fp is None:
        return
    free = runtime.available_memory(device)
    if fp.model_bytes <= free:
        return
    culprits = _blame(config, fp)
    subject = " / ".join(culprits) if culprits else f"model (dim={config.dim}, depth={config.depth}, max_len={config.max_len})"
    fix = " or ".join(c.split("=")[0] for c in culprits) if culprits else "model.dim or model.depth"
    mostly = "" if culprits or fp.largest_part is None else f", mostly in its {fp.largest_part}"
    raise ConfigError(
        f"{subject}: the model needs ~{human_bytes(fp.model_bytes)} for its {fp.params:,} parameters{mostly} "
        f"(~{human_bytes(fp.train_bytes)} to train with AdamW, before activations), {where(device)} "
        f"{human_bytes(free)} free; lower {fix}"
    )
