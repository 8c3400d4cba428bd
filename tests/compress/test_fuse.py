"""OT fusion (Imfeld et al. 2024): a model fused with a copy whose residual channels, heads,
within-head dims and hidden units were permuted is the original function again (emd finds
the permutation) while vanilla averaging is not; a model fused with itself is itself,
bit for bit; the maps are doubly stochastic (permutations under emd); a narrower fused
model has the configured sizes and reloads; bad inputs are refused in one line."""
import copy
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anyformer import catalog, rundir
from anyformer.compress import compress, fuse
from anyformer.compress.data import Judged, judged
from anyformer.compress.fuse_align import align, carry
from anyformer.compress.fuse_layout import RESIDUAL, layout, supporting
from anyformer.compress.transport import coupling, ground_cost, is_permutation
from anyformer.errors import ConfigError, DataError
from anyformer.tasks.base import Batch, Split
from tests.cli_run import run_cli
from tests.infer.helpers import train_tiny

CPU = torch.device("cpu")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    return train_tiny({"name": "digits"}, tmp_path_factory.mktemp("fuse") / "a", model="vit",
                      **{"model.depth": 2, "model.heads": 4})


@pytest.fixture(scope="module")
def loaded(run_a):
    model, config = catalog.load_run(run_a)
    data = judged(config, run_a, model, CPU)
    data.calibration = data.calibration[:2]  # two batches of 64 images are plenty to tell 32 channels apart
    return model, config, data


def sibling(run: Path, out: Path, model: torch.nn.Module | None = None, config: dict | None = None) -> Path:
    """A copy of run directory `run` with other weights (and config): another 'seed'."""
    shutil.copytree(run, out)
    if config is not None:
        rundir.atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if model is not None:
        rundir.save_weights(model, out / "model.safetensors")
    return out


def permuted(model: torch.nn.Module, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A copy of `model` with every channel space permuted: channel i of the copy is channel
    perm[i] of the model (heads move whole, dims within each head on their own)."""
    lay = layout(model)
    g = torch.Generator().manual_seed(seed)
    perms = {RESIDUAL: torch.randperm(lay.sizes[RESIDUAL], generator=g)}
    for qk, vo, heads, head_dim in lay.groups.values():
        order = torch.randperm(heads, generator=g)
        for space in (qk, vo):
            perms[space] = torch.cat([order[h] * head_dim + torch.randperm(head_dim, generator=g) for h in range(heads)])
    for space, n in lay.sizes.items():
        perms.setdefault(space, torch.randperm(n, generator=g))
    state = {}
    for key, t in model.state_dict().items():
        for axis, ax in lay.axes.get(key, {}).items():
            t = t.index_select(axis, perms[ax.space])
        state[key] = t
    twin = copy.deepcopy(model)
    twin.load_state_dict(state)
    return twin.eval(), perms


def fused_models(a, b, batches, mode, solver="emd"):
    lay_a, lay_b = layout(a), layout(b)
    target = copy.deepcopy(a)
    alignment = align(a, b, (lay_a, lay_b, lay_a), batches, CPU, mode, solver)
    fused = fuse._combine(target, carry(a.state_dict(), lay_a, alignment.anchor), carry(b.state_dict(), lay_b, alignment.other), 0.5)
    vanilla = fuse._combine(copy.deepcopy(a), a.state_dict(), b.state_dict(), 0.5)
    return fused, vanilla, alignment


def variant(config: dict, seed: int = 0, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    return catalog.create({**copy.deepcopy(config["model"]), **changes}).eval()


def gpt(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return catalog.create("gpt", dim=32, depth=1, heads=4, max_len=8, encoder={"name": "tokens", "vocab_size": 16, "pad_id": 0}).eval()


def token_batches() -> list[Batch]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 16, (16, 8), generator=g)
    ids[::2, 6:] = 0  # padding: only real tokens are features
    return [Batch(ids, ids, ids != 0)]


@pytest.mark.parametrize("case, mode", [("vit", "activations"), ("vit", "weights"), ("macaron", "activations"),
                                        ("gpt", "activations"), ("gpt", "weights")])
def test_a_permuted_copy_is_found_again_exactly(loaded, case, mode):
    model, config, data = loaded
    batches, example = data.calibration, data.example.inputs
    if case == "macaron":  # shared layers, macaron GLU ffns, post RMSNorm, path scales, mean pooling
        model = variant(config, layout="macaron", ffn={"name": "glu"}, norm={"name": "rmsnorm", "placement": "post"},
                        schedule={"share": 1}, path_scale=True, head={"name": "mean", "num_classes": 10},
                        encoder={**config["model"]["encoder"], "cls_token": False})
    if case == "gpt":  # tokens with padding, causal attention, the LM head tied to the embedding
        model, batches = gpt(), token_batches()
        example = batches[0].inputs
    twin, perms = permuted(model, seed=3)
    kw = {"mask": batches[0].mask} if case == "gpt" else {}
    with torch.no_grad():
        want = model(example, **kw)
        torch.testing.assert_close(twin(example, **kw), want, atol=1e-5, rtol=0)  # a permutation is a symmetry
        fused, vanilla, alignment = fused_models(model, twin, batches, mode)
        torch.testing.assert_close(fused(example, **kw), want, atol=1e-5, rtol=0)
        assert (vanilla(example, **kw) - want).abs().max() > 1e-2  # averaging unaligned channels is another function
    for space, perm in perms.items():  # channel i of the copy goes to channel perm[i]
        plan = alignment.other[space]
        assert is_permutation(plan) and plan.argmax(1).tolist() == perm.tolist(), space
        assert alignment.anchor[space] is None
    for b, (qk, vo, heads, head_dim) in layout(model).groups.items():
        assert alignment.other_heads[b].argmax(1).tolist() == (perms[qk][::head_dim] // head_dim).tolist()


def test_a_model_fused_with_itself_is_itself_and_no_input_changes(run_a, tmp_path):
    before = digest(run_a)
    result = compress(run_a, "fuse", tmp_path / "self", device="cpu", other=str(run_a), baselines=False)
    assert digest(run_a) == before
    original, _ = catalog.load_run(run_a)
    fused, config = catalog.load_run(tmp_path / "self")
    assert config["model"] == rundir.read_config(run_a)["model"]
    for key, value in original.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value), key
    notes = result["notes"]
    assert all(m["permutation"] and m["cost"] == 0.0 for m in notes["maps"].values())
    assert notes["heads"] == {"0": {"from": 4, "to": 4, "permutation": True, "assignment": [0, 1, 2, 3]},
                              "1": {"from": 4, "to": 4, "permutation": True, "assignment": [0, 1, 2, 3]}}
    assert result["after"]["accuracy"] == result["before"]["accuracy"]


def test_maps_between_two_models_are_doubly_stochastic(loaded):
    model, config, data = loaded
    pairs = {"emd": (model, variant(config, seed=7), data.calibration), "sinkhorn": (gpt(0), gpt(1), token_batches())}
    for solver, (model, other, batches) in pairs.items():  # sinkhorn: one layer, its 2 x 16 within-head problems are the cost
        alignment = align(model, other, (layout(model), layout(other), layout(model)), batches, CPU, "activations", solver)
        for space, plan in alignment.other.items():
            n = plan.shape[0]
            assert plan.shape == (n, n) and plan.min() >= 0
            np.testing.assert_allclose(plan.sum(0) * n, 1.0, atol=1e-6)
            np.testing.assert_allclose(plan.sum(1) * n, 1.0, atol=1e-6)
            assert is_permutation(plan) == (solver == "emd"), (space, solver)
        for p in alignment.other_heads.values():
            np.testing.assert_allclose(p.sum(0) * 4, 1.0, atol=1e-6)
            np.testing.assert_allclose(p.sum(1) * 4, 1.0, atol=1e-6)


def test_the_notes_compare_fused_vanilla_and_parents_fine_tuned_alike(loaded, run_a, tmp_path):
    model, config, data = loaded
    other = sibling(run_a, tmp_path / "b", variant(config, seed=7))
    # Judged by closeness to the anchor's outputs on a few images: the comparison's mechanics, cheaply.
    held = Split(data.calibration[0].inputs[:16], torch.zeros(16))
    with torch.no_grad():
        reference = model(held.inputs)
    cosine = Judged(data.calibration[:1], data.example, "cosine", True, batch_size=16, reference=reference, held_out=held)
    fused, _, notes = fuse.apply(model, config["model"], cosine, CPU, run=run_a, other=other, finetune_steps=2, finetune_lr=1e-3)
    rows = notes["compare"]["models"]
    assert list(rows) == ["anchor", "other", "vanilla", "fused"]
    assert all(set(r) == {"before", "after", "finetune"} and r["finetune"]["steps"] == 2 for r in rows.values())
    assert rows["anchor"]["before"] == {"cosine": pytest.approx(1.0), "loss": pytest.approx(0.0, abs=1e-6)}
    assert all(r["after"]["loss"] < r["before"]["loss"] for n, r in rows.items() if n != "anchor")
    assert rows["fused"]["after"]["cosine"] == pytest.approx(cosine.quality(fused, CPU)["cosine"], abs=1e-6)  # the result is the tuned one
    with torch.no_grad():
        assert torch.equal(model(held.inputs), reference)  # the anchor was tuned on a copy


def test_a_narrower_fused_model_has_the_configured_sizes_and_reloads(loaded, run_a, tmp_path):
    model, config, data = loaded
    other = sibling(run_a, tmp_path / "b", variant(config, seed=5))
    result = compress(run_a, "fuse", tmp_path / "narrow", device="cpu", other=str(other), width=16, fused_heads=2,
                      ffn_hidden=48, baselines=False)
    small, written = catalog.load_run(tmp_path / "narrow")
    assert written["model"]["dim"] == 16 and written["model"]["heads"] == 2
    assert [(o["layers"], o["mixer"]["heads"], o["mixer"]["head_dim"], o["ffn"]["hidden"])
            for o in written["model"]["schedule"]["overrides"]] == [([0], 2, 8, 48), ([1], 2, 8, 48)]
    mixer, ffn = small.stack.blocks[0].part("mixer"), small.stack.blocks[0].part("ffn")
    assert (mixer.heads, mixer.head_dim, tuple(mixer.q_proj.weight.shape), tuple(ffn.fc1.weight.shape)) == (2, 8, (16, 16), (48, 16))
    assert result["notes"]["fused_sizes"] == {"dim": 16, "heads_per_layer": {"0": 2, "1": 2}, "hidden_per_layer": {"0.ffn": 48, "1.ffn": 48}}
    assert result["notes"]["maps"][RESIDUAL] | {"cost": 0} == {"from": 32, "to": 16, "permutation": False, "cost": 0}
    assert result["after"]["parameters"] < result["before"]["parameters"]
    with torch.no_grad():
        assert torch.isfinite(small(data.example.inputs)).all()
    # The non-square maps keep uniform marginals: each anchor channel sent in full, each target filled.
    lay_t = layout(small)
    alignment = align(model, small, (layout(model), lay_t, lay_t), data.calibration, CPU)  # small onto itself: identity
    assert all(is_permutation(p) for p in alignment.other.values())
    b_model = catalog.load_run(other)[0]
    narrow = align(model, b_model, (layout(model), layout(b_model), lay_t), data.calibration, CPU)
    plan = narrow.anchor[RESIDUAL]
    assert plan.shape == (32, 16)
    np.testing.assert_allclose(plan.sum(1), 1 / 32, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), 1 / 16, atol=1e-9)


def test_a_wider_other_run_fuses_into_the_anchors_sizes(loaded, run_a, tmp_path):
    model, config, data = loaded
    wide_cfg = {**rundir.read_config(run_a), "model": {**config["model"], "dim": 64, "heads": 8}}
    wide = sibling(run_a, tmp_path / "wide", variant(wide_cfg, seed=2), config=wide_cfg)
    with pytest.raises(ConfigError, match="differs from the run in model.dim"):
        fuse.apply(model, config["model"], data, CPU, run=run_a, other=wide)
    fused, new_cfg, notes = fuse.apply(model, config["model"], data, CPU, run=run_a, other=wide, width=32, fused_heads=4,
                                       baselines=False)
    assert tuple(fused.stack.blocks[0].part("mixer").q_proj.weight.shape) == (32, 32)
    assert notes["maps"][RESIDUAL]["from"] == 64 and notes["maps"][RESIDUAL]["to"] == 32
    assert notes["heads"]["0"]["from"] == 8 and notes["heads"]["0"]["to"] == 4
    catalog.create(new_cfg).load_state_dict(fused.state_dict(), strict=True)


def test_emd_on_a_plain_cost_is_the_assignment():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 5, generator=g)
    order = torch.randperm(6, generator=g)
    plan = coupling(ground_cost(target[order] + 1e-3, target))
    assert is_permutation(plan) and plan.argmax(1).tolist() == order.tolist()
    assert (plan * 6 == np.eye(6)[order.numpy()]).all()


def _changed(run: Path, out: Path, edit) -> Path:
    config = rundir.read_config(run)
    edit(config)
    return sibling(run, out, config=config)


@pytest.mark.parametrize("options, says", [
    ({}, "fuse needs --other RUN2"),
    ({"other": "OTHER", "align": "gradients"}, "unknown --align 'gradients'"),
    ({"other": "OTHER", "solver": "lp"}, "unknown --solver 'lp'"),
    ({"other": "OTHER", "reg": 0}, "--reg must be a number > 0"),
    ({"other": "OTHER", "other_weight": 1.5}, "--other-weight must be in [0, 1]"),
    ({"other": "OTHER", "width": 64}, "--width 64 is wider than the run's model.dim 32; the fused model keeps a subset"),
    ({"other": "OTHER", "width": 30}, "--width 30 is not divisible by the 4 heads"),
    ({"other": "OTHER", "fused_heads": 8}, "--fused-heads 8 exceeds the 4 heads of layers [[0], [1]]; give --fused-heads in 1..4"),
    ({"other": "OTHER", "ffn_hidden": 0}, "--ffn-hidden must be an integer >= 1"),
    ({"other": "OTHER", "baselines": "yes"}, "--baselines must be true or false"),
    ({"other": "DIM"}, "differs from the run in model.dim (64 there, 32 here); fuse runs of one config, or give --width"),
    ({"other": "DESIGN"}, "differs from the run in model.ffn.activation ('relu' there, 'gelu' here); fuse runs of one model config"),
    ({"other": "TASK"}, "was trained with task.name 'copy', the run with 'digits'; fuse runs of one task"),
])
def test_bad_input_is_one_line_and_changes_nothing(loaded, run_a, tmp_path, options, says):
    model, config, data = loaded
    others = {"OTHER": lambda: run_a,
              "DIM": lambda: _changed(run_a, tmp_path / "dim", lambda c: c["model"].update(dim=64)),
              "DESIGN": lambda: _changed(run_a, tmp_path / "design", lambda c: c["model"]["ffn"].update(activation="relu")),
              "TASK": lambda: _changed(run_a, tmp_path / "task", lambda c: c.update(task={"name": "copy"}))}
    if "other" in options:
        options = {**options, "other": str(others[options["other"]]())}
    before, state = digest(run_a), {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        fuse.apply(model, config["model"], data, CPU, run=run_a, **options)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert digest(run_a) == before and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_job_refuses_other_configs_and_writes_nothing(run_a, tmp_path):
    other = _changed(run_a, tmp_path / "dim", lambda c: c["model"].update(dim=64))
    with pytest.raises(ConfigError, match="differs from the run in model.dim"):
        compress(run_a, "fuse", tmp_path / "out", device="cpu", other=str(other))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_missing_other_run_is_a_data_error(run_a, tmp_path):
    with pytest.raises(DataError, match="is not a run directory"):
        compress(run_a, "fuse", tmp_path / "out", device="cpu", other=str(tmp_path / "nowhere"))


@pytest.mark.parametrize("change, says", [
    ({"mixer": {"name": "fnet"}}, "fuse: mixer 'fnet' (layers [0]) has no q/k/v/o heads fuse can align; mixers it can: softmax"),
    ({"mixer": {"name": "softmax", "kv_heads": 2}}, "uses grouped-query attention (kv_heads 2 < heads 4)"),
    ({"ffn": {"name": "moe"}}, "fuse: ffn 'moe' (layers [0]) has no hidden units fuse can align (hidden_linears); ffns it can: glu, mlp"),
    ({"position": {"name": "sinusoidal"}}, "fuse: position 'sinusoidal' does not declare how its weights follow the residual channels"),
    ({"position": {"name": "rotary"}}, "fuse: position 'rotary' does not declare"),
    ({"head": {"name": "cls", "num_classes": 10, "pooler": True}}, "fuse: head 'cls' holds 'pooler.weight', which fuse cannot align"),
    ({"norm": {"name": "batchnorm"}}, "does not declare how its weights follow the residual channels (residual_axes); norms fuse can align: "),
    ({"schedule": {"drop": [1]}}, "fuse: the model drops layers or prunes paths (model.schedule.drop / prune)"),
])
def test_parts_fuse_cannot_align_are_refused_untouched(loaded, tmp_path, change, says):
    _, config, data = loaded
    model_cfg = {**copy.deepcopy(config["model"]), **change}
    model = catalog.create(model_cfg)
    twin = tmp_path / "twin"
    twin.mkdir()
    rundir.atomic_write_text(twin / "config.yaml", yaml.safe_dump({**config, "model": model_cfg}, sort_keys=False))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        fuse.apply(model, model_cfg, data, CPU, other=twin)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_capabilities_are_declared_where_fusion_finds_them():
    found = {kind: supporting(kind, attribute) for kind, attribute in (
        ("mixer", "fusable_heads"), ("ffn", "hidden_linears"), ("norm", "residual_axes"), ("position", "residual_axes"),
        ("encoder", "residual_axes"), ("head", "residual_axes"))}
    assert found == {"mixer": "softmax", "ffn": "glu, mlp", "norm": "layernorm, none, rmsnorm", "position": "learned, none",
                     "encoder": "patches, tokens", "head": "cls, last, lm, mean"}  # dhvt-patches inherits, does not declare


def test_the_command_takes_the_fuse_options(run_a, tmp_path, capsys):
    code, out, _ = run_cli(["compress", run_a, "--method", "fuse", "--other", run_a, "--align", "weights", "--solver", "sinkhorn",
                            "--reg", "0.1", "--other-weight", "0.25", "--no-baselines", "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 0 and "accuracy one-shot: fused" in out
    notes = rundir.read_json(tmp_path / "out" / "compress.json")["notes"]
    assert (notes["align"], notes["solver"], notes["reg"], notes["other_weight"]) == ("weights", "sinkhorn", 0.1, 0.25)
    code, _, err = run_cli(["compress", run_a, "--method", "fuse", "--out", tmp_path / "o2"], capsys)
    assert code == 2 and "fuse needs --other RUN2" in err
