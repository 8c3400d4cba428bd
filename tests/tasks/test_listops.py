"""ListOps generator: expressions evaluate to their labels, LRA lengths, padding, disjoint splits."""
import pytest
import torch

from anyformer.errors import ConfigError, DataError
from anyformer.tasks.listops import VOCAB, ListOpsTask, apply_operator

from .helpers import check_model_fits


def evaluate(tokens):
    """An independent evaluator of the token form (with or without parentheses)."""
    stack = []
    for t in tokens:
        if t in ("(", ")"):
            continue
        if t.startswith("["):
            stack.append([t])
        elif t == "]":
            op, *args = stack.pop()
            v = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10,
                 "[MED": lambda a: int(sorted(a)[len(a) // 2] if len(a) % 2 else (sorted(a)[len(a) // 2 - 1] + sorted(a)[len(a) // 2]) / 2)}[op](args)
            if not stack:
                return v
            stack[-1].append(v)
        else:
            if not stack:
                return int(t)
            stack[-1].append(int(t))


def decode(row):
    return [VOCAB[i] for i in row.tolist() if i != 0]


def test_median_truncates_like_numpy():
    assert apply_operator("[MED", [1, 2]) == 1 and apply_operator("[MED", [3, 9, 4]) == 4 and apply_operator("[MED", [2, 5, 9, 9]) == 7


@pytest.mark.parametrize("parentheses", [False, True])
def test_labels_are_the_expression_values(parentheses):
    task = ListOpsTask(**{**ListOpsTask.example_options, "parentheses": parentheses})
    s = task.splits()
    assert [len(s[k]) for k in ("train", "val", "test")] == [48, 8, 8]
    rows = []
    for split in s.values():
        b = split.batch(torch.arange(len(split)))
        assert b.inputs.dtype == torch.long and b.inputs.shape[1] == task.seq_len
        assert torch.equal(b.mask, b.inputs != 0)
        for row, label in zip(b.inputs, b.target.tolist()):
            tokens = decode(row)
            assert evaluate(tokens) == label and 0 <= label < 10
            lra_len = sum(t not in "()" for t in tokens)
            assert 4 < lra_len < 32
            assert (row[: len(tokens)] != 0).all()  # padding only at the end
            rows.append(tuple(tokens))
    assert len(set(rows)) == len(rows)  # no expression in two splits
    check_model_fits(task)


def test_plain_form_starts_with_operator_and_parentheses_nest():
    task = ListOpsTask(**{**ListOpsTask.example_options, "parentheses": True, "num_train": 10})
    tokens = decode(task.splits()["train"].inputs[0])
    assert tokens.count("(") == tokens.count(")") and tokens[0] == "("
    plain = ListOpsTask(**{**ListOpsTask.example_options, "num_train": 10}).splits()["train"]
    assert VOCAB[int(plain.inputs[0, 0])].startswith("[")


def test_seeded_and_errors():
    a = ListOpsTask(**ListOpsTask.example_options).splits()["train"].inputs
    assert torch.equal(a, ListOpsTask(**ListOpsTask.example_options).splits()["train"].inputs)
    assert not torch.equal(a, ListOpsTask(**{**ListOpsTask.example_options, "seed": 1}).splits()["train"].inputs)
    with pytest.raises(ConfigError, match="min_length"):
        ListOpsTask(min_length=10, max_length=5)
    with pytest.raises(DataError, match="distinct expressions"):
        ListOpsTask(max_depth=2, max_args=2, min_length=1, max_length=5, num_train=50).splits()
