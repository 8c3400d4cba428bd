"""Suite (a): training-step throughput (forward + backward + AdamW step) of anyformer's
BERT-style encoder against x-transformers' Encoder and a plain nanoGPT-style SDPA model,
same dim / depth / heads / length / batch, run in one process, interleaved, as ratios.
Each model runs twice per round: in fp32 and under bf16 autocast (anyformer through
`anyformer.runtime.autocast`, the baselines through `torch.autocast`, the same thing), so
the bf16 ratios and what bf16 buys over fp32 come from the same rounds. A loss-parity run
then trains anyformer's model for a few hundred steps in fp32 and in bf16 from the same seed
on the same batches and reports the final-loss relative difference.

All three are pre-norm, bidirectional, 4x GELU MLP, learned positions, byte vocabulary (256)
with an untied output layer and a token-level cross-entropy loss. 2,048 tokens per step
(batch 8 x 256 or 2 x 1024), heads of 64 dims. Writes results/train_step.json.

    python benchmarks/train_step.py [--rounds 7] [--quick] [--parity-steps 300]
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
from anyformer.runtime import autocast, describe

try:
    from importlib.metadata import version as _version

    XT_VERSION: str | None = _version("x-transformers")
except Exception:  # noqa: BLE001 - the baseline is optional
    XT_VERSION = None

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


def make_step(model: torch.nn.Module, ids: torch.Tensor, targets: torch.Tensor, bf16: bool = False):
    """(step, loss): one forward + backward + AdamW step, in fp32 or under bf16 autocast
    (the logits are cast to fp32 before the loss, as the trainer does)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss() -> torch.Tensor:
        if not bf16:
            return F.cross_entropy(model(ids).reshape(-1, VOCAB), targets.reshape(-1))
        with autocast("cpu", "bf16"):
            logits = model(ids)
        return F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()

    return step, loss


def run_size(dim: int, length: int, rounds: int, budget_s: float, bf16: bool = True) -> dict:
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
    if bf16:
        # The same modules again under autocast (their own AdamW state): weights stay fp32,
        # so each model's fp32 and bf16 steps do the same work on the same parameters.
        for name in list(models):
            steps[f"{name}-bf16"], _ = make_step(models[name], ids, targets, bf16=True)
    times = interleaved(steps, rounds=rounds, warmup=1, budget_s=budget_s)
    roof = gemm_roof("cpu")
    roof_bf16 = gemm_roof("cpu", precision="bf16") if bf16 else None
    out = {"dim": dim, "length": length, "batch": batch, "heads": dim // 64, "depth": DEPTH, "models": {}}
    for name in steps:
        base = name.removesuffix("-bf16")
        t = median(times[name])
        r = roof_bf16 if name.endswith("-bf16") else roof
        out["models"][name] = {
            "step_ms_median": t * 1e3, "step_ms_all": [s * 1e3 for s in times[name]],
            "tokens_per_s": batch * length / t, "train_flops": flops[base],
            "mfu": flops[base] / t / r, "params": sum(p.numel() for p in models[base].parameters()),
        }
    baselines = [n for n in models if n != "anyformer"]
    ratios = {n: paired_ratio(times["anyformer"], times[n]) for n in baselines}
    out["speedup_vs"] = ratios  # > 1: anyformer is faster
    out["speedup_vs_best_baseline"] = min(ratios.values()) if ratios else None
    out["roof_flops_per_s"] = roof
    if bf16:
        a = times["anyformer-bf16"]
        out["bf16"] = {
            # anyformer bf16 against each baseline under the same autocast (> 1: anyformer faster)
            "speedup_vs": {n: paired_ratio(a, times[f"{n}-bf16"]) for n in baselines},
            # anyformer bf16 against every fp32 step, anyformer's own first: what autocast buys
            "speedup_vs_fp32": {n: paired_ratio(a, times[n]) for n in models},
            # each baseline's own bf16 / fp32 gain, for comparison
            "autocast_gain": {n: paired_ratio(times[f"{n}-bf16"], times[n]) for n in models},
            "roof_flops_per_s": roof_bf16,
        }
        out["bf16"]["speedup_vs_best_baseline"] = min(out["bf16"]["speedup_vs"].values()) if baselines else None
    return out


def loss_parity(dim: int, length: int, steps: int, lr: float = 1e-3, noise: float = 0.25) -> dict:
    """Train anyformer's model `steps` steps in fp32 and under bf16 autocast from one seed on
    the same batches. The task is learnt within ~50 steps and has a floor well above zero
    (each target is a fixed random permutation of its token; a fraction `noise` of the
    targets is random, so the best loss is ~1.94 nats), so a relative difference of final
    losses means something. 'final' is the mean of the last 10% of steps. (Predicting the
    previous token, which needs attention, is not learnt in a few hundred steps here.)"""
    batch = TOKENS_PER_STEP // length
    curves = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = anyformer_model(dim, length)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        data = torch.Generator().manual_seed(1)
        perm = torch.randperm(VOCAB, generator=data)
        losses = []
        for _ in range(steps):
            ids = torch.randint(0, VOCAB, (batch, length), generator=data)
            targets = perm[ids]
            flip = torch.rand(batch, length, generator=data) < noise
            targets = torch.where(flip, torch.randint(0, VOCAB, (batch, length), generator=data), targets)
            opt.zero_grad(set_to_none=True)
            with autocast("cpu", precision):
                logits = model(ids)
            loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        curves[precision] = losses
    tail = max(1, steps // 10)
    final = {p: sum(c[-tail:]) / tail for p, c in curves.items()}
    every = max(1, steps // 20)
    return {
        "dim": dim, "length": length, "batch": batch, "steps": steps, "lr": lr, "target_noise": noise,
        "final_loss": final, "final_over_last_steps": tail,
        "final_loss_rel_diff": (final["bf16"] - final["fp32"]) / final["fp32"],
        "max_curve_rel_diff": max(abs(b - a) / a for a, b in zip(curves["fp32"], curves["bf16"])),
        "first_loss": {p: c[0] for p, c in curves.items()},
        "curve_every": every, "curves": {p: c[::every] for p, c in curves.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of timed rounds per size")
    parser.add_argument("--quick", action="store_true", help="dim 256 / length 256 only, 3 rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 columns only")
    parser.add_argument("--parity-steps", type=int, default=300, help="steps of the bf16-vs-fp32 loss-parity run (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = SIZES[:1] if args.quick else SIZES
    rounds = 3 if args.quick else args.rounds
    start = time.time()
    roof_before = gemm_roof("cpu")
    roof_bf16 = None if args.no_bf16 else gemm_roof("cpu", precision="bf16")
    policy = describe("cpu", "auto")
    print(f"precision auto on this machine: {policy['precision']} ({policy['reason']}; flags {policy['cpu_flags']})", flush=True)
    results = []
    for dim, length in sizes:
        r = run_size(dim, length, rounds, args.budget, bf16=not args.no_bf16)
        results.append(r)
        cells = "  ".join(f"{n} {m['tokens_per_s']:,.0f} tok/s MFU {100 * m['mfu']:.0f}%" for n, m in r["models"].items())
        print(f"dim {dim} L {length} batch {r['batch']}: {cells}; anyformer speedup vs {r['speedup_vs']}"
              + (f"; bf16 {r['bf16']}" if "bf16" in r else ""), flush=True)
    parity = None
    if args.parity_steps and not args.no_bf16:
        dim, length = SIZES[0]
        parity = loss_parity(dim, length, args.parity_steps)
        print(f"loss parity dim {dim} L {length}, {args.parity_steps} steps: final fp32 {parity['final_loss']['fp32']:.4f} "
              f"bf16 {parity['final_loss']['bf16']:.4f} (rel diff {100 * parity['final_loss_rel_diff']:+.2f}%)", flush=True)
    report = {"suite": "train_step", "machine": {**machine(), "x_transformers": XT_VERSION}, "roof_flops_per_s": roof_before,
              "roof": "fp32 GEMM n=1024, best of 5", "roof_bf16_flops_per_s": roof_bf16, "roof_bf16": "bf16 GEMM n=1024, best of 5",
              "precision_auto": policy, "seconds": time.time() - start, "sizes": results, "loss_parity": parity}
    save_json(report, RESULTS / "train_step.json")
    print(f"wrote {RESULTS / 'train_step.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
