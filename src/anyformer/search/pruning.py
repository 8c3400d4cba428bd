"""Ending hopeless trials early. Optuna's pruners judge one objective (`Trial.report` refuses
a multi-objective study), so a search with costs prunes by dominance instead: a candidate's
costs are measured before it trains, so a finished trial that costs no more on every cost
objective and had the better validation quality at the same share of its training already
beats it; once `peers` such trials exist the candidate is pruned. Only the dominated are
cut: a cheap candidate of low quality, which may be on the front, is never pruned for its
quality alone. With quality as the only objective this is Optuna's MedianPruner (its
median at the same share of training, after `startup` trials)."""
from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

CURVE = "curve"  # user attribute: {share of training (2 decimals): validation quality}
COSTS = "costs"  # user attribute: {cost key: value}, measured before training
STARTUP = 5  # finished trials before any pruning
MIN_SHARE = 0.3  # no pruning before this share of a trial's training
PEERS = 2  # dominating trials needed to prune


def _at(curve: dict[str, float], share: float) -> float | None:
    """A trial's quality at the latest evaluation no later than `share` of its training."""
    earlier = [(float(k), v) for k, v in curve.items() if float(k) <= share + 1e-9]
    return max(earlier)[1] if earlier else None


class DominancePruner:
    """Prune a trial whose costs and quality so far are beaten by `peers` finished trials
    (see the module docstring). `cost_keys`: the cost objectives' measurement keys."""

    def __init__(self, cost_keys: Sequence[str], higher_is_better: bool, startup: int = STARTUP,
                 peers: int = PEERS, min_share: float = MIN_SHARE) -> None:
        self.cost_keys, self.higher = list(cost_keys), higher_is_better
        self.startup, self.peers, self.min_share = startup, peers, min_share

    def dominators(self, study: optuna.Study, costs: dict[str, float], share: float, quality: float) -> list[int]:
        """Numbers of the finished trials that beat this one at this share of training."""
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if len(finished) < self.startup or share < self.min_share:
            return []
        out = []
        for t in finished:
            theirs, curve = t.user_attrs.get(COSTS), t.user_attrs.get(CURVE)
            if not theirs or not curve or any(theirs.get(k, float("inf")) > costs[k] for k in self.cost_keys):
                continue
            value = _at(curve, share)
            if value is not None and (value > quality if self.higher else value < quality):
                out.append(t.number)
        return out

    def should_prune(self, study: optuna.Study, costs: dict[str, float], share: float, quality: float) -> bool:
        return len(self.dominators(study, costs, share, quality)) >= self.peers


def median_pruner() -> optuna.pruners.BasePruner:
    """The single-objective pruner: steps are shares of training in percent, so trials that
    train different step counts under one budget compare at the same share."""
    return optuna.pruners.MedianPruner(n_startup_trials=STARTUP, n_warmup_steps=int(MIN_SHARE * 100))
