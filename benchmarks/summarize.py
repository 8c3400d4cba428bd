"""Regenerate the results section of benchmarks/README.md from results/*.json (between the
<!-- results --> markers; the text around them is kept)."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def train_step_section(r: dict) -> list[str]:
    m = r["machine"]
    lines = [f"### (a) Training step: anyformer vs x-transformers vs nanoGPT-style SDPA",
             "", f"torch {m['torch']}, {m['threads']} threads, {m['cpu_count']}-core CPU; roof {r['roof']} = "
             f"{r['roof_flops_per_s'] / 1e9:.0f} GFLOP/s. Step = forward + backward + AdamW, 2,048 tokens, depth 4, "
             "heads of 64. Speedup = median over interleaved rounds of baseline time / anyformer time (> 1: anyformer faster).", "",
             "| dim | L x batch | anyformer tok/s (MFU) | x-transformers tok/s (MFU) | nanoGPT-SDPA tok/s (MFU) | vs x-transformers | vs nanoGPT | vs best |",
             "|---|---|---|---|---|---|---|---|"]
    for s in r["sizes"]:
        cell = {n: f"{m['tokens_per_s']:,.0f} ({100 * m['mfu']:.0f}%)" for n, m in s["models"].items()}
        sp = s["speedup_vs"]
        lines.append(f"| {s['dim']} | {s['length']} x {s['batch']} | {cell.get('anyformer', '-')} | {cell.get('x-transformers', '-')} | "
                     f"{cell.get('nanogpt-sdpa', '-')} | {fmt(sp.get('x-transformers'))}x | {fmt(sp.get('nanogpt-sdpa'))}x | "
                     f"{fmt(s['speedup_vs_best_baseline'])}x |")
    if any("bf16" in s for s in r["sizes"]):
        lines += ["", f"bf16 autocast, the same models in the same interleaved rounds; MFU against a bf16 GEMM roof "
                  f"({r['roof_bf16_flops_per_s'] / 1e9:.0f} GFLOP/s, n=1024). `auto` precision on this machine: "
                  f"{r['precision_auto']['precision']} ({r['precision_auto']['reason']}).", "",
                  "| dim | L x batch | anyformer bf16 tok/s (MFU) | x-transformers bf16 tok/s | nanoGPT-SDPA bf16 tok/s | "
                  "vs x-transformers bf16 | vs nanoGPT bf16 | anyformer bf16 / fp32 | vs best fp32 baseline |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in r["sizes"]:
            if "bf16" not in s:
                continue
            m, b = s["models"], s["bf16"]
            tok = lambda n: f"{m[n]['tokens_per_s']:,.0f}" if n in m else "-"  # noqa: E731
            fp32_base = [v for n, v in b["speedup_vs_fp32"].items() if n != "anyformer"]
            lines.append(f"| {s['dim']} | {s['length']} x {s['batch']} | {tok('anyformer-bf16')} ({100 * m['anyformer-bf16']['mfu']:.0f}%) | "
                         f"{tok('x-transformers-bf16')} | {tok('nanogpt-sdpa-bf16')} | {fmt(b['speedup_vs'].get('x-transformers'))}x | "
                         f"{fmt(b['speedup_vs'].get('nanogpt-sdpa'))}x | {fmt(b['speedup_vs_fp32']['anyformer'])}x | "
                         f"{fmt(min(fp32_base) if fp32_base else None)}x |")
    lp = r.get("loss_parity")
    if lp:
        lines += ["", f"Loss parity (anyformer, dim {lp['dim']}, L {lp['length']} x {lp['batch']}, {lp['steps']} AdamW steps at lr "
                  f"{lp['lr']:g}, same seed and batches; targets a fixed permutation of the tokens with {100 * lp['target_noise']:.0f}% random "
                  f"labels, floor ~1.94 nats): final loss (mean of the last {lp['final_over_last_steps']} steps) fp32 "
                  f"{lp['final_loss']['fp32']:.4f}, bf16 {lp['final_loss']['bf16']:.4f}, relative difference "
                  f"{100 * lp['final_loss_rel_diff']:+.2f}%; largest per-step difference {100 * lp['max_curve_rel_diff']:.1f}%."]
    return lines


def mixer_section(r: dict) -> list[str]:
    lengths = sorted({row["length"] for sw in r["mixers"].values() for row in sw["rows"]})
    lines = [f"### (b) Mixer scaling: forward + backward of one mixer, batch 1, dim {r['dim']}, {r['heads']} heads",
             "", "Median ms per step (peak MiB of the step's tensors); '-' = not run (dropped after a step over the cap, or failed).", "",
             "| mixer | complexity | " + " | ".join(f"L={L}" for L in lengths) + " | crossover vs softmax | stopped |",
             "|---|---|" + "---|" * len(lengths) + "---|---|"]
    for name, sw in r["mixers"].items():
        by_len = {row["length"]: row for row in sw["rows"]}
        cells = []
        for L in lengths:
            row = by_len.get(L)
            cells.append("-" if row is None else
                         f"{row['forward_backward']['median_ms']:.1f} ({row['memory']['train_step_peak_bytes'] / 2**20:.0f})")
        cross = r["crossover_vs_softmax"].get(name)
        stop = (sw.get("stopped") or "").replace("|", "/")
        lines.append(f"| {name} | {r['complexity'].get(name, '')} | " + " | ".join(cells)
                     + f" | {'-' if name == 'softmax' else (cross or 'never')} | {stop} |")
    if r.get("linear_checks"):
        lines += ["", "Linear-complexity checks: " + "; ".join(
            f"{n}: time(8k)/time(4k) = {fmt(c['time_8k_over_4k'])} ({'ok' if c['scales_linearly'] else 'FAIL'}), "
            f"faster than softmax from 2k: {'yes' if c['beats_softmax_from_2k'] else 'NO'}" for n, c in r["linear_checks"].items())]
    lines += ["", "![mixer scaling](results/mixer_scaling.png)"]
    return lines


def coverage_section(r: dict) -> list[str]:
    lines = [f"### FLOP counter coverage (forward, L = {r['length']}, dim {r['dim']})", "",
             "| mixer | stock FlopCounterMode GFLOP | anyformer counter GFLOP | projections alone | core invisible to stock? | still uncounted ops |",
             "|---|---|---|---|---|---|"]
    for name, row in r["mixers"].items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error']} | | | | |")
            continue
        lines.append(f"| {name} | {row['stock_flops'] / 1e9:.3f} | {row['anyformer_flops'] / 1e9:.3f} | {row['projection_flops'] / 1e9:.3f} | "
                     f"{'yes' if row['core_invisible_to_stock'] else 'no'} | {', '.join(row['uncounted_heavy_ops']) or '-'} |")
    return lines


def compile_section(r: dict) -> list[str]:
    lines = ["### torch.compile (`anyformer bench --compile`)", "", "| model | L x batch | eager fwd+bwd ms | compiled fwd+bwd ms | speedup | compile s |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['length']} x {row['batch']} | {row['eager_ms']:.1f} | {row['compiled_ms']:.1f} | "
                     f"{row['speedup']:.2f}x | {row['compile_s']:.0f} |")
    return lines


def cuda_section(r: dict) -> list[str]:
    lines = ["### (c) CUDA path", ""]
    for mode in ("eager", "compiled"):
        if mode in r:
            fb = r[mode]["forward_backward"]
            lines.append(f"- {mode}: {fb['tokens_per_s']:,.0f} tokens/s, MFU {100 * fb['mfu']:.1f}% of the bf16 roof "
                         f"{r['roof_bf16_flops_per_s'] / 1e12:.0f} TFLOP/s ({r['machine']['cuda']})")
    return lines


def decode_section(r: dict) -> list[str]:
    m, t = r["machine"], r["targets"]
    names = list(r["rows"][0]["ms_per_token"])
    lines = ["### Decoding: time per token against context length (`decode.py`)", "",
             f"gpt dim {r['dim']}, depth {r['depth']}, {r['heads']} heads, vocabulary {r['vocab']:,} ({r['params'] / 1e6:.1f} M parameters), "
             f"torch {m['torch']}, {m['threads']} threads; median of {r['rounds']} interleaved rounds of {r['tokens']} greedy steps after "
             f"the prompt. Weight-read bound at batch 1: {r['weight_read_bound_ms']:.2f} ms/token "
             f"(parameters x 4 bytes / {r['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s measured copy bandwidth).", "",
             "| batch | context | " + " | ".join(f"{n} ms/token" for n in names) + " | transformers `generate` ms/token |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for row in r["rows"]:
        cells = " | ".join(f"{row['ms_per_token'][n]:.2f}" for n in names)
        lines.append(f"| {row['batch']} | {row['context']:,} | {cells} | {fmt(row.get('hf_generate_ms_per_token'))} |")
    lines += ["", f"Targets at batch 1: softmax vs transformers >= 1.0x at every length: min {fmt(t['softmax_vs_transformers_min'])}x; "
              f"linear time at the longest / shortest context <= 1.3: {fmt(t['linear_flatness'])}; linear faster than softmax "
              f"from 2k: {'yes' if t['linear_faster_from_2k'] else 'no'}."]
    return lines


def quantize_section(r: dict) -> list[str]:
    m, t = r["machine"], r["targets"]
    mod = r["model"]
    lines = ["### Quantization with torchao (`compress_quantize.py`)", "",
             f"{mod['preset']} dim {mod['dim']}, depth {mod['depth']}, L {mod['length']} x batch {mod['batch']}, torch {m['torch']}, "
             f"torchao {r['torchao']}, {m['threads']} threads, {r['device']}; medians of {r['rounds']} interleaved rounds.", "",
             "| scheme | eager ms | compiled ms | compile s | compiled vs fp32 compiled | eager vs fp32 eager | weight bytes vs float | max rel. error |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in r["rows"].items():
        if "skipped" in row:
            lines.append(f"| {name} | {row['skipped']} |  |  |  |  |  |  |")
            continue
        lines.append(f"| {name} | {fmt(row.get('eager_ms'), '.1f')} | {fmt(row.get('compiled_ms'), '.1f')} | {fmt(row.get('compile_s'), '.1f')} | "
                     f"{fmt(row.get('speedup_compiled_vs_fp32_compiled'))}x | {fmt(row.get('speedup_eager_vs_fp32_eager'))}x | "
                     f"{fmt(row.get('size_ratio'), '.3f')} | {fmt(row.get('max_rel_output_error'), '.3f')} |")
    lines += ["", f"Targets: int8 dynamic compiled >= 1.5x fp32 compiled: {fmt(t['int8_dynamic_compiled_speedup'])}x; "
              f"int8 weight-only <= 0.3x the float bytes: {'yes' if t['int8_weight_size_ratio_le_0.3'] else 'no'}."]
    return lines


def compress_section(r: dict) -> list[str]:
    lines = ["### Dropping attention layers and pruning heads (`compress.py`)", "",
             f"A ViT trained on digits, compressed by `anyformer compress`; latency of the same layers at L {r['length']} (batch 1) "
             f"and on a digits batch, medians of {r['rounds']} interleaved rounds on {r['machine']['threads']} threads.", "",
             f"| model | test accuracy | of the full model's | parameters | L {r['length']} ms | speedup | digits ms | speedup |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {fmt(row.get('accuracy'), '.4f')} | {fmt(row.get('quality_kept'), '.3f')} | {fmt(row.get('parameters'), ',')} | "
                     f"{row['long_ms']:.1f} | {fmt(row.get('speedup_long'))}x | {row['digits_ms']:.2f} | {fmt(row.get('speedup_digits'))}x |")
    return lines


def search_section(r: dict) -> list[str]:
    lines = ["### Search engine against random sampling (`search_vs_random.py`)", "",
             f"`anyformer search` on digits, quality against parameters, {r['trials']} trials of {r['steps']} steps each, "
             f"NSGA-II and random sampling with the same seeds; hypervolume of each front, all normalised with the "
             f"same pooled bounds (parameters on a log scale). ![hypervolume](results/search_vs_random.png)", "",
             "| seed | NSGA-II | random | NSGA-II / random |", "|---|---|---|---|"]
    for k, (a, b, q) in enumerate(zip(r["hypervolume"]["nsga2"], r["hypervolume"]["random"], r["ratio_nsga2_over_random"])):
        lines.append(f"| {k} | {a:.4f} | {b:.4f} | {fmt(q, '.3f')}x |")
    lines += ["", f"Median ratio {r['median_ratio']:.3f}x; means {r['mean']['nsga2']:.4f} (NSGA-II) and {r['mean']['random']:.4f} (random)."]
    return lines


def main() -> None:
    parts: list[str] = []
    for name, section in (("train_step", train_step_section), ("mixer_scaling", mixer_section),
                          ("flop_coverage", coverage_section), ("compile", compile_section), ("decode", decode_section),
                          ("compress_quantize", quantize_section), ("compress", compress_section),
                          ("search_vs_random", search_section), ("cuda_path", cuda_section)):
        r = load(name)
        if r is not None:
            parts += section(r) + [""]
    if load("cuda_path") is None:
        parts += ["### (c) CUDA path", "", "Not measured: no GPU on the machine that ran `make bench` "
                  "(`benchmarks/cuda_path.py` exits with one line when CUDA is absent).", ""]
    readme = HERE / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(head + BEGIN + "\n" + "\n".join(parts) + END + tail)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
