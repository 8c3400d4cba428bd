"""The throwaway PostgreSQL server of conftest.py: what the distributed search relies on it for.
Workers on several machines share one database, so a row one connection commits must be seen by
another (and an uncommitted one must not), and Optuna's RDB storage must round-trip a trial
between two storage instances as it does between two workers."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.search import conftest as pg


def _name(prefix: str) -> str:
    # One database serves the whole session: unique names keep tests (and reruns) apart.
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def test_missing_postgres_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setattr(pg, "POSTGRES_ROOT", tmp_path / "no-postgresql")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI.*no-postgresql.*make postgres"):
        pg.require_postgres()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-postgresql.*make postgres"):
        pg.require_postgres()


def test_newest_installed_version_is_chosen(tmp_path):
    for version in ("9.6", "15", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
        for tool in ("initdb", "pg_ctl"):
            (tmp_path / version / "bin" / tool).touch()
    (tmp_path / "17" / "bin").mkdir(parents=True)  # a partial install: no initdb
    assert pg.find_bindir(tmp_path) == tmp_path / "16" / "bin"
    assert pg.find_bindir(tmp_path / "none") is None


def test_a_row_round_trips(postgres_url):
    table = _name("roundtrip")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (id integer PRIMARY KEY, value double precision, tag text)"))
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (1, 0.125, 'vit')"))
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT id, value, tag FROM {table}")).all()
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        assert [tuple(r) for r in rows] == [(1, 0.125, "vit")]
        assert int(version.split(".")[0]) >= 10
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_two_connections_see_each_others_commits(postgres_url):
    table = _name("shared")
    # Two engines, so the two sides never share a pooled connection.
    a, b = sa.create_engine(postgres_url), sa.create_engine(postgres_url)
    try:
        with a.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (worker text PRIMARY KEY, value integer)"))
        with a.connect() as ca, b.connect() as cb:
            ca.execute(sa.text(f"INSERT INTO {table} VALUES ('a', 1)"))
            select = sa.text(f"SELECT worker, value FROM {table} ORDER BY worker")
            assert cb.execute(select).all() == []  # not committed yet: invisible to b
            ca.commit()
            assert [tuple(r) for r in cb.execute(select)] == [("a", 1)]
            cb.execute(sa.text(f"INSERT INTO {table} VALUES ('b', 2)"))
            cb.execute(sa.text(f"UPDATE {table} SET value = 10 WHERE worker = 'a'"))
            cb.commit()
            assert [tuple(r) for r in ca.execute(select)] == [("a", 10), ("b", 2)]
            ca.rollback()
    finally:
        with a.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        a.dispose()
        b.dispose()


def test_optuna_trial_is_read_back_by_a_second_storage(postgres_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_name = _name("study")
    writer = optuna.storages.RDBStorage(postgres_url)
    reader = None
    try:
        study = optuna.create_study(study_name=study_name, storage=writer, direction="minimize")
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        study.tell(trial, 0.375)

        reader = optuna.storages.RDBStorage(postgres_url)
        loaded = optuna.load_study(study_name=study_name, storage=reader)
        (seen,) = loaded.get_trials(deepcopy=False)
        assert seen.state == optuna.trial.TrialState.COMPLETE
        assert seen.value == 0.375
        assert seen.params == {"lr": lr}
        assert loaded.best_value == 0.375
    finally:
        optuna.delete_study(study_name=study_name, storage=writer)
        for storage in (writer, reader):
            if storage is not None:
                storage.engine.dispose()
