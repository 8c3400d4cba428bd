"""torch.compile on this machine: eager vs compiled forward+backward of the default presets
(what `anyformer bench MODEL --compile` measures). The compiled copy is timed after its
first (compiling) call; then eager and compiled steps alternate in one process and the
speedup is the median of per-round ratios. Writes results/compile.json.

    python benchmarks/compile_speedup.py [--models gpt,bert] [--length 256] [--batch 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from common import RESULTS, interleaved, machine, median, paired_ratio

import anyformer as af
from anyformer.bench import save_json
from anyformer.bench.profiler import scalar_loss


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
        model = af.create(name, max_len=args.length).train()
        compiled = torch.compile(model)
        x = torch.randint(0, 256, (args.batch, args.length))

        def step(m):
            def run() -> None:
                model.zero_grad(set_to_none=True)
                scalar_loss(m(x)).backward()
            return run

        t0 = time.perf_counter()
        step(compiled)()
        compile_s = time.perf_counter() - t0
        times = interleaved({"eager": step(model), "compiled": step(compiled)}, rounds=args.repeats, warmup=1)
        e, c = median(times["eager"]) * 1e3, median(times["compiled"]) * 1e3
        speedup = paired_ratio(times["compiled"], times["eager"])
        rows.append({"model": name, "length": args.length, "batch": args.batch, "eager_ms": e, "compiled_ms": c,
                     "speedup": speedup, "compile_s": compile_s})
        print(f"{name}: eager {e:.1f} ms, compiled {c:.1f} ms (speedup {speedup:.2f}x), compile {compile_s:.0f} s", flush=True)
    save_json({"suite": "compile", "machine": machine(), "seconds": time.time() - start, "rows": rows}, RESULTS / "compile.json")


if __name__ == "__main__":
    main()
