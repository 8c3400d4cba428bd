"""scan-snap: Tian et al. 2023's sequence classes, generated and seeded."""
import pytest
import torch

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.tasks.resolve import model_for_task

OPTIONS = {"classes": 4, "queries": 2, "distinct": 3, "common": 5, "common_share": 0.6, "length": 40,
           "num_train": 400, "num_val": 20, "num_test": 20}


def make(**extra):
    return registry.build("task", "scan-snap", **{**OPTIONS, **extra})


def test_sequences_follow_the_data_model():
    task = make()
    train = task.splits()["train"]
    x, n = train.inputs, train.target
    assert x.shape == (400, 40) and task.vocab_size == 4 * 3 + 5 + 2
    # The last token is the query psi(n) = n mod queries; it appears nowhere else.
    assert torch.equal(x[:, -1], task.first_query + n % 2)
    assert not (x[:, :-1] >= task.first_query).any()
    # A distinct token occurs with its own class only; common ones with every class.
    context = x[:, :-1]
    distinct = context < task.first_common
    assert torch.equal((context // 3)[distinct], n[:, None].expand_as(context)[distinct])
    common = context[~distinct]
    assert set(common.unique().tolist()) == set(range(task.first_common, task.first_query))
    assert float((~distinct).float().mean()) == pytest.approx(0.6, abs=0.02)
    groups = task.attention_groups(x)
    assert torch.equal(groups["distinct"] | groups["common"] | groups["query"], torch.ones_like(distinct.new_ones(x.shape)))
    assert not (groups["distinct"] & groups["common"]).any() and torch.equal(groups["query"][:, -1], torch.ones(400, dtype=torch.bool))


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = make().splits()["val"], make().splits()["val"], make(seed=1).splits()["val"]
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.target, b.target)
    assert not torch.equal(a.inputs, c.inputs)


def test_distinct_skew_orders_the_distinct_tokens_by_frequency():
    task = make(distinct_skew=1.5, common_share=0.0)
    x = task.splits()["train"].inputs[:, :-1]
    counts = torch.bincount(x.flatten() % 3, minlength=3)
    assert counts[0] > counts[1] > counts[2]
    groups = task.attention_groups(task.splits()["train"].inputs)
    assert groups["frequent"].sum() > groups["rare"].sum() > 0 and not (groups["frequent"] & groups["rare"]).any()
    assert "frequent" not in make().attention_groups(x)
    w = task.distinct_weights()
    assert float(w[0] / w[1]) == pytest.approx(2 ** 1.5)


def test_the_model_reads_the_query_without_positions():
    cfg = model_for_task({"preset": "single-layer", "head": {"name": "last"}}, make())
    assert cfg.head.name == "last" and cfg.position.name == "none" and cfg.encoder.options["cls_token"] is False


@pytest.mark.parametrize("options, message", [
    ({"classes": 1}, "classes must be >= 2"),
    ({"queries": 5}, "queries 5 must be at most classes 4"),
    ({"common_share": 1.0}, "common_share must be in"),
    ({"length": 1}, "length must be >= 2"),
    ({"distinct": 0}, "distinct"),
    ({"distinct_skew": -1.0}, "distinct_skew"),
])
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        make(**options)
