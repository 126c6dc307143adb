"""Application state: collections, documents, query history.

Revision ID: 0001
Revises:
Create Date: 2026-12-03

Expand/contract (README "Schema migrations"): this revision only ADDS.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name="pk_collections"),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("s3_key", sa.Text(), nullable=False),
        sa.Column("s3_version_id", sa.Text(), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column(
            "uploaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.ForeignKeyConstraint(
            ["collection"],
            ["collections.name"],
            name="fk_documents_collection_collections",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("collection", "filename", name="uq_documents_collection_filename"),
    )
    op.create_index("ix_documents_s3_key", "documents", ["s3_key"])
    op.create_table(
        "query_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("sources", postgresql.JSONB(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_query_history"),
    )
    op.create_index("ix_query_history_created_at", "query_history", ["created_at"])
    op.create_index("ix_query_history_collection_id", "query_history", ["collection", "id"])
    op.create_index(
        "ix_query_history_sources",
        "query_history",
        ["sources"],
        postgresql_using="gin",
        postgresql_ops={"sources": "jsonb_path_ops"},
    )


def downgrade() -> None:
    # Never run by deploys (expand/contract only moves forward); kept for local experiments.
    op.drop_table("query_history")
    op.drop_table("documents")
    op.drop_table("collections")
