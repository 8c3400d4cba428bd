"""A throwaway PostgreSQL server on loopback, for tests of the distributed search that must meet a
real database (row locks, concurrent writers, Optuna's RDB storage) rather than SQLite.

`make postgres` (run by `make test`) installs Debian's postgresql when it is absent. Under CI (the
CI variable set) missing binaries fail the tests that need the server rather than skipping them,
so a broken install is never silent; elsewhere those tests skip, with the reason.

The helpers are plain functions so another fixture (a fresh database per test, a second server)
can reuse them: `start_server` / `stop_server` own the process, `create_database` makes a
database on a running server and returns its SQLAlchemy URL."""
from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_ROOT = Path("/usr/lib/postgresql")
DATABASE = "anyformer_search"
# initdb refuses to run as root; Debian's package creates this account.
SERVICE_USER = "postgres"
# A 2-core CI box under load can take a while to accept connections; more means it is broken.
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class PostgresServer:
    bindir: Path
    root: Path  # holds the data dir, the log and the unix socket; removed by stop_server
    port: int

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"


def _version_key(path: Path) -> tuple[int, ...]:
    # Directory names are versions ("15", "16", once "9.6"): compare them as numbers, not text.
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bindir(root: Path | None = None) -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    root = POSTGRES_ROOT if root is None else root
    found = [p for p in root.glob("*/bin") if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    return max(found, key=_version_key) if found else None


def _is_root() -> bool:
    return os.geteuid() == 0


def unavailable() -> str | None:
    """Why the server cannot be had here, or None."""
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    if find_bindir() is None:
        return (f"PostgreSQL is absent: no {POSTGRES_ROOT}/*/bin/initdb "
                "(run `make postgres`, or as root apt-get install -y postgresql)")
    if _is_root():
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root, and there is no '{SERVICE_USER}' user to run initdb as (apt-get install -y postgresql creates it)"
    return None


def require_postgres() -> Path:
    """The bin directory; skips without PostgreSQL, except under CI, where its absence is a failure."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    bindir = find_bindir()
    assert bindir is not None
    return bindir


def _as_service_user(argv: list[str]) -> list[str]:
    if not _is_root():
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVICE_USER, "--", *argv]
    # Debian gives the postgres account a login shell, but other images set nologin: name a shell.
    return ["su", "-s", "/bin/sh", SERVICE_USER, "-c", shlex.join(argv)]


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    # cwd is the server's own dir: the postgres user may not be allowed into the caller's (/root, a
    # checkout), and initdb/pg_ctl fail when they cannot resolve the current directory.
    return subprocess.run(_as_service_user(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    # The kernel's pick is free now; another process may take it before the server binds, which
    # start_server answers by trying again with a new one.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def make_root() -> Path:
    # As root the server runs as the postgres user, which must own its dir and reach it: /tmp is
    # world-traversable, while TMPDIR or pytest's tmp_path may sit in a root-only place.
    root = Path(tempfile.mkdtemp(prefix="anyformer-pg-", dir="/tmp" if _is_root() else None))
    if _is_root():
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def start_server(bindir: Path, attempts: int = 3) -> PostgresServer:
    """initdb a fresh cluster in a new temp dir and start it on a free loopback port.

    Fails the test (with the tail of initdb's output or the server log) when it cannot."""
    root = make_root()
    try:
        # trust: nothing but this process's tests can reach 127.0.0.1 and the private socket dir.
        # --no-sync and C locale: the cluster is thrown away, and a host's odd LANG cannot break it.
        init = _run([str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                     "-E", "UTF8", "--no-locale", "--no-sync"], cwd=root, timeout=120)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{(init.stdout + init.stderr)[-3000:]}", pytrace=False)
        for attempt in range(attempts):
            server = PostgresServer(bindir=bindir, root=root, port=free_port())
            # Durability settings off: a test database that dies with the run needs none, and
            # fsync on every commit is most of the cost of Optuna's many small transactions.
            options = (f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            start = _run([str(bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.log),
                          "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"],
                         cwd=root, timeout=START_TIMEOUT_S + 30)
            if start.returncode == 0:
                return server
            log = _tail(server.log)
            if "already in use" not in log or attempt == attempts - 1:
                pytest.fail(f"PostgreSQL did not start ({start.stdout}{start.stderr}).\n"
                            f"Last lines of {server.log}:\n{log}", pytrace=False)
        raise AssertionError("unreachable")
    except BaseException:
        _kill_postmaster(root / "data")
        shutil.rmtree(root, ignore_errors=True)
        raise


def _kill_postmaster(datadir: Path) -> None:
    # The pid file's first line is the postmaster's pid; killing it takes its children with it.
    try:
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_server(server: PostgresServer) -> None:
    """Stop the server (immediate: nothing in it is worth a clean shutdown) and remove its dir."""
    try:
        stop = _run([str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate", "-w", "stop"],
                    cwd=server.root, timeout=60)
        if stop.returncode != 0:
            _kill_postmaster(server.datadir)
    except subprocess.TimeoutExpired:
        _kill_postmaster(server.datadir)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    """Create database `name` on the server; returns its SQLAlchemy URL."""
    import psycopg2

    # CREATE DATABASE cannot run inside a transaction, hence autocommit.
    conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return server.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A running throwaway server for the whole session (initdb + start is ~1-2 s)."""
    server = start_server(require_postgres())
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """SQLAlchemy URL of database `anyformer_search` on the session's server, shared by every test
    in the session: tests name their tables and studies uniquely."""
    return create_database(postgres_server, DATABASE)
