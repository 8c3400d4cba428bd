"""The long fuzz campaign (`make fuzz`): thousands of random registry configs, each run in a
worker process with a time limit, and a table of what happened.

    python -m tests.fuzz_campaign --configs 2000 --workers 2 --timeout 60

Cases come from the same hypothesis strategy as the CI property test (tests/fuzz_cases.py),
generated up front by hypothesis's engine under a fixed seed (the same seed, the same cases),
then run by `--workers` long-lived processes; a case past `--timeout` seconds has its worker
replaced. The table counts configs that built and ran, clean errors (one AnyformerError of
one line), crashes (anything else: another exception, a message of several lines, a
non-finite output) and timeouts, then lists the first crashes with their config. Exit
status 1 when any case crashed. Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection, wait
from typing import Any

OUTCOMES = (("ran", "built and ran"), ("clean", "clean errors"), ("crash", "crashes"), ("timeout", "timeouts"))


def generate(count: int, seed: int, large: bool) -> list[dict[str, Any]]:
    """`count` cases drawn by hypothesis's engine (so as varied as the CI test's) under `seed`."""
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    from tests.fuzz_cases import CAMPAIGN, CI, cases

    drawn: list[dict[str, Any]] = []
    seen: set[str] = set()

    @hypothesis_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(cases(CAMPAIGN if large else CI))
    def collect(case: dict[str, Any]) -> None:
        key = json.dumps(case, sort_keys=True, default=str)
        if key not in seen:  # the engine may replay an example; run each once
            seen.add(key)
            drawn.append(case)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rounds = 0
        while len(drawn) < count and rounds < 20:
            collect()
            rounds += 1
            seed += 1
            collect = hypothesis_seed(seed)(collect)
    return drawn[:count]


def worker(conn: Connection, memory_gib: float) -> None:
    """Run cases sent over `conn` until None arrives; reply (index, status, detail, seconds)."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    limit = int(memory_gib * 2 ** 30)
    # A runaway allocation fails in this worker (reported as a crash), not on the machine.
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    from tests.fuzz_cases import run_case

    while True:
        job = conn.recv()
        if job is None:
            return
        index, case = job
        start = time.perf_counter()
        status, detail = run_case(case)
        conn.send((index, status, detail, time.perf_counter() - start))


class Pool:
    """Long-lived worker processes; one case each at a time, replaced when one overruns."""

    def __init__(self, size: int, memory_gib: float) -> None:
        self.ctx = mp.get_context("spawn")  # a fresh interpreter: no state shared with the parent
        self.memory_gib = memory_gib
        self.workers: list[dict[str, Any]] = [self._start() for _ in range(size)]

    def _start(self) -> dict[str, Any]:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker, args=(child, self.memory_gib), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "job": None, "since": 0.0}

    def run(self, cases: list[dict[str, Any]], timeout: float, report: Any) -> None:
        pending = list(enumerate(cases))[::-1]
        busy = 0
        while pending or busy:
            for w in self.workers:
                if w["job"] is None and pending:
                    w["job"] = pending.pop()
                    w["since"] = time.monotonic()
                    w["conn"].send(w["job"])
                    busy += 1
            ready = wait([w["conn"] for w in self.workers if w["job"] is not None], timeout=1.0)
            now = time.monotonic()
            for i, w in enumerate(self.workers):
                if w["job"] is None:
                    continue
                if w["conn"] in ready:
                    try:
                        index, status, detail, seconds = w["conn"].recv()
                    except (EOFError, OSError):  # the worker died (killed by the OS, a hard crash)
                        index, status, detail, seconds = w["job"][0], "crash", "worker process died", now - w["since"]
                        self._replace(i)
                    report(index, status, detail, seconds)
                elif now - w["since"] > timeout:
                    report(w["job"][0], "timeout", f"over {timeout:g} s", now - w["since"])
                    self._replace(i)
                else:
                    continue
                self.workers[i]["job"] = None
                busy -= 1

    def _replace(self, i: int) -> None:
        w = self.workers[i]
        w["proc"].kill()
        w["proc"].join()
        self.workers[i] = self._start()

    def close(self) -> None:
        for w in self.workers:
            try:
                w["conn"].send(None)
            except (BrokenPipeError, OSError):
                pass
            w["proc"].join(timeout=5)
            if w["proc"].is_alive():
                w["proc"].kill()


def table(counts: Counter, total: int, header: str) -> str:
    width = max(len(label) for _, label in OUTCOMES)
    lines = [header, f"| {'outcome'.ljust(width)} | configs |", f"|{'-' * (width + 2)}|--------:|"]
    lines.append(f"| {'N configs'.ljust(width)} | {total:7d} |")
    lines += [f"| {label.ljust(width)} | {counts[key]:7d} |" for key, label in OUTCOMES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000, help="number of cases")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (the CI machine has 2 cores)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case before its worker is replaced")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed: the same seed draws the same cases")
    parser.add_argument("--memory-gib", type=float, default=6.0, help="address-space limit of each worker")
    parser.add_argument("--large", action="store_true", help="the campaign sizes (wider dims, longer inputs, counts to 32)")
    parser.add_argument("--show", type=int, default=10, help="crashes listed with their config")
    parser.add_argument("--out", default=None, help="also write every result as JSON lines here")
    args = parser.parse_args(argv)

    start = time.monotonic()
    cases = generate(args.configs, args.seed, args.large)
    print(f"drew {len(cases)} cases (seed {args.seed}) in {time.monotonic() - start:.0f} s", flush=True)
    counts: Counter = Counter()
    crashes: list[tuple[int, str]] = []
    out = open(args.out, "w") if args.out else None
    done = 0
    notes: Counter = Counter()  # cases that ran with a non-finite output the rule explains

    def report(index: int, status: str, detail: str, seconds: float) -> None:
        nonlocal done
        done += 1
        counts[status] += 1
        if status == "ran" and detail:
            notes[detail] += 1
        if status in ("crash", "timeout"):
            crashes.append((index, f"{status}: {detail}"))
        if out is not None:
            out.write(json.dumps({"index": index, "status": status, "detail": detail, "seconds": round(seconds, 3),
                                  "case": cases[index]}, default=str) + "\n")
            out.flush()
        if done % 100 == 0 or done == len(cases):
            print(f"  {done}/{len(cases)}: " + ", ".join(f"{counts[k]} {label}" for k, label in OUTCOMES), flush=True)

    pool = Pool(args.workers, args.memory_gib)
    try:
        pool.run(cases, args.timeout, report)
    finally:
        pool.close()
        if out is not None:
            out.close()
    header = (f"fuzz campaign: {len(cases)} configs, seed {args.seed}, {args.workers} workers, "
              f"{args.timeout:g} s per case, {time.monotonic() - start:.0f} s")
    print(table(counts, len(cases), header))
    for note, count in sorted(notes.items()):
        print(f"of those built and ran, {count}: {note}")
    for index, what in sorted(crashes)[: args.show]:
        print(f"- case {index}: {what}\n  {json.dumps(cases[index], default=str)}")
    return 1 if counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
