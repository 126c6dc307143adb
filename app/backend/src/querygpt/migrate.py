"""Schema migrations: ``querygpt-backend migrate`` and ``migrate --check``.

``alembic upgrade head`` runs under a PostgreSQL session advisory lock, so several hosts
running it at once (a deploy to every backend host) take turns: the first applies the
pending revisions, the others find the schema at head. Each revision is its own
transaction, so a failing one leaves the database at the previous revision.

The application never migrates by itself: ``/ready`` reports a schema older than the
code's head instead (database.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

#: The migration scripts, shipped inside the package (package-data).
MIGRATIONS = Path(__file__).with_name("migrations")

#: pg_advisory_lock key of the migrations: the bytes "querygpt" as a signed bigint.
LOCK_KEY = int.from_bytes(b"querygpt", "big")


class MigrationError(Exception):
    """A migration could not run; the message says which revision and why."""


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: no revision applied (an empty database)
    head: str | None
    #: Revisions the database lacks, oldest first.
    pending: list[str] = field(default_factory=list)
    #: The database is at a revision this code does not know (a newer release migrated it).
    ahead: bool = False

    @property
    def at_head(self) -> bool:
        return not self.pending


def alembic_config(connection: Connection | None = None, script_location: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location or MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=8)
def code_head(script_location: Path | None = None) -> str | None:
    """The newest revision this code knows (what it needs the database at)."""
    return ScriptDirectory.from_config(alembic_config(script_location=script_location)).get_current_head()


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """Every revision shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(connection: Connection) -> str | None:
    revision = MigrationContext.configure(connection).get_current_revision()
    connection.commit()  # end the read's implicit transaction: each revision opens its own
    return revision


def status(connection: Connection, script_location: Path | None = None) -> SchemaStatus:
    script = ScriptDirectory.from_config(alembic_config(script_location=script_location))
    head = script.get_current_head()
    current = current_revision(connection)
    try:
        pending = [rev.revision for rev in script.iterate_revisions(head, current)]
    except CommandError:
        # Unknown to this code: a newer release's revision. Expand/contract keeps this
        # release working on it.
        return SchemaStatus(current, head, [], ahead=True)
    pending.reverse()
    return SchemaStatus(current, head, pending)


def upgrade(engine: Engine, script_location: Path | None = None) -> tuple[SchemaStatus, str | None]:
    """Apply every pending revision under the advisory lock.

    Returns the status found once the lock was held, and the revision after. ``engine``
    should not pool connections (NullPool): closing the connection must end the session,
    and so release the lock, whatever happens.
    """
    with engine.connect() as connection:
        log.info("waiting for the migration lock", extra={"lock_key": LOCK_KEY})
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        connection.commit()
        try:
            before = status(connection, script_location)
            if before.ahead:
                return before, before.current
            for revision in before.pending:
                log.info("applying revision", extra={"revision": revision})
            try:
                command.upgrade(alembic_config(connection, script_location), "head")
            except Exception as exc:
                connection.rollback()
                after = current_revision(connection)
                raise MigrationError(
                    f"migration failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    f"the database stays at revision {after or 'none (empty)'}: the failed "
                    "revision was rolled back"
                ) from exc
            return before, current_revision(connection)
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            connection.commit()
