"""Sliced group attention (SReT) against softmax attention with explicit group masks, on the
same weights: contiguous slices on even layers, permuted groups on odd ones."""
import pytest
import torch

import anyformer as af

from ..helpers import padding_mask
from .test_attention_math import reference_softmax

D, H, L = 32, 4, 16


def _sliced(**opts):
    return af.build("mixer", "sliced", dim=D, heads=H, max_len=L, **opts).double().eval()


def _group_bias(group):
    """Score bias [L, L]: 0 inside a group, -inf across (group: Long[L], a label per token)."""
    return torch.zeros(L, L, dtype=torch.float64).masked_fill(group[:, None] != group[None, :], float("-inf"))


@pytest.mark.parametrize("causal", [False, True])
def test_one_group_equals_softmax(causal):
    m = _sliced(causal=causal, groups=1)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x), reference_softmax(m, x, causal=causal), atol=1e-10)
    mask = padding_mask()
    assert torch.allclose(m(x, mask)[mask], reference_softmax(m, x, mask=mask, causal=causal)[mask], atol=1e-10)


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_even_layers_attend_inside_contiguous_slices(groups):
    m = _sliced(groups=groups)
    x = torch.randn(2, L, D, dtype=torch.float64)
    bias = _group_bias(torch.arange(L) // -(-L // groups))
    assert torch.allclose(m(x), reference_softmax(m, x, bias=bias), atol=1e-10)
    assert torch.allclose(m(x, layer=2), m(x), atol=0)


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_odd_layers_in_eval_attend_inside_interleaved_groups(groups):
    m = _sliced(groups=8, permuted_groups=groups)
    x = torch.randn(2, L, D, dtype=torch.float64)
    assert torch.allclose(m(x, layer=1), reference_softmax(m, x, bias=_group_bias(torch.arange(L) % groups)), atol=1e-10)
    mask = padding_mask()
    want = reference_softmax(m, x, mask=mask, bias=_group_bias(torch.arange(L) % groups))
    assert torch.allclose(m(x, mask, layer=1)[mask], want[mask], atol=1e-10)


def test_odd_layers_in_training_draw_a_random_permutation_per_call():
    m = _sliced(groups=4, permuted_groups=2).train()
    x = torch.randn(2, L, D, dtype=torch.float64)
    torch.manual_seed(0)
    perm = torch.randperm(L)
    group = torch.empty(L, dtype=torch.long)
    group[perm] = torch.arange(L) // (L // 2)  # slot s holds token perm[s]; slots cut in 2
    torch.manual_seed(0)
    got = m(x, layer=1)
    assert torch.allclose(got, reference_softmax(m, x, bias=_group_bias(group)), atol=1e-10)
    assert not torch.allclose(m(x, layer=1), got)  # a fresh draw


def test_causal_slices_have_a_fixed_size():
    """Causal contiguous slices are ceil(max_len / groups) tokens wherever the sequence ends."""
    m = _sliced(causal=True, groups=4)
    x = torch.randn(1, 10, D, dtype=torch.float64)
    full = torch.randn(1, L, D, dtype=torch.float64)
    full[:, :10] = x
    group = torch.arange(L) // 4
    want = reference_softmax(m, full, causal=True, bias=_group_bias(group))
    assert torch.allclose(m(full), want, atol=1e-10)
    assert torch.allclose(m(x), want[:, :10], atol=1e-10)


def test_alibi_applies_inside_groups():
    m = _sliced(groups=4, permuted_groups=2)
    alibi = af.build("position", "alibi", heads=H)
    m.set_position(alibi)
    x = torch.randn(2, L, D, dtype=torch.float64)
    bias = alibi(L).double()
    assert torch.allclose(m(x), reference_softmax(m, x, bias=bias + _group_bias(torch.arange(L) // 4)), atol=1e-10)
    assert torch.allclose(m(x, layer=1), reference_softmax(m, x, bias=bias + _group_bias(torch.arange(L) % 2)), atol=1e-10)


def test_a_shared_block_is_told_each_layer_it_runs():
    """schedule.repeat: 2 runs each block twice: the first pass slices, the recursive one
    permutes, as SReT's recursion does; a plain stack alternates the same way."""
    model = af.create("vit", dim=D, heads=H, depth=4, mixer={"name": "sliced", "groups": 4},
                      schedule={"repeat": 2}).eval()
    seen = []
    for block in model.stack.blocks:
        block.mixer.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["layer"]), with_kwargs=True)
    model(model.encoder.example_input(batch=1))
    assert model.stack.layer_blocks == [0, 0, 1, 1] and seen == [0, 1, 2, 3]


def test_two_layers_of_vit_read_every_patch_from_the_cls_token():
    model = af.create("vit", dim=D, heads=H, depth=2, mixer="sliced",
                      encoder={"name": "patches", "image_size": 8, "patch_size": 2, "channels": 1},
                      head={"name": "cls", "num_classes": 10}).eval()
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    model(x).sum().backward()
    per_patch = x.grad.abs().view(4, 2, 4, 2).sum((1, 3))
    assert (per_patch > 0).all()  # was 4 of 16 before permuted layers


def test_sret_preset_follows_the_official_stages():
    model = af.create("sret")
    groups = [(b.mixer.groups, b.mixer.permuted_groups) for b in model.stack.blocks]
    assert groups == [(8, 2), (4, 1), (4, 1), (1, 1)]  # SReT-T's groups1 / groups2 per stage
    assert model.stack.layer_blocks == [0, 0, 1, 1, 2, 2, 3, 3] and model.stage_depths == [2, 4, 2]
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[:, :, 16:] = torch.randn_like(y[:, :, 16:])
    with torch.no_grad():
        assert (model.eval()(x) - model(y)).abs().max() > 1e-3  # the bottom half counts (was 0.0)
