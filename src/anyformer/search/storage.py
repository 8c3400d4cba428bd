"""Where a search's trials live, and how workers that die lose none of them.

The default is a journal file in the search directory (Optuna's `JournalFileBackend`: an
append-only log that several processes on one machine share safely; Optuna advises against
SQLite for parallel optimisation). Any SQLAlchemy URL (`postgresql://...`) is the scale-out
path: Optuna's RDBStorage, which many machines share.

A worker killed mid-trial leaves its trial RUNNING. On an RDB the trial's heartbeat stops
and the next worker to look fails it and enqueues a retry (`RetryHeartbeatStaleTrialCallback`);
the journal has no heartbeat, so every trial records the worker that runs it (host, pid and
the process's start time, which a reused pid does not share) and a sweep fails and retries
the trials of this host's workers that are gone. The retry runs the same parameters in the
same trial folder, resuming from its last checkpoint.

Workers take the next trial under a lock (a file lock in the search directory; on
PostgreSQL also an advisory lock, for workers on other machines), so the search never
starts more trials than asked for."""
from __future__ import annotations

import fcntl
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from anyformer.errors import ConfigError

JOURNAL = "study.journal"
LOCK = ".next-trial.lock"
WORKER = "worker"  # the user attribute naming the process a trial runs in
MAX_RETRY = 3
# Defaults of RDBStorage's heartbeat (seconds): a trial whose worker has not beaten for the
# grace period is stale.
HEARTBEAT_S, GRACE_S = 10, 30


def open_storage(url: str | None, search_dir: Path, heartbeat_s: int = HEARTBEAT_S,
                 grace_s: int = GRACE_S) -> optuna.storages.BaseStorage:
    """The study's storage: the journal file in `search_dir` (url None), or an RDB at `url`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        if url is None:
            from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

            path = search_dir / JOURNAL
            # The open lock (O_EXCL on a file) works where symlinks do not (some shared mounts).
            return optuna.storages.JournalStorage(JournalFileBackend(str(path), JournalFileOpenLock(str(path))))
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                                              heartbeat_stale_trial_callback=retry,
                                              engine_kwargs={"pool_pre_ping": True})
        except ImportError as err:
            raise ConfigError(f"--storage {redact(url)}: its driver is not installed ({err}); for PostgreSQL: "
                              "pip install 'anyformer[search]' (psycopg2-binary)") from None
        except Exception as err:  # noqa: BLE001  (SQLAlchemy's errors: a wrong URL, a server that is not up)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"--storage {redact(url)}: cannot open it ({first}); check the URL, that the server "
                              "is up and the database exists") from None


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and search.json."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    auth, _, host = tail.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{head}://{user}{':***' if ':' in auth else ''}@{host}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def worker_id(pid: int | None = None) -> str:
    """host:pid:start-time of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def alive(worker: str) -> bool | None:
    """Whether the worker process still runs; None when it runs on another host (unknown)."""
    host, _, rest = worker.partition(":")
    if host != socket.gethostname():
        return None
    pid_text, _, started = rest.partition(":")
    pid = int(pid_text)
    if started != "?":
        return _start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Mark a trial failed; False when another process finished or failed it first."""
    try:
        # FrozenTrial keeps its storage id private; the storage API takes nothing else.
        return study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def sweep_stale(study: optuna.Study, url: str | None = None) -> list[int]:
    """Fail, and enqueue a retry of, every RUNNING trial whose worker is gone: on an RDB by
    heartbeat (Optuna's own sweep), on the journal by this host's dead worker processes,
    and any trial with no worker at all (its worker died between taking it and naming
    itself, which happens under the next-trial lock this caller holds; only where that lock
    spans every worker: the journal, PostgreSQL). Returns the numbers."""
    whole = url is None or url.startswith("postgresql")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        optuna.storages.fail_stale_trials(study)
        swept = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in before]
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
            worker = trial.user_attrs.get(WORKER)
            if ((worker is None and whole) or (worker is not None and alive(worker) is False)) and _fail(study, trial):
                retry(study, study._storage.get_trial(trial._trial_id))
                swept.append(trial.number)
    return sorted(swept)


# pg_advisory_lock's key: any fixed 64-bit number, the same in every worker.
ADVISORY_KEY = 0x616E79666F726D  # "anyform"


class NextTrialLock:
    """Held from counting the trials until the trial taken has named its worker: a file lock
    in the search directory and, on PostgreSQL, an advisory lock (workers on other machines).
    `release` is idempotent: the trial releases it as soon as it is named, the worker loop
    again in any case."""

    def __init__(self, search_dir: Path, url: str | None) -> None:
        search_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.url = search_dir / LOCK, url
        self._handle = None
        self._conn = None
        self._engine = None

    def acquire(self) -> None:
        self._handle = open(self.path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        if self.url is not None and self.url.startswith("postgresql"):
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._conn = self._engine.connect()
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})

    def release(self) -> None:
        if self._conn is not None:
            import sqlalchemy

            try:
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            finally:
                self._conn.close()  # a closed session drops its advisory locks in any case
                self._conn = None
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "NextTrialLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, with `finished` (complete + pruned: the ones the quota counts) and
    `infeasible` (failed because the candidate cannot be built)."""
    out: dict[str, Any] = {s.name.lower(): 0 for s in TrialState}
    infeasible = 0
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
        infeasible += t.state == TrialState.FAIL and "infeasible" in t.user_attrs
    out["finished"] = out["complete"] + out["pruned"]
    out["infeasible"] = infeasible
    return out
