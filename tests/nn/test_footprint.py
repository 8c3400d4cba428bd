"""anyformer.nn.footprint: parameters counted on the meta device before a build, and the
guard every model build passes. Nothing here allocates a large model: the absurd sizes
are refused from the meta count, and ordinary ones are refused by reporting little free
memory."""
import random

import numpy as np
import pytest
import torch

import anyformer as af
from anyformer import presets, runtime
from anyformer.config import model_config
from anyformer.errors import ConfigError
from anyformer.nn import footprint
from anyformer.nn.footprint import estimate, human_bytes, measure

GiB = 2**30


@pytest.fixture
def free(monkeypatch):
    """Report `free.bytes` of available memory (8 GiB unless a test sets it)."""
    class Free:
        bytes = 8 * GiB
    monkeypatch.setattr(runtime, "available_memory", lambda device="cpu": Free.bytes)
    return Free


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", presets.list_presets())
def test_meta_count_equals_the_built_model_for_every_preset(name):
    cfg = model_config(name)
    fp = estimate(cfg)
    real = measure(af.create(cfg))
    assert fp is not None
    assert (fp.params, fp.param_bytes, fp.buffer_bytes, fp.modules) == (real.params, real.param_bytes, real.buffer_bytes, real.modules)
    assert fp.train_bytes == real.model_bytes + 3 * real.trainable_bytes  # + gradients, AdamW's two moments


def test_estimate_leaves_every_rng_as_it_was():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    estimate(model_config("kat"))  # KAN computes a constant at init: the meta build's retry path
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert (np.random.get_state()[1] == state[2]).all()


def test_a_checked_build_makes_the_same_weights_as_an_unchecked_one(monkeypatch):
    import anyformer.nn.model as model_module

    torch.manual_seed(0)
    checked = af.create("kat", depth=1)
    monkeypatch.setattr(model_module, "check_build", lambda config: None)
    torch.manual_seed(0)
    unchecked = af.create("kat", depth=1)
    assert all(torch.equal(a, b) for a, b in zip(checked.state_dict().values(), unchecked.state_dict().values()))


def test_dim_1e9_is_refused_from_the_meta_count(free):
    with pytest.raises(ConfigError) as err:
        af.create("gpt", dim=1_000_000_000)
    text = one_line(err)
    # Its FFN weight alone is past what torch can address: the message says so and names dim.
    assert text.startswith("model.dim=1000000000: the model needs over 13.9 EiB for its parameters")
    assert "[4000000000, 1000000000]" in text and "this machine has 8.0 GiB free; lower model.dim" in text


def test_a_large_dim_gets_the_estimate_and_the_free_memory(free):
    cfg = model_config("gpt", dim=1_000_000)
    fp = estimate(cfg)
    with pytest.raises(ConfigError) as err:
        af.create(cfg)
    assert one_line(err) == (
        f"model.dim=1000000: the model needs ~{human_bytes(fp.model_bytes)} for its {fp.params:,} parameters "
        f"(~{human_bytes(fp.train_bytes)} to train with AdamW, before activations), this machine has 8.0 GiB free; "
        "lower model.dim")
    assert fp.params > 12 * 4 * 10**12  # 4 layers of ~12 dim^2


def test_max_len_1e9_blames_max_len_first(free):
    with pytest.raises(ConfigError) as err:
        af.create("gpt", max_len=1_000_000_000)  # a learned position table of 1e9 x 128
    assert one_line(err).startswith("model.max_len=1000000000 / model.dim=128: the model needs ~476.8 GiB for its 128,")
    assert err.value.args[0].endswith("lower model.max_len or model.dim")


def test_an_ordinary_model_is_refused_when_memory_is_short(free):
    cfg = model_config("vit", depth=2, dim=64)
    fp = estimate(cfg)
    free.bytes = fp.model_bytes - 1
    with pytest.raises(ConfigError) as err:
        af.create(cfg)
    assert f"for its {fp.params:,} parameters" in one_line(err) and f"this machine has {human_bytes(free.bytes)} free" in str(err.value)
    free.bytes = fp.model_bytes  # exactly enough: built
    assert measure(af.create(cfg)).params == fp.params


def test_no_size_stands_out_names_the_model_and_its_biggest_part(free, monkeypatch):
    free.bytes = 1
    monkeypatch.setattr(footprint, "BLAME_MIN_GAIN", 100.0)
    with pytest.raises(ConfigError) as err:
        af.create("vit", depth=1, dim=32)
    assert one_line(err).startswith("model (dim=32, depth=1, max_len=256): the model needs ~")
    assert ", mostly in its stack (" in str(err.value) and str(err.value).endswith("lower model.dim or model.depth")


def test_depth_1e8_is_refused_before_anything_iterates_it(free):
    with pytest.raises(ConfigError) as err:
        af.create("gpt", depth=100_000_000, schedule={"share": 1})  # shared: a tiny parameter count
    assert one_line(err) == ("model.depth=100000000: over 10,000 layers is no model anyone trains "
                             "(the deepest published Transformers have ~1,000); lower model.depth")


def test_a_layer_count_of_the_arch_is_bounded_by_the_module_budget(free, monkeypatch):
    monkeypatch.setattr(footprint, "MAX_MODULES", 2_000)
    cfg = model_config("fit", arch={"name": "fit", "local_layers": 1_000})  # 3,003 layers
    with pytest.raises(ConfigError) as err:
        af.create(cfg)
    assert one_line(err) == ("model.depth=3, model.arch.local_layers=1000, model.arch.group_size=16: the model would "
                             "have over 2,000 modules (a 1,000-layer GPT has ~17,000) and take minutes to build; lower "
                             "model.depth or the arch's layer counts")
    assert getattr(footprint._BUILD, "modules", None) is None  # the counter is off again
    assert measure(af.create("fit", depth=1)).modules < 2_000  # and real builds are not counted


def test_an_arch_declares_its_layer_count_and_past_max_depth_nothing_is_built(free, monkeypatch):
    monkeypatch.setattr(footprint, "_meta_model", lambda config: pytest.fail("built before the layer count was checked"))
    with pytest.raises(ConfigError) as err:
        af.create("fit", arch={"name": "fit", "local_layers": 10 ** 6, "global_layers": 2})
    assert one_line(err).startswith("model.depth=3, model.arch.local_layers=1000000, model.arch.group_size=16: "
                                    "3,000,006 layers, over 10,000, is no model anyone trains")


def test_inside_a_meta_build_the_guard_is_a_no_op(free):
    free.bytes = 0
    with torch.device("meta"):
        model = af.create("vit", depth=1, dim=32)
    assert next(model.parameters()).is_meta


def test_a_model_the_meta_device_cannot_build_is_built_unchecked(free, monkeypatch):
    free.bytes = 0
    monkeypatch.setattr(footprint, "_meta_model", lambda config: None)
    assert measure(af.create("vit", depth=1, dim=32)).params > 0


def test_an_invalid_config_reports_its_own_error_not_the_guard():
    with pytest.raises(ConfigError, match="cannot be causal"):
        af.create("fit", causal=True)


@pytest.mark.parametrize("n,text", [(0, "0 bytes"), (1536, "1.5 KiB"), (3 * GiB, "3.0 GiB"), (5 * 2**60, "5.0 EiB"),
                                    (2**70, "1024.0 EiB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text
