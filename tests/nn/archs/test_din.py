"""DIN's parts against their formulas: Dice, the local activation unit and its masking, sum
pooling as the paper's base model, mini-batch aware L2 and its path into the training loss."""
import pytest
import torch

import anyformer as af
from anyformer.errors import ConfigError
from anyformer.nn.archs.din_parts import Dice, LocalActivationUnit
from anyformer.nn.encoders.behaviour import BehaviourFieldsEncoder, batch_aware_l2
from anyformer.train.aux_losses import AuxLosses


def _din(**arch):
    return af.create({"dim": 8, "heads": 1, "depth": 1, "dropout": 0.0, "position": "none", "max_len": 4,
                      "arch": {"name": "din", "hidden": [6], "attention_hidden": [5], **arch},
                      "encoder": {"name": "behaviour-fields", "user_vocab": [5, 3], "items": 9, "categories": 3},
                      "head": {"name": "cls", "num_classes": 2}})


def test_dice_is_its_formula_with_batch_statistics_in_training_and_running_ones_in_eval():
    torch.manual_seed(0)
    dice = Dice(3)
    dice.alpha.data = torch.tensor([0.5, -0.2, 0.0])
    s = torch.randn(16, 3) * 2 + 1
    mean, var = s.mean(0), s.var(0, unbiased=False)
    p = torch.sigmoid((s - mean) / torch.sqrt(var + 1e-8))
    assert torch.allclose(dice.train()(s), p * s + (1 - p) * dice.alpha * s, atol=1e-6)
    running_mean, running_var = dice.norm.running_mean.clone(), dice.norm.running_var.clone()
    p = torch.sigmoid((s - running_mean) / torch.sqrt(running_var + 1e-8))
    assert torch.allclose(dice.eval()(s), p * s + (1 - p) * dice.alpha * s, atol=1e-6)
    # alpha 0 and p -> 1 for a large input: the identity, as a sigmoid-gated ReLU
    assert torch.allclose(Dice(1).eval()(torch.tensor([[50.0]])), torch.tensor([[50.0]]))


def test_activation_unit_weights_are_the_mlp_of_the_four_features_zero_at_padding():
    torch.manual_seed(0)
    unit = LocalActivationUnit(4, [3])
    history, candidate = torch.randn(2, 5, 4), torch.randn(2, 4)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    w = unit.weights(history, candidate, mask)
    e, v = history[1, 1], candidate[1]
    by_hand = unit.mlp(torch.cat([e, v, e - v, e * v]))[0]
    assert torch.allclose(w[1, 1], by_hand, atol=1e-6)
    assert torch.equal(w[1, 2:], torch.zeros(3))
    assert torch.allclose(unit(history, candidate, mask), (w[..., None] * history).sum(1), atol=1e-6)
    # unnormalised: the weights need not sum to 1; normalised: a softmax over the real behaviours
    assert not torch.allclose(w.sum(1), torch.ones(2))
    unit.normalize = True
    soft = unit.weights(history, candidate, mask)
    assert torch.allclose(soft.sum(1), torch.ones(2)) and torch.equal(soft[1, 2:], torch.zeros(3))
    assert torch.equal(unit.weights(history, candidate, torch.zeros(2, 5, dtype=torch.bool)), torch.zeros(2, 5))


def test_sum_pooling_weighs_every_real_behaviour_one_and_attention_depends_on_the_candidate():
    torch.manual_seed(0)
    summed, din = _din(pooling="sum").eval(), _din().eval()
    x = summed.encoder.example_input(2)
    history, mask = torch.randn(2, 4, 8), x["history"][..., 0] != 0
    assert torch.equal(summed.behaviour_weights(history, torch.randn(2, 8), mask), mask.float())
    a, b = torch.randn(2, 8), torch.randn(2, 8)
    assert not torch.allclose(din.behaviour_weights(history, a, mask), din.behaviour_weights(history, b, mask))


@pytest.mark.parametrize("pooling", ["attention", "sum"])
def test_padded_behaviours_and_the_order_of_the_history_do_not_change_the_click(pooling):
    torch.manual_seed(0)
    model = _din(pooling=pooling).eval()
    x = model.encoder.example_input(2)
    x["history"][0, 2:] = 0  # the first user has two behaviours
    out = model(x)
    padded = {**x, "history": x["history"].clone()}
    padded["history"][0, 2:, 1] = 2  # a category under a padded item is never read
    assert torch.allclose(model(padded), out, atol=1e-6)
    shuffled = {**x, "history": x["history"][:, [1, 0, 2, 3]]}
    assert torch.allclose(model(shuffled), out, atol=1e-5)  # pooling is a (weighted) sum
    assert out.shape == (2, 2)


def test_batch_aware_l2_divides_each_present_id_by_its_training_count():
    table = torch.nn.Embedding(5, 2, padding_idx=0)
    table.weight.data = torch.arange(10.0).view(5, 2)
    ids = torch.tensor([[1, 2], [2, 0]])
    counts = torch.tensor([[4.0, 2.0], [2.0, 0.0]])
    # ids 1 and 2 once each (2 is in the batch twice), padding 0 never
    assert torch.isclose(batch_aware_l2(table, ids, counts), torch.tensor((4 + 9) / 4 + (16 + 25) / 2))
    assert torch.isclose(batch_aware_l2(table, ids, None), torch.tensor(4 + 9 + 16 + 25.0))


def test_the_encoders_regularisation_reaches_the_training_loss_through_forward():
    torch.manual_seed(0)
    model = _din()
    enc = BehaviourFieldsEncoder(8, max_len=4, user_vocab=[5, 3], items=9, categories=3, regularization=0.5)
    model.encoder = enc
    x = enc.example_input(2)
    x["user_count"] = torch.full((2, 2), 2.0)
    x["history_count"] = torch.full((2, 4, 2), 3.0)
    x["candidate_count"] = torch.full((2, 2), 3.0)
    aux = AuxLosses(model.train())
    model(x)
    expected = 0.5 * (sum(batch_aware_l2(e, x["user"][:, k], x["user_count"][:, k]) for k, e in enumerate(enc.user))
                      + batch_aware_l2(enc.item, torch.cat([x["history"][..., 0].flatten(), x["candidate"][:, 0]]), torch.full((10,), 3.0))
                      + batch_aware_l2(enc.category, torch.cat([x["history"][..., 1].flatten(), x["candidate"][:, 1]]), torch.full((10,), 3.0)))
    total = aux.pop()
    assert torch.isclose(total, expected) and total.requires_grad and float(total.detach()) > 0
    model.eval()(x)
    assert aux.pop() == 0.0  # no regularisation out of training


def test_din_refuses_what_it_cannot_honour():
    with pytest.raises(ConfigError, match="arch 'din' builds its own token mixing"):
        af.create({**_din().config.to_dict(), "mixer": {"name": "local"}})
    with pytest.raises(ConfigError, match="num_classes must be 2"):
        af.create({**_din().config.to_dict(), "head": {"name": "cls", "num_classes": 3}})
    with pytest.raises(ConfigError, match="use encoder 'behaviour-fields'"):
        af.create({**_din().config.to_dict(), "encoder": {"name": "tokens", "vocab_size": 10}})
