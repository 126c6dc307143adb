"""Fixtures live in backup_testkit.py (a unique module name: tests/ has several conftest.py)."""

from backup_testkit import collection, config, moto_s3_server, qb, qdrant, s3, s3_endpoint  # noqa: F401
