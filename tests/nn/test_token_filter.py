"""The token filter (Wang et al. 2023) as a model part: keep = 1 is the unfiltered model
exactly; the kept tokens are each sample's top-scored ones in their original order, [CLS]
first; padding is never kept before a real token; a filtered model equals the stack run on
the kept tokens alone; the config validates it in one line; parts that cannot take a token
subset refuse at build, by their declared capability, and every mixer declaring it treats
its tokens as a set (permutation-equivariant)."""
import math

import pytest
import torch

import anyformer as af
from anyformer import catalog, registry
from anyformer.errors import ConfigError
from anyformer.nn.token_filter import TokenFilter
from tests.nn.helpers import DIM, make_mixer

VIT = dict(dim=DIM, depth=2, heads=4, num_classes=10, image_size=8, patch_size=2, channels=1)


def vit(**kw):
    torch.manual_seed(0)
    return catalog.create("vit", **{**VIT, **kw}).eval()


def expected(filt: TokenFilter, tokens: torch.Tensor, mask: torch.Tensor | None):
    """(kept tokens, kept mask) computed sample by sample from the filter's own scores."""
    P = filt.prefix
    scores = filt.score(tokens[:, P:])
    rows, masks = [], []
    for b in range(len(tokens)):
        real = torch.ones(tokens.shape[1] - P, dtype=torch.bool) if mask is None else mask[b, P:]
        idx = real.nonzero().squeeze(-1)
        if filt.keep is not None:
            k = math.ceil(len(idx) * filt.keep - 1e-9)
        else:
            k = max(1, int((scores[b, idx] >= filt.threshold).sum()))
        top = idx[scores[b, idx].argsort(descending=True, stable=True)[:k]].sort().values
        rows.append(torch.cat([tokens[b, :P], tokens[b, P + top]]))
        masks.append(k)
    K = max(masks)
    out = torch.zeros(len(tokens), P + K, tokens.shape[-1])
    kept = torch.zeros(len(tokens), P + K, dtype=torch.bool)
    for b, (row, k) in enumerate(zip(rows, masks)):
        out[b, :len(row)] = row
        kept[b, :P + k] = True
    return out, kept


def test_keep_one_is_the_unfiltered_model_exactly():
    plain = vit()
    filtered = vit(token_filter={"keep": 1.0})
    filtered.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(filtered(x), plain(x))
    tokens, mask = torch.randn(2, 5, DIM), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out, out_mask = filtered.token_filter(tokens, mask)
    assert out is tokens and out_mask is mask


@pytest.mark.parametrize("keep, prefix", [(0.5, 1), (0.3, 1), (0.25, 0), (0.01, 1)])
def test_kept_tokens_are_the_top_scored_in_order_with_the_prefix_first(keep, prefix):
    torch.manual_seed(1)
    filt = TokenFilter(DIM, keep=keep, hidden=16, prefix=prefix).eval()
    tokens = torch.randn(4, 1 + 10, DIM)
    with torch.no_grad():
        got, got_mask = filt(tokens)
        want, _ = expected(filt, tokens, None)
    K = max(1, math.ceil(10 * keep - 1e-9))
    assert got.shape == (4, prefix + K, DIM) and got_mask is None  # every sample keeps K: no mask
    assert torch.equal(got, want)
    if prefix:
        assert torch.equal(got[:, 0], tokens[:, 0])  # [CLS] is kept whatever its score


def test_padding_is_never_kept_and_each_sample_keeps_its_share_of_real_tokens():
    torch.manual_seed(2)
    filt = TokenFilter(DIM, keep=0.5, hidden=16, prefix=1).eval()
    tokens = torch.randn(3, 9, DIM)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 5:] = False  # 4 real candidates -> keeps 2
    mask[1, 8:] = False  # 7 -> 4
    with torch.no_grad():
        got, got_mask = filt(tokens, mask)
        want, want_mask = expected(filt, tokens, mask)
    assert got_mask.sum(1).tolist() == [1 + 2, 1 + 4, 1 + 4] and torch.equal(got_mask, want_mask)
    assert torch.equal(got[got_mask], want[want_mask])


def test_a_threshold_keeps_the_tokens_scored_at_least_it_and_pads_the_rest():
    torch.manual_seed(3)
    probe = TokenFilter(DIM, keep=1.0, hidden=16, prefix=1)
    tokens = torch.randn(4, 13, DIM)
    with torch.no_grad():
        scores = probe.score(tokens[:, 1:])
    threshold = float(scores.median())
    filt = TokenFilter(DIM, threshold=threshold, hidden=16, prefix=1)
    filt.load_state_dict(probe.state_dict())
    with torch.no_grad():
        got, got_mask = filt(tokens)
        want, want_mask = expected(filt, tokens, None)
    counts = (scores >= threshold).sum(1).clamp_min(1)
    assert got_mask.sum(1).tolist() == (1 + counts).tolist() and torch.equal(got_mask, want_mask)
    assert torch.equal(got[got_mask], want[want_mask])
    very_high = TokenFilter(DIM, threshold=1e9, hidden=16, prefix=1)
    very_high.load_state_dict(probe.state_dict())
    with torch.no_grad():
        top, top_mask = very_high(tokens)
    assert top.shape[1] == 2 and top_mask is None  # none passes: each sample keeps its best one


def test_the_filtered_model_is_the_stack_run_on_the_kept_tokens():
    model = vit(token_filter={"keep": 0.5, "hidden": 8})
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        tokens, _ = model.encoder(x)
        tokens = model.position(tokens)
        scores = model.token_filter.score(tokens[:, 1:])
        top = scores.topk(8, dim=1).indices.sort(dim=1).values + 1
        kept = torch.cat([tokens[:, :1], tokens.gather(1, top[..., None].expand(-1, -1, DIM))], 1)
        out, _, _ = model.stack(kept, None)
        want = model.head(model.final_norm(out, None), None, [])
        torch.testing.assert_close(model(x), want, atol=1e-6, rtol=0)


def test_the_filter_is_saved_with_the_weights_and_rebuilt_from_the_config():
    model = vit(token_filter={"keep": 0.5, "hidden": 8})
    state = model.state_dict()
    assert {k for k in state if k.startswith("token_filter.")} == {
        "token_filter.net.0.weight", "token_filter.net.0.bias", "token_filter.net.2.weight", "token_filter.net.2.bias"}
    config = af.model_config("vit", **VIT, token_filter={"keep": 0.5, "hidden": 8}).to_dict()
    assert config["token_filter"] == {"keep": 0.5, "hidden": 8}
    rebuilt = catalog.create(config).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert "token_filter" not in af.model_config("vit").to_dict()  # default: none


@pytest.mark.parametrize("value, says", [
    ({"keep": 0.0}, r"^model.token_filter.keep must be in \(0, 1\] \(the share of tokens kept\), got 0.0$"),
    ({"keep": 1.5}, r"^model.token_filter.keep must be in \(0, 1\] \(the share of tokens kept\), got 1.5$"),
    ({"keep": -0.5}, r"^model.token_filter.keep must be in \(0, 1\]"),
    ({"keep": 0.5, "threshold": 0.1}, r"^model.token_filter: give keep .* or threshold .*, not both$"),
    ({"hidden": 8}, r"^model.token_filter: give keep .* or threshold .*, one of them$"),
    ({"keep": True}, r"^model.token_filter.keep must be a number, got True$"),
    ({"kep": 0.5}, r"^model.token_filter: unknown field 'kep' \(did you mean 'keep'\?\); valid: hidden, keep, threshold$"),
    ({"keep": 0.5, "hidden": 0}, r"^model.token_filter.hidden must be >= 1, got 0$"),
    (0.5, r"^model.token_filter must be a mapping such as \{keep: 0.5\}"),
])
def test_bad_filter_configs_are_one_line(value, says):
    with pytest.raises(ConfigError, match=says) as err:
        af.model_config("vit", token_filter=value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("change, says", [
    ({"mixer": "local"}, "model.token_filter: mixer 'local' cannot take a subset of the tokens"),
    ({"position": "rotary"}, "model.token_filter: position 'rotary' acts inside the mixers"),
    ({"head": "last"}, "model.token_filter: head 'last' needs every token"),
    ({"cls_token": False}, "model.token_filter: head 'cls' reads the first token, which filtering may drop"),
    ({"causal": True}, "model.token_filter: a causal model predicts at every position"),
    ({"mixer": "fnet", "token_filter": {"threshold": 0.0}}, "model.token_filter: mixer 'fnet' cannot take a subset"),
])
def test_parts_that_cannot_take_a_token_subset_refuse_at_build(change, says):
    change = dict(change)
    spec = change.pop("token_filter", {"keep": 0.5})
    with pytest.raises(ConfigError) as err:
        catalog.create("vit", **{**VIT, **change}, token_filter=spec)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_archs_that_do_not_apply_a_filter_refuse_it():
    with pytest.raises(ConfigError, match=r"^model.token_filter: arch 'nest' does not apply a token filter; use arch 'stack'"):
        af.model_config("nest", token_filter={"keep": 0.5})
    with pytest.raises(ConfigError, match="head 'lm' needs every token"):
        catalog.create("transformer", dim=DIM, heads=4, head={"name": "lm"}, token_filter={"keep": 0.5})


def test_a_threshold_needs_mixers_that_honour_a_mask():
    model = vit(token_filter={"threshold": 0.0})  # softmax honours masks: builds
    assert model.token_filter.threshold == 0.0
    assert all(registry.get("mixer", n).supports_mask for n in SUBSET_MIXERS)


SUBSET_MIXERS = [n for n in registry.list_components("mixer") if registry.get("mixer", n).accepts_token_subset]


def test_the_mixers_that_take_a_subset_are_declared():
    assert SUBSET_MIXERS == ["activator", "gau", "linear", "minimal", "performer", "random-feature", "softmax", "ssa"]


@pytest.mark.parametrize("name", SUBSET_MIXERS)
def test_every_mixer_taking_a_subset_treats_its_tokens_as_a_set(name):
    # What it does to a token depends on the others' contents, not on their places: a
    # permutation of the inputs permutes the outputs, so dropping some changes nothing else.
    torch.manual_seed(0)
    mixer = make_mixer(name).eval()
    x = torch.randn(2, 12, DIM)
    perm = torch.randperm(12)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x[:, perm]), mixer(x)[:, perm], atol=1e-5, rtol=1e-4)
