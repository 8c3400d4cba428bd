"""SSA and sliced group attention against softmax attention on the same weights."""
import pytest
import torch

import anyformer as af

from ..helpers import padding_mask
from .test_attention_math import _heads, _merge, reference_softmax

D, H, L = 32, 4, 16


def test_ssa_eval_equals_softmax_and_training_subsamples():
    m = af.build("mixer", "ssa", dim=D, heads=H, max_len=L, keep=0.25).double()
    x = torch.randn(2, L, D, dtype=torch.float64)
    m.eval()
    assert torch.allclose(m(x), reference_softmax(m, x), atol=1e-10)
    mask = padding_mask()
    assert torch.allclose(m(x, mask)[mask], reference_softmax(m, x, mask=mask)[mask], atol=1e-10)
    m.train()
    torch.manual_seed(3)
    got = m(x)
    torch.manual_seed(3)
    keys = m.sample_keys(2, L, x.device)
    assert keys.sum(-1).tolist() == [4, 4]
    q, k, v = _heads(m, x)
    scores = (q @ k.transpose(-1, -2) / (D // H) ** 0.5)
    allowed = keys[:, None, None, :] | torch.eye(L, dtype=torch.bool)
    want = _merge(m, scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v)
    assert torch.allclose(got, want, atol=1e-10)
    assert not torch.allclose(got, reference_softmax(m, x), atol=1e-3)


def test_ssa_ensemble_inference_averages_subsamples_and_converges():
    m = af.build("mixer", "ssa", dim=D, heads=H, max_len=L, keep=0.5, eval_samples=4).double().eval()
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.equal(m(x), m(x))
    gen = torch.Generator().manual_seed(0)
    q, k, v = m.qkv(x)
    outs = [m.attend(q, k, v, None, m.sample_keys(2, L, x.device, gen)) for _ in range(4)]
    assert torch.allclose(m(x), m.o_proj(m.merge(sum(outs) / 4)), atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_sliced_one_group_equals_softmax(causal):
    m = af.build("mixer", "sliced", dim=D, heads=H, max_len=L, causal=causal, groups=1).double().eval()
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), reference_softmax(m, x, causal=causal), atol=1e-10)
    mask = padding_mask()
    assert torch.allclose(m(x, mask)[mask], reference_softmax(m, x, mask=mask, causal=causal)[mask], atol=1e-10)


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_sliced_groups_are_independent_softmax_blocks(groups):
    m = af.build("mixer", "sliced", dim=D, heads=H, max_len=L, groups=groups).double().eval()
    x = torch.randn(2, L, D, dtype=torch.float64)
    size = -(-L // groups)
    block = torch.arange(L) // size
    bias = torch.zeros(L, L, dtype=torch.float64).masked_fill(block[:, None] != block[None, :], float("-inf"))
    assert torch.allclose(m(x), reference_softmax(m, x, bias=bias), atol=1e-10)
