"""The parts BERT checkpoints need, against their definitions: the tokens encoder's
BERT embedding block (token types, positions before the norm, the embedding LayerNorm),
the 'cls' head's pooler and the 'features' head; defaults leave existing models as they were."""
import pytest
import torch
import torch.nn.functional as F

import anyformer as af
from anyformer.errors import ConfigError, ShapeError


def test_defaults_keep_the_tokens_encoder_and_cls_head_keys():
    enc = af.build("encoder", "tokens", dim=8, max_len=6, vocab_size=20, cls_token=True)
    head = af.build("head", "cls", dim=8, num_tokens=6, num_classes=3)
    assert sorted(enc.state_dict()) == ["cls", "embedding.weight"]
    assert sorted(head.state_dict()) == ["fc.bias", "fc.weight"]


def test_bert_embedding_block_is_layernorm_of_word_plus_position_plus_type():
    torch.manual_seed(0)
    enc = af.build("encoder", "tokens", dim=8, max_len=6, vocab_size=20, type_vocab_size=2, position_embeddings=True,
                   embed_norm=True, norm_eps=1e-12)
    with torch.no_grad():
        enc.norm.weight.normal_()
        enc.norm.bias.normal_()
    ids = torch.randint(0, 20, (2, 5))
    types = torch.randint(0, 2, (2, 5))
    out, mask = enc({"ids": ids, "token_types": types})
    raw = enc.embedding(ids) + enc.positions.weight[:5] + enc.token_types(types)
    want = F.layer_norm(raw, (8,), enc.norm.weight, enc.norm.bias, eps=1e-12)
    assert mask is None and torch.allclose(out, want, atol=1e-6)
    # ids alone: every token is type 0 (transformers' default token_type_ids).
    alone, _ = enc(ids)
    zeros, _ = enc({"ids": ids, "token_types": torch.zeros_like(ids)})
    assert torch.allclose(alone, zeros, atol=1e-6)


def test_a_cls_token_is_position_0_and_type_0():
    torch.manual_seed(0)
    enc = af.build("encoder", "tokens", dim=8, max_len=6, vocab_size=20, cls_token=True, type_vocab_size=2,
                   position_embeddings=True)
    ids, types = torch.randint(0, 20, (1, 4)), torch.ones(1, 4, dtype=torch.long)
    out, _ = enc({"ids": ids, "token_types": types})
    assert enc.positions.num_embeddings == 7  # max_len + the [CLS] token
    assert torch.allclose(out[0, 0], enc.cls[0, 0] + enc.positions.weight[0] + enc.token_types.weight[0])
    assert torch.allclose(out[0, 1:], enc.embedding(ids)[0] + enc.positions.weight[1:5] + enc.token_types.weight[1])


def test_bad_token_types_are_shape_errors():
    enc = af.build("encoder", "tokens", dim=8, max_len=6, vocab_size=20, type_vocab_size=2)
    ids = torch.randint(0, 20, (2, 5))
    with pytest.raises(ShapeError, match="type_vocab_size"):
        enc({"ids": ids, "token_types": torch.full_like(ids, 2)})
    with pytest.raises(ShapeError, match="shaped like ids"):
        enc({"ids": ids, "token_types": torch.zeros(2, 4, dtype=torch.long)})


def test_the_cls_pooler_is_dense_tanh_before_the_classifier():
    torch.manual_seed(0)
    head = af.build("head", "cls", dim=8, num_tokens=5, num_classes=3, pooler=True)
    tokens = torch.randn(2, 5, 8)
    want = head.fc(torch.tanh(head.pooler(tokens[:, 0])))
    assert torch.allclose(head(tokens), want)


def test_the_features_head_returns_tokens_or_pooled_vectors():
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(af.build("head", "features", dim=8, num_tokens=5)(tokens, mask), tokens)
    mean = af.build("head", "features", dim=8, num_tokens=5, pool="mean", normalize=True)(tokens, mask)
    assert torch.allclose(mean[0], F.normalize(tokens[0, :3].mean(0), dim=-1), atol=1e-6)
    pooled = af.build("head", "features", dim=8, num_tokens=5, pool="pooler", pooler=True)
    assert torch.allclose(pooled(tokens, mask), torch.tanh(pooled.pooler(tokens[:, 0])))
    with pytest.raises(ConfigError, match="pooler: true"):
        af.build("head", "features", dim=8, num_tokens=5, pool="pooler")


def test_the_bert_preset_normalises_its_embeddings():
    model = af.create("bert", dim=16, depth=1, heads=2, max_len=8)
    keys = set(model.state_dict())
    assert {"encoder.positions.weight", "encoder.norm.weight", "encoder.cls"} <= keys and "position.weight" not in keys
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 2)
