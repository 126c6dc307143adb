"""Where the lab keeps things, so that every module agrees and `lab down` knows what it made."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("QGPT_LAB_STATE", REPO / ".lab"))
VENV = REPO / ".venv"
CHECKOV_VENV = REPO / ".venv-checkov"
LAB_INVENTORY = REPO / "inventories" / "lab"

# Every docker object the lab creates carries this label; `lab down` removes only those.
LABEL = "org.querygpt.lab"
