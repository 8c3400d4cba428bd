"""SSA: the mixer against softmax attention on the same weights, and the model-level
self-ensemble (Hossain et al. 2023) against sub-models built by hand."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.ensemble import ensemble_members, ensemble_size, self_ensembled
from anyformer.nn.mixers.ssa import SubsampledSelfAttention, ensemble_seed
from anyformer.nn.model import AnyFormer

from ..helpers import padding_mask
from ..test_generic_archs import example, inputs
from .test_attention_math import _heads, _merge, reference_softmax

D, H, L = 32, 4, 16
VOCAB, N = 50, 4


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


def test_mixer_alone_no_longer_averages_and_a_member_draws_from_its_seed():
    m = af.build("mixer", "ssa", dim=D, heads=H, max_len=L, keep=0.5, eval_samples=4, eval_seed=7).double().eval()
    x = torch.randn(2, L, D, dtype=torch.float64)
    # Outside a model's ensemble, eval is full attention: the average is the model's job.
    assert torch.allclose(m(x), reference_softmax(m, x), atol=1e-10)
    assert m.ensemble_samples() == 4
    m.set_ensemble_member(2, layer=5)
    got = m(x)
    keys = m.sample_keys(2, L, x.device, torch.Generator().manual_seed(ensemble_seed(7, 2, 5)))
    q, k, v = m.qkv(x)
    assert torch.allclose(got, m.o_proj(m.merge(m.attend(q, k, v, None, keys))), atol=1e-10)
    m.set_ensemble_member(None, layer=5)
    assert torch.allclose(m(x), reference_softmax(m, x), atol=1e-10)
    # keep = 1: every sub-model is the full model, so nothing to average.
    assert af.build("mixer", "ssa", dim=D, heads=H, max_len=L, keep=1.0, eval_samples=4).ensemble_samples() == 0


def test_ensemble_seeds_are_distinct_per_pass_and_layer():
    seeds = {ensemble_seed(0, i, layer) for i in range(64) for layer in range(64)}
    assert len(seeds) == 64 * 64 and ensemble_seed(1, 0, 0) not in seeds
    assert all(0 <= ensemble_seed(s, 3, 2) < 2**32 for s in (-5, 0, 2**40))


def _model(mixer, depth=2, share=None, ffn=None, seed=0):
    torch.manual_seed(seed)
    cfg = dict(dim=D, heads=H, depth=depth, dropout=0.0, max_len=L, mixer=mixer, position="learned",
               ffn=ffn or {"name": "mlp", "ratio": 2}, schedule={"share": share} if share else {},
               encoder={"name": "tokens", "vocab_size": VOCAB}, head={"name": "mean", "num_classes": 3})
    return af.create(cfg).double().eval()


def _ssa(n=N, seed=0, keep=0.5):
    return {"name": "ssa", "keep": keep, "eval_samples": n, "eval_seed": seed}


def _by_hand(model, ids, mask, passes, draw):
    """Sub-model outputs (and hidden states) with every SSA mixer's forward replaced by
    attention over keys from `draw(pass, layer)` (a generator, drawn anew at each call)."""
    mixers = [m for m in model.modules() if isinstance(m, SubsampledSelfAttention)]
    outs = []
    for i in range(passes):
        for layer, m in enumerate(mixers):
            gen = draw(i, layer)

            def forward(x, mask=None, m=m, gen=gen):
                keys = m.sample_keys(x.shape[0], x.shape[1], x.device, gen)
                q, k, v = m.qkv(x)
                return m.o_proj(m.merge(m.attend(q, k, v, mask, keys)))
            m.forward = forward
        outs.append(model(ids, mask, return_hidden=True))
        for m in mixers:
            del m.forward
    return outs


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (2, L), generator=g), padding_mask()


@pytest.mark.parametrize("share", [None, 1])  # 1: one block run at both layers
def test_model_ensemble_is_the_mean_of_whole_sub_models(share):
    ensemble = _model(_ssa(seed=3), share=share)
    single = _model(_ssa(n=0, seed=3), share=share)  # the same weights, no ensemble
    single.load_state_dict(ensemble.state_dict())
    ids, mask = _inputs()
    with torch.no_grad():
        got, hidden = ensemble(ids, mask, return_hidden=True)
        subs = _by_hand(single, ids, mask, N,
                        lambda i, layer: torch.Generator().manual_seed(ensemble_seed(3, i, layer)))
    want = sum(out for out, _ in subs) / N
    assert torch.allclose(got, want, atol=1e-12)
    # The sub-models really differ, and the mean is not the full model's output.
    assert not torch.allclose(subs[0][0], subs[1][0], atol=1e-6)
    assert not torch.allclose(got, single(ids, mask), atol=1e-6)
    # return_hidden: the same averaged output; the hidden states are the first sub-model's.
    assert torch.equal(ensemble(ids, mask), got)
    assert all(torch.allclose(h, w, atol=1e-12) for h, w in zip(hidden, subs[0][1]))


def test_model_ensemble_is_deterministic_and_follows_eval_seed():
    model = _model(_ssa(seed=0))
    ids, mask = _inputs()
    with torch.no_grad():
        first, second = model(ids, mask), model(ids, mask)
        assert torch.equal(first, second)
        for m in ensemble_members(model):
            m.eval_seed = 1
        assert not torch.allclose(model(ids, mask), first, atol=1e-6)
    # Nothing of a pass is left behind on the members.
    assert all(m.member_seed is None for m in ensemble_members(model))


def test_two_layer_ensemble_differs_from_the_old_per_layer_average():
    model = _model(_ssa(seed=0))
    ids, mask = _inputs()
    mixers = [m for m in model.modules() if isinstance(m, SubsampledSelfAttention)]
    with torch.no_grad():
        got = model(ids, mask)
        for m in mixers:  # the former rule: each layer averaged N subsampled attentions itself

            def forward(x, mask=None, m=m):
                gen = torch.Generator().manual_seed(m.eval_seed)
                q, k, v = m.qkv(x)
                keys = [m.sample_keys(x.shape[0], x.shape[1], x.device, gen) for _ in range(N)]
                return m.o_proj(m.merge(sum(m.attend(q, k, v, mask, s) for s in keys) / N))
            m.forward = forward
            m.eval_samples = 0  # so the model makes one pass of the per-layer averages
        old = model(ids, mask)
    assert not torch.allclose(got, old, atol=1e-6)


def test_no_ensemble_equals_softmax_on_the_same_weights():
    ssa, softmax = _model(_ssa(n=0)), _model("softmax")
    softmax.load_state_dict(ssa.state_dict())
    ids, mask = _inputs()
    with torch.no_grad():
        assert torch.equal(ssa(ids), softmax(ids))
        assert torch.allclose(ssa(ids, mask), softmax(ids, mask), atol=1e-12)
    assert ensemble_size(ssa) == 0 and ensemble_size(softmax) == 0


def test_only_layers_asking_for_an_ensemble_subsample():
    model = _model(_ssa())
    _, second = ensemble_members(model)
    second.eval_samples = 0  # this layer stays full attention in every sub-model
    seen = []
    second.register_forward_hook(lambda m, *_: seen.append(m.member_seed))
    with torch.no_grad():
        model(*_inputs())
    assert seen == [None] * N


class _Wrapped(AnyFormer):
    @self_ensembled
    def forward(self, x, mask=None, return_hidden=False):
        return super().forward(x, mask, return_hidden)


def test_a_wrapped_forward_calling_another_runs_one_ensemble():
    model = _Wrapped(af.model_config(_model(_ssa()).config.to_dict())).eval()
    calls = _count_mixer_calls(model)
    with torch.no_grad():
        model(*_inputs())
    assert len(calls) == 2 * N


def _count_mixer_calls(model):
    calls = []
    for m in ensemble_members(model):
        m.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_training_is_one_pass_with_aux_losses_and_eval_runs_n():
    model = _model(_ssa(), ffn={"name": "moe", "experts": 4, "top_k": 2, "ratio": 1.0})
    calls = _count_mixer_calls(model)
    ids, mask = _inputs()
    model.train()
    out = model(ids, mask)
    assert len(calls) == 2 and out.shape == (2, 3)
    moe = [m for m in model.modules() if isinstance(getattr(m, "aux_loss", None), torch.Tensor)]
    assert moe and all(m.aux_loss.requires_grad for m in moe)
    out.sum().backward()
    calls.clear()
    with torch.no_grad():
        assert torch.isfinite(model.eval()(ids, mask)).all()
    assert len(calls) == 2 * N


@pytest.mark.parametrize("name", registry.list_components("arch"))
def test_every_arch_runs_the_ensemble(name):
    torch.manual_seed(0)
    if getattr(registry.get("arch", name), "builds_own_mixer", False):
        with pytest.raises(ConfigError, match=f"arch {name!r} builds its own token mixing"):
            af.create({**example(name).config, "mixer": _ssa(n=3)})
        return
    model = af.create({**example(name).config, "mixer": _ssa(n=3)}).eval()
    args, kwargs = inputs(name, model)
    calls = _count_mixer_calls(model)
    with torch.no_grad():
        first = model(*args, **kwargs)
        assert torch.equal(model(*args, **kwargs), first)
        ensembled = len(calls) // 2
        for m in ensemble_members(model):
            m.eval_samples = 0
        calls.clear()
        full = model(*args, **kwargs)
    assert len(calls) > 0 and ensembled == 3 * len(calls), f"{name}: {ensembled} mixer calls, one pass makes {len(calls)}"
    assert not torch.allclose(first, full, atol=1e-6)
