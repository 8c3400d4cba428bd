"""Trainer(on_eval=): called after every evaluation with the step and every split's metrics;
raising from it ends the run there (a search prunes a trial), with no final checkpoint."""
from __future__ import annotations

import pytest

from anyformer import rundir
from anyformer.train.config import run_config
from anyformer.train.loop import Trainer

SMALL = {"preset": "vit", "dim": 16, "depth": 1, "heads": 2}


class Stop(Exception):
    pass


def test_on_eval_sees_each_evaluation_and_may_stop_the_run(tmp_path):
    seen = []
    config = run_config({"model": SMALL, "task": "digits", "train": {"steps": 20, "eval_every": 5, "progress": False}})
    Trainer(config, tmp_path / "all", on_eval=lambda step, results: seen.append((step, results))).fit()
    assert [s for s, _ in seen] == [5, 10, 15, 20]
    logged = [r for r in rundir.read_metrics(tmp_path / "all") if r.get("split") == "val"]
    assert [r["accuracy"] for r in logged] == [res["val"]["accuracy"] for _, res in seen]

    def stop_at_10(step, results):
        if step == 10:
            raise Stop(step)

    with pytest.raises(Stop):
        Trainer(run_config({"model": SMALL, "task": "digits", "train": {"steps": 20, "eval_every": 5, "progress": False}}),
                tmp_path / "cut", on_eval=stop_at_10).fit()
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert max(r["step"] for r in rundir.read_metrics(tmp_path / "cut")) == 10
