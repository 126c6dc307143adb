"""``python3 -m qdrant_standin`` (LAB TEST FIXTURE: QueryGPT Qdrant stand-in, NOT Qdrant)."""

from qdrant_standin.server import main

raise SystemExit(main())
