"""anyformer.nn.step_memory: the activation / gradient / optimizer-state estimate of one
step, checked against the peak the profiler measures, and the guard that refuses a batch
or length past the memory free (reported small here: nothing large is allocated)."""
import pytest
import torch

import anyformer as af
from anyformer import runtime
from anyformer.bench.memory import peak_bytes
from anyformer.bench.profiler import scalar_loss
from anyformer.errors import ConfigError
from anyformer.nn.footprint import human_bytes, measure
from anyformer.nn.step_memory import TOKEN_ACTIVATIONS, activation_bytes, check_run, run_needs

GiB = 2**30


@pytest.fixture
def free(monkeypatch):
    class Free:
        bytes = 8 * GiB
    monkeypatch.setattr(runtime, "available_memory", lambda device="cpu": Free.bytes)
    return Free


@pytest.mark.parametrize("name,over", [
    ("vit", {}), ("gpt", {"max_len": 128}), ("bert", {"max_len": 128}), ("switch", {"max_len": 128}), ("fit", {}),
])
def test_training_estimate_is_within_a_small_factor_of_the_measured_peak(name, over):
    model = af.create(name, depth=2, dim=64, **over).train()
    x = model.encoder.example_input(4)

    def step():
        scalar_loss(model(x)).backward()

    measured = peak_bytes(step, torch.device("cpu"))  # activations and the gradients the step makes
    needs = run_needs(model, 4, "cpu", training=True)
    assert needs["model"] == 0 and needs["state"] == measure(model).trainable_bytes
    assert 0.3 <= (needs["activations"] + needs["state"]) / measured <= 3.0


def test_activations_follow_batch_tokens_depth_and_training():
    model = af.create("gpt", depth=2, dim=32, max_len=64)
    full = activation_bytes(model, 2)
    assert activation_bytes(model, 4) == 2 * full
    assert activation_bytes(model, 2, tokens=32) == full // 2  # a shorter input: every term halves
    assert activation_bytes(model, 2, tokens=10**9) == full  # never more than the encoder emits
    # Training keeps TOKEN_ACTIVATIONS [B, L, D] tensors a layer; a forward, each layer's output.
    elems = 2 * 64 * 32
    head = sum(p.numel() for p in model.head.parameters()) // 32 * 2 * 64
    assert full == 4 * (elems * (2 * TOKEN_ACTIVATIONS + 2) + 2 * head)
    assert activation_bytes(model, 2, training=False) == 4 * (elems * (2 + TOKEN_ACTIVATIONS) + head)
    deeper = af.create("gpt", depth=4, dim=32, max_len=64)
    assert activation_bytes(deeper, 2) - full == 4 * elems * 2 * TOKEN_ACTIVATIONS


def test_dropped_layers_keep_no_activations():
    model = af.create("gpt", depth=3, dim=32, max_len=64)
    dropped = af.create("gpt", depth=3, dim=32, max_len=64, schedule={"drop": [1]})
    assert activation_bytes(model, 2) - activation_bytes(dropped, 2) == 4 * 2 * 64 * 32 * TOKEN_ACTIVATIONS


def test_a_channel_independent_encoder_counts_every_channel_as_a_sample():
    one = af.create({"encoder": {"name": "series", "mode": "patch", "channels": 1}, "head": {"name": "mean", "num_classes": 2},
                     "depth": 1, "dim": 32, "max_len": 64})
    seven = af.create({"encoder": {"name": "series", "mode": "patch", "channels": 7}, "head": {"name": "mean", "num_classes": 2},
                       "depth": 1, "dim": 32, "max_len": 64})
    assert activation_bytes(seven, 2) == 7 * activation_bytes(one, 2)


def test_what_a_mixer_declares_it_keeps_is_counted_for_every_layer_running_it():
    model = af.create("gpt", depth=3, dim=32, max_len=64, schedule={"share": 1})
    base = activation_bytes(model, 2)
    mixer = model.stack.blocks[0].part("mixer")
    assert mixer.activation_elements(2, 64) == 0  # SDPA keeps no attention weights
    mixer.activation_elements = lambda batch, length: batch * mixer.heads * length**2  # an explicit softmax would
    assert activation_bytes(model, 2) - base == 3 * 4 * 2 * model.config.heads * 64**2


def test_check_run_refuses_a_batch_past_the_free_memory_naming_it(free):
    model = af.create("gpt", depth=2, dim=32, max_len=64)
    needs = run_needs(model, 1000, "cpu", optimizer=True)
    free.bytes = sum(needs.values()) - 1
    with pytest.raises(ConfigError) as err:
        check_run(model, 1000, "cpu", optimizer=True, subject="train.batch_size=1000",
                  fix="lower train.batch_size or raise train.grad_accum")
    assert str(err.value) == (
        f"train.batch_size=1000: training needs ~{human_bytes(sum(needs.values()))} (gradients and AdamW moments "
        f"~{human_bytes(needs['state'])}, activations of 1000 x 64 tokens through 2 layers ~{human_bytes(needs['activations'])}), "
        f"this machine has {human_bytes(free.bytes)} free; lower train.batch_size or raise train.grad_accum, "
        "or shrink the model (model.dim=32, model.depth=2)")
    free.bytes += 1
    check_run(model, 1000, "cpu", optimizer=True, subject="s", fix="f")  # exactly enough


def test_check_run_names_the_model_when_its_weights_dominate(free):
    model = af.create("gpt", depth=2, dim=32, max_len=64)
    free.bytes = 1
    with pytest.raises(ConfigError) as err:
        check_run(model, 1, "cpu", optimizer=True, subject="train.batch_size=1", fix="lower train.batch_size")
    assert str(err.value).startswith("model (dim=32, depth=2): training needs ~")
    assert str(err.value).endswith("; lower model.dim or model.depth")


def test_parameters_not_yet_on_the_device_count():
    model = af.create("gpt", depth=1, dim=32, max_len=64)
    needs = run_needs(model, 1, "cuda", training=False)
    assert needs["model"] == measure(model).model_bytes and needs["state"] == 0


@pytest.mark.parametrize("mixer", [{"name": "gau", "qk_dim": 16}, {"name": "karat", "rank": 4, "grid_size": 2},
                                   {"name": "seqboat", "qk_dim": 16, "ema_dim": 4, "window": 4}])
def test_mixers_that_materialise_length_squared_scores_declare_them(mixer):
    block = af.create("transformer", depth=1, dim=32, heads=2, max_len=64, mixer=mixer).stack.blocks[0].part("mixer")
    small, large = block.activation_elements(2, 16), block.activation_elements(2, 32)
    assert small >= 2 * 16 ** 2 and large == 4 * small  # at least one [B, L, L] tensor, growing as L^2
