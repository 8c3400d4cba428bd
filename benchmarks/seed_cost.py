"""What K seeds of a small model cost: K = 3 seeds trained one after another, side by side in
three one-thread processes (compare's path on a CPU), and folded into the tensors of one module (`anyformer.nn.seeds.stack_seeds`:
stacked weights [K, out, in] through torch.bmm, K x heads in one SDPA call, per-seed
LayerNorm affine, patch embedding, [CLS] token and positions).

One training step = forward + backward + AdamW step, plain ViT (preset `vit`, depth 4,
4 heads) on the digits shape [64, 1, 8, 8] (patch 2, 17 tokens, 10 classes), dim 64 and
128, each seed its own batch. Five runners per dim, interleaved (A B C D E A B ...):
sequential K=1 (one model), sequential K=3 (three models, stepped one after another),
stacked K=1, stacked K=3, side by side K=3 (one step of each of three one-thread worker
processes at once, timed until the last ends). Reported: K=3 / K=1 step-time ratios (median of
per-round ratios) for each path, and the stacked K=3 step against one plain model's step.
Writes results/seed_cost.json and the "Seeds folded into the tensors" section of
benchmarks/README.md.

    python benchmarks/seed_cost.py [--rounds 40] [--threads 2] [--no-readme]
"""
from __future__ import annotations

import argparse
import multiprocessing
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import RESULTS, interleaved, machine, median, paired_ratio

import anyformer as af
from anyformer.bench import save_json
from anyformer.nn.seeds import stack_seeds

BATCH, CLASSES, K = 64, 10, 3
DIMS = (64, 128)
ENCODER = {"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1, "cls_token": True}
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- seed_cost:begin -->", "<!-- seed_cost:end -->"


def vit(dim: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return af.create("vit", dim=dim, encoder=ENCODER, head={"name": "cls", "num_classes": CLASSES})


def sequential_step(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor):
    """Each model with its own AdamW, stepped one after another on its own batch x[k]."""
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in models]

    def step() -> None:
        for m, opt, xk, yk in zip(models, opts, x, y):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xk), yk).backward()
            opt.step()

    return step


def stacked_step(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor):
    """One stacked module, one AdamW, loss = sum of per-seed mean cross-entropies."""
    stacked = stack_seeds(models)
    opt = torch.optim.AdamW(stacked.parameters(), lr=1e-3)
    k = x.shape[0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = stacked(x)
        # sum over seeds of each seed's mean loss (the gradients each model gets alone)
        loss = F.cross_entropy(out.reshape(-1, CLASSES), y.reshape(-1), reduction="sum") / y.shape[1]
        loss.backward()
        opt.step()

    assert k == len(models)
    return step


def _side_worker(dim: int, seed: int, conn) -> None:
    """One seed in its own one-thread process: a training step per 'step' message."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(dim + seed)
    x, y = torch.randn(1, BATCH, 1, 8, 8, generator=gen), torch.randint(0, CLASSES, (1, BATCH), generator=gen)
    step = sequential_step([vit(dim, seed)], x, y)
    while conn.recv() == "step":
        step()
        conn.send(None)


class SideBySide:
    """K one-thread processes, one seed each, stepping at the same time (what `compare`
    does with `--seed-workers`): a call is one step of every seed, timed until the last ends."""

    def __init__(self, dim: int, k: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for seed in range(k):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_side_worker, args=(dim, seed, child), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def __call__(self) -> None:
        for c in self.conns:
            c.send("step")
        for c in self.conns:
            c.recv()

    def close(self) -> None:
        for c in self.conns:
            c.send("stop")
        for p in self.procs:
            p.join()


def run_dim(dim: int, rounds: int, budget_s: float) -> dict:
    gen = torch.Generator().manual_seed(dim)
    x = torch.randn(K, BATCH, 1, 8, 8, generator=gen)
    y = torch.randint(0, CLASSES, (K, BATCH), generator=gen)
    runners = {
        "sequential K=1": sequential_step([vit(dim, 0)], x[:1], y[:1]),
        "sequential K=3": sequential_step([vit(dim, s) for s in range(K)], x, y),
        "stacked K=1": stacked_step([vit(dim, 0)], x[:1], y[:1]),
        "stacked K=3": stacked_step([vit(dim, s) for s in range(K)], x, y),
        "side by side K=3": SideBySide(dim, K),
    }
    try:
        times = interleaved(runners, rounds=rounds, warmup=3, budget_s=budget_s)
    finally:
        runners["side by side K=3"].close()
    out = {"dim": dim, "batch": BATCH, "seeds": K, "rounds": len(times["stacked K=3"]),
           "step_ms_median": {n: median(t) * 1e3 for n, t in times.items()},
           "step_ms_all": {n: [s * 1e3 for s in t] for n, t in times.items()},
           "params_per_seed": sum(p.numel() for p in vit(dim, 0).parameters())}
    # paired_ratio(a, b) = median of b / a per round
    out["ratio_sequential"] = paired_ratio(times["sequential K=1"], times["sequential K=3"])
    out["ratio_stacked"] = paired_ratio(times["stacked K=1"], times["stacked K=3"])
    out["stacked_k3_vs_one_model"] = paired_ratio(times["sequential K=1"], times["stacked K=3"])
    out["stacked_k1_vs_one_model"] = paired_ratio(times["sequential K=1"], times["stacked K=1"])
    out["stacked_speedup_k3"] = paired_ratio(times["stacked K=3"], times["sequential K=3"])
    out["ratio_side_by_side"] = paired_ratio(times["sequential K=1"], times["side by side K=3"])
    return out


def section(report: dict) -> str:
    m = report["machine"]
    lines = [
        BEGIN,
        "### Seeds folded into the tensors (`seed_cost.py`)",
        "",
        f"torch {m['torch']}, {m['threads']} threads, {m['cpu_count']}-core CPU. One training step (forward + backward + "
        f"AdamW) of the plain ViT (depth 4, 4 heads) on digits-shaped batches [{BATCH}, 1, 8, 8] (17 tokens), each seed "
        "its own batch; sequential = K separate models stepped one after another, stacked = `anyformer.nn.seeds."
        "stack_seeds` (one module, weights [K, ...]). Ratios are medians of per-round ratios over interleaved rounds.",
        "",
        "| dim | rounds | sequential K=1 ms | sequential K=3 ms | stacked K=1 ms | stacked K=3 ms | sequential K=3/K=1 | "
        "stacked K=3/K=1 | stacked K=3 / one model | side by side K=3 ms | side by side K=3/K=1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["dims"]:
        t = r["step_ms_median"]
        lines.append(
            f"| {r['dim']} | {r['rounds']} | {t['sequential K=1']:.1f} | {t['sequential K=3']:.1f} | {t['stacked K=1']:.1f} | "
            f"{t['stacked K=3']:.1f} | {r['ratio_sequential']:.2f}x | {r['ratio_stacked']:.2f}x | "
            f"{r['stacked_k3_vs_one_model']:.2f}x | {t['side by side K=3']:.1f} | {r['ratio_side_by_side']:.2f}x |")
    lines += ["", "Target: K=3/K=1 <= 2.0x. K=1 is one model on all threads; side by side = three one-thread "
              "processes, one seed each, stepping at once on the 2 cores (`compare --seeds K` runs min(K, cores) such "
              "processes, so on 2 cores its K=3 is two seeds together, then one: ~2.3x by the sequential and "
              "two-process steps measured here).", "",
              EXPLANATION.strip(), END]
    return "\n".join(lines)


EXPLANATION = """
Reading. Folding the seeds into the tensors does not pay at batch 64 on a 2-core CPU:
the step is not overhead-bound. A torch.profiler trace of one dim-64 step puts ~40% in
mm/addmm and ~25% in the CPU flash-attention kernel, AdamW ~12%; both big parts scale
linearly with K when stacked (a [3, 1088, 64] x [3, 64, 256] bmm costs ~3.5x one seed's
mm; SDPA over 3 x 64 sequences ~3.4x 64 of them). What stacking removes (per-tensor AdamW
updates, dispatch of the small ops) is the ~15% rest, and bmm's lower throughput on these
shapes gives it back. What does pay is the other lever: a small model's kernels are too
short for two intra-op threads to help (one thread runs the dim-64 step about as fast as
two), so three one-thread processes, one seed each, use the cores that one model leaves
idle. `compare --seeds K` therefore trains a model's seeds side by side on a CPU
(`anyformer.train.side_by_side`, one spawned process per seed up to the cores, kept for
the whole job; `--seed-workers 1` for one after another), each seed the same run it
would be alone (tests/test_compare_seeds.py checks bitwise-equal summaries). A kernel lever
was checked and dropped: an explicit softmax(q k^T) v is not faster than SDPA's CPU
kernel for training (forward + backward, L 8..257, batch 64, 4 heads: SDPA 1.6-5x faster;
forward alone they tie at L = 17), so there is no small-L fast path. The stacked module
stays as a measured, exact reference: `tests/nn/test_seeds.py` checks outputs and gradients
against the K separate models in float64 (< 1e-10) and that one AdamW over the stacked
parameters follows K separate optimizers. For comparison (issue 11): `vmap` over stacked
copies 3.97x.

Which families batch. Side by side: every family, since each process trains an ordinary
model (its cost is memory, K copies, and on a model big enough to keep both cores busy it
gains nothing). Stacked into one module: the rule is that every parameter gets a leading
seed axis and the forward must be expressible as the same ops on tensors with that axis (bmm / broadcasting),
with no data-dependent control flow that differs by seed.
- Extends directly: every mixer whose weights are linears and whose core is weight-free or
  elementwise: softmax with any mask / causal / ALiBi or rotary positions (a bias or
  rotation shared by seeds, or stacked per seed), linear attention, performer (its random
  features stack as [K, ...] buffers), local / window / sliced attention, FNet (no weights),
  GFNet / spectral filters (per-seed complex weights broadcast over the batch); GLU / relu2
  / silu FFNs; RMSNorm (normalise, then per-seed scale); learned / sinusoidal positions;
  tokens encoders (an embedding lookup per seed = index_select into a [K, V, D] table with
  seed offsets); mean / last / LM heads; shared-weight schedules (share / repeat) and
  dropped or pruned layers (structure shared by all seeds).
- Needs more than stacking, but possible: dropout and stochastic depth (fine, but the
  random masks differ from K separate runs, so no bit-equality); conv stems and conv FFNs
  (grouped convolution with groups = K); BatchNorm / PrepBN (statistics per seed: reshape
  to [B, K*C] channels); transitions (Informer distilling: a conv, grouped by seed).
- Does not fit: MoE routing (each seed's router sends different tokens to different
  experts; the stacked form needs per-seed top-k gathers and scatters with ragged expert
  loads, i.e. a grouped-GEMM kernel, or the dense all-experts path, which costs the
  sparsity); probsparse (Informer) picks its top-u queries from data-dependent scores, so
  the selected set differs by seed and sample; mixers that call modules with their own
  parameters inside forward, or draw per-call randomness or sub-networks (SSA's sampled
  sub-networks and self-ensembled eval passes; gated / sparse mixers such as SeqBoat,
  not checked one by one here); archs with data-dependent or per-modality paths (MoT's
  modality routing). Those keep the sequential (or one process per seed) path. Staged
  archs (multistage, hierarchy, NesT) stack in principle but need their own code.
"""


def write_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN in readme and END in readme:
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: text, readme, flags=re.S)
    else:
        readme = readme.rstrip("\n") + "\n\n## Seeds cost little (issue 11 item 7)\n\n" + text + "\n"
    README.write_text(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds per dim")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-readme", action="store_true", help="print only; leave README.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    dims = []
    for dim in DIMS:
        r = run_dim(dim, args.rounds, args.budget)
        dims.append(r)
        t = r["step_ms_median"]
        print(f"dim {dim}: " + ", ".join(f"{n} {v:.2f} ms" for n, v in t.items())
              + f"; K=3/K=1 sequential {r['ratio_sequential']:.2f}x, stacked {r['ratio_stacked']:.2f}x; "
              f"stacked K=3 / one model {r['stacked_k3_vs_one_model']:.2f}x; side by side {r['ratio_side_by_side']:.2f}x ({r['rounds']} rounds)", flush=True)
    report = {"suite": "seed_cost", "machine": machine(), "seconds": time.time() - start, "dims": dims}
    save_json(report, RESULTS / "seed_cost.json")
    if not args.no_readme:
        write_readme(section(report))
        print(f"updated {README}")
    print(f"wrote {RESULTS / 'seed_cost.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
