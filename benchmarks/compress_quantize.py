"""Quantization with torchao (`anyformer compress --method quantize`): latency of an
MLP-heavy anyformer model, float vs int8 dynamic (and int8 weight-only), eager and
torch.compile'd, and the bytes the quantized linear weights take in memory against float.

The model is the `transformer` preset (pre-norm, softmax attention, 4x GELU MLP, token
encoder) at dim 512, L 256, batch 32, random weights: its linear layers carry ~90% of the
forward FLOPs. Each variant is quantized by anyformer.nn.quantization (the code `load_run`
applies to a quantized run); compiled copies are timed after their first (compiling) call,
whose time is reported; then all runners alternate in one process and speedups are medians
of per-round ratios. int4 weight-only runs on CUDA only (torchao 0.18 has no CPU int4
kernel): on a CPU its row says so. Targets: int8 dynamic compiled >= 1.5x float compiled;
int8 / int4 weight-only weights <= 0.3x float bytes. Writes results/compress_quantize.json.

    benchmarks/.venv-bench/bin/python benchmarks/compress_quantize.py [--rounds 5] [--depth 2]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time

import torch

from common import RESULTS, interleaved, machine, median, paired_ratio

import anyformer as af
from anyformer.bench import save_json
from anyformer.errors import ConfigError

SCHEMES = ("int8-dynamic", "int8-weight", "int4-weight")
TIMED = ("int8-dynamic", "int8-weight")  # int4 joins them where it runs (CUDA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mixer", default="softmax")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=150.0, help="stop the timed rounds after this (>= 2 rounds)")
    args = parser.parse_args()
    if importlib.util.find_spec("torchao") is None:
        print("compress_quantize: torchao is not installed (pip install anyformer[compress]); skipped")
        sys.exit(0)
    from importlib.metadata import version

    from anyformer.nn.quantization import apply_quantization, linear_layers, storage_bytes

    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.time()
    torch.manual_seed(0)
    base = af.create("transformer", dim=args.dim, depth=args.depth, heads=args.dim // 64, max_len=args.length,
                     mixer=args.mixer).eval().to(dev)
    x = torch.randint(0, 256, (args.batch, args.length), generator=torch.Generator().manual_seed(1)).to(dev)
    with torch.no_grad():
        ref = base(x)
    float_bytes = sum(storage_bytes(layer.weight) for layer in linear_layers(base).values())
    models, rows = {"fp32": base}, {}
    for scheme in SCHEMES:
        model = copy.deepcopy(base)
        try:
            apply_quantization(model, {"default": scheme})
        except ConfigError as e:
            rows[scheme] = {"skipped": str(e)}
            print(f"{scheme}: {e}", flush=True)
            continue
        model.to(dev).eval()
        with torch.no_grad():
            err = float((model(x).float() - ref).abs().max() / ref.abs().max())
        q = sum(storage_bytes(layer.weight) for layer in linear_layers(model).values())
        rows[scheme] = {"weight_bytes": q, "float_weight_bytes": float_bytes, "size_ratio": q / float_bytes,
                        "max_rel_output_error": err}
        if scheme in TIMED or dev.type == "cuda":
            models[scheme] = model

    def runner(m: torch.nn.Module):
        def run() -> None:
            with torch.no_grad():
                m(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        return run

    runners, compile_s = {}, {}
    for name, model in models.items():
        runners[f"{name} eager"] = runner(model)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        runner(compiled)()
        compile_s[name] = time.perf_counter() - t0
        runners[f"{name} compiled"] = runner(compiled)
        print(f"{name}: compiled in {compile_s[name]:.1f} s", flush=True)
    times = interleaved(runners, rounds=args.rounds, warmup=1, budget_s=args.budget_s)
    for name in models:
        row = rows.setdefault(name, {})
        row.update({"eager_ms": 1e3 * median(times[f"{name} eager"]), "compiled_ms": 1e3 * median(times[f"{name} compiled"]),
                    "compile_s": compile_s[name]})
        if name != "fp32":
            row["speedup_eager_vs_fp32_eager"] = paired_ratio(times[f"{name} eager"], times["fp32 eager"])
            row["speedup_compiled_vs_fp32_compiled"] = paired_ratio(times[f"{name} compiled"], times["fp32 compiled"])
            row["speedup_compiled_vs_fp32_eager"] = paired_ratio(times[f"{name} compiled"], times["fp32 eager"])
    for name, row in rows.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    targets = {"int8_dynamic_compiled_speedup": rows["int8-dynamic"].get("speedup_compiled_vs_fp32_compiled"),
               "int8_dynamic_compiled_speedup_ge_1.5": (rows["int8-dynamic"].get("speedup_compiled_vs_fp32_compiled") or 0) >= 1.5,
               "int8_weight_size_ratio_le_0.3": rows["int8-weight"]["size_ratio"] <= 0.3,
               "int4_weight_size_ratio_le_0.3": (rows["int4-weight"]["size_ratio"] <= 0.3) if "size_ratio" in rows["int4-weight"] else None}
    report = {"suite": "compress_quantize", "machine": machine(), "device": str(dev), "torchao": version("torchao"),
              "model": {"preset": "transformer", "dim": args.dim, "depth": args.depth, "mixer": args.mixer,
                        "length": args.length, "batch": args.batch},
              "rounds": len(times["fp32 eager"]), "rows": rows, "targets": targets, "seconds": time.time() - start}
    save_json(report, RESULTS / "compress_quantize.json")
    print(f"targets {targets}; wrote {RESULTS / 'compress_quantize.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
