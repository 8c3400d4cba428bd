"""FLOP counting: torch.utils.flop_counter.FlopCounterMode plus formulas for the ops it
cannot see.

Convention: a FLOP is one multiply or one add, so a [m, k] x [k, n] matmul is 2*m*k*n
(FlopCounterMode's convention). Elementwise work (softmax, activations, norms) is not
counted, as in FlopCounterMode, nanoGPT's and PaLM's MFU. Added here:

- CPU fused attention (`_scaled_dot_product_flash_attention_for_cpu` and its backward),
  which FlopCounterMode leaves at 0: the same count as its CUDA kernels, 4*B*H*Lq*Lk*Dh
  forward and 2.5x that backward; with `is_causal` the kernel skips the masked half of the
  score matrix, so half is counted (FlopCounterMode's CUDA formulas do not discount it).
- FFTs: 5 N log2 N real FLOPs per complex FFT of N points (the Cooley-Tukey count used by
  FFTW's benchmarks); a real-input or real-output FFT counts half, 2.5 N log2 N. A
  multi-dimensional FFT over sizes n1..nk has N = n1*...*nk.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _fft_points(shape: torch.Size, dims: list[int]) -> tuple[int, int]:
    """(points per transform N, number of transforms)."""
    n = math.prod(shape[d] for d in dims) if dims else 1
    total = math.prod(shape)
    return n, (total // n if n else 0)


def fft_c2c_flops(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n, batch = _fft_points(x_shape, list(dim))
    return int(5 * n * math.log2(n) * batch) if n > 1 else 0


def fft_r2c_flops(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n, batch = _fft_points(x_shape, list(dim))
    return int(2.5 * n * math.log2(n) * batch) if n > 1 else 0


def fft_c2r_flops(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    # The real output holds the full transform size on every transformed dim.
    n, batch = _fft_points(out_shape, list(dim))
    return int(2.5 * n * math.log2(n) * batch) if n > 1 else 0


def cpu_sdpa_flops(q_shape, k_shape, v_shape, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    flops = sdpa_flop_count(q_shape, k_shape, v_shape)
    return flops // 2 if is_causal else flops


def cpu_sdpa_backward_flops(grad_out_shape, q_shape, k_shape, v_shape, out_shape_, logsumexp_shape,
                            dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    flops = sdpa_backward_flop_count(grad_out_shape, q_shape, k_shape, v_shape)
    return flops // 2 if is_causal else flops


# Ops FlopCounterMode has no formula for, found by running it on every registered mixer
# (benchmarks/flop_coverage.py lists what is still uncounted).
EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._fft_c2c: fft_c2c_flops,
    aten._fft_r2c: fft_r2c_flops,
    aten._fft_c2r: fft_c2r_flops,
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_sdpa_backward_flops,
}


def flop_counter(extra: bool = True) -> FlopCounterMode:
    """A FlopCounterMode (no printing) with the formulas above added when `extra`."""
    return FlopCounterMode(display=False, custom_mapping=dict(EXTRA_FORMULAS) if extra else {})


def count_flops(fn: Callable[[], Any], extra: bool = True) -> tuple[int, dict[str, int]]:
    """Run `fn` once under the counter: (total FLOPs, FLOPs per aten op name)."""
    counter = flop_counter(extra)
    with counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op
