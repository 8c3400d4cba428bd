"""blocked_attention folds window/group dims into the batch: the same numbers as eager
scaled_dot_product_attention on the 5-D blocks, for every way a mask broadcasts."""
import pytest
import torch
import torch.nn.functional as F

from anyformer.nn.mixers.base import blocked_attention


@pytest.mark.parametrize("mask_shape", [None, (5, 7), (1, 3, 1, 5, 7), (2, 3, 4, 5, 7), (2, 1, 4, 1, 7)])
def test_matches_eager_attention_on_blocks(mask_shape):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 5, 8), torch.randn(2, 3, 4, 7, 8), torch.randn(2, 3, 4, 7, 8)
    mask = None
    if mask_shape is not None:
        mask = torch.rand(mask_shape) > 0.3
        mask[..., 0] = True  # no empty row
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = blocked_attention(q, k, v, attn_mask=mask)
    assert got.shape == (2, 3, 4, 5, 8)
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_float_bias_and_plain_4d_inputs():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    bias = torch.randn(4, 6, 6)
    assert torch.equal(blocked_attention(q, k, v, bias), F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    q5, k5, v5 = (t[:, None].expand(2, 3, 4, 6, 8) for t in (q, k, v))
    out = blocked_attention(q5, k5, v5, bias)
    assert torch.allclose(out[:, 2], F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-6)
