"""Rollout batches: how many hosts of a tier a `serial` play changes at once.

The tier playbooks take `serial` from a variable (playbooks/vars/rollout.yml). Preflight
checks with `serial_batches` that every batch leaves a host of the tier serving: a batch
that drains every edge or every backend at once is an outage, however well each host drains.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.utils.helpers import pct_to_int


def serial_batches(serial: Any, hosts: int) -> list[int]:
    """The batch sizes, in order, of a play with this `serial` over `hosts` hosts: ansible-core's
    own arithmetic (PlaybookExecutor._get_serialized_batches, pct_to_int): a percentage of the
    hosts rounded down and at least 1; 0 or less takes every host left; the last entry repeats."""
    hosts = int(hosts)
    entries = (serial if isinstance(serial, list) else [serial]) or [-1]
    batches: list[int] = []
    left, index = hosts, 0
    while left > 0:
        entry = entries[min(index, len(entries) - 1)]
        try:
            size = pct_to_int(str(entry).strip() if isinstance(entry, str) else entry, hosts)
        except (TypeError, ValueError):
            raise AnsibleFilterError(f"serial_batches: {entry!r} is neither a host count nor a percentage") from None
        size = left if size <= 0 else min(size, left)
        batches.append(size)
        left -= size
        index += 1
    return batches


def serial_problem(serial: Any, hosts: int) -> str:
    """Why this `serial` cannot roll out a drained tier of `hosts` hosts, or "" when it can: every
    entry a host count or a percentage, and no batch takes every host at once (a tier of one
    host has no other to serve while it changes, and is not refused)."""
    hosts = int(hosts)
    try:
        batches = serial_batches(serial, hosts)
    except AnsibleFilterError as err:
        return str(err).removeprefix("serial_batches: ")
    if hosts > 1 and max(batches, default=0) >= hosts:
        return (f"its batches {batches} take all {hosts} hosts out at once; use a count below {hosts} "
                "or a percentage below 100%, so a host keeps serving while the others change")
    return ""


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"serial_batches": serial_batches, "serial_problem": serial_problem}
