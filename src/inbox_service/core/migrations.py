"""Alembic, driven from code: `inbox-service migrate`, `dev`, the tests and `/readyz`."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory


def _alembic_ini() -> Path:
    """`ALEMBIC_CONFIG`, else `./alembic.ini`, else the one beside the source checkout."""
    candidates = [
        os.environ.get("ALEMBIC_CONFIG"),
        Path.cwd() / "alembic.ini",
        Path(__file__).resolve().parents[3] / "alembic.ini",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "alembic.ini not found; run from the project root or set ALEMBIC_CONFIG"
    )


def alembic_config(database_url: str | None = None) -> Config:
    ini = _alembic_ini()
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "migrations"))
    if database_url:
        config.attributes["database_url"] = database_url
    # Called from code, alembic must not replace the application's logging setup.
    config.attributes["skip_logging"] = True
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@lru_cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
