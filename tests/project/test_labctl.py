"""Pure parts of the lab tooling: recap parsing, routing rules, the image tag."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))

from labctl import ec2, fleet, image, secrets  # noqa: E402
from labctl.cli import parse_recap  # noqa: E402
from labctl.run import LabError  # noqa: E402

RECAP = """\
PLAY RECAP *********************************************************************
backend-a                  : ok=32   changed=0    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
qdrant-1                   : ok=35   changed=2    unreachable=0    failed=0    skipped=1    rescued=0    ignored=0

PLAYBOOK RECAP *****************************************************************
"""


def test_parse_recap_reads_every_host():
    recap = parse_recap("noise\nPLAY RECAP earlier\nfoo : ok=1\n" + RECAP)
    assert recap == {
        "backend-a": {"ok": 32, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 0, "rescued": 0, "ignored": 0},
        "qdrant-1": {"ok": 35, "changed": 2, "unreachable": 0, "failed": 0, "skipped": 1, "rescued": 0, "ignored": 0},
    }


def test_routing_rules_join_every_pair_of_az_networks_without_nat():
    nets = {"az-a": ipaddress.ip_network("10.42.1.0/24"), "az-b": ipaddress.ip_network("10.42.2.0/24")}
    rules = fleet._routing_rules(nets)  # noqa: SLF001
    assert ["filter", "DOCKER-USER", "-s", "10.42.1.0/24", "-d", "10.42.2.0/24", "-j", "ACCEPT"] in rules
    assert ["nat", "POSTROUTING", "-s", "10.42.2.0/24", "-d", "10.42.1.0/24", "-j", "RETURN"] in rules
    assert len(rules) == 4


def test_routing_rules_go_above_a_masquerade_rule_docker_added_after_them(monkeypatch):
    """A killed run leaves its RETURN rules; docker then puts a new network's MASQUERADE rule
    above them, and traffic between subnets would be NATed to the gateway's address (which
    the hosts' firewalls drop). _ensure_routing must leave every rule of its own on top."""
    nets = {"az-a": ipaddress.ip_network("10.42.1.0/24"), "az-b": ipaddress.ip_network("10.42.2.0/24")}
    stale = ["-s", "10.42.1.0/24", "-d", "10.42.2.0/24", "-j", "RETURN"]
    masquerade = ["-s", "10.42.1.0/24", "!", "-o", "br-new", "-j", "MASQUERADE"]
    chains = {("nat", "POSTROUTING"): [masquerade, stale], ("filter", "DOCKER-USER"): []}

    class Done:
        def __init__(self, code: int) -> None:
            self.returncode = code

    def iptables(argv, **_):
        _, _, table, action, chain, *rest = argv
        rules = chains[table, chain]
        if action == "-C":
            return Done(0 if rest in rules else 1)
        if action == "-D":
            rules.remove(rest)
        elif action == "-I":
            assert rest[0] == "1"
            rules.insert(0, rest[1:])
        return Done(0)

    monkeypatch.setattr(fleet, "run", iptables)
    fleet._ensure_routing(nets)  # noqa: SLF001
    postrouting = chains["nat", "POSTROUTING"]
    assert postrouting[-1] == masquerade and postrouting.count(stale) == 1, postrouting
    assert len(chains["filter", "DOCKER-USER"]) == 2
    fleet._ensure_routing(nets)  # noqa: SLF001 - again: nothing doubles
    assert len(postrouting) == 3 and postrouting[-1] == masquerade


def test_image_tag_follows_the_recipe():
    assert image.image_ref() == f"{image.REPOSITORY}:{image.recipe_hash()}"
    assert len(image.recipe_hash()) == 12
    # the upgrade runbook's Debian 12 image: its own repository and tag, its own sources
    assert image.image_ref("bookworm") == f"querygpt-lab/debian12:{image.recipe_hash('bookworm')}"
    assert image.recipe_hash("bookworm") != image.recipe_hash()
    sources = image.DEBIAN_SOURCES.format(mirror=image.MIRROR, suite="bookworm")
    assert "Suites: bookworm bookworm-updates" in sources and "Suites: bookworm-security" in sources
    with pytest.raises(LabError, match="no lab image for Debian suite 'buster'"):
        image.image_ref("buster")


def test_the_lab_fleet_is_what_terraform_would_create():
    hosts = ec2.plan()
    roles = [h.role for h in hosts]
    # terraform/*.tf with lab/fleet.tfvars, plus the lab-only helpers
    assert sorted(roles) == sorted(["bastion", "edge", "edge", "backend", "backend", "qdrant", "qdrant", "qdrant",
                                    "ollama", "ollama", "postgres", "postgres", "monitoring", "acme", "s3", "lb"])
    assert len({h.address for h in hosts}) == len(hosts), "two lab hosts share an address"
    for host in hosts:
        assert ipaddress.ip_address(host.address) in host.subnet.cidr, host
    bastion = next(h for h in hosts if h.role == "bastion")
    assert bastion.subnet.kind == "public" and bastion.public_ip == ec2.BASTION_PUBLIC_IP
    # the load balancer (the NLB's stand-in) is public, like the bastion; every instance is private
    lb = next(h for h in hosts if h.role == "lb")
    assert lb.subnet.kind == "public" and lb.public_ip == ec2.LB_PUBLIC_IP
    assert all(h.subnet.kind == "private" and not h.public_ip for h in hosts if h.role not in ("bastion", "lb"))
    # one edge, one backend and one Ollama host per zone, as terraform places instance i in zone
    # i % az_count
    for role in ("edge", "backend", "ollama", "postgres"):
        assert len({h.subnet.zone for h in hosts if h.role == role}) == 2, role
    # the three Qdrant peers, one per zone (a zone's loss leaves a copy of every shard)
    assert len({h.subnet.zone for h in hosts if h.role == "qdrant"}) == 3
    assert [h.data_devices for h in hosts if h.role in ("qdrant", "ollama", "postgres")] == [("/dev/sdf",)] * 7
    assert {h.name for h in hosts} >= {"querygpt-lab-bastion", "querygpt-lab-edge-1", "querygpt-lab-acme-1"}


def test_the_lab_networks_are_its_subnets_and_the_internet():
    nets = fleet.networks(ec2.plan())
    assert nets == {"internet": ipaddress.ip_network("198.51.100.0/24"),
                    "private-a": ipaddress.ip_network("10.42.128.0/20"),
                    "private-b": ipaddress.ip_network("10.42.144.0/20"),
                    "private-c": ipaddress.ip_network("10.42.160.0/20"),
                    "public-a": ipaddress.ip_network("10.42.0.0/20")}
    assert "internet" not in fleet.vpc_networks(ec2.plan()), "the internet is not routed into the VPC"


def test_ssh_config_patterns_cover_the_vpc():
    assert secrets._ssh_pattern("10.42.0.0/16") == "10.42.*"  # noqa: SLF001


def test_lab_vault_gets_an_internal_ca_and_keeps_existing_values():
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    current = {"vault_qdrant_api_key": "kept"}
    added = secrets.add_missing_secrets(current)
    assert current["vault_qdrant_api_key"] == "kept"
    assert {"vault_internal_ca_cert", "vault_internal_ca_key", "vault_qdrant_read_only_api_key"} <= set(added)
    cert = x509.load_pem_x509_certificate(current["vault_internal_ca_cert"].encode())
    key = serialization.load_pem_private_key(current["vault_internal_ca_key"].encode(), password=None)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    before = dict(current)
    assert secrets.add_missing_secrets(current) == []
    assert current == before, "a second `lab up` must not replace the CA (hosts trust it)"


def test_lab_down_takes_only_the_labs_own_containers_and_networks(monkeypatch):
    # molecule's containers run the lab image and inherit its `<label>=image`: a filter on
    # the label's key alone made `lab down` remove scenarios running beside the lab.
    seen = []
    monkeypatch.setattr(fleet, "output", lambda cmd: seen.append(cmd) or "")
    fleet._docker_names("container")  # noqa: SLF001
    fleet._docker_names("network")  # noqa: SLF001
    filters = [cmd[cmd.index("--filter") + 1] for cmd in seen]
    assert filters == [f"label={fleet.LABEL}=host", f"label={fleet.LABEL}=network"]


def test_lab_down_tries_a_network_again_while_dockerd_still_holds_an_endpoint(monkeypatch):
    answers = iter([(1, "Error response from daemon: error while removing network: network x has active endpoints"),
                    (1, "... has active endpoints"), (0, "")])
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        code, err = next(answers)
        return subprocess.CompletedProcess(cmd, code, "", err)

    monkeypatch.setattr(fleet, "run", fake_run)
    monkeypatch.setattr(fleet.time, "sleep", lambda seconds: None)
    assert fleet._remove_network("qgpt-lab-private-b")  # noqa: SLF001
    assert calls == [["docker", "network", "rm", "qgpt-lab-private-b"]] * 3

    # any other error is an error naming the network
    monkeypatch.setattr(fleet, "run", lambda cmd, **kwargs: subprocess.CompletedProcess(cmd, 1, "", "no such network"))
    with pytest.raises(fleet.LabError, match="docker network rm qgpt-lab-private-b"):
        fleet._remove_network("qgpt-lab-private-b")  # noqa: SLF001


@pytest.mark.parametrize(("attached", "kept"), [("0", True), ("1", False)])
def test_lab_down_keeps_a_network_dockerd_holds_a_stale_endpoint_on_only_when_nothing_is_attached(
        monkeypatch, capsys, attached, kept):
    """An endpoint dockerd keeps with no container attached is its own fault: the network is
    left, reported, and not a leftover; with a container attached, it is an error."""
    monkeypatch.setattr(fleet, "NETWORK_RM_SECONDS", 0)
    monkeypatch.setattr(fleet, "run", lambda cmd, **kwargs: subprocess.CompletedProcess(cmd, 1, "", "has active endpoints"))
    monkeypatch.setattr(fleet, "output", lambda cmd: attached if "{{len .Containers}}" in cmd else "10.42.144.0/24")
    if kept:
        assert not fleet._remove_network("qgpt-lab-private-b")  # noqa: SLF001
        assert "qgpt-lab-private-b kept: dockerd holds a stale endpoint" in capsys.readouterr().err
        # and remove_all does not count it as a leftover
        monkeypatch.setattr(fleet, "_docker_names", lambda kind: {"qgpt-lab-private-b"} if kind == "network" else set())
        monkeypatch.setattr(fleet, "_remove_routing", lambda nets: None)
        fleet.remove_all()
    else:
        with pytest.raises(fleet.LabError, match="has active endpoints"):
            fleet._remove_network("qgpt-lab-private-b")  # noqa: SLF001


def test_lab_admin_password_is_made_once_private_and_reused(tmp_path):
    path = tmp_path / "state" / "admin-password"
    first = secrets.ensure_admin_password(path)
    assert len(first) >= 12 and path.read_text().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    assert secrets.ensure_admin_password(path) == first, "a second `lab up` must keep the admin's password"
    assert path.stat().st_mode & 0o777 == 0o600
    # usable as it is in a YAML vars file and by the runbook (no quote, brace or space)
    assert all(c.isalnum() or c in "-_" for c in first)


def test_lab_up_passes_the_admin_password_in_a_private_file_never_an_argument(monkeypatch, tmp_path):
    from labctl import cli

    seen = {}

    def fake_converge(extra, playbook="site.yml"):
        vars_file = Path(extra[extra.index("-e", 2) + 1].removeprefix("@"))
        seen.update(extra=extra, playbook=playbook, mode=vars_file.stat().st_mode & 0o777, text=vars_file.read_text(),
                    vars_file=vars_file)
        return {}

    monkeypatch.setattr(secrets, "ADMIN_PASSWORD", tmp_path / "admin-password")
    monkeypatch.setattr(secrets, "ensure_admin_password", lambda: "lab-admin-password-42")
    monkeypatch.setattr(cli, "STATE", tmp_path)
    monkeypatch.setattr(cli, "converge", fake_converge)
    cli.create_admin()
    assert seen["playbook"] == "playbooks/runbooks/create_admin.yml"
    assert "admin_username=admin" in seen["extra"]
    assert not any("lab-admin-password-42" in arg for arg in seen["extra"])
    assert seen["mode"] == 0o600 and seen["text"] == "admin_password: !unsafe 'lab-admin-password-42'\n"
    assert not seen["vars_file"].exists(), "the temporary vars file is removed"


def test_the_backend_secret_key_reaches_every_vault_from_the_wiring():
    """group_vars/all/secrets.yml reads vault_backend_secret_key: bin/new-env fetches it from
    Secrets Manager querygpt/<env>/backend-secret-key (Terraform's entry), and an existing lab
    vault gains one, at least 32 characters, without touching the rest."""
    assert "vault_backend_secret_key" in secrets.required_vault_names()
    current = {"vault_qdrant_api_key": "kept"}
    assert "vault_backend_secret_key" in secrets.add_missing_secrets(current)
    assert len(current["vault_backend_secret_key"]) >= 32 and current["vault_qdrant_api_key"] == "kept"
    # bin/new-env's fetch: the value Secrets Manager holds, not a new one
    fetched: dict[str, str] = {}
    secrets.add_missing_secrets(fetched, fetch=lambda name: f"from-secrets-manager-{name}")
    assert fetched["vault_backend_secret_key"] == "from-secrets-manager-vault_backend_secret_key"


def test_a_ca_rotation_keeps_the_old_certificate_trusted_and_drops_its_key():
    from cryptography import x509

    current: dict[str, str] = {}
    secrets.add_missing_secrets(current)
    old_cert, old_key = current[secrets.INTERNAL_CA_CERT], current[secrets.INTERNAL_CA_KEY]
    secrets.rotate_ca(current, "QueryGPT test internal CA 2")
    assert current[secrets.INTERNAL_CA_PREVIOUS] == old_cert
    assert old_key not in current.values(), "nothing may sign with the old CA again"
    new = x509.load_pem_x509_certificate(current[secrets.INTERNAL_CA_CERT].encode())
    assert new.subject.rfc4514_string() == "CN=QueryGPT test internal CA 2"
    with pytest.raises(secrets.RotationError, match="under way"):
        secrets.rotate_ca(current, "a third")  # would lose the CA every host still uses
    assert current[secrets.INTERNAL_CA_PREVIOUS] == old_cert
    secrets.finish_ca_rotation(current)
    assert secrets.INTERNAL_CA_PREVIOUS not in current
    with pytest.raises(secrets.RotationError, match="no rotation"):
        secrets.finish_ca_rotation(current)
    # the wiring never requires the old CA: it exists only during a rotation
    assert secrets.INTERNAL_CA_PREVIOUS not in secrets.required_vault_names()


def test_a_secrets_rotation_keeps_the_old_qdrant_keys_until_it_is_finished():
    current: dict[str, str] = {}
    secrets.add_missing_secrets(current)
    before = dict(current)
    secrets.rotate_secrets(current)
    for name in secrets.QDRANT_KEYS:
        assert current[name + "_previous"] == before[name] and current[name] != before[name]
        assert len(current[name]) == 48
    assert {k: v for k, v in current.items() if "qdrant" not in k} == {
        k: v for k, v in before.items() if "qdrant" not in k}
    during = dict(current)
    with pytest.raises(secrets.RotationError, match="under way"):
        secrets.rotate_secrets(current)  # would lose the keys every peer still holds
    assert current == during
    # Secrets Manager not replaced yet: refused, nothing changed
    same = dict(before)
    with pytest.raises(secrets.RotationError, match="still holds the current"):
        secrets.rotate_secrets(same, fetch=before.get)
    assert same == before
    secrets.finish_secrets_rotation(current)
    assert not [k for k in current if k.endswith("_previous")]
    with pytest.raises(secrets.RotationError, match="no rotation"):
        secrets.finish_secrets_rotation(current)
    assert not [n for n in secrets.required_vault_names() if n.endswith("_previous")]


# The CA's vault names from before roles/journal_tls became roles/internal_pki.
OLD_CA_NAMES = {
    "vault_journal_tls_ca_cert": "vault_internal_ca_cert",
    "vault_journal_tls_ca_key": "vault_internal_ca_key",
    "vault_journal_tls_ca_previous_cert": "vault_internal_ca_previous_cert",
}


def test_the_old_ca_names_are_renamed_with_their_values():
    assert secrets.RENAMED_VAULT_NAMES == OLD_CA_NAMES
    old = {name: f"value-of-{name}" for name in OLD_CA_NAMES}
    current = {**old, "vault_qdrant_api_key": "kept"}
    renamed = secrets.rename_old_vault_names(current)
    assert renamed == list(OLD_CA_NAMES)
    assert current == {**{new: old[name] for name, new in OLD_CA_NAMES.items()}, "vault_qdrant_api_key": "kept"}
    assert secrets.rename_old_vault_names(current) == [], "a renamed vault stays as it is"
    # the old name beside the new one, which holds the same value (or the old one is empty): dropped
    same = {"vault_journal_tls_ca_cert": "cert", "vault_internal_ca_cert": "cert",
            "vault_journal_tls_ca_key": "", "vault_internal_ca_key": "key"}
    assert secrets.rename_old_vault_names(same) == ["vault_journal_tls_ca_cert", "vault_journal_tls_ca_key"]
    assert same == {"vault_internal_ca_cert": "cert", "vault_internal_ca_key": "key"}
    # a template's empty new name takes the old value
    template = {"vault_journal_tls_ca_cert": "cert", "vault_internal_ca_cert": ""}
    secrets.rename_old_vault_names(template)
    assert template == {"vault_internal_ca_cert": "cert"}
    # the names become what the wiring reads (group_vars/all/secrets.yml), and never a required one
    assert {"vault_internal_ca_cert", "vault_internal_ca_key"} <= set(secrets.required_vault_names())
    assert not set(OLD_CA_NAMES) & set(secrets.required_vault_names())


def test_an_old_and_a_new_ca_name_with_different_values_are_refused_naming_only_the_names():
    current = {"vault_journal_tls_ca_cert": "old-secret-cert", "vault_internal_ca_cert": "new-secret-cert",
               "vault_journal_tls_ca_key": "the-key"}
    before = dict(current)
    with pytest.raises(secrets.RenameError) as refused:
        secrets.rename_old_vault_names(current)
    message = str(refused.value)
    assert "vault_journal_tls_ca_cert" in message and "vault_internal_ca_cert" in message
    assert "secret" not in message and "the-key" not in message, "no value may be shown"
    assert current == before, "refused before anything changed (the key is not renamed either)"


def _new_env(tmp_path: Path, vault: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """bin/new-env prod --generate on a vault holding `vault`, in a scratch inventory."""
    password = tmp_path / "vault-pass"
    password.write_text("test-vault-password-of-some-length\n")
    vault_file = tmp_path / "inventory" / "group_vars" / "all" / "vault.yml"
    vault_file.parent.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    vault_bin = Path(sys.executable).with_name("ansible-vault")
    encrypted = subprocess.run([vault_bin, "encrypt", "--vault-id", f"prod@{password}", "--encrypt-vault-id", "prod",
                                "--output", "-", "-"], input=yaml.safe_dump(vault), capture_output=True, text=True,
                               check=True, env=env).stdout
    vault_file.write_text(encrypted)
    done = subprocess.run([sys.executable, REPO / "bin" / "new-env", "prod", "--generate", "--vault-password-file",
                           password, "--inventory-dir", tmp_path / "inventory"],
                          capture_output=True, text=True, check=False, env=env, timeout=120)
    return done, vault_file, password


def _view(vault_file: Path, password: Path) -> dict[str, str]:
    vault_bin = Path(sys.executable).with_name("ansible-vault")
    return yaml.safe_load(subprocess.run([vault_bin, "view", "--vault-id", f"prod@{password}", vault_file],
                                         capture_output=True, text=True, check=True).stdout)


def test_new_env_renames_an_old_vaults_ca_names_and_says_which_without_values(tmp_path):
    old: dict[str, str] = {}
    secrets.add_missing_secrets(old)
    old["vault_journal_tls_ca_cert"] = old.pop("vault_internal_ca_cert")
    old["vault_journal_tls_ca_key"] = old.pop("vault_internal_ca_key")
    done, vault_file, password = _new_env(tmp_path, old)
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "renamed vault_journal_tls_ca_cert to vault_internal_ca_cert" in said
    assert "vault_journal_tls_ca_key to vault_internal_ca_key" in said
    assert "previous" not in said, "only what the vault held is named"
    for value in old.values():
        for line in value.splitlines():
            assert line.startswith("-----") or line not in said, "a value was printed"
    after = _view(vault_file, password)
    assert after["vault_internal_ca_cert"] == old["vault_journal_tls_ca_cert"]
    assert after["vault_internal_ca_key"] == old["vault_journal_tls_ca_key"]
    assert not set(OLD_CA_NAMES) & set(after)
    assert {k: v for k, v in after.items() if "_ca_" not in k} == {k: v for k, v in old.items() if "_ca_" not in k}


def test_new_env_refuses_an_old_and_a_new_ca_name_that_disagree_and_leaves_the_vault(tmp_path):
    current: dict[str, str] = {}
    secrets.add_missing_secrets(current)
    current["vault_journal_tls_ca_cert"] = "an-older-certificate-value"
    done, vault_file, password = _new_env(tmp_path, current)
    assert done.returncode != 0
    assert "vault_journal_tls_ca_cert and vault_internal_ca_cert are both set, to different values" in done.stderr
    assert "an-older-certificate-value" not in done.stdout + done.stderr
    assert _view(vault_file, password) == current, "nothing written"
