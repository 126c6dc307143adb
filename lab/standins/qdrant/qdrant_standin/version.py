"""Version the stand-in reports.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the version gates snapshot recovery (same minor only, like upstream) and is
what ``qdrant --version`` and ``GET /`` report. package.py replaces this file
inside the release archive with the ``--version`` it is given; this value only
applies when running from source.
"""

VERSION = "1.15.5"
