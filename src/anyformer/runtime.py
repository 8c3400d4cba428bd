"""Where and how a job runs: the device, the precision policy (bf16 autocast where the
machine runs it faster), synchronisation, the memory left on a device, out-of-memory
detection (the RNG states it saves around a probe live in `anyformer.rng`).

The one place every engine package (train, bench, infer, ...) asks these questions, so a
profile and the run it describes agree. Bottom layer: imports only torch, numpy, the
standard library, `anyformer.errors` and `anyformer.rng`.

    dev = resolve_device("auto")                  # cuda when present, else cpu
    precision = resolve_precision(dev, "auto")    # "bf16" or "fp32", probed once per process
    with autocast(dev, precision):
        out = model(x)
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from anyformer.errors import ConfigError, suggest
from anyformer.rng import capture_rng, restore_rng

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

# `auto` picks bf16 on a CPU only when the probe runs at least this much faster: below it
# the gain would not pay for bf16's coarser rounding (8 mantissa bits against 23).
BF16_MIN_SPEEDUP = 1.3
# The probe: one linear layer of a dim-512 model on 512 tokens (268 MFLOP), the shape of
# the matmuls that dominate a training step. ~1.7 ms in fp32 on a 2-core AVX512 CPU.
PROBE_TOKENS, PROBE_DIM = 512, 512
PROBE_REPEATS = 3
# A model's own training step is the faithful probe (casts, norms and softmax do not speed
# up: on this 2-core AVX512-BF16 CPU a dim-64 ViT step runs 0.5x in bf16 and a dim-256 one
# 1.2x, where a bare 512x512 linear runs 1.8x). Measured directly, a smaller gain counts.
STEP_MIN_SPEEDUP = 1.2
STEP_REPEATS = 2
# A bf16 warm-up call this many times slower than fp32 settles the question: a CPU without
# bf16 units emulates it hundreds of times slower, and repeats would cost seconds.
PROBE_GIVE_UP = 8.0
# CPU flags that say which matmul units exist (reported by `describe`, never decided on).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2", "bf16", "sve", "i8mm")


# ------------------------------------------------------------------ devices
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when a GPU is present, else cpu; 'cpu', 'cuda' or 'cuda:N' as asked.
    An unknown name or a GPU this machine lacks is a one-line ConfigError with the fix."""
    text = str(device).strip()
    base, sep, index = text.lower().partition(":")
    if base not in DEVICES or (sep and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"unknown device {text!r}{suggest(base, DEVICES)}; valid: auto, cpu, cuda, cuda:N")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {text!r} is not available: no CUDA GPU is visible to this torch build "
                          f"({torch.__version__}); use --device cpu or auto")
    if sep and int(index) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"device {text!r} does not exist: this machine has {n} CUDA GPU(s) (cuda:0 .. cuda:{n - 1}); "
                          "use one of those or auto")
    return torch.device("cuda", int(index)) if sep else torch.device("cuda")


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer reads finished work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: str | torch.device) -> None:
    """Release what a failed step left: collect reference cycles (an exception's frames keep
    its tensors alive) and return cached CUDA blocks to the driver."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


_OOM_TEXT = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA OOM, the CPU allocator failing ('DefaultCPUAllocator: can't allocate
    memory'), Python's MemoryError, and a RuntimeError whose message says out of memory."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)



# ------------------------------------------------------------------ memory
MEMINFO = Path("/proc/meminfo")
# cgroup v2 files, then v1's: a container's limit, which MemAvailable (the host's) ignores.
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
# A cgroup limit at least this large means none (v1 reports 'unlimited' as ~2^63).
_NO_LIMIT = 2**60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_field(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_headroom() -> int | None:
    """Bytes left under this container's memory limit (page cache it could reclaim counts
    as free, as `docker stats` counts it); None where no limit is set."""
    for limit_f, usage_f, stat_f, cache_key in (
            (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current", CGROUP_V2 / "memory.stat", "inactive_file"),
            (CGROUP_V1 / "memory.limit_in_bytes", CGROUP_V1 / "memory.usage_in_bytes", CGROUP_V1 / "memory.stat",
             "total_inactive_file")):
        limit, usage = _read_int(limit_f), _read_int(usage_f)
        if limit is not None and usage is not None and limit < _NO_LIMIT:
            return max(0, limit - usage + _stat_field(stat_f, cache_key))
    return None


def _cpu_available() -> int:
    """MemAvailable (what the kernel can hand out without swapping), else free pages."""
    found = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # no sysconf names (not Linux/macOS)
            found = 0
    headroom = _cgroup_headroom()
    return found if headroom is None else min(found, headroom)


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes a new allocation on `device` can still take: on CUDA the driver's free memory
    plus what torch's caching allocator holds unused; on CPU /proc/meminfo's MemAvailable
    (os.sysconf's free pages where there is none), capped by a container's cgroup limit.
    What the memory guards (anyformer.nn.footprint) compare an estimate against."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    return _cpu_available()


# ------------------------------------------------------------------ precision
@dataclass(frozen=True)
class PrecisionDecision:
    """What `auto` (or an explicit request) resolved to, and why; probe times in ms."""

    precision: str  # "bf16" | "fp32"
    reason: str
    speedup: float | None = None  # fp32 time / bf16 time of the probe (> 1: bf16 faster)
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    threads: int | None = None


# (device, torch threads, model key) -> decision: each probe runs once per process.
_DECISIONS: dict[tuple[str, int, str | None], PrecisionDecision] = {}
# step(precision) runs one training step (forward, loss, backward) of the model in question.
StepProbe = Callable[[str], None]


def _check_precision(requested: str) -> str:
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}{suggest(str(requested), PRECISIONS)}; "
                          f"valid: {', '.join(PRECISIONS)}")
    return requested


def _best_of(timed: Callable[[str], float], repeats: int) -> tuple[float, float]:
    """(fp32, bf16) best seconds of `timed(precision)`, interleaved so that noise hits both
    alike, after one untimed call each (kernel selection, oneDNN primitive creation)."""
    fp32, bf16 = timed("fp32"), timed("bf16")
    if bf16 > PROBE_GIVE_UP * fp32:
        return fp32, bf16
    fp32, bf16 = math.inf, math.inf
    for _ in range(repeats):
        fp32 = min(fp32, timed("fp32"))
        bf16 = min(bf16, timed("bf16"))
    return fp32, bf16


def _timer(run: Callable[[str], Any], device: torch.device) -> Callable[[str], float]:
    def timed(precision: str) -> float:
        synchronize(device)
        t0 = time.perf_counter()
        run(precision)
        synchronize(device)
        return time.perf_counter() - t0
    return timed


def _time_probe(device: torch.device) -> tuple[float, float]:
    """Best seconds of one [PROBE_TOKENS, PROBE_DIM] x [PROBE_DIM, PROBE_DIM] linear in fp32
    and under bf16 autocast. Its tensors come from a private generator: probing must not
    move the global RNG a run was seeded with."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(PROBE_TOKENS, PROBE_DIM, generator=gen, device=device)
    w = torch.randn(PROBE_DIM, PROBE_DIM, generator=gen, device=device) / math.sqrt(PROBE_DIM)
    b = torch.zeros(PROBE_DIM, device=device)

    def linear(precision: str) -> None:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            F.linear(x, w, b)

    with torch.no_grad():
        return _best_of(_timer(linear, device), PROBE_REPEATS)


def _time_step(step: StepProbe, device: torch.device) -> tuple[float, float]:
    """Best seconds of the model's own training step in fp32 and under bf16 autocast."""
    return _best_of(_timer(step, device), STEP_REPEATS)


def _measured(fp32: float, bf16: float, threshold: float, what: str) -> PrecisionDecision:
    """bf16 when it ran at least `threshold` times as fast as fp32 on `what`."""
    threads = torch.get_num_threads()
    speedup = fp32 / bf16 if bf16 > 0 else math.inf
    chosen = "bf16" if speedup >= threshold else "fp32"
    verdict = "bf16 autocast chosen" if chosen == "bf16" else "fp32 kept"
    reason = (f"probe: bf16 autocast {speedup:.2f}x the speed of fp32 on {what} ({fp32 * 1e3:.1f} vs "
              f"{bf16 * 1e3:.1f} ms, {threads} threads; bf16 needs >= {threshold}x): {verdict}")
    return PrecisionDecision(chosen, reason, round(speedup, 3), round(fp32 * 1e3, 4), round(bf16 * 1e3, 4), threads)


def _cpu_decision(device: torch.device) -> PrecisionDecision:
    return _measured(*_time_probe(device), BF16_MIN_SPEEDUP, f"a linear {PROBE_DIM}x{PROBE_DIM} on {PROBE_TOKENS} tokens")


def _step_decision(step: StepProbe, device: torch.device) -> PrecisionDecision:
    return _measured(*_time_step(step, device), STEP_MIN_SPEEDUP, "this model's training step")


def step_probe(model: torch.nn.Module, loss: Callable[[], torch.Tensor], device: str | torch.device) -> StepProbe:
    """A StepProbe for `model`: `loss()` runs its forward on a real batch and returns a
    scalar. The model runs in eval mode (no dropout draw, no batch-norm statistics update)
    and the RNG state and gradients are restored, so probing changes nothing of the run."""
    def step(precision: str) -> None:
        was_training = model.training
        saved = capture_rng()
        model.eval()
        try:
            with autocast(device, precision):
                value = loss()
            if value.requires_grad:  # a model without parameters has only a forward to time
                value.float().backward()
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            restore_rng(*saved)
    return step


def probe_key(model: torch.nn.Module, batch: int) -> str:
    """One key per model structure and batch size, so the trainer and the profiler of the
    same model share a decision (the module tree's repr names every layer and its shape)."""
    return hashlib.sha1(f"{batch}:{model!r}".encode()).hexdigest()


def _cuda_decision(device: torch.device) -> PrecisionDecision:
    name = torch.cuda.get_device_name(device)
    try:  # native bf16 only: emulated bf16 (pre-Ampere) is slower than fp32
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation and reports native support
        native = torch.cuda.is_bf16_supported()
    if native:
        return PrecisionDecision("bf16", f"CUDA GPU {name} runs bf16 natively: bf16 autocast chosen")
    return PrecisionDecision("fp32", f"CUDA GPU {name} has no native bf16: fp32 kept")


def decide_precision(device: str | torch.device, requested: str = "auto", step: StepProbe | None = None,
                     key: str | None = None) -> PrecisionDecision:
    """The precision a job runs in and why. 'fp32' and 'bf16' are honoured as asked; 'auto'
    is bf16 on a GPU with native bf16 and, on a CPU, bf16 only where a short probe measured
    bf16 autocast faster than fp32: the model's own training step when `step` is given
    (>= STEP_MIN_SPEEDUP), else a bare linear layer (>= BF16_MIN_SPEEDUP). Cached per device,
    thread count and `key` (see `probe_key`) for the process."""
    dev = resolve_device(device)
    if _check_precision(requested) != "auto":
        return PrecisionDecision(requested, f"{requested} requested")
    cache = (str(dev), torch.get_num_threads(), key if step is not None else None)
    if cache not in _DECISIONS:
        if dev.type == "cuda":
            _DECISIONS[cache] = _cuda_decision(dev)
        else:
            _DECISIONS[cache] = _step_decision(step, dev) if step is not None else _cpu_decision(dev)
    return _DECISIONS[cache]


def resolve_precision(device: str | torch.device, requested: str = "auto") -> str:
    """'auto' | 'fp32' | 'bf16' -> 'bf16' | 'fp32' on `device` (see `decide_precision`)."""
    return decide_precision(device, requested).precision


def autocast(device: str | torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """A context running its ops in `precision` on `device`: bf16 autocast for 'bf16' (and
    for 'auto' where it resolves to bf16), nothing for 'fp32'. Outputs of autocast regions
    may be bf16: cast them with .float() before a loss."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    chosen = precision if precision in ("fp32", "bf16") else resolve_precision(dev, precision)
    if chosen == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """The matmul-relevant CPU flags /proc/cpuinfo lists (BF16_FLAGS found); () where there
    is no /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found = set(value.split())
            return tuple(f for f in BF16_FLAGS if f in found)
    return ()


def describe(device: str | torch.device, precision: str = "auto", step: StepProbe | None = None,
             key: str | None = None) -> dict[str, Any]:
    """For logs and result files: the device, the precision chosen and why (the probe's
    times and speedup on CPU), the CPU's bf16-relevant flags, its ATen kernel level, the GPU."""
    dev = resolve_device(device)
    decision = decide_precision(dev, precision, step, key)
    info: dict[str, Any] = {"device": str(dev), "requested": precision, **asdict(decision),
                            "cpu_flags": list(cpu_flags()), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                            "threads": torch.get_num_threads()}
    info["gpu"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return info


@lru_cache(maxsize=1)
def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: str | torch.device = "auto") -> dict[str, Any]:
    """What a measurement ran on, for result files: versions, the CPU (model, cores, the
    threads torch uses, its kernel level and bf16-relevant flags) and the accelerator.
    Latency and step counts are only comparable within one such record."""
    from importlib import metadata

    dev = resolve_device(device)
    try:
        version = metadata.version("anyformer")
    except metadata.PackageNotFoundError:
        version = None
    return {"anyformer": version, "torch": torch.__version__, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": list(cpu_flags()),
            "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "cuda": torch.version.cuda if dev.type == "cuda" else None}
