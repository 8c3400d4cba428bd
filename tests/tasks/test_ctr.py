"""The ctr task: GAUC against sklearn per user, the planted structure of the generated clicks,
the split by time within each user, the click-log CSV read back, the id tables and the
training counts of mini-batch aware regularisation."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anyformer import registry
from anyformer.errors import ConfigError
from anyformer.tasks.ctr import PAD, UNSEEN, group_auc
from anyformer.tasks.ctr_data import generated_clicks

SMALL = {"users": 60, "impressions": 10, "history": 6, "max_history": 6, "items_per_category": 6, "categories": 4}


def test_group_auc_is_the_impression_weighted_mean_of_each_users_auc():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 6, 200)
    label = rng.integers(0, 2, 200)
    label[group == 5] = 1  # a user with clicks only counts in no mean
    score = np.round(rng.normal(size=200), 1)  # ties count half, as in sklearn
    total = weight = 0.0
    for g in range(5):
        rows = group == g
        total += roc_auc_score(label[rows], score[rows]) * rows.sum()
        weight += rows.sum()
    assert math.isclose(group_auc(score, label, group), total / weight, rel_tol=1e-12)
    assert math.isnan(group_auc(score, np.ones(200, dtype=int), group))


def test_ctr_metrics_auc_and_gauc_agree_with_sklearn():
    problem = registry.build("problem", "ctr")
    output, target = problem.example_batch(torch.Generator().manual_seed(1))
    m = problem.metrics(output, target)
    score = (output[:, 1] - output[:, 0]).numpy()
    assert math.isclose(m["auc"], roc_auc_score(target[:, 0].numpy(), score), rel_tol=1e-9)
    assert math.isclose(m["gauc"], group_auc(score, target[:, 0].numpy(), target[:, 1].numpy()), rel_tol=1e-9)
    assert math.isclose(m["logloss"], float(torch.nn.functional.cross_entropy(output, target[:, 0])), rel_tol=1e-6)


def test_generated_clicks_are_seeded_and_follow_the_users_interests():
    a, b = generated_clicks(seed=3, **{**_gen(), "users": 300}), generated_clicks(seed=3, **{**_gen(), "users": 300})
    c = generated_clicks(seed=4, **{**_gen(), "users": 300})
    assert a.candidate == b.candidate and np.array_equal(a.click, b.click) and a.candidate != c.candidate
    # A candidate of a category the user's behaviours hold is clicked far more often
    # than one outside her interests (sigmoid(-3) ~ 0.05).
    inside = np.array([a.category[cand] in {a.category[h] for h in hist} for cand, hist in zip(a.candidate, a.history)])
    assert a.click[~inside].mean() < 0.1 < 0.3 < a.click[inside].mean()
    assert len(a.candidate) == 300 * 10 and all(len(h) == 6 for h in a.history)


def _gen():
    return {"users": 60, "impressions": 10, "history": 6, "items_per_category": 6, "categories": 4, "interests": 2}


def test_generated_task_splits_each_users_impressions_by_time():
    task = registry.build("task", "ctr", **SMALL)
    splits = task.splits()
    parts = task._parts
    assert sum(len(s) for s in splits.values()) == 600
    user = {name: s.target[:, 1] for name, s in splits.items()}
    for u in range(60):  # each user: 8 train, then 1 val, then 1 test impression
        rows = {name: parts[name][user[name] == u] for name in splits}
        assert [len(rows[n]) for n in ("train", "val", "test")] == [8, 1, 1]
        assert rows["train"].max() < rows["val"].min() < rows["test"].min()
    x = splits["train"].inputs
    assert x["history"].shape[1:] == (6, 2) and x["candidate"].shape[1] == 2 and x["user"].shape[1] == 3
    assert int(x["history"][..., 0].min()) >= UNSEEN + 1 and task.user_vocab[0] == 61  # 60 users + unknown


def _clicks(tmp_path, text):
    path = tmp_path / "clicks.csv"
    path.write_text(text)
    return str(path)


HEADER = "user,age,history,hist_cats,item,cat,click\n"
LOG = """u1,30,,,a,x,1
u1,30,a,x,b,y,0
u2,40,a|b|c,x|y|y,c,y,1
u2,40,a|b|c|d,x|y|y|x,d,x,0
"""


def test_a_click_log_is_read_into_ids_with_padding_categories_and_training_counts(tmp_path):
    task = registry.build("task", "ctr", path=_clicks(tmp_path, HEADER + LOG * 5), category_column="cat",
                          history_category_column="hist_cats", max_history=3)
    splits = task.splits()
    train = splits["train"]
    x = train.inputs
    # fields: the user id, then every column no option names (age)
    assert task.user_vocab == [3, 3] and x["user"][:2].tolist() == [[1, 1], [1, 1]]
    items = {"a": 2, "b": 3, "c": 4, "d": 5}  # in order of first appearance, after 0 pad and 1 unseen
    cats = {"x": 2, "y": 3}
    assert task.num_items == 6 and task.num_categories == 4
    assert x["history"][0].tolist() == [[PAD, PAD]] * 3  # an empty history is all padding
    assert x["history"][1].tolist() == [[items["a"], cats["x"]], [PAD, PAD], [PAD, PAD]]
    # the last max_history = 3 behaviours, oldest first
    assert x["history"][3].tolist() == [[items["b"], cats["y"]], [items["c"], cats["y"]], [items["d"], cats["x"]]]
    assert x["candidate"][2].tolist() == [items["c"], cats["y"]]
    assert train.target[:4, 0].tolist() == [1, 0, 1, 0]
    # training counts: item 'a' in the train impressions' histories and candidates
    rows = task._parts["train"]
    hist, cand = x["history"], x["candidate"]
    a_count = int((hist[..., 0] == items["a"]).sum() + (cand[:, 0] == items["a"]).sum())
    assert x["history_count"][1, 0, 0] == a_count and x["candidate_count"][2, 0] == int((cand[:, 0] == items["c"]).sum()
                                                                                     + (hist[..., 0] == items["c"]).sum())
    assert len(rows) == 16 and len(splits["val"]) == 2 and len(splits["test"]) == 2


def test_without_categories_the_category_slot_is_padding(tmp_path):
    task = registry.build("task", "ctr", path=_clicks(tmp_path, HEADER + LOG * 5), field_columns=[])
    x = task.splits()["train"].inputs
    assert task.num_categories == 0 and task.user_vocab == [3]
    assert int(x["history"][..., 1].abs().sum()) == 0 and int(x["candidate"][:, 1].abs().sum()) == 0


def test_more_interests_than_categories_is_a_config_error():
    with pytest.raises(ConfigError, match="interests 5 exceed categories 4"):
        registry.build("task", "ctr", categories=4, interests=5)


def test_the_item_click_rate_baseline_is_each_items_shrunk_training_rate():
    problem = registry.build("problem", "ctr")
    candidate = torch.tensor([[2, 0], [2, 0], [2, 0], [3, 0]])
    train = type("S", (), {"inputs": {"candidate": candidate}, "target": torch.tensor([[1, 0], [1, 0], [0, 0], [0, 1]])})()
    model = problem.trivial_baselines(train, train)["item click rate"]
    p = torch.softmax(model({"candidate": torch.tensor([[2, 0], [3, 0], [1, 0]])}), -1)[:, 1]
    overall = 0.5
    assert torch.allclose(p, torch.tensor([(2 + 5 * overall) / (3 + 5), (0 + 5 * overall) / (1 + 5), overall]))
