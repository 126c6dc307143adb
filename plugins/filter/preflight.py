"""Turn registered check results into one list of problems, so preflight reports them all.

Each role's `tasks/preflight.yml` checks its variables with one `assert` looped over a list of
`{var, ok, msg}` and registers the result as `__<role>_preflight`; playbooks/preflight.yml
runs them all with errors ignored and then fails once, listing every problem of every host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _results(registered: Any) -> list[Mapping[str, Any]]:
    if not isinstance(registered, Mapping):
        return []
    results = registered.get("results")
    if isinstance(results, list):
        return [r for r in results if isinstance(r, Mapping)]
    return [registered]


def _message(result: Mapping[str, Any]) -> str:
    errors = result.get("argument_errors")
    if errors:  # validate_argument_spec: each error names the variable
        return "; ".join(str(e) for e in errors)
    return " ".join(str(result.get("msg", "failed")).split())


def preflight_problems(registered: Any, source: str = "") -> list[str]:
    """`source: message` of every failed item of a registered check (messages name the variable)."""
    problems = []
    for result in _results(registered):
        if result.get("failed"):
            problems.append(f"{source}: {_message(result)}" if source else _message(result))
    return problems


def preflight_role_problems(registered_by_role: Mapping[str, Any]) -> list[str]:
    """`preflight_problems` of every role's registered checks ({role: registered})."""
    problems: list[str] = []
    for role, registered in sorted(registered_by_role.items()):
        problems += preflight_problems(registered, role)
    return problems


def preflight_report(problems_by_host: Mapping[str, Iterable[str]]) -> str:
    """One readable block: every host's problems, hosts that share a problem listed once."""
    by_problem: dict[str, list[str]] = {}
    for host, problems in sorted(problems_by_host.items()):
        for problem in problems:
            by_problem.setdefault(problem, []).append(host)
    lines = [f"{len(by_problem)} problem(s) found before any host changed:"]
    for problem, hosts in by_problem.items():
        lines.append(f"- {problem}  [{', '.join(hosts)}]")
    return "\n".join(lines)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"preflight_problems": preflight_problems, "preflight_role_problems": preflight_role_problems,
                "preflight_report": preflight_report}
