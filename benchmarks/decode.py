"""Decoding speed: tokens/s and time per token against context length, anyformer's gpt with
a key/value cache (softmax) and with a recurrent state (linear), beside transformers' GPT-2
at the same size in the same run, and the weight-read bound per token.

Each model is dim 512, depth 4, 8 heads, random weights (no download). For every context
length the prompt is prefilled once, then `--tokens` single-token steps are timed; a row is
the median over interleaved rounds. transformers runs the same loop (its model with
past_key_values, as `generate` does inside) and `generate` itself as a cross-check. The
weight-read bound is parameters x 4 bytes / the measured memory bandwidth (a large copy):
what batch-1 decoding costs at least when every weight is read from memory once per token.

    benchmarks/.venv-bench/bin/python benchmarks/decode.py [--quick]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from common import RESULTS, machine, median

import anyformer as af
from anyformer.bench import save_json
from anyformer.nn.decoding import decoding

DIM, DEPTH, HEADS = 512, 4, 8
LENGTHS = (512, 1024, 2048, 4096, 8192)
VOCAB = 50257  # GPT-2's vocabulary, so both models pay the same output projection


def anyformer_gpt(mixer: str, max_len: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return af.create("gpt", mixer=mixer, dim=DIM, depth=DEPTH, heads=HEADS, max_len=max_len,
                     vocab_size=VOCAB).eval()


def hf_gpt2(max_len: int):
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=DIM, n_layer=DEPTH, n_head=HEADS, n_positions=max_len, vocab_size=VOCAB,
                     attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg).eval()


def anyformer_steps(model, prompt: torch.Tensor, tokens: int) -> float:
    """Seconds per decode step after prefilling `prompt`."""
    with torch.no_grad(), decoding(model, last_only=True) as state:
        logits = model(prompt)[:, -1]
        state.advance(prompt.shape[1])
        step = logits.argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(tokens):
            logits = model(step)[:, -1]
            state.advance(1)
            step = logits.argmax(-1, keepdim=True)
        return (time.perf_counter() - start) / tokens


def hf_steps(model, prompt: torch.Tensor, tokens: int) -> float:
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        past, step = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(tokens):
            out = model(input_ids=step, past_key_values=past, use_cache=True, logits_to_keep=1)
            past, step = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        return (time.perf_counter() - start) / tokens


def hf_generate(model, prompt: torch.Tensor, tokens: int) -> float:
    """Per-token seconds of `generate` (greedy), its prefill taken out by a 1-token call."""
    def timed(n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start
    return (timed(tokens + 1) - timed(1)) / tokens


def bandwidth() -> float:
    """Bytes per second of a 256 MiB copy (read + write), best of 5."""
    a = torch.empty(64 * 1024 * 1024, dtype=torch.float32).fill_(1.0)
    b = torch.empty_like(a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * a.element_size() / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16, help="timed decode steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="lengths 512 and 2048, batch 1, 1 round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers renames past_key_values
    lengths = (512, 2048) if args.quick else LENGTHS
    batches = (1,) if args.quick else (1, 8)
    rounds = 1 if args.quick else args.rounds
    start = time.time()
    max_len = max(lengths) + args.tokens + 2
    models = {"softmax (KV cache)": anyformer_gpt("softmax", max_len), "linear (recurrent state)": anyformer_gpt("linear", max_len)}
    hf = hf_gpt2(max_len)
    params = sum(p.numel() for p in models["softmax (KV cache)"].parameters())
    bw = bandwidth()
    bound_ms = 1e3 * params * 4 / bw
    rows = []
    for batch in batches:
        for length in lengths:
            prompt = torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(length))
            times: dict[str, list[float]] = {}
            for _ in range(rounds):
                for name, model in models.items():
                    times.setdefault(name, []).append(anyformer_steps(model, prompt, args.tokens))
                if hf is not None:
                    times.setdefault("transformers GPT-2", []).append(hf_steps(hf, prompt, args.tokens))
            row = {"batch": batch, "context": length, "ms_per_token": {n: 1e3 * median(t) for n, t in times.items()}}
            if hf is not None and batch == 1:
                row["hf_generate_ms_per_token"] = 1e3 * hf_generate(hf, prompt, args.tokens)
            row["tokens_per_s"] = {n: batch * 1e3 / ms for n, ms in row["ms_per_token"].items()}
            rows.append(row)
            cells = "  ".join(f"{n} {ms:.2f} ms" for n, ms in row["ms_per_token"].items())
            print(f"batch {batch} context {length}: {cells}", flush=True)
    report = {"suite": "decode", "machine": machine(), "dim": DIM, "depth": DEPTH, "heads": HEADS, "vocab": VOCAB,
              "params": params, "bandwidth_bytes_per_s": bw, "weight_read_bound_ms": bound_ms, "tokens": args.tokens,
              "rounds": rounds, "rows": rows, "seconds": time.time() - start, "targets": targets(rows)}
    save_json(report, RESULTS / "decode.json")
    print(f"weight-read bound {bound_ms:.2f} ms/token ({params / 1e6:.1f} M params, {bw / 1e9:.1f} GB/s); "
          f"targets {report['targets']}; wrote {RESULTS / 'decode.json'} in {time.time() - start:.0f} s")


def targets(rows: list[dict]) -> dict:
    """softmax >= transformers at every length; linear flat (8k / 512 <= 1.3) and faster than
    softmax from 2k, at batch 1."""
    one = [r for r in rows if r["batch"] == 1]
    ms = lambda r, n: r["ms_per_token"].get(n)  # noqa: E731
    vs_hf = [ms(r, "transformers GPT-2") / ms(r, "softmax (KV cache)") for r in one if ms(r, "transformers GPT-2")]
    lin = [ms(r, "linear (recurrent state)") for r in one]
    flat = lin[-1] / lin[0] if len(lin) > 1 else None
    faster = all(ms(r, "linear (recurrent state)") < ms(r, "softmax (KV cache)") for r in one if r["context"] >= 2048)
    return {"softmax_vs_transformers_min": min(vs_hf) if vs_hf else None, "linear_flatness": flat,
            "linear_faster_from_2k": faster}


if __name__ == "__main__":
    main()
