"""GR-KAN: the rational is exactly P/Q, groups share coefficients, the init fits its target."""
import pytest
import torch
import torch.nn.functional as F

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.ffn.kan import RATIONAL_INIT, GroupRational, group_rational, group_rational_naive


def test_rational_is_p_over_q_for_given_coefficients():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[None, :, None].expand(1, 7, 2).contiguous()
    a = torch.tensor([[0.5, -1.0, 2.0, 0.25, 0.0, 0.1], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.3, -0.2, 0.0, 0.05], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    t = x[0, :, 0]
    want0 = (0.5 - t + 2 * t**2 + 0.25 * t**3 + 0.1 * t**5) / (1 + (0.3 * t - 0.2 * t**2 + 0.05 * t**4).abs())
    want1 = 1.0 / (1 + t**2)
    out = group_rational(x, a, b)
    assert torch.allclose(out[0, :, 0], want0) and torch.allclose(out[0, :, 1], want1)
    assert torch.allclose(group_rational_naive(x, a, b), out)


def test_fast_path_equals_naive_reference():
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    a, b = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    assert torch.allclose(group_rational(x, a, b), group_rational_naive(x, a, b))


def test_channels_in_one_group_share_coefficients():
    act = GroupRational(8, groups=2, init="gelu")
    with torch.no_grad():
        act.numerator[1] = torch.tensor([0.0, 2.0, 0, 0, 0, 0])
        act.denominator[1].zero_()
    x = torch.randn(4, 8)
    x[:, :] = x[:, :1]  # same value in every channel
    y = act(x)
    assert torch.allclose(y[:, :4], y[:, :1].expand(-1, 4))  # group 0 channels agree
    assert torch.allclose(y[:, 4:], 2 * x[:, 4:])  # group 1 is 2x for all its channels
    assert not torch.allclose(y[:, 0], y[:, 4])
    y.sum().backward()
    assert act.numerator.grad.shape == (2, 6)


@pytest.mark.parametrize("init,target,tol", [
    ("identity", lambda t: t, 1e-12), ("gelu", F.gelu, 1e-3), ("silu", F.silu, 1e-5), ("relu", F.relu, 0.035),
])
def test_initial_rational_approximates_its_activation(init, target, tol):
    act = GroupRational(4, groups=2, init=init).double()
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)[:, None].expand(-1, 4)
    assert (act(x) - target(x)).abs().max() < tol


def test_variance_preserving_init_keeps_output_scale():
    torch.manual_seed(0)
    kan = registry.build("ffn", "kan", dim=64, groups=8)
    x = torch.randn(8, 64, 64)
    ratio = kan(x).var() / x.var()
    assert 0.5 < ratio < 2.0


def test_groups_must_divide_dim():
    with pytest.raises(ConfigError, match="groups 5 must divide dim 32"):
        registry.build("ffn", "kan", dim=32, groups=5)
    with pytest.raises(ConfigError, match="did you mean"):
        registry.build("ffn", "kan", dim=32, activation="gelux")


def test_large_inputs_give_the_rationals_value_not_nan():
    # Found by the fuzz campaign: Horner's x^5 left float32 past |x| = 2e7 and inf / inf was
    # NaN where the rational is nearly linear; far from 0 it is evaluated in t = 1 / x.
    a = torch.tensor(RATIONAL_INIT["gelu"][0])[None]
    b = torch.tensor(RATIONAL_INIT["gelu"][1])[None]
    x = torch.tensor([[3e7, -1e8, 1e9, 2.0, -0.5]])
    want = group_rational_naive(x.double(), a.double(), b.double())
    got = group_rational(x, a, b)
    assert torch.isfinite(got).all() and torch.allclose(got.double(), want, rtol=1e-5)
    assert not torch.isfinite(group_rational_naive(x, a, b)).all()  # the direct form overflows
    z = (torch.randn(2, 8, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: group_rational(v, a.double(), b.double()), (z,))
