"""The memory guard of a profile and of bench's inputs: a length or batch estimated past the
memory free (reported small here) is refused with one line before anything runs, and a
sweep keeps what it measured at the lengths that fit."""
import pytest
import torch

import anyformer as af
from anyformer import runtime
from anyformer.bench import profile, sweep
from anyformer.bench.guard import input_size
from anyformer.bench.inputs import example_model, length_builder
from anyformer.errors import ConfigError
from anyformer.nn.footprint import human_bytes
from anyformer.nn.step_memory import run_needs

GiB = 2**30
TINY = {"depth": 1, "dim": 32}


@pytest.fixture
def free(monkeypatch):
    class Free:
        bytes = 8 * GiB
    monkeypatch.setattr(runtime, "available_memory", lambda device="cpu": Free.bytes)
    return Free


def test_input_size_reads_the_shape_without_running_the_model():
    gpt = af.create("gpt", max_len=64, **TINY)
    assert input_size(gpt, gpt.encoder.example_input(3)[:, :40]) == (3, 40)
    bert = af.create("bert", max_len=64, **TINY)  # a [CLS] token in front
    assert input_size(bert, bert.encoder.example_input(2)) == (2, 65)
    vit = af.create("vit", **TINY)  # images: the encoder's own token count
    assert input_size(vit, vit.encoder.example_input(5)) == (5, None)


def test_profile_refuses_a_step_past_the_free_memory_before_running_it(free, monkeypatch):
    model = af.create("gpt", max_len=64, **TINY)
    x = model.encoder.example_input(2)
    needs = sum(run_needs(model, 2, "cpu", tokens=64).values())
    free.bytes = needs - 1
    monkeypatch.setattr(model, "forward", lambda *a, **k: pytest.fail("the model ran"))
    with pytest.raises(ConfigError) as err:
        profile(model, x, device="cpu", repeats=1)
    assert str(err.value).startswith(f"batch 2 x 64 tokens: training needs ~{human_bytes(needs)} (gradients ~")
    assert str(err.value).endswith(f"this machine has {human_bytes(free.bytes)} free; lower --batch or --lengths, "
                                   "or shrink the model (model.dim=32, model.depth=1)")


def test_a_forward_only_profile_is_sized_without_gradients(free):
    model = af.create("gpt", max_len=64, **TINY)
    free.bytes = sum(run_needs(model, 2, "cpu", training=False).values())
    assert profile(model, model.encoder.example_input(2), device="cpu", repeats=1, train_step=False, flops=False,
                   memory=False, precision="fp32")["batch"] == 2


def test_a_sweep_keeps_the_lengths_that_fit_and_records_the_refusal(free):
    build = length_builder("gpt", TINY, [16, 64], batch=2)
    model, _ = build(64)
    free.bytes = (sum(run_needs(model, 2, "cpu", tokens=16).values()) + sum(run_needs(model, 2, "cpu", tokens=64).values())) // 2
    result = sweep(build, [16, 64], device="cpu", repeats=1, warmup=0, precision="fp32")
    assert [r["length"] for r in result["rows"]] == [16] and result["largest_ok"] == 16
    assert result["failure"]["length"] == 64 and result["failure"]["kind"] == "ConfigError"
    assert result["failure"]["message"].startswith("batch 2 x 64 tokens: training needs ~")


def test_bench_inputs_too_large_for_memory_are_refused_before_they_are_made(free):
    free.bytes = 1024**3
    with pytest.raises(ConfigError) as err:
        example_model("gpt", {**TINY, "max_len": 64}, batch=10**9)
    assert str(err.value) == ("--batch 1000000000: the example inputs alone need ~476.8 GiB (512 bytes a sample), "
                              "this machine has 1.0 GiB free; lower --batch or --lengths")
    build = length_builder("gpt", TINY, [16, 64], batch=10**9)
    with pytest.raises(ConfigError, match="--batch 1000000000: the example inputs alone need"):
        build(16)  # inputs are made at the longest length, then cut


def test_a_length_that_sizes_the_model_past_memory_names_lengths(free):
    free.bytes = 64 * 2**20
    with pytest.raises(ConfigError) as err:
        length_builder("gpt", TINY, [16, 10**6], batch=1)  # a learned position table of 10^6 x 32
    assert str(err.value).startswith("--lengths 1000000 (bench builds the model with max_len 1000000): model.max_len=1000000")
    assert torch.get_default_device().type == "cpu"
