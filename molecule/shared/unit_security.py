"""Shared testinfra helper: the exposure score `systemd-analyze security` gives a unit.

Role scenarios import it (tests put molecule/shared on sys.path) to check that a unit's
sandbox holds on the host's own systemd (the score's weights change between versions), not
only that the directives are written. The ceiling is 3.0 (docs/architecture.md, "Unit
hardening"); a unit above it is named, with its reason, in its role's README.
"""

from __future__ import annotations

import re

CEILING = 3.0

_OVERALL = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def exposure(host, unit: str) -> float:
    """The overall exposure level of `unit` (0.0 best, 10.0 worst) as the host scores it."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = _OVERALL.search(out)
    assert match, f"no overall exposure level in systemd-analyze's output for {unit}:\n{out}"
    return float(match.group(1))


def failed_checks(host, unit: str) -> str:
    """The checks the unit fails, for an assertion message that says what to fix."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    return "\n".join(line for line in out.splitlines() if line.startswith("✗"))


def memory_total(host) -> int:
    """The host's RAM in bytes, which systemd scales a MemoryMax=N% against."""
    meminfo = host.file("/proc/meminfo").content_string
    return int(re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M).group(1)) * 1024


def cpu_quota_percent(host, unit: str) -> float:
    """A unit's CPUQuota= in percent of one CPU (systemd shows it as CPU time per second)."""
    value = host.check_output(f"systemctl show {unit} -p CPUQuotaPerSecUSec --value").strip()
    assert value != "infinity", f"{unit} has no CPUQuota"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|ms)", value)
    assert match, f"unexpected CPUQuotaPerSecUSec of {unit}: {value!r}"
    seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    return seconds * 100


def vcpus(host) -> int:
    """The host's CPU count as Ansible's facts give it (the roles' quotas scale with it)."""
    facts = host.ansible("setup", "filter=ansible_processor_vcpus", check=False)
    return int(facts["ansible_facts"]["ansible_processor_vcpus"])
