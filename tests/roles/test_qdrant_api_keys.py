"""roles/qdrant tasks/api_keys.yml: which keys a peer is given, from what its config holds; and
roles/prometheus_stack tasks/qdrant_key.yml, which keeps Prometheus's key the same way.

During a rotation (playbooks/runbooks/rotate_secrets.yml) a peer keeps the previous keys it holds
until the switch phase; outside one, a key other than the one held is refused unless switched.
Each case is a host of preflight_harness over the local connection (in check mode); the file
it "holds" is one in tmp_path, pointed at by extra vars (which outrank the role's fixed path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from preflight_harness import run_batch

NEW, OLD, OTHER = "new-full-access-key", "old-full-access-key", "some-other-key"
NEW_RO, OLD_RO = "new-read-only-key", "old-read-only-key"
ROTATION = {"qdrant_api_key_previous": OLD, "qdrant_read_only_api_key_previous": OLD_RO}

# case: (held keys or None for a new host, role variables, expected keys or the refused variables)
CASES: dict[str, tuple[dict[str, str] | None, dict[str, Any], dict[str, str] | list[str]]] = {
    "new_host": (None, {}, {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "converged": ({"api_key": NEW, "read_only_api_key": NEW_RO}, {}, {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "rotation_before_switch": ({"api_key": OLD, "read_only_api_key": OLD_RO}, ROTATION,
                               {"api_key": OLD, "read_only_api_key": OLD_RO}),
    "rotation_switch": ({"api_key": OLD, "read_only_api_key": OLD_RO}, {**ROTATION, "qdrant_api_key_switch": True},
                        {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "rotation_after_switch": ({"api_key": NEW, "read_only_api_key": NEW_RO}, ROTATION,
                              {"api_key": NEW, "read_only_api_key": NEW_RO}),
    "changed_without_rotation": ({"api_key": OTHER, "read_only_api_key": NEW_RO}, {}, ["qdrant_api_key"]),
    "changed_read_only_during_rotation": ({"api_key": OLD, "read_only_api_key": OTHER}, ROTATION,
                                          ["qdrant_read_only_api_key"]),
    "changed_and_switched": ({"api_key": OTHER, "read_only_api_key": OTHER}, {"qdrant_api_key_switch": True},
                             {"api_key": NEW, "read_only_api_key": NEW_RO}),
}


def test_a_peer_keeps_a_rotations_previous_keys_until_the_switch_and_refuses_other_changes(tmp_path: Path) -> None:
    cases: dict[str, tuple[str, dict[str, Any]]] = {}
    for case, (held, variables, _) in CASES.items():
        config = tmp_path / f"{case}.yaml"
        if held is not None:
            config.write_text(yaml.safe_dump({"service": {"host": "10.0.2.10", **held}}))
        cases[case] = ("qdrant", {"held_file": str(config), "qdrant_api_key": NEW,
                                  "qdrant_read_only_api_key": NEW_RO, **variables})
    results = run_batch(tmp_path, cases, entries=["api_keys"], connect=True,
                        show={"keys": "{{ __qdrant_service_keys }}"},
                        extra_vars={"_qdrant_config_file": "{{ held_file }}"})
    for case, (_, _, expected) in CASES.items():
        result = results[case]
        if isinstance(expected, dict):
            result.assert_ok()
            assert result.shown["keys"] == expected, case
        else:
            assert result.failures and result.failures[0].startswith(", ".join(expected) + ":"), (case, result.messages)
            assert "rotate_secrets.yml" in result.failures[0]
            assert not result.shown, case
    # the tasks that read or hold the keys show none of them (no_log); only the test's show does
    output = next(iter(results.values())).output
    document, _ = json.JSONDecoder().raw_decode(output, output.index("{"))
    tasks = {t["task"]["name"].removeprefix("qdrant : "): t["hosts"] for t in document["plays"][0]["tasks"]}
    for name in ("Read the API keys the peer holds", "Choose the API keys for the peer"):
        text = json.dumps(tasks[name])
        assert len(tasks[name]) == len(CASES) and not [k for k in (NEW, OLD, OTHER, NEW_RO, OLD_RO) if k in text], name


def test_prometheus_keeps_the_previous_read_only_key_it_holds_until_the_switch(tmp_path: Path) -> None:
    cases = {  # case: (key file content or None, role variables, key written)
        "new_host": (None, {}, NEW_RO),
        "no_rotation": (OLD_RO, {}, NEW_RO),
        "rotation_before_switch": (OLD_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO}, OLD_RO),
        "rotation_switch": (OLD_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO,
                                     "prometheus_stack_qdrant_api_key_switch": True}, NEW_RO),
        "rotation_after_switch": (NEW_RO, {"prometheus_stack_qdrant_api_key_previous": OLD_RO}, NEW_RO),
    }
    batch: dict[str, tuple[str, dict[str, Any]]] = {}
    for case, (held, variables, _) in cases.items():
        path = tmp_path / f"{case}.key"
        if held is not None:
            path.write_text(held)
        batch[case] = ("prometheus_stack", {"held_file": str(path), "prometheus_stack_qdrant_api_key": NEW_RO,
                                            **variables})
    # check mode: the copy is only shown; the user is root so that it needs no prometheus group
    results = run_batch(tmp_path, batch, entries=["qdrant_key"], connect=True,
                        show={"written": "{{ _prometheus_stack_qdrant_api_key_written }}"},
                        extra_vars={"_prometheus_stack_qdrant_credentials_file": "{{ held_file }}",
                                    "_prometheus_stack_user": "root"})
    for case, (_, _, expected) in cases.items():
        results[case].assert_ok()
        assert results[case].shown["written"] == expected, case
