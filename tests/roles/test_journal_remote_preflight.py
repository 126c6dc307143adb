"""journal_remote's disk caps (journal-remote.conf MaxUse=, MaxFileSize=, KeepFree=), through
tests/roles/preflight_harness.py as playbooks/preflight.yml runs them. That the receiver keeps
to them is the role's molecule scenario."""

from __future__ import annotations

from preflight_harness import run_role


def test_caps_that_leave_nothing_to_delete_are_refused(tmp_path):
    """Below twice the file size the receiver would have no archived file to delete."""
    run_role(tmp_path, "journal_remote", {"journal_remote_max_use": "100M", "journal_remote_max_file_size": "128M"}
             ).assert_refused("journal_remote_max_use: expected a size such as 4G (journal-remote.conf MaxUse=) of at "
                              "least twice journal_remote_max_file_size (\"128M\")")


def test_sizes_for_a_larger_disk_pass(tmp_path):
    """What an operator sets for a bigger root volume: plain bytes and every IEC unit are read."""
    run_role(tmp_path, "journal_remote", {"journal_remote_max_use": "1T", "journal_remote_max_file_size": "268435456",
                                          "journal_remote_keep_free": "20G"}).assert_ok()
