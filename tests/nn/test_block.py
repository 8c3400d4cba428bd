"""Norm placements and layouts computed by hand from the block's own modules."""
import pytest
import torch
from torch import nn

from anyformer import registry
from anyformer.nn.block import Block

D = 16


class Scale(nn.Module):
    """A tiny ffn stand-in with a parameter, so wiring mistakes change the output."""

    def __init__(self, s):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(s)))

    def forward(self, x):
        return torch.tanh(x) * self.w


def _parts():
    mixer = registry.build("mixer", "softmax", dim=D, heads=2, max_len=8).eval()
    ffn, ffn2 = Scale(0.7), Scale(-1.3)
    make_norm = lambda role: registry.build("norm", "layernorm", dim=D)  # noqa: E731
    return mixer, ffn, ffn2, make_norm


def _randomise_norms(block):
    for m in block.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)


@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
@pytest.mark.parametrize("layout", ["sequential", "parallel", "macaron"])
def test_block_wiring(placement, layout):
    mixer, ffn, ffn2, make_norm = _parts()
    block = Block(mixer, ffn, make_norm, placement, layout, ffn2=ffn2).eval()
    _randomise_norms(block)
    x = torch.randn(2, 8, D)
    subs = block.sublayers

    def apply(sub, h):
        f = (lambda t: sub.fn(t, None)) if sub.fn is mixer else sub.fn
        if placement == "pre":
            return h + sub.scale * f(sub.norm_in(h))
        if placement == "post":
            return sub.norm_out(h + sub.scale * f(h))
        return h + sub.scale * sub.norm_out(f(sub.norm_in(h)))

    if layout == "sequential":
        want = apply(subs[1], apply(subs[0], x))
        assert subs[0].fn is mixer and subs[1].fn is ffn
    elif layout == "macaron":
        assert [s.fn for s in subs] == [ffn2, mixer, ffn] and subs[0].scale == subs[2].scale == 0.5
        want = apply(subs[2], apply(subs[1], apply(subs[0], x)))
    else:
        if placement == "post":
            want = block.parallel_norm(x + mixer(x, None) + ffn(x))
        elif placement == "pre":
            want = x + mixer(subs[0].norm_in(x), None) + ffn(subs[1].norm_in(x))
        else:
            want = x + subs[0].norm_out(mixer(subs[0].norm_in(x), None)) + subs[1].norm_out(ffn(subs[1].norm_in(x)))
    assert torch.allclose(block(x), want, atol=1e-5)
    # Every parameter takes part.
    block(x).sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_peri_has_four_norms_pre_two_post_two():
    counts = {}
    for placement in ("pre", "post", "peri"):
        mixer, ffn, ffn2, make_norm = _parts()
        block = Block(mixer, ffn, make_norm, placement)
        counts[placement] = sum(isinstance(m, nn.LayerNorm) for m in block.modules())
    assert counts == {"pre": 2, "post": 2, "peri": 4}
