"""Length sweeps, failures mid-sweep, the crossover finder and the output files."""
import json

import torch
from torch import nn

from anyformer.bench import crossover, plot_sweeps, save_json, sweep


class FailsAbove(nn.Module):
    """A tiny model that runs out of memory (as the CPU allocator reports it) above a length."""

    def __init__(self, limit):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.limit = limit

    def forward(self, x):
        if x.shape[1] > self.limit:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")
        return self.fc(x)


def test_sweep_keeps_results_before_a_failure(tmp_path):
    seen = []
    result = sweep(lambda L: (FailsAbove(32), torch.randn(2, L, 4)), [64, 16, 32, 128],
                   repeats=1, warmup=0, on_result=seen.append, memory=False)
    assert [r["length"] for r in result["rows"]] == [16, 32] == [r["length"] for r in seen]
    assert result["failure"]["length"] == 64 and result["failure"]["kind"] == "out_of_memory"
    assert result["largest_ok"] == 32 and "64" in result["stopped"]
    assert result["rows"][1]["tokens_per_sample"] == 32
    path = save_json(result, tmp_path / "sweep.json")
    assert json.loads(path.read_text())["largest_ok"] == 32
    png = plot_sweeps({"fails": result}, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_stops_after_a_slow_step():
    result = sweep(lambda L: (nn.Linear(4, 4), torch.randn(2, L, 4)), [8, 16, 32], repeats=1,
                   warmup=0, max_step_s=0.0, memory=False, flops=False)
    assert [r["length"] for r in result["rows"]] == [8] and "skipped" in result["stopped"]


def test_crossover_on_synthetic_times():
    lengths = [256, 512, 1024, 2048, 4096]
    times = {
        "softmax": {L: (L / 256) ** 2 for L in lengths},           # quadratic
        "linear": {L: 2.5 * L / 256 for L in lengths},             # linear, slower at first
        "noisy": {256: 0.5, 512: 5.0, 1024: 2.0, 2048: 3.0, 4096: 4.0},  # below, above, then below
        "never": {**{L: 100.0 * (L / 256) ** 2 for L in lengths}, 4096: None},  # failed too
        "survives": {**{L: 2.0 * (L / 256) ** 2 for L in lengths}, 4096: 10.0},
    }
    times["softmax"][4096] = None  # softmax ran out of memory at 4096
    found = crossover(times, baseline="softmax")
    # linear: 2.5 > 1 at 256, 5 > 4 at 512, 10 < 16 at 1024, 20 < 64 at 2048
    assert found == {"linear": 1024, "noisy": 1024, "never": None, "survives": 4096}
