"""The variant presets resolve to the components they name and run at test size."""
import pytest
import torch

import anyformer as af

from ..test_api import smallest_depth

EXPECT = {
    "dhvt": ("ffn", "conv"), "kat": ("ffn", "kan"), "switch": ("ffn", "moe"), "slab": ("norm", "prepbn"),
    "nest": ("arch", "nest"), "mot": ("arch", "mot"), "sret": ("mixer", "sliced"), "fit": ("arch", "fit"),
    "multistage": ("arch", "multistage"),
}
# SReT's stages fix its depth (arch.depths [2, 4, 2], each block run twice).
DEPTH = {"sret": smallest_depth("sret")}


@pytest.mark.parametrize("preset", sorted(EXPECT))
def test_variant_preset_components(preset):
    cfg = af.model_config(preset)
    field, name = EXPECT[preset]
    assert getattr(cfg, field).name == name
    model = af.create(preset, dim=32, heads=4, depth=DEPTH.get(preset, 2), max_len=16)
    out = model(model.encoder.example_input(batch=2))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


def test_sret_recursion_reuses_blocks_in_place():
    model = af.create("sret", dim=32, heads=4)
    assert model.stack.layer_blocks == [0, 0, 1, 1, 2, 2, 3, 3]
