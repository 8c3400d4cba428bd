"""Every registered task, through its small example instance: splits, targets, model fit, loss."""
import pytest
import torch

import anyformer as af
from anyformer import registry
from anyformer.tasks.resolve import model_for_task

TASKS = registry.list_components("task")


def make(name, tmp_path):
    cls = registry.get("task", name)
    options = cls.write_example(tmp_path) if hasattr(cls, "write_example") else dict(cls.example_options)
    return registry.build("task", name, **options)


def test_every_task_has_an_example():
    for name in TASKS:
        cls = registry.get("task", name)
        assert hasattr(cls, "write_example") or cls.example_options or not any(
            p.default is p.empty for p in __import__("inspect").signature(cls.__init__).parameters.values() if p.name != "self"
        ), name


@pytest.mark.parametrize("name", TASKS)
def test_task_contract(name, tmp_path):
    task = make(name, tmp_path)
    splits = task.splits()
    assert {"train", "val", "test"} <= set(splits) and set(task.eval_splits()) <= set(splits)
    for split_name, split in splits.items():
        assert len(split) > 0, split_name
        b = split.batch(torch.arange(min(3, len(split))))
        t = b.target
        if task.problem == "classification":
            if task.multi_label:
                assert t.dim() == 2 and set(t.unique().tolist()) <= {0.0, 1.0}
            else:
                assert t.dtype == torch.long and t.dim() == 1 and int(t.min()) >= 0
        elif task.problem == "lm":
            assert t.dtype == torch.long and ((t == -100) | (t >= 0)).all()
        elif task.problem == "ctr":  # click, and the user's index for GAUC
            assert t.dtype == torch.long and t.shape[1] == 2 and set(t[:, 0].tolist()) <= {0, 1} and int(t[:, 1].min()) >= 0
        else:
            assert t.dim() == 3 and t.is_floating_point()
        if b.mask is not None:
            assert b.mask.dtype == torch.bool and b.mask.any(-1).all()
    cfg = model_for_task(None, task, dim=32, depth=1, heads=4)
    model = af.create(cfg)
    b = splits["train"].batch(torch.arange(min(2, len(splits["train"]))))
    out = model(b.inputs, b.mask)
    loss = task.loss(out, b.target)
    assert torch.isfinite(loss)
    loss.backward()  # the loss reaches the model's parameters
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    if task.problem == "classification" and not task.multi_label:
        assert out.shape[-1] > int(torch.cat([s.target for s in splits.values()]).max())
    with torch.no_grad():
        stats, target = task.compact(out, b.target)
        metrics = task.metrics(stats, target)
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    assert task.primary_metric in metrics
