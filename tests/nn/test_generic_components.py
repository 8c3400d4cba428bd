"""Every registered ffn, norm, position, encoder and head against its contract."""
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError, ShapeError

from .helpers import DIM, HEADS, LEN, make, padding_mask


def _grads_reach_all(module, loss, name):
    loss.backward()
    for pname, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reaches {pname}"
            assert torch.isfinite(p.grad).all()


def _documented(kind, name):
    cls = registry.get(kind, name)
    assert cls.__doc__ and len(cls.__doc__.strip()) > 15, f"{kind} {name} needs a docstring citing its paper"
    assert getattr(cls, "paper", ""), f"{kind} {name} needs a `paper` attribute"


@pytest.mark.parametrize("name", registry.list_components("ffn"))
def test_ffn(name):
    _documented("ffn", name)
    ffn = make("ffn", name).train()
    x = torch.randn(2, LEN, DIM)
    y = ffn(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if any(p.requires_grad for p in ffn.parameters()):  # 'none' has nothing to train
        _grads_reach_all(ffn, y.square().mean() + getattr(ffn, "aux_loss", 0.0), name)
    ffn.eval()
    assert torch.equal(ffn(x), ffn(x))
    y64 = make("ffn", name).double().eval()(x.double())
    assert y64.dtype == torch.float64
    with pytest.raises(ConfigError, match="no option"):
        make("ffn", name, not_an_option=1)


@pytest.mark.parametrize("name", registry.list_components("norm"))
def test_norm(name):
    _documented("norm", name)
    norm = make("norm", name).train()
    x = torch.randn(2, LEN, DIM) * 3 + 1
    mask = padding_mask()
    y = norm(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    x2 = x.clone()
    x2[~mask] = 1e3
    # Fresh copies with the same state, so running statistics start equal for both inputs.
    same_a, same_b = make_same(norm, name), make_same(norm, name)
    assert torch.allclose(same_a(x, mask)[mask], same_b(x2, mask)[mask], atol=1e-5), \
        f"norm {name}: padded tokens change the output at real ones"
    params = list(norm.parameters())
    if params:
        norm.zero_grad()
        _grads_reach_all(norm, norm(x, mask).square().mean(), name)


def make_same(norm, name):
    copy = make("norm", name).train()
    copy.load_state_dict(norm.state_dict())
    return copy


@pytest.mark.parametrize("name", registry.list_components("position"))
def test_position(name):
    _documented("position", name)
    pos = make("position", name)
    x = torch.randn(2, LEN, DIM)
    if pos.applies_to == "input":
        y = pos(x)
        assert y.shape == x.shape
        assert not torch.allclose(y[:, 0], y[:, 1] - x[:, 1] + x[:, 0]), "positions must differ"
    elif pos.applies_to == "qk":
        q = torch.randn(2, HEADS, LEN, DIM // HEADS)
        k = torch.randn(2, HEADS, LEN, DIM // HEADS)
        q2, k2 = pos(q, k)
        assert q2.shape == q.shape and k2.shape == k.shape
        # Rotary: norms kept, scores depend on relative offset only.
        assert torch.allclose(q2.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    elif pos.applies_to == "bias":
        b = pos(LEN)
        assert b.shape == (HEADS, LEN, LEN)
        assert torch.all(b.diagonal(dim1=-2, dim2=-1) == 0)
    else:
        assert pos.applies_to == "none"


@pytest.mark.parametrize("name", registry.list_components("encoder"))
def test_encoder(name):
    _documented("encoder", name)
    enc = make("encoder", name).train()
    inp = enc.example_input(batch=2)
    tokens, mask = enc(inp)
    assert tokens.dim() == 3 and tokens.shape[-1] == DIM
    assert tokens.shape[1] <= enc.num_tokens
    assert mask is None or mask.shape == tokens.shape[:2]
    _grads_reach_all(enc, tokens.square().mean(), name)
    with pytest.raises((ShapeError, ConfigError)):
        enc(torch.zeros(3))


@pytest.mark.parametrize("name", registry.list_components("head"))
def test_head(name):
    _documented("head", name)
    head = make("head", name).train()
    tokens = torch.randn(2, LEN, DIM)
    hidden = [torch.randn(2, LEN, DIM) for _ in range(3)]
    out = head(tokens, padding_mask(), hidden)
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    _grads_reach_all(head, out.square().mean(), name)
