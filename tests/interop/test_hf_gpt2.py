"""GPT-2 checkpoints <-> anyformer (interop/hf/gpt2.py), on checkpoints transformers writes
itself from a tiny config: logits parity both ways, an exact round trip, padding, a bare
GPT2Model's hidden states, and one-line errors for every field anyformer cannot honour."""
import json

import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.interop.hf import convert

from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Model

from anyformer.interop.hf import gpt2

V, L = 100, 32


def hf_model(cls=GPT2LMHeadModel, **fields):
    """A random GPT-2 with every parameter moved off its init (LayerNorms are 1 and 0,
    Conv1D biases 0 at init, which would hide a mis-mapped norm or bias)."""
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=L, bos_token_id=0, eos_token_id=0, **fields)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def saved(model, path):
    """config.json and tensors as save_pretrained writes them to disk."""
    model.save_pretrained(path)
    return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))


def imported(hf: dict, tensors: dict):
    model = af.create(gpt2.model_config(hf)).eval()
    model.load_state_dict(gpt2.import_state(tensors, hf), strict=True)
    return model


def write(model, path):
    """An anyformer model exported as a checkpoint directory (config.json + safetensors)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(gpt2.export_config(model.config)))
    state = {k: v.contiguous() for k, v in gpt2.export_state(model.state_dict(), model.config).items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def ids(batch=2):
    torch.manual_seed(1)
    return torch.randint(0, V, (batch, L))


def test_logits_parity_hf_to_anyformer(tmp_path):
    hf = hf_model()
    model = imported(*saved(hf, tmp_path))
    x = ids()
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
    print(f"gpt2 HF -> anyformer logits max abs diff {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_logits_parity_anyformer_to_hf(tmp_path, activation):
    torch.manual_seed(0)
    model = af.create("gpt", dim=32, depth=2, heads=4, max_len=L, encoder={"name": "tokens", "vocab_size": V},
                      ffn={"name": "mlp", "activation": activation}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert gpt2.exports(model.config) is None
    hf = AutoModelForCausalLM.from_pretrained(write(model, tmp_path)).eval()
    x = ids()
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
        hidden = (AutoModel.from_pretrained(tmp_path).eval()(x).last_hidden_state - model.encode(model.encoder(x)[0], None)[0])
    print(f"gpt2 anyformer ({activation}) -> HF logits max abs diff {diff:.2e}")
    assert type(hf).__name__ == "GPT2LMHeadModel" and diff <= 1e-4
    assert hidden.abs().max().item() <= 1e-4


def test_round_trip_hf_anyformer_hf_is_exact(tmp_path):
    hf_cfg, tensors = saved(hf_model(), tmp_path)
    model = imported(hf_cfg, tensors)
    back = gpt2.export_state(model.state_dict(), model.config)
    assert set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    cfg = gpt2.export_config(model.config)
    for key in ("n_layer", "n_embd", "n_head", "n_inner", "n_positions", "vocab_size", "activation_function", "layer_norm_epsilon",
                "resid_pdrop", "attn_pdrop", "tie_word_embeddings"):
        assert cfg[key] == hf_cfg[key], key


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_mask_parity(tmp_path, side):
    hf = hf_model()
    model = imported(*saved(hf, tmp_path))
    x = ids()
    mask = torch.ones(2, L, dtype=torch.bool)
    if side == "left":
        mask[0, :7] = False
    else:
        mask[0, -7:] = False
    with torch.no_grad():
        ref = hf(x, attention_mask=mask.long()).logits
        out = model(x, mask)
    diff = (ref - out)[mask].abs().max().item()
    print(f"gpt2 {side}-padded logits max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_bare_gpt2model_gives_its_hidden_states(tmp_path):
    hf = hf_model(GPT2Model)
    hf_cfg, tensors = saved(hf, tmp_path)
    model = imported(hf_cfg, tensors)
    assert model.config.head.name == "features"
    x = ids()
    with torch.no_grad():
        diff = (hf(x).last_hidden_state - model(x)).abs().max().item()
    assert diff <= 1e-4
    back = gpt2.export_state(model.state_dict(), model.config)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert gpt2.export_config(model.config)["architectures"] == ["GPT2Model"]


def test_untied_lm_head(tmp_path):
    hf = hf_model(tie_word_embeddings=False)
    hf_cfg, tensors = saved(hf, tmp_path)
    assert "lm_head.weight" in tensors
    model = imported(hf_cfg, tensors)
    assert not model.config.head.options["tie"]
    x = ids()
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4
    assert torch.equal(gpt2.export_state(model.state_dict(), model.config)["lm_head.weight"], tensors["lm_head.weight"])


@pytest.mark.parametrize("field, value", [
    ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True),
    ("scale_attn_weights", False),
    ("add_cross_attention", True),
    ("activation_function", "gelu_fast"),
    ("architectures", ["GPT2DoubleHeadsModel"]),
])
def test_unsupported_fields_are_one_line_errors(field, value):
    hf = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=L).to_dict()
    hf[field] = value
    with pytest.raises(ConfigError, match=field) as err:
        gpt2.model_config(hf)
    assert "\n" not in str(err.value)


def test_hand_written_config_takes_transformers_defaults():
    cfg = gpt2.model_config({"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 4})
    assert cfg["ffn"]["activation"] == "gelu_tanh" and cfg["norm"]["eps"] == 1e-5
    assert cfg["max_len"] == 1024 and cfg["encoder"]["vocab_size"] == 50257 and cfg["ffn"]["hidden"] == 128


@pytest.mark.parametrize("overrides, component", [
    ({"mixer": "linear"}, "mixer 'linear'"),
    ({"mixer": {"name": "softmax", "kv_heads": 2}}, "kv_heads 2"),
    ({"position": "rotary"}, "position 'rotary'"),
    ({"norm": {"name": "rmsnorm"}}, "norm 'rmsnorm'"),
    ({"ffn": {"name": "glu"}}, "ffn 'glu'"),
    ({"ffn": {"name": "mlp", "activation": "relu2"}}, "activation relu2"),
    ({"causal": False}, "causal"),
    ({"head": {"name": "lm", "bias": True}}, "head 'lm'"),
    ({"schedule": {"share": 1}}, "schedule"),
])
def test_export_refuses_what_gpt2_has_not(overrides, component):
    config = af.create("gpt", dim=32, depth=2, heads=4, max_len=L, **overrides).config
    reason = gpt2.exports(config)
    assert reason and component in reason and "\n" not in reason
    with pytest.raises(ConfigError, match="gpt2"):
        gpt2.export_config(config)


def test_through_from_hf_and_export_hf(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "in")
    model, config = convert.from_hf(tmp_path / "in")
    assert config["imported"]["not_imported"] == []
    back = AutoModelForCausalLM.from_pretrained(convert.export_hf(model, tmp_path / "out")).eval()
    x = ids()
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max().item() <= 1e-4
        assert (back(x).logits - model(x)).abs().max().item() <= 1e-4
