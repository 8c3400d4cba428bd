"""LayerStack: its editing API equals the config's schedule on every arch; running ranges of
layers; un-sharing on replace; named norms in Block and MoT; old state-dict keys load."""
import copy

import pytest
import torch
from torch import nn

import anyformer as af
from anyformer import registry
from anyformer.config import ComponentSpec
from anyformer.nn.archs.mot import ModalityContext, modality_block
from anyformer.nn.block import Block, BlockContext, LayerSpec
from anyformer.nn.stack import LayerStack

IMG = dict(image_size=8, patch_size=2, channels=1, dim=32, heads=4)
ENC16 = {"name": "patches", "image_size": 16, "patch_size": 2, "channels": 1, "cls_token": False}
SERIES = {"name": "series", "channels": 2, "mode": "step"}
TOKENS = dict(vocab_size=50, dim=32, heads=4)

# arch -> (preset, overrides, input maker); every stack has at least 3 layers, so layer 1 is inside.
ARCHS = {
    "stack": ("vit", dict(**IMG, depth=3), lambda: torch.randn(2, 1, 8, 8)),
    "informer": ("informer", dict(dim=32, heads=4, depth=3, max_len=32, encoder=SERIES, head={"name": "forecast", "horizon": 8},
                                  arch={"name": "informer", "label_len": 8}), lambda: torch.randn(2, 32, 2)),
    "fedformer": ("fedformer", dict(dim=32, heads=4, depth=3, max_len=32, encoder=SERIES, head={"name": "forecast", "horizon": 8},
                                    mixer={"name": "fedformer", "modes": 8}, arch={"name": "fedformer", "label_len": 16, "moving_avg": 5}),
                  lambda: torch.randn(2, 32, 2)),
    "nest": ("vit", dict(dim=32, heads=4, depth=3, encoder=ENC16, head={"name": "mean", "num_classes": 10},
                         arch={"name": "nest", "levels": 2, "block_size": 4}), lambda: torch.randn(2, 1, 16, 16)),
    "multistage": ("vit", dict(image_size=16, patch_size=2, channels=1, dim=32, heads=4, depth=3,
                               arch={"name": "multistage", "stages": 3}), lambda: torch.randn(2, 1, 16, 16)),
    "fit": ("bert", dict(**TOKENS, max_len=15, depth=2, arch={"name": "fit", "group_size": 4, "latents": 2}),
            lambda: torch.randint(0, 50, (2, 15))),
    "mot": ("bert", dict(**TOKENS, max_len=12, depth=3, arch={"name": "mot", "modalities": 2}),
            lambda: torch.randint(0, 50, (2, 12))),
}


def _build(arch, schedule=None, seed=0):
    preset, kw, _ = ARCHS[arch]
    if schedule:  # added to the preset's schedule (Informer's distilling stays)
        kw = {**kw, "schedule": {**af.model_config(preset).schedule.model_dump(exclude_defaults=True), **schedule}}
    torch.manual_seed(seed)
    return af.create(preset, **kw).eval()


def _input(arch):
    torch.manual_seed(1)
    return ARCHS[arch][2]()


def _pair(arch, schedule):
    """(model edited later, the same weights built with `schedule`)."""
    edited = _build(arch)
    scheduled = _build(arch, schedule)
    scheduled.load_state_dict(edited.state_dict())
    return edited, scheduled


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_drop_layers_equals_schedule_drop(arch):
    edited, scheduled = _pair(arch, {"drop": [1]})
    x = _input(arch)
    with torch.no_grad():
        before = edited(x, return_hidden=True)
        edited.stack.drop_layers([1])
        after, want = edited(x, return_hidden=True), scheduled(x, return_hidden=True)
    assert edited.stack.depth == scheduled.stack.depth >= 3
    assert torch.allclose(after[0], want[0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after[1], want[1]))
    assert not torch.allclose(after[1][-1], before[1][-1], atol=1e-4)  # the layer did something


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("path", ["mixer", "ffn"])
def test_prune_path_equals_schedule_prune(arch, path):
    edited, scheduled = _pair(arch, {"prune": [f"1.{path}"]})
    x = _input(arch)
    assert path in edited.stack.path_names
    with torch.no_grad():
        before = edited(x, return_hidden=True)
        edited.stack.prune_path(1, path)
        after, want = edited(x, return_hidden=True), scheduled(x, return_hidden=True)
    assert torch.allclose(after[0], want[0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after[1], want[1]))
    assert not torch.allclose(after[1][-1], before[1][-1], atol=1e-4)


def test_editing_errors_name_the_valid_range():
    with pytest.raises(af.ConfigError, match=r"model.schedule.drop: layers \[5\] outside 0\.\.2"):
        _build("stack", {"drop": [5]})
    model = _build("stack")
    with pytest.raises(af.ConfigError, match=r"layer 3 outside 0\.\.2"):
        model.stack.drop_layers([3])
    with pytest.raises(af.ConfigError, match="paths: mixer, ffn"):
        model.stack.prune_path(0, "ffn2")


def test_run_in_pieces_equals_forward_and_hidden_states():
    torch.manual_seed(0)
    model = af.create({"dim": 32, "heads": 4, "depth": 3, "max_len": 16, "mixer": "probsparse",
                       "encoder": {"name": "series", "channels": 3}, "head": {"name": "forecast", "horizon": 4, "channels": 3},
                       "schedule": {"transition": {"name": "distill"}}}).eval()
    tokens = torch.randn(2, 16, 32)
    with torch.no_grad():
        out, mask, hidden = model.stack(tokens, None)
        whole, _ = model.stack.run(0, model.stack.depth, tokens, None)
        parts: list = []
        mid, mid_mask = model.stack.run(0, 1, tokens, None, parts)
        end, _ = model.stack.run(1, 3, mid, mid_mask, parts)
    assert [h.shape[1] for h in hidden] == model.stack.lengths == [16, 8, 4]
    assert mid.shape[1] == 8  # the transition after layer 0 ran inside run(0, 1)
    assert torch.equal(whole, out) and torch.equal(end, out)
    assert all(torch.equal(a, b) for a, b in zip(parts, hidden)) and len(parts) == 3
    # By hand: block, transition, block, transition, block.
    x = tokens
    for layer, block in enumerate(model.stack.blocks):
        x = block(x, None)
        assert torch.allclose(x, hidden[layer], atol=1e-6)
        if layer < 2:
            x, _ = model.stack.transitions[layer](x, None)
    assert torch.allclose(x, out, atol=1e-6)


class Zero(nn.Module):
    def forward(self, x, mask=None):
        return torch.zeros_like(x)


def test_replace_one_layer_of_a_shared_block_unshares_only_that_layer():
    torch.manual_seed(0)
    model = af.create("vit", **IMG, depth=4, schedule={"share": 2}).eval()
    pruned = copy.deepcopy(model)
    stack = model.stack
    assert stack.layer_blocks == [0, 1, 0, 1]
    shared_mixer = stack.blocks[0].mixer
    stack.replace([2], mixer=Zero())
    assert stack.layer_blocks == [0, 1, 2, 1] and len(stack.blocks) == 3
    assert stack.block_at(0).mixer is shared_mixer and isinstance(stack.block_at(2).mixer, Zero)
    # The copy starts with the shared block's other weights, but they are no longer tied.
    w0, w2 = stack.blocks[0].ffn.fc1.weight, stack.blocks[2].ffn.fc1.weight
    assert torch.equal(w0, w2) and w0.data_ptr() != w2.data_ptr()
    # A zero mixer on a pre-norm block is the mixer path pruned, for that layer only.
    pruned.stack.prune_path(2, "mixer")
    images = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(images), pruned(images), atol=1e-6)


def test_replace_every_layer_of_a_block_keeps_it_shared_and_factories_get_the_old_module():
    torch.manual_seed(0)
    model = af.create("vit", **IMG, depth=4, schedule={"share": 2}).eval()
    images = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        before = model(images)
    seen = []

    def to_linear_attention(old):
        # Attention-family mixers share q/k/v/o names, so the weights carry over.
        seen.append(old)
        new = registry.build("mixer", "softmax", dim=32, heads=4, max_len=old.max_len)
        new.load_state_dict(old.state_dict())
        return new

    olds = [model.stack.blocks[b].mixer for b in (0, 1)]
    model.stack.replace([0, 1, 2, 3], mixer=to_linear_attention)
    assert model.stack.layer_blocks == [0, 1, 0, 1] and len(model.stack.blocks) == 2
    assert seen == olds
    with torch.no_grad():
        assert torch.allclose(model(images), before, atol=1e-6)


def test_replace_ffn_and_drop_layer_on_staged_and_fit_stacks_by_layer_index():
    model = _build("fit")
    assert model.stack.depth == 4  # 2 FIT blocks x (1 local + 1 global), local layers first
    assert [model.stack.lengths[i] for i in range(4)] == [4, 4, 8, 8]
    x = _input("fit")
    pruned = copy.deepcopy(model)
    model.stack.replace([3], ffn=Zero())
    pruned.stack.prune_path(3, "ffn")
    with torch.no_grad():
        assert torch.allclose(model(x), pruned(x), atol=1e-6)


def test_replace_in_mot_keeps_the_copy_routed_by_the_models_modality_ids():
    torch.manual_seed(0)
    model = af.create("bert", **TOKENS, max_len=12, depth=2, schedule={"share": 1}, arch={"name": "mot", "modalities": 2}).eval()
    ids = torch.randint(0, 50, (2, 12))
    modality = torch.zeros(2, 12, dtype=torch.long)
    modality[:, 6:] = 1

    def last_hidden(**kw):
        return model(ids, return_hidden=True, **kw)[1][-1]

    with torch.no_grad():
        model.stack.blocks[0].ffn.experts[1].fc2.bias.add_(torch.randn(32))  # modality 1 differs from 0
        before = last_hidden(modality_ids=modality)
        model.stack.replace([1], ffn=copy.deepcopy)  # un-shares layer 1: a copy of the routed ffn
        assert model.stack.layer_blocks == [0, 1]
        # The copy still reads this model's ids: were it routing everything to modality 0, this would move.
        assert torch.allclose(last_hidden(modality_ids=modality), before, atol=1e-6)
        model.stack.blocks[1].ffn.experts[1].fc2.bias.add_(torch.randn(32))  # only layer 1, only modality 1
        moved = (last_hidden(modality_ids=modality) - before).abs().amax(-1) > 1e-6
    assert torch.equal(moved, torch.cat([torch.zeros(2, 1, dtype=torch.long), modality], 1) == 1)


@pytest.mark.parametrize("placement,layout,roles", [
    ("pre", "sequential", {"mixer.norm_in", "ffn.norm_in"}),
    ("post", "sequential", {"mixer.norm_out", "ffn.norm_out"}),
    ("post", "parallel", {"parallel"}),
    ("peri", "macaron", {f"{p}.norm_{s}" for p in ("ffn2", "mixer", "ffn") for s in ("in", "out")}),
])
def test_block_names_its_norms_by_role(placement, layout, roles):
    asked = []

    def make_norm(role):
        asked.append(role)
        return registry.build("norm", "layernorm", dim=16)

    mixer = registry.build("mixer", "softmax", dim=16, heads=2, max_len=8)
    ffn, ffn2 = (registry.build("ffn", "mlp", dim=16) for _ in range(2))
    block = Block(mixer, ffn, make_norm, placement, layout, ffn2=ffn2)
    norms = block.norms()
    assert set(asked) == set(norms) == roles and len(asked) == len(roles)
    assert block.path_names == (("ffn2", "mixer", "ffn") if layout == "macaron" else ("mixer", "ffn"))
    for role, norm in norms.items():
        if role == "parallel":
            assert norm is block.parallel_norm
        else:
            path, which = role.split(".")
            assert norm is getattr(block.path(path), which)


@pytest.mark.parametrize("layout,placement", [("sequential", "pre"), ("macaron", "peri"), ("parallel", "post")])
def test_mot_norms_route_by_role_to_each_modality(layout, placement):
    base = dict(**TOKENS, max_len=12, depth=2, layout=layout, norm={"name": "layernorm", "placement": placement})
    torch.manual_seed(0)
    mot = af.create("bert", **base, arch={"name": "mot", "modalities": 2}).eval()
    with torch.no_grad():  # distinct norms per role and modality, so a mix-up shows
        for n, p in mot.named_parameters():
            if "norm" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.5)
    for block in mot.stack.blocks:
        for role, routed in block.norms().items():
            assert len(routed.experts) == 2 and routed.is_norm
    ids = torch.randint(0, 50, (2, 12))
    dense = af.create("bert", **base).eval()
    for m in (0, 1):
        dense.load_state_dict({k.replace(f".experts.{m}", ""): v for k, v in mot.state_dict().items()
                               if f".experts.{1 - m}" not in k})
        modality = torch.full((2, 12), m)
        with torch.no_grad():
            if m == 0:  # the [CLS] prefix takes prefix_modality 0, so all-0 ids match the dense model
                assert torch.allclose(mot(ids, modality_ids=modality), dense(ids), atol=1e-5)
            else:
                # All ids 1 including the prefix (ids given for every token).
                full = torch.ones(2, 13, dtype=torch.long)
                assert torch.allclose(mot(ids, modality_ids=full), dense(ids), atol=1e-5)


@pytest.mark.parametrize("layout,placement", [("sequential", "pre"), ("macaron", "peri"), ("parallel", "post")])
def test_mot_block_builds_each_routed_norm_from_the_copies_norms_of_that_role(layout, placement):
    def tagged_norm(role):
        norm = registry.build("norm", "layernorm", dim=32)
        norm.role = role
        return norm

    ctx = BlockContext(dim=32, heads=4, norm_fn=tagged_norm, placement=placement, layout=layout)
    spec = LayerSpec(0, ComponentSpec(name="softmax"), ComponentSpec(name="mlp"), 12)
    block = modality_block(spec, ctx, modalities=3, context=ModalityContext())
    norms = block.norms()
    assert norms and all([e.role for e in routed.experts] == [role] * 3 for role, routed in norms.items())
    assert all(len({id(e) for e in routed.experts}) == 3 for routed in norms.values())


def _old_keys(state, renames):
    out = {}
    for k, v in state.items():
        for new, old in renames:
            if k.startswith(new):
                k = old + k[len(new):]
                break
        out[k] = v
    return out


@pytest.mark.parametrize("arch,renames", [
    ("stack", [("stack.blocks.", "blocks."), ("stack.transitions.", "transitions.")]),
    ("informer", [("stack.blocks.", "blocks."), ("stack.transitions.", "transitions.")]),
    ("nest", [("stack.blocks.", "blocks.")]),
    ("mot", [("stack.blocks.", "blocks.")]),
    ("fit", [("stack.blocks.0.", "local_blocks.0."), ("stack.blocks.1.", "local_blocks.1."),
             ("stack.blocks.2.", "global_blocks.0."), ("stack.blocks.3.", "global_blocks.1.")]),
])
def test_state_dict_with_old_key_names_loads_and_gives_identical_outputs(arch, renames):
    trained = _build(arch, seed=0)
    old = _old_keys(trained.state_dict(), renames)
    assert not any(k.startswith("stack.") for k in old)
    fresh = _build(arch, seed=7)
    fresh.load_state_dict(old)  # strict: every key found, none left over
    x = _input(arch)
    with torch.no_grad():
        assert torch.allclose(fresh(x), trained(x), atol=1e-6)


def test_nest_state_with_the_old_position_alias_loads():
    trained = _build("nest")
    old = _old_keys(trained.state_dict(), [("stack.blocks.", "blocks.")])
    old["position.weight"] = old["positions.1.weight"]  # once registered twice
    fresh = _build("nest", seed=3)
    fresh.load_state_dict(old)
    x = _input("nest")
    with torch.no_grad():
        assert torch.allclose(fresh(x), trained(x), atol=1e-6)


def test_every_arch_exposes_a_layer_stack_with_config_layer_indices():
    for arch in ARCHS:
        model = _build(arch)
        assert isinstance(model.stack, LayerStack)
        depth = model.config.depth * (2 if arch == "fit" else 1)
        assert model.stack.depth == depth and len(model.stack.drop_path_rates) == depth
        _, hidden = model(_input(arch), return_hidden=True)
        assert len(hidden) == model.config.depth
