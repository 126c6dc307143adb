"""Bad input to the frontend role fails in preflight, before any change, naming the variable.

The preflight runs through tests/roles/preflight_harness.py as playbooks/preflight.yml runs it
(no facts, no connection, every problem collected); whether a rollback release is kept is a
host check, run against localhost. Every refusal has a passing twin, so a failure means the
input was refused, not that the harness is broken. The build, unpack checks, switch, pruning
and rollback run in the molecule scenario (roles/frontend/molecule/default), where a full
role run has a real host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight_harness import run_batch, run_role


def run(tmp_path: Path, overrides: dict, **kwargs):
    return run_role(tmp_path, "frontend", {"frontend_install_prefix": str(tmp_path / "prefix"),
                                           "frontend_build_cache_dir": str(tmp_path / "cache"), **overrides}, **kwargs)


BAD_INPUT = {
    "keep-0": ({"frontend_keep_releases": 0}, "frontend_keep_releases: expected 1-100"),
    "version-path": ({"frontend_version": "../etc"}, "frontend_version: got"),
    "rollback-path": ({"frontend_rollback_to": "a/b"}, "frontend_rollback_to: expected a kept release"),
    "prefix-root": ({"frontend_install_prefix": "/"}, "frontend_install_prefix: expected an absolute path other than /"),
    "archive-zip": ({"frontend_dist_archive": "dist.zip"}, "frontend_dist_archive: got"),
    "no-sources": ({"frontend_source_dir": "/nonexistent"}, "frontend_source_dir:"),
    "checksum-url": ({"frontend_dist_archive_checksum": "sha256:https://ci.example/sum"}, "frontend_dist_archive_checksum:"),
    # a given archive needs no sources, but then no package.json gives the version
    "archive-without-version": ({"frontend_dist_archive": "/srv/dist.tar.gz", "frontend_source_dir": "/nonexistent"},
                                "frontend_version:"),
}


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory):
    """Every case below in one ansible-playbook run (a host per case, each its own prefix)."""
    tmp = tmp_path_factory.mktemp("frontend-bad")
    cases = {case: ("frontend", {"frontend_install_prefix": str(tmp / case / "prefix"),
                                 "frontend_build_cache_dir": str(tmp / case / "cache"), **overrides})
             for case, (overrides, _) in BAD_INPUT.items()}
    return tmp, run_batch(tmp, cases)


@pytest.mark.parametrize(("case", "needle"), [(case, needle) for case, (_, needle) in BAD_INPUT.items()],
                         ids=list(BAD_INPUT))
def test_bad_input_fails_in_preflight_naming_the_variable(bad_input, case, needle):
    tmp, runs = bad_input
    runs[case].assert_refused(needle)
    assert not (tmp / case / "prefix").exists()


def test_every_problem_is_reported_in_one_run(tmp_path):
    result = run(tmp_path, {"frontend_keep_releases": 0, "frontend_version": "../etc", "frontend_install_prefix": "/"})
    result.assert_refused("frontend_keep_releases:", "frontend_version:", "frontend_install_prefix:")
    assert len(result.problems) == 3, result.problems


def test_good_input_passes_preflight(tmp_path):
    run(tmp_path, {}).assert_ok()
    # an archive with an explicit version needs no sources
    run(tmp_path, {"frontend_dist_archive": "https://ci.example/frontend.tar.gz", "frontend_version": "1.2.3",
                   "frontend_dist_archive_checksum": "sha256:" + "0" * 64,
                   "frontend_source_dir": "/nonexistent"}).assert_ok()


def test_rollback_only_to_a_kept_release(tmp_path):
    rollback = {"frontend_rollback_to": "0.0.9-abc"}
    run(tmp_path, rollback, entries=("host_checks",), connect=True).assert_refused(
        "frontend_rollback_to: release '0.0.9-abc' is not kept")
    kept = tmp_path / "prefix/releases/0.0.9-abc/index.html"
    kept.parent.mkdir(parents=True)
    kept.write_text("<html></html>")
    run(tmp_path, rollback, entries=("host_checks",), connect=True).assert_ok()


def test_a_release_the_wiring_cannot_compute_is_named(tmp_path):
    # group_vars/all/release.yml reads the release from the environment's pins
    result = run(tmp_path, {"frontend_version": "{{ querygpt_release.version }}",
                            "frontend_dist_archive": "{{ querygpt_release_dir }}/frontend.tar.gz",
                            "frontend_dist_archive_checksum": "sha256:{{ querygpt_release.frontend_dist_sha256 }}"})
    result.assert_refused("frontend_version: cannot be computed", "frontend_dist_archive: cannot be computed",
                          "frontend_dist_archive_checksum: cannot be computed")
    assert not result.failures
