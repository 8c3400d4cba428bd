"""Suite (b): every registered token mixer, forward + backward time and peak memory vs
sequence length L (256 .. 16k), batch 1, dim 256, 4 heads of 64. At each length all mixers
still in the race run interleaved (A B C A B C ...); a mixer leaves the race once one step
takes more than --max-step seconds or fails (out of memory, length limits). Checks that
mixers declaring `complexity = "L"` scale linearly (time(8k) / time(4k) <= 2.2) and beat
softmax attention from L = 2k up. Writes results/mixer_scaling.json and results/mixer_scaling.png.

    python benchmarks/mixer_scaling.py [--max-len 16384] [--max-step 3] [--budget 900]
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from common import RESULTS, interleaved, machine, median

import anyformer as af
from anyformer import registry
from anyformer.bench import crossover, peak_bytes, plot_sweeps, save_json
from anyformer.bench.scaling import sweep_times

DIM, HEADS = 256, 4


def grid_for(L: int) -> tuple[int, int]:
    h = 2 ** (int(math.log2(L)) // 2)
    return h, L // h


# Options a mixer needs to fit the power-of-two grids above (Swin's default window 7 divides none).
OPTIONS = {"window": {"window": 8}}


def build(name: str, L: int) -> torch.nn.Module:
    cls = registry.get("mixer", name)
    grid = grid_for(L) if getattr(cls, "needs_grid", False) or getattr(cls, "accepts_grid", False) else None
    return af.build("mixer", name, dim=DIM, heads=HEADS, max_len=L, grid=grid, **OPTIONS.get(name, {}))


def step_fn(mixer: torch.nn.Module, x: torch.Tensor):
    def step() -> None:
        mixer.zero_grad(set_to_none=True)
        x.grad = None
        mixer(x, None).float().mean().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-len", type=int, default=16384)
    parser.add_argument("--max-step", type=float, default=3.0, help="drop a mixer after a step this slow (s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=900.0, help="stop starting new lengths after this (s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixers", default="", help="comma-separated subset (default: every registered mixer)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.mixers.split(",") if n] or registry.list_components("mixer")
    lengths = [L for L in (256, 512, 1024, 2048, 4096, 8192, 16384) if L <= args.max_len]
    sweeps = {n: {"rows": [], "failure": None, "stopped": None, "largest_ok": None} for n in names}
    alive = list(names)
    start = time.time()
    for L in lengths:
        if not alive:
            break
        if time.time() - start > args.budget:
            for n in alive:
                sweeps[n]["stopped"] = f"total budget {args.budget:.0f} s spent before length {L}"
            break
        x = torch.randn(1, L, DIM, requires_grad=True)
        steps, mixers = {}, {}
        for n in list(alive):
            try:
                torch.manual_seed(0)
                mixers[n] = build(n, L).train()
                steps[n] = step_fn(mixers[n], x)
                steps[n]()  # fails here rather than inside the timed rounds
            except Exception as err:  # noqa: BLE001 - recorded, the mixer leaves the race
                sweeps[n]["failure"] = {"length": L, "kind": type(err).__name__, "message": str(err).splitlines()[0][:300]}
                sweeps[n]["stopped"] = f"failed at length {L}"
                alive.remove(n)
                steps.pop(n, None)
        times = interleaved(steps, rounds=args.rounds, warmup=0)
        for n in steps:
            t = median(times[n])
            mem = peak_bytes(steps[n], torch.device("cpu"))
            sweeps[n]["rows"].append({"length": L, "forward_backward": {"median_ms": t * 1e3, "all_ms": [s * 1e3 for s in times[n]]},
                                      "memory": {"train_step_peak_bytes": mem}})
            sweeps[n]["largest_ok"] = L
            if t > args.max_step and L != lengths[-1]:
                sweeps[n]["stopped"] = f"one step took {t:.1f} s at length {L} (> {args.max_step} s); longer lengths skipped"
                alive.remove(n)
        print(f"L={L}: " + ", ".join(f"{n} {median(times[n]) * 1e3:.1f} ms" for n in steps), flush=True)
        del mixers, steps
    times = sweep_times(sweeps)
    cross = crossover(times, baseline="softmax") if "softmax" in times else {}
    checks = {}
    for n in names:
        if getattr(registry.get("mixer", n), "complexity", "") != "L":
            continue
        t = times[n]
        ratio = t[8192] / t[4096] if t.get(8192) and t.get(4096) else None
        soft = times.get("softmax", {})
        beats = [L for L in t if L >= 2048 and t[L] is not None]
        checks[n] = {"time_8k_over_4k": ratio, "scales_linearly": ratio is not None and ratio <= 2.2,
                     "beats_softmax_from_2k": bool(beats) and all(soft.get(L) is None or t[L] < soft[L] for L in beats)}
    report = {"suite": "mixer_scaling", "machine": machine(), "dim": DIM, "heads": HEADS, "batch": 1,
              "seconds": time.time() - start, "crossover_vs_softmax": cross, "linear_checks": checks,
              "complexity": {n: getattr(registry.get("mixer", n), "complexity", "") for n in names}, "mixers": sweeps}
    save_json(report, RESULTS / "mixer_scaling.json")
    plot_sweeps(sweeps, RESULTS / "mixer_scaling.png", title=f"mixers, fwd+bwd, batch 1, dim {DIM}, CPU")
    print(f"crossover vs softmax: {cross}\nlinear checks: {checks}\nwrote {RESULTS / 'mixer_scaling.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
