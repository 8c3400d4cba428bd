"""Generation (nn/generation.py, nn/decoding.py): for every causal mixer, decoding with its
cache gives the logits of a full forward pass over the same tokens, and generate() with
caches gives the tokens of generate() without; sampling options and errors."""
import warnings

import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.nn.decoding import cannot_decode, decoding
from anyformer.nn.generation import RecomputeWarning, sample

CAUSAL = [n for n in registry.list_components("mixer") if registry.get("mixer", n).supports_causal]
DECODING = [n for n in CAUSAL if registry.get("mixer", n).supports_decoding]
# Cut points of a 21-token sequence: a prompt, single tokens, then a block of several.
CUTS = [(0, 6), (6, 7), (7, 8), (8, 15), (15, 16), (16, 21)]


def gpt(mixer: str | dict = "softmax", **overrides) -> torch.nn.Module:
    spec = mixer if isinstance(mixer, dict) else {"name": mixer, **getattr(registry.get("mixer", mixer), "example_options", {})}
    torch.manual_seed(0)
    return af.create("gpt", mixer=spec, **{"dim": 32, "heads": 4, "depth": 2, "max_len": 24, **overrides}).eval()


def stepped_logits(model, ids):
    """Logits of `ids` fed in the pieces of CUTS, each after the cache of the earlier ones."""
    out = []
    with torch.no_grad(), decoding(model) as state:
        for a, b in CUTS:
            out.append(model(ids[:, a:b]))
            state.advance(b - a)
    return torch.cat(out, 1)


def test_the_mixers_that_decode_incrementally():
    # Declared on each class; the rest recompute. A change here is a decision to review.
    assert {"softmax", "linear", "local"} <= set(DECODING)
    assert set(DECODING) <= set(CAUSAL)


@pytest.mark.parametrize("mixer", DECODING)
def test_cached_decoding_gives_the_full_forward_logits(mixer):
    model = gpt(mixer)
    ids = torch.randint(0, 256, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
    assert (stepped_logits(model, ids) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("variant", [
    {"position": "rotary"}, {"position": "alibi"}, {"position": "sinusoidal"},
    {"mixer": {"name": "softmax", "kv_heads": 2}}, {"mixer": {"name": "softmax", "kv_heads": 1}, "position": "rotary"},
    {"mixer": {"name": "local", "window": 4}, "position": "alibi"}, {"mixer": {"name": "local", "window": 2, "kv_heads": 2}, "position": "rotary"},
    {"mixer": {"name": "linear", "chunk": 4}}, {"norm": {"name": "rmsnorm", "placement": "peri"}}, {"layout": "parallel"},
    {"mixer": {"name": "performer", "features": 16, "chunk": 4}, "position": "rotary"},
    {"mixer": {"name": "performer", "features": 16, "kv_heads": 2}},
    {"mixer": {"name": "sla", "chunk": 4, "kernel_size": 3}}, {"mixer": {"name": "sla", "kernel_size": 1, "kv_heads": 2}},
    {"mixer": {"name": "sla", "conv": False}},
])
def test_cached_decoding_with_positions_heads_and_layouts(variant):
    variant = dict(variant)
    model = gpt(variant.pop("mixer", "softmax"), **variant)
    ids = torch.randint(0, 256, (3, 21), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
    assert (stepped_logits(model, ids) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("schedule", [{"share": 1}, {"repeat": 2}])
def test_a_shared_mixer_keeps_one_cache_per_layer_it_runs(schedule):
    model = gpt("softmax", schedule=schedule, depth=3)
    mixers = {id(m) for m in model.modules() if isinstance(m, registry.get("mixer", "softmax"))}
    assert len(mixers) < 3  # fewer mixers than the layers they run
    ids = torch.randint(0, 256, (1, 21), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids)
    assert (stepped_logits(model, ids) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("mixer", CAUSAL)
def test_generate_with_and_without_caches_gives_the_same_tokens(mixer):
    model = gpt(mixer)
    prompt = torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        greedy = model.generate(prompt, 8, temperature=0)
        sampled = model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7)
    assert greedy.shape == (2, 13) and torch.equal(greedy[:, :5], prompt)
    assert torch.equal(greedy, model.generate(prompt, 8, temperature=0, cache=False))
    assert torch.equal(sampled, model.generate(prompt, 8, temperature=1.0, top_k=20, seed=7, cache=False))
    notices = [w for w in caught if issubclass(w.category, RecomputeWarning)]
    if mixer in DECODING:
        assert notices == [] and cannot_decode(model) == []
    else:
        assert len(notices) == 2 and f"mixer {mixer!r}" in str(notices[0].message) and "\n" not in str(notices[0].message)


def test_greedy_follows_the_argmax_of_the_full_forward():
    model = gpt("softmax")
    prompt = torch.randint(0, 256, (1, 4), generator=torch.Generator().manual_seed(5))
    out = model.generate(prompt, 5, temperature=0)
    with torch.no_grad():
        logits = model(out[:, :-1])
    assert torch.equal(out[:, 4:], logits[:, 3:].argmax(-1))


def test_sampling_options():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, 1.0, 1, None, g), torch.ones(500, dtype=torch.long))
    top2 = sample(logits, 1.0, 2, None, g)
    assert set(top2.tolist()) == {1, 3}
    # p = softmax([0, 3, 1, 2]) = [.032, .644, .087, .237]: the nucleus of 0.8 is {1, 3}
    nucleus = sample(logits, 1.0, None, 0.8, g)
    assert set(nucleus.tolist()) == {1, 3}
    assert set(sample(logits, 1.0, None, 0.5, g).tolist()) == {1}
    share = (sample(logits, 1.0, None, None, g) == 1).float().mean()
    assert 0.55 < share < 0.74  # ~0.644, 500 draws
    a = sample(logits, 0.7, None, None, torch.Generator().manual_seed(3))
    assert torch.equal(a, sample(logits, 0.7, None, None, torch.Generator().manual_seed(3)))
    with pytest.raises(ConfigError, match="top_p"):
        sample(logits, 1.0, None, 1.5, g)


def test_generation_errors_are_one_line():
    prompt = torch.randint(0, 256, (1, 20))
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 0"):
        gpt().generate(prompt, -1)
    torch.manual_seed(0)
    bidirectional = af.create("transformer", dim=32, heads=4, depth=1, max_len=24, head={"name": "lm", "vocab_size": 256})
    with pytest.raises(ConfigError, match="causal"):
        bidirectional.generate(prompt[:, :4], 2)
    classifier = af.create("gpt", dim=32, heads=4, depth=1, max_len=24, head={"name": "last", "num_classes": 3})
    with pytest.raises(ConfigError, match="language-model head"):
        classifier.generate(prompt[:, :4], 2)
    padded = gpt("softmax", encoder={"name": "tokens", "vocab_size": 256, "pad_id": 0})
    ids = torch.tensor([[5, 6, 0, 7]])
    with pytest.raises(ConfigError, match="without padding"):
        padded.generate(ids, 2)


def test_generate_restores_training_mode():
    model = gpt("softmax").train()
    model.generate(torch.randint(0, 256, (1, 3)), 2, temperature=0)
    assert model.training


def test_generation_computes_the_last_logits_only():
    model = gpt("linear")
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = model(ids)
        with decoding(model, last_only=True) as state:
            last = model(ids)
            state.advance(9)
            after = model(ids[:, :1])
    assert last.shape == (2, 1, 256) and torch.allclose(last, full[:, -1:], atol=1e-6)
    assert after.shape == (2, 1, 256)


def test_the_key_value_cache_grows_past_its_first_room():
    """The cache's room starts at 64 tokens and doubles: pieces crossing 64 and 128 keep the
    earlier keys where they were."""
    model = gpt("softmax", max_len=300, position="rotary")
    ids = torch.randint(0, 256, (2, 150), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model(ids)
        out = []
        with decoding(model) as state:
            for a, b in [(0, 60), (60, 61), (61, 70), (70, 129), (129, 130), (130, 150)]:
                out.append(model(ids[:, a:b]))
                state.advance(b - a)
    assert (torch.cat(out, 1) - full).abs().max() <= 1e-5
    rooms = {slot["k"].shape[2] for slot in state.slots}
    assert rooms == {256}  # 64 -> 128 -> 256, never max_len at once


@pytest.mark.parametrize("mixer", ["softmax", "linear", "gau"])
def test_generation_past_max_len_slides_the_context(mixer):
    """max_len 24: 30 new tokens after a 20-token prompt slide the context twice; with
    caches (refilled at each slide) and without, the same tokens."""
    model = gpt(mixer)
    prompt = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecomputeWarning)
        cached = model.generate(prompt, 30, temperature=0)
        plain = model.generate(prompt, 30, temperature=0, cache=False)
    assert cached.shape == (2, 50) and torch.equal(cached, plain)
    with torch.no_grad():  # the token after the first slide reads only the last 12
        context = cached[:, 13:25]
        assert torch.equal(model(context)[:, -1].argmax(-1), cached[:, 25])


def test_the_catalogue_says_which_mixers_decode():
    assert registry.describe("mixer", "softmax")["decode"] is True
    assert registry.describe("mixer", "gau")["decode"] is False
    assert registry.describe("mixer", "fnet")["decode"] is None  # never causal: the question does not arise
