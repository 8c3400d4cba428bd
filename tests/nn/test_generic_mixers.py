"""Every registered token mixer against the contract (DESIGN.md, Tests)."""
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.mixers.base import AttentionMixer

from .helpers import DIM, LEN, make_mixer, mixer_class, padding_mask

MIXERS = registry.list_components("mixer")


def _x(batch=2, length=LEN, dtype=torch.float32):
    return torch.randn(batch, length, DIM, dtype=dtype)


@pytest.mark.parametrize("name", MIXERS)
def test_declares_contract(name):
    cls = mixer_class(name)
    assert isinstance(cls.supports_causal, bool) and isinstance(cls.supports_mask, bool)
    assert cls.complexity and cls.paper
    assert cls.__doc__ and len(cls.__doc__.strip()) > 20


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(name, dtype):
    mixer = make_mixer(name).to(dtype).eval()
    x = _x(dtype=dtype)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MIXERS)
def test_gradients_reach_every_parameter(name):
    mixer = make_mixer(name).train()
    x = _x().requires_grad_()
    mixer(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in mixer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", MIXERS)
def test_padding_mask_invariance(name):
    cls = mixer_class(name)
    if not cls.supports_mask:
        mixer = make_mixer(name)
        with pytest.raises(ConfigError, match="mask"):
            mixer(_x(), padding_mask())
        return
    mixer = make_mixer(name).eval()
    mask = padding_mask()
    x = _x()
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), DIM) * 5
    y, y2 = mixer(x, mask), mixer(x2, mask)
    assert torch.allclose(y[mask], y2[mask], atol=1e-5), f"{name}: padded tokens leak into real ones"


@pytest.mark.parametrize("name", MIXERS)
def test_causality(name):
    cls = mixer_class(name)
    if not cls.supports_causal:
        with pytest.raises(ConfigError, match="causal"):
            make_mixer(name, causal=True)
        return
    mixer = make_mixer(name, causal=True).eval()
    x = _x()
    t = LEN // 2
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) * 3
    y, y2 = mixer(x), mixer(x2)
    assert torch.allclose(y[:, : t + 1], y2[:, : t + 1], atol=1e-5), f"{name}: future tokens change the past"
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:], atol=1e-5)


@pytest.mark.parametrize("name", MIXERS)
def test_determinism(name):
    torch.manual_seed(1)
    a = make_mixer(name).eval()
    torch.manual_seed(1)
    b = make_mixer(name).eval()
    x = _x()
    assert torch.equal(a(x), a(x))
    assert torch.allclose(a(x), b(x))


@pytest.mark.parametrize("name", MIXERS)
def test_errors_for_bad_requests(name):
    mixer = make_mixer(name)
    with pytest.raises(ShapeError):
        mixer(torch.randn(LEN, DIM))
    with pytest.raises(ConfigError, match="max_len"):
        mixer(torch.randn(1, 2 * LEN, DIM))
    with pytest.raises(ConfigError, match="no option"):
        make_mixer(name, not_an_option=1)


ATTENTION = [n for n in MIXERS if issubclass(mixer_class(n), AttentionMixer)]


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_family_share_projection_names(name):
    mixer = make_mixer(name)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert isinstance(getattr(mixer, proj), torch.nn.Module), f"{name} lacks {proj}"
