"""Which mixers' FLOPs torch.utils.flop_counter.FlopCounterMode cannot see.

Runs every registered mixer (dim 256, 4 heads, L 1024, batch 1, forward) under the stock
FlopCounterMode and under anyformer's counter (stock + FFT + CPU fused attention), and
compares with the q/k/v/o projections alone (4 * 2 * L * D^2). A mixer whose count is close
to the projections has its mixing core uncounted; the aten ops without a formula are listed.
Writes results/flop_coverage.json.
"""
from __future__ import annotations

import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from common import RESULTS, machine
from mixer_scaling import build

from anyformer import registry
from anyformer.bench import count_flops, save_json
from anyformer.bench.flops import EXTRA_FORMULAS

DIM, L = 256, 1024
# Cheap elementwise / layout ops nobody counts; anything else without a formula is listed.
CHEAP = ("view", "reshape", "transpose", "permute", "expand", "slice", "select", "unsqueeze", "squeeze",
         "clone", "copy", "detach", "t.", "add", "sub", "mul", "div", "exp", "neg", "softmax", "sum", "mean",
         "where", "masked_fill", "ones", "zeros", "empty", "fill", "_to_copy", "alias", "split", "cat", "stack",
         "unbind", "relu", "elu", "gelu", "sigmoid", "tanh", "pow", "sqrt", "rsqrt", "max", "min", "amax",
         "abs", "lift_fresh", "scalar_tensor", "arange", "eq", "ne", "gt", "lt", "ge", "le", "logical", "bitwise",
         "tril", "triu", "_unsafe_view", "contiguous", "index", "gather", "scatter", "pad", "constant_pad",
         "view_as_real", "view_as_complex", "real", "imag", "mm", "bmm", "addmm", "baddbmm", "log", "cumsum",
         "new_", "full", "randn", "rand", "normal", "uniform", "topk", "sort", "argmax", "argsort", "clamp", "square")


class OpNames(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    torch.set_num_threads(2)
    start = time.time()
    known = {str(k) for k in FlopCounterMode(display=False).flop_registry} | {str(k) for k in EXTRA_FORMULAS}
    projections = 4 * 2 * L * DIM * DIM
    rows = {}
    for name in registry.list_components("mixer"):
        try:
            mixer = build(name, L).eval()
        except Exception as err:  # noqa: BLE001
            rows[name] = {"error": str(err).splitlines()[0]}
            continue
        x = torch.randn(1, L, DIM)
        with torch.no_grad():
            stock, _ = count_flops(lambda: mixer(x, None), extra=False)
            ours, by_op = count_flops(lambda: mixer(x, None))
            names = OpNames()
            with names:
                mixer(x, None)
        uncounted = sorted(op for op in names.ops
                           if f"aten.{op}" not in known and op not in ("t", "_safe_softmax") and not op.startswith(CHEAP))
        rows[name] = {"stock_flops": stock, "anyformer_flops": ours, "projection_flops": projections,
                      "stock_over_projections": stock / projections, "anyformer_over_projections": ours / projections,
                      "core_invisible_to_stock": stock <= 1.05 * projections,
                      "core_invisible_to_anyformer": ours <= 1.05 * projections,
                      "uncounted_heavy_ops": uncounted, "by_op": by_op}
        print(f"{name:>16}: stock {stock / 1e9:.3f} GFLOP, anyformer {ours / 1e9:.3f} GFLOP, projections {projections / 1e9:.3f}; uncounted: {uncounted}")
    save_json({"suite": "flop_coverage", "machine": machine(), "dim": DIM, "length": L, "seconds": time.time() - start,
               "mixers": rows}, RESULTS / "flop_coverage.json")


if __name__ == "__main__":
    main()
