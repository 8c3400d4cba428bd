"""A search's settings, kept in DIR/search.json: every worker reads them from there, and a
rerun (or --resume) continues the study they describe."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyformer import rundir
from anyformer.errors import ConfigError

SETTINGS = "search.json"
SAMPLERS = ("nsga2", "tpe", "random")
# What makes a study the same study: a rerun with another of these is another search.
IDENTITY = ("task", "space", "objectives", "budget_s", "steps", "seed", "sampler", "train", "study", "timing")


@dataclass
class Settings:
    task: dict[str, Any]  # the run config's task section: {name, options...}
    space: dict[str, Any]  # the space file as read
    objectives: list[str]
    trials: int
    budget_s: float | None = None  # each trial's training budget (steps planned from its measured step time)
    steps: int | None = None  # or each trial's steps
    seed: int = 0
    sampler: str = "nsga2"  # nsga2 | tpe | random; tpe for one objective when nsga2 is asked
    population: int | None = None  # NSGA-II's generation size (None: from the trial count)
    workers: int = 1
    device: str = "auto"
    storage: str | None = None  # an SQLAlchemy URL; None: the journal file in the search directory
    study: str = "search"
    timing: str = "eager"  # eager | compiled: how every candidate's latency is timed
    train: dict[str, Any] = field(default_factory=dict)  # training fields every trial shares
    heartbeat_s: int = 10
    grace_s: int = 30
    prune: bool = True
    space_file: str = ""  # where the space was read from, for the report

    def population_size(self) -> int:
        """NSGA-II's generation: given, or a quarter of the trials (at least 4, at most 50), so
        a short search still runs a few generations past its random first one."""
        return self.population or max(4, min(50, self.trials // 4))

    def save(self, search_dir: Path) -> None:
        data = dataclasses.asdict(self)
        rundir.atomic_write_json(search_dir / SETTINGS, data)

    @classmethod
    def load(cls, search_dir: Path) -> "Settings":
        path = search_dir / SETTINGS
        if not path.exists():
            raise ConfigError(f"{search_dir} holds no search ({SETTINGS} is missing); start one with "
                              "anyformer search --task T --space SPACE.yaml --out DIR")
        data = rundir.read_json(path)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: "Settings") -> list[str]:
        return [k for k in IDENTITY if getattr(self, k) != getattr(other, k)]
