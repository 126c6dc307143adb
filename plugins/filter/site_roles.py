"""Which roles site.yml runs on a host, read from the playbooks themselves.

The preflight play validates every role's arguments for every host before any host changes.
Reading the role list from the tier playbooks (rather than restating it) means a role added to
a playbook is validated with no other edit.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError


def _play_groups(hosts: Any) -> tuple[set[str], set[str]]:
    """A play's `hosts` as (groups it targets, groups it excludes with `!`)."""
    if isinstance(hosts, list):
        names = hosts
    else:
        names = str(hosts).replace(",", ":").split(":")
    names = [str(name).strip() for name in names if str(name).strip()]
    return ({n for n in names if not n.startswith("!")},
            {n[1:] for n in names if n.startswith("!")})


def _role_name(entry: Any) -> str:
    return str(entry["role"] if isinstance(entry, dict) else entry)


def site_roles(group_names: Iterable[str], site_file: str) -> list[str]:
    """Roles, in order, of every play of `site_file`'s imported playbooks that targets the host."""
    site = Path(site_file)
    try:
        imports = yaml.safe_load(site.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise AnsibleFilterError(f"site_roles: cannot read {site}: {err}") from err
    groups = set(group_names) | {"all"}
    roles: list[str] = []
    for entry in imports:
        target = entry.get("ansible.builtin.import_playbook") or entry.get("import_playbook")
        if not target:
            continue
        for play in yaml.safe_load((site.parent / target).read_text()) or []:
            targets, excluded = _play_groups(play.get("hosts", ""))
            if not targets & groups or excluded & groups:
                continue
            for role in play.get("roles", []):
                name = _role_name(role)
                if name not in roles:
                    roles.append(name)
    return roles


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"site_roles": site_roles}
