"""Suite (c): the CUDA path. anyformer's GPT-style model at dim 768 / depth 12 / 12 heads /
L 1024 (GPT-2 small shape), bf16 autocast, softmax attention through SDPA (the flash kernel
is required: the check fails if SDPA cannot use it), eager vs torch.compile, MFU against a
bf16 GEMM roof measured on the same GPU in the same run. Writes results/cuda_path.json.
Exits 0 with one line when no CUDA GPU is present.

    python benchmarks/cuda_path.py [--batch 8] [--length 1024] [--no-compile]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from common import RESULTS, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda_path: no CUDA GPU available to this torch build; skipped")
        sys.exit(0)

    import anyformer as af
    from anyformer.bench import gemm_roof, profile, save_json
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    start = time.time()
    heads = args.dim // 64
    model = af.create("gpt", dim=args.dim, depth=args.depth, heads=heads, max_len=args.length, vocab_size=50304)
    x = torch.randint(0, 50304, (args.batch, args.length), device=dev)
    roof = gemm_roof(dev)
    report = {"suite": "cuda_path", "machine": machine(), "roof_bf16_flops_per_s": roof,
              "shape": {"dim": args.dim, "depth": args.depth, "heads": heads, "length": args.length, "batch": args.batch}}
    # Only the flash kernel is allowed: a silent fallback to the math kernel would fail here.
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        report["eager"] = profile(model, x, device=dev, repeats=args.repeats, warmup=3)
        if not args.no_compile:
            report["compiled"] = profile(model, x, device=dev, repeats=args.repeats, warmup=3, compile=True,
                                         memory=False)
    for mode in ("eager", "compiled"):
        if mode in report:
            fb = report[mode]["forward_backward"]
            print(f"{mode}: fwd+bwd {fb['median_ms']:.1f} ms, {fb['tokens_per_s']:,.0f} tokens/s, "
                  f"MFU {100 * fb['mfu']:.1f}% of {roof / 1e12:.0f} TFLOP/s bf16"
                  + (f", compile {report[mode].get('compile_s', 0):.0f} s" if mode == "compiled" else ""))
    if "compiled" in report:
        report["compile_speedup"] = report["eager"]["forward_backward"]["median_ms"] / report["compiled"]["forward_backward"]["median_ms"]
    report["seconds"] = time.time() - start
    save_json(report, RESULTS / "cuda_path.json")
    print(f"wrote {RESULTS / 'cuda_path.json'}")


if __name__ == "__main__":
    main()
