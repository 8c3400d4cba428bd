"""Cost profiler: parameters, FLOPs, latency, throughput, peak memory, MFU and scaling
with sequence length. Pure library code (no CLI); `anyformer bench` and `compare` call it.

    from anyformer.bench import profile, sweep, crossover
    cost = profile(model, model.encoder.example_input(8), device="cpu")
"""
from anyformer.bench.flops import count_flops
from anyformer.bench.memory import LiveTensorBytes, peak_bytes
from anyformer.bench.profiler import count_params, gemm_roof, profile, time_call
from anyformer.bench.scaling import crossover, plot_sweeps, save_json, sweep
from anyformer.runtime import resolve_device  # re-exported: callers imported it from here

__all__ = ["LiveTensorBytes", "count_flops", "count_params", "crossover", "gemm_roof", "peak_bytes",
           "plot_sweeps", "profile", "resolve_device", "save_json", "sweep", "time_call"]
