"""The profiler's counts against answers computed by hand."""
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import anyformer as af
from anyformer.bench import count_flops, count_params, peak_bytes, profile, resolve_device
from anyformer.errors import ConfigError


def test_linear_flops_are_two_in_out_batch_exactly():
    batch, d_in, d_out = 3, 7, 5
    model = nn.Linear(d_in, d_out)
    cost = profile(model, torch.randn(batch, d_in), repeats=1, warmup=0, memory=False)
    assert cost["flops"]["forward_per_sample"] * batch == 2 * d_in * d_out * batch
    # Backward of a leaf input: only the weight gradient is a matmul (2*in*out*batch again).
    assert cost["flops"]["train_step_per_sample"] * batch == 4 * d_in * d_out * batch
    assert cost["forward"]["repeats"] == 1 and cost["forward"]["median_ms"] > 0
    assert cost["batch"] == batch and 0 < cost["forward"]["mfu"]


class FourierMix(nn.Module):
    """FNet-style mixing: real part of a 2-D FFT over (length, dim)."""

    def forward(self, x):
        return torch.fft.fft2(x).real


def test_fft_flops_added_analytically():
    B, L, D = 2, 16, 8
    x = torch.randn(B, L, D)
    stock = FlopCounterMode(display=False)
    with stock:
        FourierMix()(x)
    assert stock.get_total_flops() == 0  # FlopCounterMode does not see FFTs
    total, by_op = count_flops(lambda: FourierMix()(x))
    n = L * D
    assert total == int(5 * n * math.log2(n) * B)  # 5 N log2 N per complex FFT
    assert set(by_op) == {"aten._fft_c2c"}


def test_rfft_counts_half_a_complex_fft():
    x = torch.randn(4, 32)
    total, _ = count_flops(lambda: torch.fft.rfft(x, dim=-1))
    assert total == int(2.5 * 32 * 5 * 4)


def test_cpu_attention_kernel_is_counted():
    q = torch.randn(1, 2, 8, 4)
    total, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert total == 2 * (2 * 8 * 8 * 4) * 2  # QK^T and AV, 2 heads
    causal, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert causal == total // 2  # the kernel skips the masked half


def test_non_embedding_params_exclude_embeddings_exactly():
    model = af.create("gpt", depth=1, dim=32)
    counts = count_params(model)
    emb = model.encoder.embedding.weight.numel()
    pos = model.position.weight.numel()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["non_embedding"] == counts["total"] - emb - pos  # the tied head is the embedding


def test_cpu_peak_memory_of_known_allocations():
    def together():
        a = torch.ones(1000)
        b = torch.ones(2000)
        return float(a.sum() + b.sum())

    def one_after_another():
        a = torch.ones(1000)
        del a
        b = torch.ones(2000)
        return float(b.sum())

    cpu = torch.device("cpu")
    assert peak_bytes(together, cpu) >= 4 * 3000
    assert peak_bytes(one_after_another, cpu) >= 4 * 2000
    assert peak_bytes(one_after_another, cpu) < 4 * 3000


def test_peak_memory_sees_activations_saved_for_backward():
    class Big(nn.Module):
        def forward(self, x):
            return torch.exp(x.expand(64, 1024)).sum()  # exp saves its 256 KiB output

    x = torch.randn(1, 1024, requires_grad=True)
    seen = peak_bytes(lambda: Big()(x).backward(), torch.device("cpu"))
    assert seen >= 64 * 1024 * 4


def test_missing_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        resolve_device("cuda2".replace("2", "x"))


ARCH_MODELS = {
    "fit": dict(source="fit", image_size=8, patch_size=2, channels=1),  # one group of 16: the view case
    "nest": dict(source="nest", image_size=8, patch_size=1, channels=1),
    "multistage": dict(source="vit", arch="multistage", image_size=8, patch_size=1, channels=1),
    "mot": dict(source="mot"),
}


@pytest.mark.parametrize("arch", sorted(ARCH_MODELS))
def test_profile_counts_every_architecture(arch):
    """FLOP counting hooks every module's inputs: no architecture may trip them."""
    opts = dict(ARCH_MODELS[arch])
    model = af.create(opts.pop("source"), dim=32, heads=4, **opts)
    cost = profile(model, model.encoder.example_input(2), repeats=1, warmup=0)
    assert cost["flops"]["train_step_per_sample"] > cost["flops"]["forward_per_sample"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_profile_runs_and_records_the_precision_asked(precision):
    model = af.create("gpt", depth=1, dim=32, heads=2, max_len=16)
    x = model.encoder.example_input(2)
    cost = profile(model, x, repeats=1, warmup=0, memory=False, precision=precision)
    assert cost["precision"] == precision and cost["precision_reason"] == f"{precision} requested"
    assert cost["roof"] == f"{precision} GEMM n=1024" and cost["forward_backward"]["mfu"] > 0
    # Autocast changes the dtype, not the work: FLOPs match fp32's exactly.
    fp32 = profile(model, x, repeats=1, warmup=0, memory=False, train_step=False, precision="fp32")
    assert cost["flops"]["forward_per_sample"] == fp32["flops"]["forward_per_sample"]
