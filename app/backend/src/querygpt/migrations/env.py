"""Alembic environment: run only through ``querygpt-backend migrate`` (querygpt.migrate),
which passes a connection holding the migration advisory lock.

Each revision runs in its own transaction (PostgreSQL DDL is transactional), so a revision
that fails leaves the database at the previous one.
"""

from __future__ import annotations

from alembic import context

from querygpt.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the migrations with `querygpt-backend migrate` (it takes the advisory lock); "
        "the alembic command line is not wired to a database"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    transaction_per_migration=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
