"""torch.compile on this machine: eager vs compiled forward+backward of the default presets
(what `anyformer bench MODEL --compile` measures), the compiled model timed after its first
(compiling) call. Writes results/compile.json.

    python benchmarks/compile_speedup.py [--models gpt,bert] [--length 256] [--batch 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from common import RESULTS, machine

import anyformer as af
from anyformer.bench import profile, save_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt,bert")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    rows = []
    for name in args.models.split(","):
        model = af.create(name, max_len=args.length)
        x = torch.randint(0, 256, (args.batch, args.length))
        eager = profile(model, x, repeats=args.repeats, warmup=1, memory=False, flops=False)
        compiled = profile(model, x, repeats=args.repeats, warmup=1, memory=False, flops=False, compile=True)
        e, c = eager["forward_backward"]["median_ms"], compiled["forward_backward"]["median_ms"]
        rows.append({"model": name, "length": args.length, "batch": args.batch, "eager_ms": e, "compiled_ms": c,
                     "speedup": e / c, "compile_s": compiled["compile_s"],
                     "eager_forward_ms": eager["forward"]["median_ms"], "compiled_forward_ms": compiled["forward"]["median_ms"]})
        print(f"{name}: eager {e:.1f} ms, compiled {c:.1f} ms ({e / c:.2f}x), compile {compiled['compile_s']:.0f} s", flush=True)
    save_json({"suite": "compile", "machine": machine(), "seconds": time.time() - start, "rows": rows}, RESULTS / "compile.json")


if __name__ == "__main__":
    main()
