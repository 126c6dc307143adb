"""After playbooks/runbooks/upgrade_debian.yml and the common role: a Debian 12 host is a
consistent Debian 13 host that kept its local configuration."""

MARK = "# local change kept across the upgrade (molecule upgrade_debian)"


def test_the_host_runs_debian_13(host):
    release = dict(line.split("=", 1) for line in host.file("/etc/os-release").content_string.splitlines() if "=" in line)
    assert release["VERSION_ID"] == '"13"' and release["VERSION_CODENAME"] == "trixie"
    assert host.package("base-files").version.startswith("13")


def test_python3_is_debian_13s(host):
    # what the backend's release virtualenvs are rebuilt for (roles/backend, install.yml)
    assert host.check_output("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'") == "3.13"


def test_no_source_names_debian_12(host):
    found = host.run("grep -rl bookworm /etc/apt/sources.list /etc/apt/sources.list.d")
    assert found.rc == 1, f"still naming bookworm: {found.stdout}"
    sources = host.file("/etc/apt/sources.list.d/debian.sources").content_string
    assert "Suites: trixie trixie-updates" in sources and "Suites: trixie-security" in sources


def test_every_package_is_debian_13s_and_dpkg_is_consistent(host):
    # nothing left to upgrade from the lists the upgrade read, nothing obsolete left behind,
    # and no package half-installed or half-configured
    upgrade = host.check_output("apt-get --simulate --no-download full-upgrade")
    assert "0 upgraded, 0 newly installed, 0 to remove" in upgrade, upgrade[-2000:]
    autoremove = host.check_output("apt-get --simulate autoremove")
    assert "0 upgraded, 0 newly installed, 0 to remove" in autoremove, autoremove[-2000:]
    audit = host.run("dpkg --audit")
    assert audit.rc == 0 and audit.stdout.strip() == "", audit.stdout


def test_local_configuration_changes_were_kept(host):
    # both files changed between Debian 12 and 13, so the upgrade had to choose: the new
    # versions are set aside (dpkg's .dpkg-dist, ucf's .ucf-dist), the operator's stay
    for path, new_version in (("/etc/login.defs", "/etc/login.defs.dpkg-dist"),
                              ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config.ucf-dist")):
        assert MARK in host.file(path).content_string, f"{path} lost its local change"
        assert host.file(new_version).exists, f"{new_version} missing: the upgrade never had to choose for {path}"
    # and sshd still reads its (kept) file
    assert host.run("sshd -t").rc == 0


def test_the_services_run_on_debian_13(host):
    # systemd was upgraded under itself (daemon-reexec), and sshd restarted on the new binary
    assert host.check_output("systemctl --version").split()[1].startswith("257")
    assert host.service("ssh").is_running
    failed = host.check_output("systemctl list-units --failed --plain --no-legend")
    assert failed.strip() == "", failed


def test_the_runbook_left_no_unfinished_upgrade_behind(host):
    # its marker goes once the host reports Debian 13; a run that finds it resumes the upgrade
    assert not host.file("/var/lib/querygpt-upgrade-debian").exists
