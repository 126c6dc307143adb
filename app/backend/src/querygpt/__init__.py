"""QueryGPT backend: turn SQL schema documentation (PDF) into a searchable
Qdrant collection and answer plain-English questions with SQL from an LLM.

The version below is the single source of truth: pyproject.toml reads it at
build time and ``/health`` reports it at run time.
"""

__version__ = "0.2.7"

__all__ = ["__version__"]
