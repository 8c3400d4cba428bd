"""Grouped-query attention (`kv_heads`, Ainslie et al. 2023) in the attention-family mixers:
an exact identity with multi-head attention whose keys/values are repeated per group, a naive
reference, parameter counts, and one-line errors where a mixer cannot honour it."""
import math

import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError

from ..helpers import DIM, HEADS, LEN, make_mixer, mixer_class, padding_mask

KV = 2
GQA_MIXERS = [n for n in registry.list_components("mixer") if getattr(mixer_class(n), "supports_kv_heads", False)]
ATTENTION_WITHOUT = [n for n in registry.list_components("mixer")
                     if "k_proj" in getattr(mixer_class(n), "attention_projections", ()) and n not in GQA_MIXERS]


def repeated_state(gqa: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The GQA mixer's state with each k/v projection's rows [Hkv * Dh, ...] repeated per
    group -> [H * Dh, ...]: the weights of the equivalent multi-head mixer."""
    group, dh = gqa.heads // gqa.kv_heads, gqa.head_dim
    out = {}
    for key, t in gqa.state_dict().items():
        if key.split(".")[0] in ("k_proj", "v_proj"):
            t = t.view(gqa.kv_heads, dh, *t.shape[1:]).repeat_interleave(group, dim=0).reshape(-1, *t.shape[1:])
        out[key] = t
    return out


def naive_gqa(mixer, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """Softmax GQA written out: query heads grouped [B, Hkv, G, L, Dh] against their group's
    single key/value head [B, Hkv, 1, L, Dh], no repeated copies. x [B, L, D] -> [B, L, D]."""
    B, L, _ = x.shape
    H, Hkv, Dh = mixer.heads, mixer.kv_heads, mixer.head_dim
    q = mixer.q_proj(x).view(B, L, Hkv, H // Hkv, Dh).permute(0, 2, 3, 1, 4)
    k = mixer.k_proj(x).view(B, L, Hkv, 1, Dh).permute(0, 2, 3, 1, 4)
    v = mixer.v_proj(x).view(B, L, Hkv, 1, Dh).permute(0, 2, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    allowed = torch.ones(L, L, dtype=torch.bool)
    if causal:
        allowed = allowed.tril()
    allowed = allowed.expand(B, 1, 1, L, L)
    if mask is not None:
        allowed = (allowed & mask[:, None, None, None, :]) | torch.eye(L, dtype=torch.bool)
    out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v  # [B, Hkv, G, L, Dh]
    return mixer.o_proj(out.permute(0, 3, 1, 2, 4).reshape(B, L, H * Dh))


@pytest.mark.parametrize("name", GQA_MIXERS)
def test_kv_heads_equal_heads_is_the_multi_head_path(name):
    torch.manual_seed(0)
    plain = make_mixer(name).eval()
    torch.manual_seed(0)
    same = make_mixer(name, kv_heads=HEADS).eval()
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}
    same.load_state_dict(plain.state_dict())
    x = torch.randn(2, LEN, DIM)
    assert torch.equal(plain(x), same(x))


@pytest.mark.parametrize("name", GQA_MIXERS)
def test_gqa_equals_multi_head_with_repeated_kv(name):
    cls = mixer_class(name)
    causal = cls.supports_causal
    torch.manual_seed(0)
    gqa = make_mixer(name, causal=causal, kv_heads=KV).eval()
    mha = make_mixer(name, causal=causal).eval()
    mha.load_state_dict(repeated_state(gqa))
    x = torch.randn(2, LEN, DIM)
    mask = padding_mask() if cls.supports_mask else None
    diff = (gqa(x, mask) - mha(x, mask)).abs().max().item()
    print(f"{name}: GQA vs repeated-kv MHA max abs diff {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_gqa_matches_naive_reference(causal, masked):
    torch.manual_seed(1)
    mixer = make_mixer("softmax", causal=causal, kv_heads=KV).eval()
    x = torch.randn(2, LEN, DIM)
    mask = padding_mask() if masked else None
    out, ref = mixer(x, mask), naive_gqa(mixer, x, mask, causal)
    if mask is not None:  # padded queries' outputs are nobody's to read
        out, ref = out[mask], ref[mask]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_softmax_gqa_with_rotary_matches_repeated_kv():
    model = dict(dim=DIM, heads=HEADS, depth=1, max_len=LEN, causal=True, position="rotary",
                 encoder={"name": "tokens", "vocab_size": 50}, head={"name": "lm", "tie": False})
    torch.manual_seed(0)
    gqa = af.create({**model, "mixer": {"name": "softmax", "kv_heads": KV}}).eval()
    mha = af.create({**model, "mixer": "softmax"}).eval()
    state = gqa.state_dict()
    prefix = "stack.blocks.0.sublayers.0.fn."
    mixer_state = repeated_state(gqa.stack.blocks[0].part("mixer"))
    state.update({prefix + k: v for k, v in mixer_state.items()})
    mha.load_state_dict(state)
    ids = torch.randint(0, 50, (2, LEN))
    torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=1e-5)


def test_parameter_count():
    mixer = make_mixer("softmax", kv_heads=KV)
    dh = DIM // HEADS
    assert tuple(mixer.k_proj.weight.shape) == tuple(mixer.v_proj.weight.shape) == (KV * dh, DIM)
    expected = 2 * (DIM * DIM + DIM) + 2 * (DIM * KV * dh + KV * dh)
    assert sum(p.numel() for p in mixer.parameters()) == expected
    assert sum(p.numel() for p in make_mixer("softmax").parameters()) == 4 * (DIM * DIM + DIM)


@pytest.mark.parametrize("kv_heads", [3, 8])
def test_heads_not_a_multiple_of_kv_heads_is_refused(kv_heads):
    with pytest.raises(ConfigError, match="multiple of kv_heads") as err:
        make_mixer("softmax", kv_heads=kv_heads)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ATTENTION_WITHOUT)
def test_mixers_without_gqa_refuse_kv_heads(name):
    with pytest.raises(ConfigError, match="kv_heads") as err:
        make_mixer(name, kv_heads=KV)
    assert "\n" not in str(err.value)


def test_kv_heads_through_a_model_config():
    model = af.create("gpt", dim=DIM, heads=HEADS, depth=1, max_len=LEN, mixer={"name": "softmax", "kv_heads": 1})
    assert model.stack.blocks[0].part("mixer").k_proj.out_features == DIM // HEADS
    assert model(torch.randint(0, 256, (2, LEN))).shape == (2, LEN, 256)
    with pytest.raises(ConfigError, match="kv_heads"):
        af.create("gpt", dim=DIM, heads=HEADS, depth=1, max_len=LEN, mixer={"name": "window", "kv_heads": 2})


def test_rotary_wider_than_a_set_head_dim_is_a_config_error():
    # Found by the fuzzer: head_dim 1 under rotary laid out for dim / heads = 4 broke in the forward.
    config = {"preset": "llama", "dim": 8, "heads": 2, "depth": 1, "max_len": 4,
              "mixer": {"name": "softmax", "head_dim": 1}, "position": {"name": "rotary"}}
    with pytest.raises(ConfigError, match="rotate 4 dims of each head .* more than mixer 'softmax''s head_dim 1"):
        af.create(config)
    assert af.create({**config, "mixer": {"name": "softmax", "head_dim": 4}})(torch.zeros(1, 4, dtype=torch.long)).shape[:2] == (1, 4)
