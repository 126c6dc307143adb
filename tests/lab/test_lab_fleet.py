"""The lab fleet behaves like the production network: AZs, a bastion, default-deny firewalls."""

from __future__ import annotations

import ipaddress
import subprocess
import textwrap

import pytest

from conftest import REPO, ansible_env
from labview import STATE

# roles/common's common_ssh_allow_group: sshd admits its members only.
GROUP = "ssh-users"

PROBE = "timeout 3 bash -c '</dev/tcp/{address}/{port}' && echo open || echo closed"


def test_every_inventory_host_is_a_container_on_its_subnet_at_its_private_ip(lab):
    """The inventory (the EC2 emulator) and the containers agree, as EC2 and its instances do."""
    zones = set()
    for host, hv in lab.hostvars.items():
        out = subprocess.run(
            ["docker", "inspect", "-f",
             "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}/{{$v.IPPrefixLen}} {{end}}",
             lab.name(host)], capture_output=True, text=True, check=True).stdout.split()
        legs = {name.removeprefix("qgpt-lab-"): ipaddress.ip_interface(addr) for name, addr in (x.split("=") for x in out)}
        vpc = {n: a for n, a in legs.items() if n != "internet"}
        assert [str(a.ip) for a in vpc.values()] == [host] == [lab.address(host)]
        zone = lab.zone(host)
        assert next(iter(vpc)).endswith("-" + zone[-1]), f"{host} sits on {vpc} but the emulator places it in {zone}"
        zones.add(zone)
        if host in lab.groups["bastion"] + lab.groups["lb"]:
            assert str(legs["internet"].ip) == hv["ec2_public_ip_address"]
            # the controller reaches the bastion at its public address, the lb through the bastion
            assert hv["ansible_host"] == (hv["ec2_public_ip_address"] if host in lab.groups["bastion"] else host)
            # inside the VPC its traffic leaves from its private address, as through an EIP's NAT
            route = lab.exec(host, "ip -4 route show default").stdout
            assert f"via {next(ipaddress.ip_network(f'{host}/20', strict=False).hosts())}" in route, route
        else:
            assert "internet" not in legs and hv["ansible_host"] == host
    assert len(zones) >= 2, "the lab must span two availability zones"


def test_every_host_is_reachable_through_the_bastion(lab):
    for host in lab.hostvars:
        result = lab.ssh(host, "hostname")
        assert result.returncode == 0, f"{host}: {result.stderr}"
        assert result.stdout.strip() == lab.name(host)


def test_the_bastion_takes_a_new_connection_to_every_host_at_once(lab):
    """Every Ansible connection to a private host is its own SSH connection to the bastion
    (ProxyCommand). With sshd's default MaxStartups (10:30:100) a fleet of more than ten hosts
    lost some of them at random ("kex_exchange_identification: Connection closed") whenever
    they all connected at once. Here they do: no connection sharing, every host in parallel."""
    bastion = lab.groups["bastion"][0]
    effective = lab.ssh(bastion, "sudo sshd -T").stdout.splitlines()
    assert "maxstartups 64:30:256" in effective, [line for line in effective if line.startswith("maxstartups")]
    env = dict(ansible_env(), ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPath=none")
    run = subprocess.run(
        ["ansible", "all", "-i", "inventories/lab", "-f", str(len(lab.hostvars)), "-m", "ansible.builtin.ping"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, "\n".join(line for line in (run.stdout + run.stderr).splitlines()
                                          if "UNREACHABLE" in line or "kex_" in line or "ERROR" in line)
    assert run.stdout.count("SUCCESS") == len(lab.hostvars)


def test_direct_ssh_to_a_private_host_is_refused(lab):
    """The firewall drops it: a connection timeout, not a login failure (the key is valid)."""
    backend = lab.groups["backend"][0]
    direct = lab.ssh(backend, "true", jump=False, timeout=30)
    assert direct.returncode == 255, direct
    assert "timed out" in direct.stderr, f"expected the firewall to drop the connection: {direct.stderr}"
    assert lab.ssh(backend, "true").returncode == 0, "the same key must work through the bastion"


@pytest.mark.parametrize("az_index", [0, 1])
def test_bastion_reaches_ssh_across_azs_with_its_own_address(lab, az_index):
    """Cross-AZ traffic is routed, not NATed: the firewall sees the bastion's real address."""
    backend = sorted(lab.groups["backend"])[az_index]
    bastion = lab.groups["bastion"][0]
    probe = lab.exec(bastion, PROBE.format(address=lab.address(backend), port=22))
    assert probe.stdout.strip() == "open"


def test_firewall_drops_ssh_from_a_non_bastion_host(lab):
    edge, backend = lab.groups["edge"][0], lab.groups["backend"][0]
    probe = lab.exec(edge, PROBE.format(address=lab.address(backend), port=22))
    assert probe.stdout.strip() == "closed"


def test_ssh_refuses_passwords_and_root(lab):
    bastion = lab.groups["bastion"][0]
    result = lab.ssh(bastion, "sudo sshd -T")
    settings = result.stdout.splitlines()
    assert "passwordauthentication no" in settings
    assert "permitrootlogin no" in settings
    assert "allowtcpforwarding local" in settings, "the bastion must forward for ProxyJump"


def test_tunnels_reach_the_monitoring_hosts_loopback_and_no_other_hosts(lab):
    """Grafana listens on the monitoring host's loopback only; an operator reaches it with a
    tunnel through the bastion (docs/monitoring.md), which that host's sshd must allow. A
    tier host refuses any tunnel. Here the stdio form (-W) to the lab's alert receiver."""
    def tunnel(host: str, target: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(STATE / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                               "-W", target, lab.hostvars[host]["ansible_host"]],
                              input="GET /alerts HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30,
                              check=False)

    monitoring, backend = lab.groups["monitoring"][0], lab.groups["backend"][0]
    through = tunnel(monitoring, "127.0.0.1:9099")
    assert through.returncode == 0 and " 200 " in (through.stdout.splitlines() or [""])[0], through
    refused = tunnel(backend, "127.0.0.1:22")
    assert refused.returncode != 0 and "administratively prohibited" in refused.stderr, refused


@pytest.mark.parametrize("tier", ["bastion", "backend"])
def test_sshd_admits_the_operators_and_the_deploy_account_only(lab, tier):
    """As in prod: the operators of common_admin_users and the account Ansible connects as
    (the image's `admin`, not in that list) are in the SSH login group; an account with a valid
    key outside it is refused. If the role left `admin` out, this lab's own converge would have
    locked itself out at sshd's reload."""
    host = lab.groups[tier][0]
    operator = lab.ssh(host, "id -nG && sudo -n true && echo sudo-ok", user="operator")
    assert operator.returncode == 0 and GROUP in operator.stdout.split() and "sudo-ok" in operator.stdout, operator
    assert GROUP in lab.ssh(host, "id -nG admin").stdout.split()
    key = (STATE / "id_ed25519.pub").read_text().strip()
    setup = lab.exec(host, f"useradd --create-home outsider && install -d -m 700 -o outsider /home/outsider/.ssh"
                           f" && echo '{key}' > /home/outsider/.ssh/authorized_keys"
                           " && chown outsider /home/outsider/.ssh/authorized_keys")
    try:
        assert setup.returncode == 0, setup.stderr
        outsider = lab.ssh(host, "true", user="outsider")
        assert outsider.returncode == 255 and "Permission denied" in outsider.stderr, outsider
        # the same key and account in the group log in: the refusal was the group's
        assert lab.exec(host, f"usermod -aG {GROUP} outsider").returncode == 0
        assert lab.ssh(host, "true", user="outsider").returncode == 0
    finally:
        lab.exec(host, "userdel --remove outsider")


# The preflight refusals run site.yml on the backend tier only: one host with the bad input
# and one without shows that the run stops for every host, at a quarter of the fleet's cost.
PREFLIGHT_LIMIT = ["--limit", "backend"]


def test_a_bad_inventory_value_fails_before_any_host_changes(lab, tmp_path):
    """A wrong-typed variable on one host stops site.yml in preflight, naming it, with nothing
    changed on any host (the other backend, whose input is good, does not go on either)."""
    bad = tmp_path / "bad.yml"
    host = lab.groups["backend"][0]
    bad.write_text(textwrap.dedent(f"""\
        all:
          hosts:
            {host}:
              common_ssh_port: twenty-two
    """))
    run = subprocess.run(
        ["ansible-playbook", "site.yml", "-i", "inventories/lab", "-i", str(bad), *PREFLIGHT_LIMIT],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "common_ssh_port" in out
    assert "PLAY [Common baseline" not in out, "a tier ran although preflight should have stopped the run"
    recap = out.rsplit("PLAY RECAP", 1)[-1]
    assert "changed=0" in recap and "changed=1" not in recap
    assert lab.groups["backend"][1] in recap, "the backend with good input was not part of the run"


def test_an_unsupported_release_is_refused_before_any_host_changes(lab):
    """Preflight's second part: a host whose release is not supported stops site.yml, with a
    message naming the supported ones, before the first tier runs. Here the lab's Debian 13
    hosts are declared unsupported (as Debian 12 hosts are)."""
    run = subprocess.run(
        ["ansible-playbook", "site.yml", "-i", "inventories/lab", "-e", '{"common_supported_os": ["Debian 12"]}',
         *PREFLIGHT_LIMIT],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    # On a failure, what stopped the run (the recap at the end of the output does not say).
    failures = "\n".join(line for line in out.splitlines()
                         if line.startswith(("fatal:", "failed:", "ERROR", "[ERROR]", "NO MORE HOSTS", "PLAY [")))
    assert "QueryGPT hosts run Debian 12" in out and "runs Debian 13" in out, failures[-4000:]
    assert "PLAY [Common baseline" not in out, "a tier ran although preflight should have stopped the run"
    recap = out.rsplit("PLAY RECAP", 1)[-1]
    assert "changed=0" in recap and "changed=1" not in recap
