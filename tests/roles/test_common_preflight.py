"""The common role's checks: operators who can still log in, and the operating system.

The variables run through tests/roles/preflight_harness.py as playbooks/preflight.yml runs
them; the OS check is a host check (roles/common/tasks/host_checks.yml, which
playbooks/preflight.yml also runs on every host) and reads this machine's facts.
"""

from __future__ import annotations

from pathlib import Path

from preflight_harness import run_role

OS_RELEASE = {key: value.strip('"') for key, value in (
    line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)}
# As the facts name it: "Debian 12" (distribution, distribution_major_version).
THIS_OS = f"{OS_RELEASE['NAME'].split()[0]} {OS_RELEASE.get('VERSION_ID', '').split('.')[0]}"


def test_this_os_passes_when_it_is_supported(tmp_path):
    run_role(tmp_path, "common", {"common_supported_os": [THIS_OS]}, entries=("host_checks",), connect=True).assert_ok()


def test_an_unsupported_os_is_refused_naming_the_supported_ones(tmp_path):
    result = run_role(tmp_path, "common", {"common_supported_os": ["Debian 99", "Ubuntu 24"]},
                      entries=("host_checks",), connect=True)
    result.assert_refused("common_supported_os:", f"runs {THIS_OS.split()[0]}", "QueryGPT hosts run Debian 99 or Ubuntu 24")
    assert not result.problems, "the variable itself is fine: the host is not"


def test_keyless_and_malformed_users_are_named(tmp_path):
    result = run_role(tmp_path, "common", {"common_admin_users": [
        {"name": "alice", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOFyXvWw alice@laptop"]},
        {"name": "bob"},
        {"name": "carol", "ssh_keys": ["/home/carol/.ssh/id_ed25519.pub"]},
        {"name": "dave", "state": "absent"},
    ]})
    result.assert_refused('common_admin_users: user(s) "bob" have no ssh_keys',
                          'common_admin_users: user(s) "carol" have an entry in ssh_keys that is not an OpenSSH public key')
    assert "dave" not in result.messages, "a user declared absent needs no key"


def test_removing_the_account_ansible_connects_as_is_refused(tmp_path):
    """An operator list that declares `admin` absent, with Ansible connecting as `admin`
    (group_vars/all/connection.yml, the prod wiring): the run would delete its own account."""
    result = run_role(tmp_path, "common", {"ansible_user": "admin", "common_admin_users": [
        {"name": "alice", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOFyXvWw alice@laptop"]},
        {"name": "admin", "state": "absent"},
    ]})
    result.assert_refused('common_admin_users: ["admin"] is the account Ansible connects as')


def test_root_cannot_be_kept_in_the_login_group(tmp_path):
    run_role(tmp_path, "common", {"common_ssh_deploy_users": ["admin", "root"]}).assert_refused(
        "common_ssh_deploy_users: expected a list of login names other than root")


def test_max_startups_out_of_shape_is_named(tmp_path):
    """A value sshd would refuse (here full below start) is named before sshd sees it."""
    run_role(tmp_path, "common", {"common_ssh_max_startups": "64:30:32"}).assert_refused(
        "common_ssh_max_startups: expected start:rate:full with 1 <= start < full and rate a percentage")

