"""GMAN's parts against their equations, and which inputs each variant can see."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.archs.gman import GMAN
from anyformer.nn.archs.gman_attention import GatedFusion, SpatioTemporalEmbedding

CONFIG = GMAN.example_config


def model(seed: int = 0, **arch):
    torch.manual_seed(seed)
    return af.create({**CONFIG, "arch": {"name": "gman", **arch}}).eval()


def test_gated_fusion_is_the_papers_gate():
    torch.manual_seed(0)
    fusion = GatedFusion(8)
    hs, ht = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)
    z = torch.sigmoid(hs @ fusion.spatial_gate.weight.T + ht @ fusion.temporal_gate.weight.T + fusion.temporal_gate.bias)
    want = fusion.out(z * hs + (1 - z) * ht)
    assert torch.allclose(fusion(hs, ht), want, atol=1e-6)


def test_temporal_embedding_is_fc_of_the_one_hot_calendar():
    torch.manual_seed(0)
    ste = SpatioTemporalEmbedding(8, None, steps_per_day=4)
    slot, day = torch.tensor([[1, 3]]), torch.tensor([[0, 6]])
    onehot = torch.zeros(1, 2, 11)
    onehot[0, 0, 1] = onehot[0, 0, 4] = onehot[0, 1, 3] = onehot[0, 1, 10] = 1
    out = ste(slot, day, None, sensors=5)
    assert out.shape == (1, 2, 5, 8)
    assert torch.allclose(out, ste.temporal_fc(onehot)[:, :, None].expand(-1, -1, 5, -1))


def _changed_sensor(x, sensor):
    y = {k: v.clone() for k, v in x.items()}
    y["readings"][:, :, sensor] += 3.0
    return y


@pytest.mark.parametrize("arch, sees_others", [({}, True), ({"spatial_embedding": "none"}, True),
                                               ({"spatial_attention": False, "spatial_embedding": "none"}, False)])
def test_only_spatial_attention_lets_a_sensor_see_the_others(arch, sees_others):
    m = model(**arch)
    assert m.sees_other_sensors == sees_others
    x = m.encoder.example_input(batch=2)
    with torch.no_grad():
        base, changed = m(x), m(_changed_sensor(x, 0))
    others = (changed - base)[..., 1:].abs().max()
    assert (changed - base)[..., 0].abs().max() > 1e-4
    assert (others > 1e-5) == sees_others, float(others)


def test_the_spatial_embedding_reads_the_graph_features_and_its_ablation_does_not():
    for arch, reads in (({}, True), ({"spatial_embedding": "none"}, False)):
        m = model(**arch)
        x = m.encoder.example_input(batch=2)
        y = {**x, "spatial": torch.randn_like(x["spatial"])}
        with torch.no_grad():
            moved = (m(x) - m(y)).abs().max()
        assert (moved > 1e-5) == reads


def test_permuting_the_sensors_permutes_the_forecast():
    # Spatial attention is over the set of sensors: no order among them is assumed.
    m = model()
    x = m.encoder.example_input(batch=2)
    perm = torch.tensor([2, 0, 3, 1])
    y = {"readings": x["readings"][:, :, perm], "time": x["time"], "spatial": x["spatial"][:, perm]}
    with torch.no_grad():
        assert torch.allclose(m(y), m(x)[..., perm], atol=1e-5)


def test_the_future_calendar_steers_the_decoder():
    m = model()
    x = m.encoder.example_input(batch=1)
    y = {**x, "time": x["time"].clone()}
    y["time"][:, -1, 0] = (y["time"][:, -1, 0] + 1) % m.encoder.steps_per_day
    with torch.no_grad():
        diff = (m(x) - m(y)).abs().amax(-1)[0]
    assert diff[-1] > 1e-5 and diff[0] < 1e-6  # causal decoder blocks: only the changed last step moves


@pytest.mark.parametrize("override, match", [({"position": "sinusoidal"}, "position 'sinusoidal' cannot apply"),
                                             ({"head": {"name": "forecast", "horizon": 3}}, "differs from the encoder's horizon")])
def test_misconfigured_gman_is_a_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        af.create({**CONFIG, **override})
