"""Verify the common role on a converged host: what an operator relies on, read back live."""

import re

import pytest

TEST_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOFyXvWwfjxKIm/xcDYrTvQ3RKc2vyrR/KUS/biOWl2o"


def test_apt_sources_include_security_updates(host):
    sources = host.file("/etc/apt/sources.list.d/debian.sources").content_string
    assert "Suites: trixie-security" in sources
    assert "Suites: trixie trixie-updates" in sources
    # apt itself resolves the security suite (not only the file says so)
    policy = host.check_output("apt-cache policy")
    assert "trixie-security" in policy


def test_unattended_upgrades_enabled(host):
    assert host.package("unattended-upgrades").is_installed
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    assert "label=Debian-Security" in dump


def test_chrony_installed_and_enabled(host):
    assert host.package("chrony").is_installed
    assert host.service("chrony").is_enabled


def test_logs_under_var_log_are_rotated_daily(host):
    """logrotate's daily timer is on, and every rule the installed packages ship parses
    (--debug reads them all and rotates nothing)."""
    assert host.package("logrotate").is_installed
    timer = host.service("logrotate.timer")
    assert timer.is_enabled and timer.is_running
    result = host.run("logrotate --debug /etc/logrotate.conf")
    assert result.rc == 0 and "error:" not in result.stderr, result.stderr[-2000:]
    assert "reading config file apt" in result.stderr, "the packages' rules were not read"


def test_journal_is_persistent(host):
    conf = host.file("/etc/systemd/journald.conf.d/50-querygpt.conf").content_string
    assert "Storage=persistent" in conf
    machine_id = host.file("/etc/machine-id").content_string.strip()
    # journald restarted with the new config writes to /var/log/journal/<machine-id>
    assert host.file(f"/var/log/journal/{machine_id}").is_directory


def test_sysctl_persisted(host):
    conf = host.file("/etc/sysctl.d/90-querygpt.conf").content_string
    assert re.search(r"^net.ipv4.tcp_syncookies\s*=\s*1$", conf, re.M)
    assert re.search(r"^kernel.kptr_restrict\s*=\s*2$", conf, re.M)


def test_sshd_is_hardened(host):
    effective = host.check_output("sshd -T")
    for line in (
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "allowgroups ssh-users",
        "x11forwarding no",
        "allowtcpforwarding no",
        "maxauthtries 3",
        "maxstartups 10:30:100",  # Debian's default: only the bastion takes more
    ):
        assert line in effective.splitlines(), line
    assert host.service("ssh").is_running


def test_admin_user_has_key_and_sudo(host):
    user = host.user("operator")
    assert user.exists
    assert "ssh-users" in user.groups
    keys = host.file("/home/operator/.ssh/authorized_keys")
    assert keys.mode == 0o600
    assert TEST_KEY in keys.content_string
    sudoers = host.file("/etc/sudoers.d/50-querygpt-admins").content_string
    assert "operator ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers
    assert host.run("sudo -l -U operator").stdout.count("NOPASSWD: ALL") == 1


def test_the_deploy_account_stays_in_the_login_group_with_what_the_image_gave_it(host):
    admin = host.user("admin")
    assert "ssh-users" in admin.groups and "sudo" in admin.groups, admin.groups
    # not an operator of common_admin_users: no sudoers line of the role's, keys untouched
    assert "admin" not in host.file("/etc/sudoers.d/50-querygpt-admins").content_string


@pytest.mark.parametrize("name", ["leaver"])
def test_absent_user_is_removed(host, name):
    assert not host.user(name).exists
