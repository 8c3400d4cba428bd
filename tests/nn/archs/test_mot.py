"""Mixture-of-Transformers: one modality is the dense model; weights route by modality."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError

BASE = dict(vocab_size=50, max_len=12, dim=32, heads=4, depth=2)


def _dense_state(mot):
    return {k.replace(".experts.0", ""): v for k, v in mot.state_dict().items()}


@pytest.mark.parametrize("layout,placement", [("sequential", "pre"), ("macaron", "peri"), ("parallel", "post")])
def test_one_modality_equals_the_dense_model(layout, placement):
    torch.manual_seed(0)
    mot = af.create("bert", **BASE, layout=layout, norm={"name": "layernorm", "placement": placement},
                    arch={"name": "mot", "modalities": 1}).eval()
    dense = af.create("bert", **BASE, layout=layout, norm={"name": "layernorm", "placement": placement}).eval()
    dense.load_state_dict(_dense_state(mot))
    ids = torch.randint(0, 50, (2, 12))
    assert torch.allclose(mot(ids), dense(ids), atol=1e-5)
    assert torch.allclose(mot(ids, modality_ids=torch.zeros(2, 12, dtype=torch.long)), dense(ids), atol=1e-5)


def test_each_token_uses_its_own_modality_weights_with_global_attention():
    model = af.create("bert", **{**BASE, "depth": 1}, arch={"name": "mot", "modalities": 2}).eval()
    ids = torch.randint(0, 50, (2, 12))
    modality = torch.zeros(2, 12, dtype=torch.long)
    modality[:, 6:] = 1
    _, hidden = model(ids, modality_ids=modality, return_hidden=True)
    # Perturb modality 1's ffn: only modality-1 tokens move (the ffn is the last sublayer).
    with torch.no_grad():
        model.stack.blocks[0].ffn.experts[1].fc2.bias.add_(torch.randn(32))
    _, hidden2 = model(ids, modality_ids=modality, return_hidden=True)
    moved = (hidden2[0] - hidden[0]).abs().amax(-1) > 1e-6
    # The [CLS] prefix token takes modality 0 (prefix_modality), so it stays put too.
    full = torch.cat([torch.zeros(2, 1, dtype=torch.long), modality], 1)
    assert torch.equal(moved, full == 1)
    # Perturb modality 1's value projection: attention is global, so modality-0 tokens move too.
    with torch.no_grad():
        model.stack.blocks[0].mixer.v_proj.experts[1].bias.add_(torch.randn(32))
    _, hidden3 = model(ids, modality_ids=modality, return_hidden=True)
    assert (hidden3[0][:, :7] - hidden2[0][:, :7]).abs().amax() > 1e-4


def test_modality_id_outside_range_is_a_config_error():
    model = af.create("bert", **BASE, arch={"name": "mot", "modalities": 2})
    ids = torch.randint(0, 50, (2, 12))
    with pytest.raises(ConfigError, match=r"modality_ids: id 2 outside the valid range 0\.\.1"):
        model(ids, modality_ids=torch.full((2, 12), 2))
    # Without ids every token is modality 0.
    assert torch.allclose(model(ids), model(ids, modality_ids=torch.zeros(2, 12, dtype=torch.long)), atol=1e-6)
    with pytest.raises(ConfigError, match=r"prefix_modality 3 outside the valid range 0\.\.1"):
        af.create("bert", **BASE, arch={"name": "mot", "modalities": 2, "prefix_modality": 3})


@pytest.mark.parametrize("layout", ["sequential", "parallel", "macaron"])
def test_without_an_ffn_every_layer_is_routed_attention_alone(layout):
    # Reported as a bare StopIteration; the absent ffn routes as absent (no norms, no branch).
    model = af.create("gpt", **{**BASE, "depth": 2}, ffn="none", layout=layout, arch={"name": "mot", "modalities": 2})
    assert all(block.path("ffn").absent for block in model.stack.blocks)
    ids = torch.randint(0, 50, (2, 12))
    out = model(ids, modality_ids=torch.randint(0, 2, (2, 12)))
    out.sum().backward()
    assert out.shape == (2, 12, 50) and torch.isfinite(out).all()


@pytest.mark.parametrize("mixer", [{"name": "random-feature"}, {"name": "minimal", "collapse_qk": True, "no_value": True}])
def test_collapsed_query_key_projections_route_by_modality(mixer):
    # Found by the fuzz campaign: the collapsed W_qk read only [B, L, D], and MoT hands each
    # modality's tokens over as [N, D] (a raw einsum RuntimeError).
    model = af.create("gpt", **{**BASE, "depth": 1}, mixer=mixer, arch={"name": "mot", "modalities": 2})
    ids = torch.randint(0, 50, (2, 12))
    modality = torch.zeros(2, 12, dtype=torch.long)
    modality[:, 6:] = 1
    out = model(ids, modality_ids=modality)
    assert out.shape == (2, 12, 50) and torch.isfinite(out).all()
    # One modality throughout equals the dense path through modality 0's matrices.
    assert torch.allclose(model(ids, modality_ids=torch.zeros(2, 12, dtype=torch.long)), model(ids), atol=1e-5)
