"""The command lines the docs and the runbooks' headers give operators work as copied for
production: the lab's vault opens by itself (ansible.cfg's bin/lab-vault-client), a
production or staging vault only with its vault id, so a command without one stops at
"Decryption failed" on an operator's machine while every lab test passes."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "playbooks").rglob("*.yml")),
           *sorted((REPO / "roles").glob("*/README.md"))]
ENV_INVENTORY = re.compile(r"-i inventories/(?!lab\b)(\S+?)(?=[\s`'\"]|$)")


def test_every_playbook_command_for_an_environment_opens_its_vault() -> None:
    commands = [(path.relative_to(REPO), number, line.strip())
                for path in SOURCES
                for number, line in enumerate(path.read_text().splitlines(), 1)
                if "ansible-playbook" in line and ENV_INVENTORY.search(line)]
    assert len(commands) > 20, "the docs' commands were not found: the pattern is stale"
    missing = [f"{path}:{number}: {line}" for path, number, line in commands
               if "--vault-id" not in line and "--ask-vault-pass" not in line]
    assert not missing, "add --vault-id <env>@prompt (docs/first-deploy.md):\n" + "\n".join(missing)


def test_every_terraform_change_names_the_environment_variables() -> None:
    """Without -var-file Terraform plans with every variable's default (one Qdrant peer...)
    against the environment's state, and would destroy what the defaults leave out."""
    changes = [(path.relative_to(REPO), number, line.strip())
               for path in SOURCES
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if re.search(r"terraform (plan|apply) (-|\\$)", line)]  # a command with options
    assert len(changes) > 3, "the docs' terraform commands were not found: the pattern is stale"
    missing = [f"{p}:{n}: {line}" for p, n, line in changes if "-var-file" not in line]
    assert not missing, "give -var-file=environments/<env>/terraform.tfvars:\n" + "\n".join(missing)
