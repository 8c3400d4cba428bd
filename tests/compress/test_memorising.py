"""Memorising neurons (Doshi et al. 2023): the Fourier IPR that tells them apart, and prune's
criterion built on it."""
import pytest
import torch

from anyformer import catalog
from anyformer.compress import compress
from anyformer.compress.memorising import fourier_ipr, spectrum_ipr
from anyformer.compress.prune_neurons import ffn_units
from anyformer.errors import ConfigError
from anyformer.rundir import read_json
from tests.infer.helpers import train_tiny


def test_a_periodic_neuron_has_a_high_ipr_and_a_noisy_one_a_low_one():
    p = 13
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    periodic = torch.cos(2 * torch.pi * 3 * (a + b) / p).flatten()  # one frequency and its mirror: IPR 1/2
    noise = torch.randn(p * p, generator=torch.Generator().manual_seed(0))
    ipr = spectrum_ipr(torch.stack([periodic, noise, periodic + 5.0], 1), (p, p))
    assert ipr[0] == pytest.approx(0.5, abs=1e-5) and ipr[2] == pytest.approx(0.5, abs=1e-5)  # the mean does not count
    assert ipr[1] < 0.05


def test_the_memorising_criterion_prunes_the_lowest_ipr_units(tmp_path):
    run = train_tiny({"name": "modular", "p": 11, "label_noise": 0.2}, tmp_path / "run")
    model, _ = catalog.load_run(run)
    stack = model.stack
    units = ffn_units(stack, {b: stack.layers_of(b) for b in range(len(stack.blocks))})
    task = catalog.build_task(catalog.ComponentSpec(name="modular", p=11, label_noise=0.2))
    ipr = fourier_ipr(units, model, task, torch.device("cpu"))
    compress(run, "prune", tmp_path / "out", device="cpu", neurons_fraction=0.25, neurons_criterion="memorising")
    kept = read_json(tmp_path / "out" / "compress.json")["notes"]["neurons"]["kept"]
    for (b, n), scores in ipr.items():
        size = len(scores)
        expected = sorted(sorted(range(size), key=lambda i: (-float(scores[i]), i))[: size - size // 4])
        key = ",".join(map(str, stack.layers_of(b))) + f".{n}"
        assert kept[key] == expected


def test_the_memorising_criterion_needs_a_modular_task(tmp_path):
    run = train_tiny({"name": "digits"}, tmp_path / "run", model="vit")
    with pytest.raises(ConfigError, match="no operand grid"):
        compress(run, "prune", tmp_path / "out", device="cpu", neurons_fraction=0.25, neurons_criterion="memorising")
