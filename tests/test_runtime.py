"""anyformer.runtime: device resolution, the precision policy (probe mocked both ways),
autocast, RNG capture/restore and out-of-memory detection."""
import json
import random

import numpy as np
import pytest
import torch

from anyformer import rng, runtime
from anyformer.errors import AnyformerError, ConfigError


@pytest.fixture
def fresh_decisions(monkeypatch):
    """An empty decision cache, so a test's mocked probe is the one consulted."""
    monkeypatch.setattr(runtime, "_DECISIONS", {})


# ------------------------------------------------------------------ devices
@pytest.mark.parametrize("name,expected", [("cpu", "cpu"), ("CPU", "cpu"), (torch.device("cpu"), "cpu")])
def test_resolve_device_names(name, expected):
    assert runtime.resolve_device(name) == torch.device(expected)


def test_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name,match", [
    ("cdua", "unknown device 'cdua' (did you mean 'cuda' or 'cpu'?)"),
    ("mps", "unknown device 'mps'; valid: auto, cpu, cuda, cuda:N"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("cpu:1", "unknown device 'cpu:1'"),
])
def test_unknown_device_is_a_one_line_config_error(name, match):
    with pytest.raises(ConfigError) as err:
        runtime.resolve_device(name)
    assert match in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2 and isinstance(err.value, AnyformerError)


def test_missing_gpu_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="is not available: no CUDA GPU .* use --device cpu or auto"):
            runtime.resolve_device(name)


def test_gpu_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"'cuda:2' does not exist: this machine has 2 CUDA GPU\(s\) \(cuda:0 .. cuda:1\)"):
        runtime.resolve_device("cuda:2")


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("fp32_s,bf16_s,expected", [
    (1.0e-3, 0.4e-3, "bf16"),   # 2.5x: bf16 units (AVX512-BF16 / AMX)
    (1.0e-3, 0.76e-3, "bf16"),  # 1.32x: just above the threshold
    (1.0e-3, 0.9e-3, "fp32"),   # 1.11x: not worth bf16's rounding
    (1.0e-3, 0.3, "fp32"),      # 300x slower: emulated bf16
])
def test_auto_on_cpu_follows_the_probe(monkeypatch, fresh_decisions, fp32_s, bf16_s, expected):
    calls = []
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: calls.append(dev) or (fp32_s, bf16_s))
    assert runtime.resolve_precision("cpu", "auto") == expected
    assert runtime.resolve_precision(torch.device("cpu"), "auto") == expected
    assert len(calls) == 1  # cached for the process (same device, same threads)
    info = runtime.describe("cpu", "auto")
    assert info["precision"] == expected and info["speedup"] == pytest.approx(fp32_s / bf16_s, rel=1e-2, abs=1e-3)
    assert info["fp32_ms"] == pytest.approx(fp32_s * 1e3) and info["threads"] == torch.get_num_threads()
    assert ("bf16 autocast chosen" if expected == "bf16" else "fp32 kept") in info["reason"]
    json.dumps(info)  # plain JSON for logs and result files


def test_probe_is_cached_per_thread_count(monkeypatch, fresh_decisions):
    calls = []
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: calls.append(torch.get_num_threads()) or (1.0, 0.5))
    threads = torch.get_num_threads()
    try:
        runtime.resolve_precision("cpu")
        torch.set_num_threads(threads + 1)
        runtime.resolve_precision("cpu")
    finally:
        torch.set_num_threads(threads)
    assert calls == [threads, threads + 1]


def test_explicit_precision_is_honoured_without_probing(monkeypatch, fresh_decisions):
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: pytest.fail("explicit precision must not probe"))
    assert runtime.resolve_precision("cpu", "fp32") == "fp32"
    assert runtime.resolve_precision("cpu", "bf16") == "bf16"
    assert runtime.describe("cpu", "bf16")["reason"] == "bf16 requested"
    with pytest.raises(ConfigError, match="unknown precision 'bf61' \\(did you mean 'bf16'\\?\\); valid: auto, fp32, bf16"):
        runtime.resolve_precision("cpu", "bf61")


def test_cuda_auto_follows_native_bf16_support(monkeypatch, fresh_decisions):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "FakeGPU")
    for native, expected in ((True, "bf16"), (False, "fp32")):
        runtime._DECISIONS.clear()
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        decision = runtime._cuda_decision(torch.device("cuda"))
        assert decision.precision == expected and "FakeGPU" in decision.reason


def test_real_probe_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    fp32, bf16 = runtime._time_probe(torch.device("cpu"))
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_bf16_autocast_differs_from_fp32_within_bf16_rounding():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    x = torch.randn(16, 64)
    with runtime.autocast("cpu", "fp32"):
        ref = model(x)
    with runtime.autocast(torch.device("cpu"), "bf16"):
        low = model(x)
    assert ref.dtype == torch.float32 and low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max().item()
    scale = ref.abs().max().item()
    # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.0039); two layers' roundings stay
    # well inside 3%, and the outputs must really have been computed in bf16 (not equal).
    assert 0 < err < 0.03 * scale


def test_autocast_auto_uses_the_decision(monkeypatch, fresh_decisions):
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: (1.0, 0.4))
    with runtime.autocast("cpu", "auto"):
        assert torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == torch.bfloat16
    runtime._DECISIONS.clear()
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: (1.0, 4.0))
    with runtime.autocast("cpu", "auto"):
        assert torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == torch.float32


# ------------------------------------------------------------------ RNG
def _draws():
    return torch.rand(5).tolist(), [random.random() for _ in range(5)], np.random.rand(5).tolist()


def test_rng_capture_restore_replays_the_same_draws():
    rng.seed_everything(123)
    _draws()
    tensors, meta = rng.capture_rng()
    meta = json.loads(json.dumps(meta))  # meta travels as JSON in state.json
    first = _draws()
    rng.seed_everything(7)  # move every generator elsewhere
    rng.restore_rng(tensors, meta)
    assert _draws() == first


def test_rng_keys_are_the_checkpoint_format():
    tensors, meta = rng.capture_rng()
    assert set(meta) == {"python_rng", "numpy_rng"}
    assert "rng.torch" in tensors and tensors["rng.torch"].dtype == torch.uint8
    assert set(tensors) - {"rng.torch"} == {f"rng.cuda.{i}" for i in range(torch.cuda.device_count())}
    assert meta["numpy_rng"][0] == "MT19937" and len(meta["numpy_rng"][1]) == 624


def test_seed_everything_seeds_all_three():
    rng.seed_everything(5)
    a = _draws()
    rng.seed_everything(5)
    assert _draws() == a


# ------------------------------------------------------------------ out of memory
@pytest.mark.parametrize("err,expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"), False),
    (ValueError("out of memory"), False),  # not an allocator failure type
    (KeyError("memory"), False),
])
def test_is_out_of_memory(err, expected):
    assert runtime.is_out_of_memory(err) is expected



# ---------------------------------------------------------------- the model-level probe

@pytest.mark.parametrize("fp32_s,bf16_s,expected", [
    (1.0, 0.5, "bf16"),   # 2x: a wide model on bf16 units
    (1.0, 0.8, "bf16"),   # 1.25x: above the step threshold
    (1.0, 0.9, "fp32"),   # 1.11x
    (1.0, 2.0, "fp32"),   # a narrow model: casts cost more than the matmuls gain
])
def test_auto_with_a_step_probe_follows_the_models_own_step(monkeypatch, fresh_decisions, fp32_s, bf16_s, expected):
    monkeypatch.setattr(runtime, "_time_probe", lambda dev: pytest.fail("a step probe replaces the linear probe"))
    calls = []
    monkeypatch.setattr(runtime, "_time_step", lambda step, dev: calls.append(step) or (fp32_s, bf16_s))
    step = lambda precision: None  # noqa: E731
    decision = runtime.decide_precision("cpu", "auto", step, key="model-a")
    assert decision.precision == expected and "this model's training step" in decision.reason
    assert runtime.decide_precision("cpu", "auto", step, key="model-a") is decision  # cached per key
    runtime.decide_precision("cpu", "auto", step, key="model-b")
    assert len(calls) == 2


def test_step_timer_runs_both_precisions_interleaved():
    order = []
    fp32, bf16 = runtime._time_step(order.append, torch.device("cpu"))
    assert order == ["fp32", "bf16"] + ["fp32", "bf16"] * runtime.STEP_REPEATS
    assert fp32 >= 0 and bf16 >= 0


def test_step_probe_changes_nothing_of_the_run():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5)).train()
    x = torch.randn(16, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step = runtime.step_probe(model, lambda: model(x).sum(), "cpu")
    for precision in ("fp32", "bf16"):
        step(precision)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_key_tells_models_apart():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 5)
    assert runtime.probe_key(a, 8) == runtime.probe_key(torch.nn.Linear(4, 4), 8)
    assert len({runtime.probe_key(a, 8), runtime.probe_key(b, 8), runtime.probe_key(a, 16)}) == 3


# ------------------------------------------------------------------ available memory
@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """/proc/meminfo and the cgroup files pointed at a temporary folder (none written yet)."""
    monkeypatch.setattr(runtime, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(runtime, "CGROUP_V2", tmp_path / "v2")
    monkeypatch.setattr(runtime, "CGROUP_V1", tmp_path / "v1")
    return tmp_path


def test_available_memory_on_cpu_is_meminfo_available(fake_proc):
    (fake_proc / "meminfo").write_text("MemTotal:  8000000 kB\nMemFree:  100 kB\nMemAvailable:  4000000 kB\n")
    assert runtime.available_memory("cpu") == 4_000_000 * 1024


def test_available_memory_without_meminfo_falls_back_to_free_pages(fake_proc, monkeypatch):
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(runtime.os, "sysconf", lambda name: pages[name])
    assert runtime.available_memory("cpu") == 4_096_000


@pytest.mark.parametrize("version,files,expected", [
    # v2: 2 GiB limit, 1.5 GiB used of which 0.5 GiB reclaimable page cache -> 1 GiB left
    ("v2", {"memory.max": "2147483648", "memory.current": "1610612736", "memory.stat": "anon 1\ninactive_file 536870912\n"},
     2**30),
    ("v1", {"memory.limit_in_bytes": "2147483648", "memory.usage_in_bytes": "1610612736",
            "memory.stat": "total_inactive_file 536870912\n"}, 2**30),
    ("v2", {"memory.max": "max", "memory.current": "1610612736"}, 4_000_000 * 1024),  # no limit
    ("v1", {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "5"}, 4_000_000 * 1024),
])
def test_available_memory_respects_a_container_limit(fake_proc, version, files, expected):
    (fake_proc / "meminfo").write_text("MemAvailable:  4000000 kB\n")
    (fake_proc / version).mkdir()
    for name, text in files.items():
        (fake_proc / version / name).write_text(text)
    assert runtime.available_memory("cpu") == expected


def test_available_memory_on_cuda_counts_what_the_caching_allocator_holds_unused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev: 6 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev: 4 * 2**30)
    assert runtime.available_memory("cuda:0") == 12 * 2**30
