"""Training runs side by side, in worker processes that each use a share of the CPU's cores.

A small model leaves a multi-core CPU underused: its kernels are too short for torch's
intra-op threads to pay (on a 2-core CPU a dim-64 ViT step takes about as long on one
thread as on two), so K seeds trained in K one-thread processes at once finish far sooner
than K seeds one after another (benchmarks/seed_cost.py measures both). Each worker is a
fresh interpreter (spawn: no forked torch state), kept for the whole job so its import
cost is paid once; it trains whole runs through `Trainer`, so a side-by-side seed is the
same run (same directory, checkpoint, resume, summary) as a sequential one.

    with SideBySide(workers=3, threads=1) as pool:
        futures = [pool.submit(run, run_dir, resume=False) for run, run_dir in jobs]
        summaries = [f.result() for f in futures]
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from anyformer.train.config import RunConfig
from anyformer.train.loop import Trainer

# A worker whose parent died (kill -9 of the job) exits within this many seconds instead of
# waiting for work forever.
ORPHAN_CHECK_S = 2.0


def workers_for(runs: int, device: torch.device, requested: int | None = None) -> tuple[int, int]:
    """(processes, threads each) to train `runs` runs side by side. `requested` None: as many
    processes as runs, up to the cores, on a CPU; one on an accelerator (it runs one model's
    kernels at a time anyway). Threads: the cores shared equally, at least one."""
    cores = os.cpu_count() or 1
    if requested is None:
        requested = min(runs, cores) if device.type == "cpu" else 1
    workers = max(1, min(requested, runs))
    return workers, max(1, cores // workers)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(1)


def _start_worker(threads: int, parent: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _train(run: dict[str, Any], run_dir: str, resume: bool) -> dict[str, Any]:
    return Trainer(RunConfig.model_validate(run), run_dir, resume=resume).fit()


class SideBySide:
    """A pool of `workers` spawned processes with `threads` torch threads each; `submit`
    trains one run in one of them and returns a future of its summary."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(threads, os.getpid()))

    def submit(self, run: RunConfig, run_dir: Path, resume: bool) -> Future:
        # Plain data crosses the process boundary; the worker rebuilds the task from its spec.
        quiet = run.model_copy(update={"train": run.train.model_copy(update={"progress": False})})
        return self._pool.submit(_train, quiet.model_dump(mode="json"), str(run_dir), resume)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "SideBySide":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
