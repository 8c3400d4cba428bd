"""Llama checkpoints <-> anyformer (interop/hf/llama.py), on checkpoints transformers writes
itself from a tiny config: RMSNorm, rotary, SwiGLU, grouped-query attention; logits parity
both ways, an exact round trip, padding, tied and untied heads, biases, Mistral without a
window, and one-line errors for every field anyformer cannot honour."""
import json

import pytest
import torch
import transformers

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.interop.hf import convert

from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    MistralConfig,
    MistralForCausalLM,
)

from anyformer.interop.hf import llama

V, L = 100, 64
SIZES = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             num_hidden_layers=2, vocab_size=V, max_position_embeddings=L)


def hf_model(cls=LlamaForCausalLM, config=LlamaConfig, **fields):
    """A random Llama with every parameter moved off its init (RMSNorm weights are 1 at
    init, which would hide a mis-mapped norm)."""
    torch.manual_seed(0)
    model = cls(config(**{**SIZES, **fields})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def saved(model, path):
    """config.json and tensors as save_pretrained writes them to disk."""
    model.save_pretrained(path)
    return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))


def imported(hf: dict, tensors: dict):
    model = af.create(llama.model_config(hf)).eval()
    model.load_state_dict(llama.import_state(tensors, hf), strict=True)
    return model


def ids(batch=2):
    torch.manual_seed(1)
    return torch.randint(0, V, (batch, L))


def parity(hf, model, x=None) -> float:
    x = ids() if x is None else x
    with torch.no_grad():
        return (hf(x).logits - model(x)).abs().max().item()


def test_logits_parity_hf_to_anyformer(tmp_path):
    hf = hf_model()
    model = imported(*saved(hf, tmp_path))
    mixer = model.stack.blocks[0].part("mixer")
    assert (mixer.heads, mixer.kv_heads) == (4, 2)
    diff = parity(hf, model)
    print(f"llama HF -> anyformer logits max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_logits_parity_anyformer_to_hf(tmp_path):
    torch.manual_seed(0)
    model = af.create("llama", dim=32, depth=2, heads=4, max_len=L, encoder={"name": "tokens", "vocab_size": V}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert llama.exports(model.config) is None
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(llama.export_config(model.config)))
    save_file(llama.export_state(model.state_dict(), model.config), str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.num_key_value_heads == 2
    diff = parity(hf, model)
    x = ids()
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(tmp_path).eval()(x).last_hidden_state - model.encode(model.encoder(x)[0], None)[0]
    print(f"llama anyformer -> HF logits max abs diff {diff:.2e}")
    assert diff <= 1e-4 and hidden.abs().max().item() <= 1e-4


def test_round_trip_hf_anyformer_hf_is_exact(tmp_path):
    hf_cfg, tensors = saved(hf_model(), tmp_path)
    model = imported(hf_cfg, tensors)
    back = llama.export_state(model.state_dict(), model.config)
    assert set(back) == set(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    cfg = llama.export_config(model.config)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "vocab_size", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "hidden_act", "rope_parameters"):
        assert cfg[key] == hf_cfg[key], key
    again = AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**cfg)).eval()
    again.load_state_dict(back, strict=True)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_mask_parity(tmp_path, side):
    hf = hf_model()
    model = imported(*saved(hf, tmp_path))
    x = ids()
    mask = torch.ones(2, L, dtype=torch.bool)
    if side == "left":
        mask[1, :9] = False
    else:
        mask[1, -9:] = False
    with torch.no_grad():
        ref = hf(x, attention_mask=mask.long()).logits
        out = model(x, mask)
    diff = (ref - out)[mask].abs().max().item()
    print(f"llama {side}-padded logits max abs diff {diff:.2e}")
    assert diff <= 1e-4


@pytest.mark.parametrize("fields", [
    {"tie_word_embeddings": True},
    {"attention_bias": True, "mlp_bias": True},
    {"num_key_value_heads": 1, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    {"num_key_value_heads": 4, "hidden_act": "gelu"},
])
def test_variants_parity_and_round_trip(tmp_path, fields):
    hf = hf_model(**fields)
    hf_cfg, tensors = saved(hf, tmp_path)
    model = imported(hf_cfg, tensors)
    assert parity(hf, model) <= 1e-4
    back = llama.export_state(model.state_dict(), model.config)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_bare_llamamodel_gives_its_hidden_states(tmp_path):
    hf = hf_model(LlamaModel)
    hf_cfg, tensors = saved(hf, tmp_path)
    model = imported(hf_cfg, tensors)
    assert model.config.head.name == "features"
    x = ids()
    with torch.no_grad():
        assert (hf(x).last_hidden_state - model(x)).abs().max().item() <= 1e-4
    back = llama.export_state(model.state_dict(), model.config)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_mistral_without_a_window_is_llama(tmp_path):
    hf = hf_model(MistralForCausalLM, MistralConfig, sliding_window=None)
    model = imported(*saved(hf, tmp_path))
    assert parity(hf, model) <= 1e-4


def test_legacy_rope_fields_read_like_rope_parameters():
    new = LlamaConfig(**SIZES).to_dict()
    old = {k: v for k, v in new.items() if k != "rope_parameters"} | {"rope_theta": 10000.0, "rope_scaling": None}
    assert llama.model_config(old) == llama.model_config(new)
    old["rope_theta"] = 1e6
    assert llama.model_config(old)["position"]["base"] == 1e6


@pytest.mark.parametrize("fields, named", [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling type 'linear'"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling type 'dynamic'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "rope_scaling type 'llama3'"),
    ({"head_dim": 16}, "head_dim"),
    ({"hidden_act": "gelu_new"}, "hidden_act"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ({"architectures": ["LlamaForSequenceClassification"]}, "architectures"),
    ({"model_type": "mistral", "sliding_window": 16}, "sliding_window"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
])
def test_unsupported_fields_are_one_line_errors(fields, named):
    hf = LlamaConfig(**SIZES).to_dict() | fields
    with pytest.raises(ConfigError, match=named) as err:
        llama.model_config(hf)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, component", [
    ({"mixer": "performer"}, "mixer 'performer'"),
    ({"position": "learned"}, "position 'learned'"),
    ({"position": {"name": "rotary", "fraction": 0.5}}, "position 'rotary'"),
    ({"norm": {"name": "layernorm"}}, "norm 'layernorm'"),
    ({"ffn": {"name": "mlp"}}, "ffn 'mlp'"),
    ({"layout": "parallel"}, "layout 'parallel'"),
    ({"encoder": {"name": "tokens", "cls_token": True}}, "cls_token"),
])
def test_export_refuses_what_llama_has_not(overrides, component):
    config = af.create("llama", dim=32, depth=2, heads=4, max_len=L, **overrides).config
    reason = llama.exports(config)
    assert reason and component in reason and "\n" not in reason
    with pytest.raises(ConfigError, match="llama"):
        llama.export_config(config)


def test_through_from_hf_and_export_hf(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "in")
    model, config = convert.from_hf(tmp_path / "in")
    assert config["imported"]["not_imported"] == []
    back = AutoModelForCausalLM.from_pretrained(convert.export_hf(model, tmp_path / "out")).eval()
    assert parity(hf, model) <= 1e-4 and parity(back, model) <= 1e-4
