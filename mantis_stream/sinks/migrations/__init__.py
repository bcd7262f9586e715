"""Versioned SQL migrations for the PostgreSQL sink.

Why: the worker creates and upgrades its own schema at start, so an operator
only points ``MANTIS_POSTGRES_DSN`` at an empty database.

Usage::

    async with pool.acquire() as conn:
        applied = await migrate(conn)

Notes:
- Migrations are the modules ``vNNNN_name.py`` beside this one, each with an
  ``SQL`` string, applied in version order. One is never edited once released:
  a change is a new module. (Python modules, not ``.sql`` files, so they ship
  in every install without package data.)
- Everything runs in one transaction holding ``pg_advisory_xact_lock``: two
  workers starting together serialize, the second finds the versions applied.
  PostgreSQL's DDL is transactional, so a failed migration leaves nothing behind.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Any

#: Arbitrary constant naming this lock (pg advisory locks are keyed by bigint).
ADVISORY_LOCK_KEY = 0x6D616E746973  # "mantis"

_NAME = re.compile(r"^v(\d{4})_([A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        m = _NAME.match(info.name)
        if m:
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(Migration(int(m.group(1)), m.group(2), module.SQL))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    if not found:
        raise RuntimeError("no schema migrations found beside mantis_stream.sinks.migrations")
    return found


async def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations on ``conn`` (an asyncpg connection); return their versions."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in available():
            if mig.version in done:
                continue
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
            )
            applied.append(mig.version)
    return applied


async def current_version(conn: Any) -> int:
    """The highest applied version (0 on an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
