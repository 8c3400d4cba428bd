"""Suite (a): training-step throughput (forward + backward + AdamW step) of anyformer's
BERT-style encoder against x-transformers' Encoder and a plain nanoGPT-style SDPA model,
same dim / depth / heads / length / batch, run in one process, interleaved, as ratios.

All three are pre-norm, bidirectional, 4x GELU MLP, learned positions, byte vocabulary (256)
with an untied output layer and a token-level cross-entropy loss. 2,048 tokens per step
(batch 8 x 256 or 2 x 1024), heads of 64 dims. Writes results/train_step.json.

    python benchmarks/train_step.py [--rounds 7] [--quick]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import RESULTS, interleaved, machine, median, paired_ratio
from nanogpt_baseline import NanoGPT

import anyformer as af
from anyformer.bench import count_flops, gemm_roof, save_json

VOCAB, DEPTH, TOKENS_PER_STEP = 256, 4, 2048
SIZES = [(256, 256), (256, 1024), (512, 256), (512, 1024)]  # (dim, length)


def anyformer_model(dim: int, length: int) -> torch.nn.Module:
    return af.create({
        "dim": dim, "depth": DEPTH, "heads": dim // 64, "max_len": length, "mixer": "softmax",
        "ffn": {"name": "mlp", "ratio": 4, "activation": "gelu"}, "norm": {"name": "layernorm", "placement": "pre"},
        "position": "learned", "encoder": {"name": "tokens", "vocab_size": VOCAB},
        "head": {"name": "lm", "vocab_size": VOCAB, "tie": False},
    })


def xtransformers_model(dim: int, length: int) -> torch.nn.Module | None:
    try:
        from x_transformers import Encoder, TransformerWrapper
    except ImportError:
        return None
    return TransformerWrapper(num_tokens=VOCAB, max_seq_len=length,
                              attn_layers=Encoder(dim=dim, depth=DEPTH, heads=dim // 64, attn_flash=True))


def make_step(model: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss() -> torch.Tensor:
        return F.cross_entropy(model(ids).reshape(-1, VOCAB), targets.reshape(-1))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step, loss


def run_size(dim: int, length: int, rounds: int, budget_s: float) -> dict:
    torch.manual_seed(0)
    batch = TOKENS_PER_STEP // length
    ids = torch.randint(0, VOCAB, (batch, length))
    targets = torch.randint(0, VOCAB, (batch, length))
    models = {"anyformer": anyformer_model(dim, length), "x-transformers": xtransformers_model(dim, length),
              "nanogpt-sdpa": NanoGPT(VOCAB, length, dim, DEPTH, dim // 64)}
    models = {k: m for k, m in models.items() if m is not None}
    steps, flops = {}, {}
    for name, model in models.items():
        model.train()
        steps[name], loss = make_step(model, ids, targets)
        flops[name] = count_flops(lambda: loss().backward())[0]
        model.zero_grad(set_to_none=True)
    times = interleaved(steps, rounds=rounds, warmup=1, budget_s=budget_s)
    roof = gemm_roof("cpu")
    out = {"dim": dim, "length": length, "batch": batch, "heads": dim // 64, "depth": DEPTH, "models": {}}
    for name in models:
        t = median(times[name])
        out["models"][name] = {
            "step_ms_median": t * 1e3, "step_ms_all": [s * 1e3 for s in times[name]],
            "tokens_per_s": batch * length / t, "train_flops": flops[name],
            "mfu": flops[name] / t / roof, "params": sum(p.numel() for p in models[name].parameters()),
        }
    baselines = [n for n in models if n != "anyformer"]
    ratios = {n: paired_ratio(times["anyformer"], times[n]) for n in baselines}
    out["speedup_vs"] = ratios  # > 1: anyformer is faster
    out["speedup_vs_best_baseline"] = min(ratios.values()) if ratios else None
    out["roof_flops_per_s"] = roof
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of timed rounds per size")
    parser.add_argument("--quick", action="store_true", help="dim 256 / length 256 only, 3 rounds")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES[:1] if args.quick else SIZES
    rounds = 3 if args.quick else args.rounds
    start = time.time()
    roof_before = gemm_roof("cpu")
    results = []
    for dim, length in sizes:
        r = run_size(dim, length, rounds, args.budget)
        results.append(r)
        cells = "  ".join(f"{n} {m['tokens_per_s']:,.0f} tok/s MFU {100 * m['mfu']:.0f}%" for n, m in r["models"].items())
        print(f"dim {dim} L {length} batch {r['batch']}: {cells}; anyformer speedup vs {r['speedup_vs']}", flush=True)
    report = {"suite": "train_step", "machine": machine(), "roof_flops_per_s": roof_before,
              "roof": "fp32 GEMM n=1024, best of 5", "seconds": time.time() - start, "sizes": results}
    save_json(report, RESULTS / "train_step.json")
    print(f"wrote {RESULTS / 'train_step.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
