"""First-deploy rehearsal: the committed prod inventory, an emulated AWS, docs/first-deploy.md.

An EC2 emulator (moto) is seeded as Terraform would build prod (lab/labctl/terraform.py reads
the HCL with prod's tfvars), with the Secrets Manager entries terraform/secrets.tf makes.
terraform/bin/export-outputs writes the outputs into a copy of inventories/prod, bin/new-env
writes the vault, and playbooks/preflight.yml checks the inputs and every role's variables
for every host, without connecting to any.

- With the committed files and an EMPTY vault template, preflight must list exactly what
  docs/first-deploy.md asks the operator to fill in, and nothing it does not explain.
- With everything filled in as the docs say, preflight must pass.
- The wiring computed for the production-shaped hosts uses private addresses everywhere:
  the bastion's public Elastic IP never appears as a peer's address.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(REPO / "lab"))

from labctl import ec2 as lab_ec2  # noqa: E402
from labctl import secrets  # noqa: E402
from labctl import terraform as lab_terraform  # noqa: E402

PROD_TFVARS = REPO / "terraform" / "environments" / "prod" / "terraform.tfvars"
BASTION_EIP = "192.0.2.200"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
SHA = "ab" * 32


def seed_prod(moto_url: str, **overrides: object) -> dict:
    """Emulate the prod account as Terraform would build it for prod's tfvars (overridden by
    keyword, e.g. larger counts for benchmarks/scale_inventory.py): instances, their volumes,
    the Secrets Manager entries."""
    values = lab_terraform.values(PROD_TFVARS, **overrides)
    hosts = lab_ec2.plan(values, bastion_public_ip=BASTION_EIP)
    lab_ec2.seed(hosts, values, url=moto_url)
    manager = boto3.client("secretsmanager", region_name=values["region"], endpoint_url=moto_url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    for name in ("qdrant-api-key", "qdrant-read-only-api-key", "backend-secret-key"):
        manager.create_secret(Name=f"querygpt/prod/{name}", SecretString=f"{name.replace('-', '')}" * 3)
    return {"values": values, "hosts": hosts}


@pytest.fixture(scope="module")
def prod(moto_url: str) -> dict:
    """The emulated prod account: instances, their volumes, the Secrets Manager entries."""
    return seed_prod(moto_url)


def aws_env(moto_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({
        "AWS_URL": moto_url, "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_CONFIG_FILE": str(tmp / "aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"), "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True", "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False", "ANSIBLE_NOCOLOR": "1",
        # the facts of other test runs must not leak in
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.memory",
    })
    return env


def terraform_outputs(prod: dict, zone: str) -> dict:
    """`terraform output -json` for the seeded prod: every output outputs.tf declares."""
    values, hosts = prod["values"], prod["hosts"]
    bastion = next(h for h in hosts if h.role == "bastion")
    account = "111122223333"
    value = {
        "environment": "prod", "region": values["region"], "bastion_public_ip": BASTION_EIP,
        "bastion_private_ip": bastion.address, "nlb_dns_name": "querygpt-prod-edge.elb.eu-central-1.amazonaws.com",
        "nlb_zone_id": "Z215JYRZR1TBD5", "backups_bucket": f"querygpt-prod-backups-{account}",
        "documents_bucket": f"querygpt-prod-documents-{account}",
        "documents_replica_bucket": f"querygpt-prod-documents-replica-{account}",
        "kms_key_arn": f"arn:aws:kms:eu-central-1:{account}:key/0b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
        "secret_arns": {n: f"arn:aws:secretsmanager:eu-central-1:{account}:secret:querygpt/prod/{n}-Ab12Cd"
                        for n in ("qdrant-api-key", "qdrant-read-only-api-key", "backend-secret-key")},
        "vpc_cidr": values["vpc_cidr"], "admin_cidrs": values["admin_cidrs"],
        "acme_challenge": values.get("acme_challenge", "dns-01"), "route53_zone_id": zone,
    }
    declared = set()
    for doc in lab_terraform._documents():  # noqa: SLF001 - the HCL the lab reads
        for block in doc.get("output", []):
            declared |= set(block)
    assert set(value) == declared, f"teach the rehearsal the outputs {declared ^ set(value)}"
    return {k: {"sensitive": False, "type": "string", "value": v} for k, v in value.items()}


class Rehearsal:
    """A copy of inventories/prod taken through the first deploy's steps."""

    def __init__(self, tmp: Path, moto_url: str, prod: dict) -> None:
        self.tmp, self.moto_url, self.prod = tmp, moto_url, prod
        self.inventory = tmp / "inventories" / "prod"
        shutil.copytree(REPO / "inventories" / "prod", self.inventory,
                        ignore=shutil.ignore_patterns("vault.yml", "terraform_outputs.yml"))
        self.password = tmp / "vault-pass"
        self.password.write_text("rehearsal-vault-password\n")
        self.env = aws_env(moto_url, tmp)
        self.timeout: float | None = 600  # None for benchmarks/scale_inventory.py's large fleets

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=self.timeout, check=False)

    def export_outputs(self, zone: str = "") -> None:
        source = self.tmp / "outputs.json"
        source.write_text(json.dumps(terraform_outputs(self.prod, zone)))
        done = self.run(sys.executable, REPO / "terraform/bin/export-outputs", "prod", "--from-json", source,
                        "--inventory-dir", self.inventory)
        assert done.returncode == 0, done.stderr

    def new_env(self, *flags: str) -> None:
        done = self.run(VENV_BIN / "python", REPO / "bin/new-env", "prod", *flags, "--vault-password-file",
                        self.password, "--inventory-dir", self.inventory)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "rehearsal" not in done.stdout + done.stderr

    def vault(self) -> dict[str, str]:
        done = self.run(VENV_BIN / "ansible-vault", "view", "--vault-id", f"prod@{self.password}",
                        self.inventory / "group_vars" / "all" / "vault.yml")
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)

    def write_vault(self, values: dict[str, str]) -> None:
        """Replace the vault with `values` (as an operator's ansible-vault edit would)."""
        plain = self.tmp / "vault-plain.yml"
        plain.write_text(yaml.safe_dump(values))
        done = self.run(VENV_BIN / "ansible-vault", "encrypt", "--vault-id", f"prod@{self.password}",
                        "--encrypt-vault-id", "prod", "--output", self.inventory / "group_vars" / "all" / "vault.yml",
                        plain)
        plain.unlink()
        assert done.returncode == 0, done.stderr

    def preflight(self) -> subprocess.CompletedProcess:
        return self.run(VENV_BIN / "ansible-playbook", "playbooks/preflight.yml", "-i", self.inventory,
                        "--tags", "preflight_variables", "--vault-id", f"prod@{self.password}")

    def render(self, pattern: str, expression: str) -> dict[str, object]:
        """{host: the value} of a Jinja expression as the wiring gives it to the hosts of
        `pattern` on this inventory (ansible's debug module, the JSON callback)."""
        env = {**self.env, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "True", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
        done = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(self.inventory), pattern, "-m",
                               "ansible.builtin.debug", "-a", json.dumps({"msg": "{{ %s | to_json }}" % expression}),
                               "--vault-id", f"prod@{self.password}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=self.timeout, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        start = 0 if done.stdout.startswith("{") else done.stdout.index("\n{") + 1
        document, _ = json.JSONDecoder().raw_decode(done.stdout, start)
        return {host: json.loads(result["msg"]) for host, result in document["plays"][0]["tasks"][0]["hosts"].items()}

    def edit(self, rel: str, **values: object) -> None:
        path = self.inventory / rel
        data = yaml.safe_load(path.read_text()) or {}
        data.update(values)
        path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False))

    def fill_in_as_the_docs_say(self) -> None:
        """Every input docs/first-deploy.md asks for, filled in: preflight must pass."""
        self.export_outputs(zone=ZONE_ID)
        self.new_env()  # values from Secrets Manager, the internal CA generated
        self.edit("group_vars/all/environment.yml", common_admin_users=[
            {"name": "alice", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOFyXvWwfjxKIm/xcDYrTvQ3RKc2vyrR/KUS/biOWl2o alice"]}])
        self.edit("group_vars/all/pins.yml", qdrant_checksum=SHA, ollama_checksum=SHA,
                  querygpt_embed_model={"name": "all-minilm:l6-v2", "digest": SHA},
                  querygpt_llm_model={"name": "qwen2.5-coder:1.5b", "digest": "sha256:" + SHA},
                  querygpt_release={"version": "0.1.0",
                                    "backend_wheelhouse": "querygpt-backend-0.1.0-py313-wheelhouse.tar.gz",
                                    "backend_wheelhouse_sha256": SHA,
                                    "frontend_dist": "querygpt-frontend-0.1.0-dist.tar.gz",
                                    "frontend_dist_sha256": SHA})
        self.edit("group_vars/edge/nginx.yml", nginx_server_name="querygpt.example.com",
                  nginx_acme_email="ops@example.com")
        self.edit("group_vars/monitoring/prometheus_stack.yml",
                  prometheus_stack_alertmanager_webhook_urls=["https://alerts.example.com/querygpt"])


def reported(output: str) -> list[tuple[str, str]]:
    """(source, variable) of every problem in preflight's report ("- <source>: <var>: ...")."""
    found = re.findall(r"^\s*- ([a-z_]+): ([A-Za-z0-9_.]+): ", output, re.M)
    assert found, f"no problem list in the output:\n{output[-6000:]}"
    return found


def docs_inputs() -> set[str]:
    """What docs/first-deploy.md asks the operator to fill in: its table of inputs."""
    text = (REPO / "docs" / "first-deploy.md").read_text()
    table = text.split("<!-- preflight-inputs -->", 2)
    assert len(table) == 3, "docs/first-deploy.md must mark its table of inputs with <!-- preflight-inputs -->"
    return set(re.findall(r"^\|\s*`([A-Za-z0-9_.]+)`", table[1], re.M))


def wiring_references() -> dict[str, set[str]]:
    """{role variable: the names its wiring reads (vault_*, terraform_*, another host's
    nginx_server_name, ...); the test keeps those that are inputs}."""
    refs: dict[str, set[str]] = {}
    for path in (REPO / "group_vars").rglob("*.yml"):
        for name, value in (yaml.safe_load(path.read_text()) or {}).items():
            refs[name] = set(re.findall(r"\b([A-Za-z_]\w*)", json.dumps(value)))
    return refs


def test_an_empty_vault_and_the_committed_files_fail_with_exactly_what_the_docs_ask(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.export_outputs(zone="")  # the committed tfvars: route53_zone_id = ""
    rehearsal.new_env("--template")
    done = rehearsal.preflight()
    assert done.returncode != 0
    problems = reported(done.stdout + done.stderr)
    inputs = {var for source, var in problems if source == "inputs"}
    assert inputs == docs_inputs(), (
        f"preflight asks for {sorted(inputs)}; docs/first-deploy.md lists {sorted(docs_inputs())}")
    # Everything else reported follows from a missing input (a role variable the wiring maps
    # from it, or the input itself as the role sees it).
    # the inputs as the wiring names them (querygpt_embed_model.digest -> querygpt_embed_model;
    # the tfvars' route53_zone_id reaches Ansible as terraform_route53_zone_id)
    bases = {var.split(".")[0] for var in inputs} | {"terraform_route53_zone_id"}
    refs = wiring_references()
    for source, var in problems:
        if source == "inputs":
            continue
        assert source not in ("arguments", "inventory"), f"{source}: {var} is not an operator input"
        assert var in bases or refs.get(var, set()) & bases, f"{source}: {var} is reported but no input explains it"
    # Nothing the operator cannot see through: the report names files to edit.
    assert "inventories/prod/group_vars/all/vault.yml" in done.stdout
    assert "pins.yml" in done.stdout and "terraform.tfvars" in done.stdout


def test_everything_filled_in_as_the_docs_say_passes_also_during_a_ca_rotation(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.fill_in_as_the_docs_say()
    done = rehearsal.preflight()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # docs/runbooks/rotate_internal_ca.md, steps 1 and 3, on the same production vault
    before = rehearsal.vault()
    rehearsal.new_env("--rotate-ca")
    during = rehearsal.vault()
    assert during["vault_internal_ca_previous_cert"] == before["vault_internal_ca_cert"]
    assert during["vault_internal_ca_cert"] != before["vault_internal_ca_cert"]
    assert during["vault_internal_ca_key"] != before["vault_internal_ca_key"]
    assert {k: v for k, v in during.items() if "vault_internal_ca" not in k} == {
        k: v for k, v in before.items() if "vault_internal_ca" not in k}, "only the CA changes"
    done = rehearsal.preflight()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    # the wiring, on the production inventory: both CAs trusted, each a whole PEM block
    wired = list(rehearsal.render("monitoring", "{'trusted': internal_pki_ca_trusted,"
                                  " 'crls': internal_pki_ca_trusted_crls,"
                                  " 'scrapes': prometheus_stack_internal_ca_pem}").values())
    assert wired and all(w["trusted"] == [during["vault_internal_ca_previous_cert"]] for w in wired)
    # the old CA's last CRL, signed before its key was dropped: the checking clients need it
    assert "-----BEGIN X509 CRL-----" in during["vault_internal_ca_previous_crl"]
    assert all(w["crls"] == [during["vault_internal_ca_previous_crl"]] for w in wired)
    for w in wired:
        assert w["scrapes"] == during["vault_internal_ca_cert"].strip() + "\n" + before["vault_internal_ca_cert"].strip()
    # a second --rotate-ca before the runbook would lose the CA every host still uses
    again = rehearsal.run(VENV_BIN / "python", REPO / "bin/new-env", "prod", "--rotate-ca", "--vault-password-file",
                          rehearsal.password, "--inventory-dir", rehearsal.inventory)
    assert again.returncode != 0 and "rotation is under way" in again.stderr
    assert rehearsal.vault() == during
    rehearsal.new_env("--finish-ca-rotation")
    after = rehearsal.vault()
    assert "vault_internal_ca_previous_cert" not in after
    assert "vault_internal_ca_previous_crl" not in after
    assert after["vault_internal_ca_cert"] == during["vault_internal_ca_cert"]


def test_a_vault_from_before_the_rename_fails_preflight_until_new_env_renames_its_ca_names(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    """A vault bin/new-env wrote before roles/journal_tls became roles/internal_pki holds the CA
    under the old names (docs/upgrading.md): preflight names each and the fix, before anything
    changes; bin/new-env renames them with their values intact."""
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.fill_in_as_the_docs_say()
    current = rehearsal.vault()
    renames = secrets.RENAMED_VAULT_NAMES
    # mid-rotation, so that every old name is there
    current["vault_internal_ca_previous_cert"], _ = secrets.internal_ca("QueryGPT rehearsal old CA")
    old = {old_name: current.pop(new_name) for old_name, new_name in renames.items()}
    rehearsal.write_vault({**current, **old})
    # and an inventory override under the role's old name, which nothing would read
    override = rehearsal.inventory / "group_vars" / "all" / "overrides.yml"
    override.write_text("journal_tls_renew_days: 20\n")
    done = rehearsal.preflight()
    assert done.returncode != 0
    problems = reported(done.stdout + done.stderr)
    for old_name, new_name in renames.items():
        assert ("inputs", old_name) in problems, problems
        assert f"run bin/new-env prod to rename it to {new_name}" in done.stdout, done.stdout[-6000:]
    assert ("inputs", "journal_tls_renew_days") in problems, problems
    assert "rename each to internal_pki_<the rest> in the inventory" in done.stdout, done.stdout[-6000:]
    override.unlink()
    rehearsal.new_env()
    # the vault as before the rename, under the new names: what the preflight of the test above
    # passes with (a second preflight here would only repeat it)
    after = rehearsal.vault()
    assert after == {**current, **{new_name: old[old_name] for old_name, new_name in renames.items()}}


def test_a_secrets_rotation_takes_the_new_qdrant_keys_from_secrets_manager_and_gives_the_clients_both(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.fill_in_as_the_docs_say()
    before = rehearsal.vault()
    # docs/runbooks/rotate_secrets.md: before Terraform replaced the values, nothing changes
    refused = rehearsal.run(VENV_BIN / "python", REPO / "bin/new-env", "prod", "--rotate-secrets", "--vault-password-file",
                            rehearsal.password, "--inventory-dir", rehearsal.inventory)
    assert refused.returncode != 0 and "still holds the current vault_qdrant_api_key" in refused.stderr
    assert rehearsal.vault() == before
    manager = boto3.client("secretsmanager", region_name=prod["values"]["region"], endpoint_url=moto_url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    names = {"vault_qdrant_api_key": "querygpt/prod/qdrant-api-key",
             "vault_qdrant_read_only_api_key": "querygpt/prod/qdrant-read-only-api-key"}
    try:
        for vault_name, secret_id in names.items():  # terraform apply -replace=random_password.app[...]
            manager.put_secret_value(SecretId=secret_id, SecretString=f"replaced{vault_name}" * 2)
        rehearsal.new_env("--rotate-secrets")
    finally:
        for vault_name, secret_id in names.items():
            manager.put_secret_value(SecretId=secret_id, SecretString=before[vault_name])
    during = rehearsal.vault()
    for vault_name in names:
        assert during[vault_name] == f"replaced{vault_name}" * 2
        assert during[vault_name + "_previous"] == before[vault_name]
    assert {k: v for k, v in during.items() if "qdrant" not in k} == {
        k: v for k, v in before.items() if "qdrant" not in k}, "only the Qdrant keys change"
    # the wiring on the production inventory: the clients hold both keys, the peers and
    # Prometheus are told the old ones (which they keep until the runbook's switch phase)
    wired = list(rehearsal.render("backend", "[backend_qdrant_api_key, backend_qdrant_api_key_previous,"
                                  " backup_qdrant_api_key_previous, qdrant_api_key_previous,"
                                  " qdrant_read_only_api_key_previous, prometheus_stack_qdrant_api_key_previous]").values())
    old, old_read_only = before["vault_qdrant_api_key"], before["vault_qdrant_read_only_api_key"]
    assert wired and all(w == [during["vault_qdrant_api_key"], old, old, old, old_read_only, old_read_only]
                         for w in wired)
    rehearsal.new_env("--finish-secrets-rotation")
    after = rehearsal.vault()
    assert not [k for k in after if k.endswith("_previous")]
    assert after["vault_qdrant_api_key"] == during["vault_qdrant_api_key"]


def test_the_wiring_gives_peers_private_addresses_never_the_bastions_public_one(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.export_outputs(zone=ZONE_ID)
    rehearsal.edit("group_vars/edge/nginx.yml", nginx_server_name="querygpt.example.com")
    hosts = prod["hosts"]
    private = {h.address for h in hosts}
    rendered = rehearsal.render("all", "{'ssh': firewall_ssh_source_groups | firewall_sources(groups, hostvars, firewall_ssh_source_cidrs),"
                                " 'upstreams': nginx_backend_servers, 'qdrant': backend_qdrant_urls, 'journal': journal_upload_url,"
                                " 'bind': backend_bind_address, 'targets': groups | prometheus_targets(hostvars,"
                                " ['bastion', 'edge', 'backend', 'qdrant', 'ollama', 'postgres', 'monitoring'], port=9100),"
                                " 'volume': qdrant_data_volume_id, 'env': querygpt_env, 'cluster': qdrant_cluster_enabled | bool,"
                                " 'peers': qdrant_cluster_peers, 'zones': qdrant_cluster_peer_zones,"
                                " 'pg_hosts': postgresql_host_addresses, 'pg_clients': postgresql_app_client_addresses,"
                                " 'pg_volume': postgresql_data_volume_id, 'db': backend_database_hosts,"
                                " 'edge_names': prometheus_stack_edge_server_names, 'pki_dir': internal_pki_dir,"
                                " 'crls': [backup_qdrant_crl_file, backend_internal_crl_source, nginx_backend_tls_crl] | unique}")
    assert set(rendered) == private
    bastion = next(h for h in hosts if h.role == "bastion")
    for host in hosts:
        got = rendered[host.address]
        assert got["env"] == "prod" and got["bind"] == host.address
        if host.role == "bastion":
            assert got["ssh"] == list(prod["values"]["admin_cidrs"])
        else:
            assert got["ssh"] == [bastion.address], "SSH must admit the bastion's PRIVATE address"
        assert {t["targets"][0].split(":")[0] for t in got["targets"]} == private
        assert BASTION_EIP not in json.dumps(got)
        assert sorted(u.split(":")[0] for u in got["upstreams"]) == sorted(
            h.address for h in hosts if h.role == "backend")
        assert sorted(u.split("//")[1].split(":")[0] for u in got["qdrant"]) == sorted(
            h.address for h in hosts if h.role == "qdrant"), "every Qdrant peer, by its private address"
        assert got["journal"].startswith("https://" + next(h.address for h in hosts if h.role == "monitoring"))
        if host.role == "qdrant":
            assert got["volume"].startswith("vol-"), "the data volume is found by its id"
        # Qdrant's distributed mode: every peer in launch order (the Name tag's number), one per zone
        qdrant = sorted((h for h in hosts if h.role == "qdrant"), key=lambda h: int(h.name.rsplit("-", 1)[1]))
        assert len(qdrant) == 3 and got["cluster"] is True
        assert got["peers"] == [h.address for h in qdrant]
        # PostgreSQL: every postgres host by its private address; the backends are its app clients
        assert sorted(got["pg_hosts"].values()) == sorted(h.address for h in hosts if h.role == "postgres")
        assert sorted(got["pg_clients"]) == sorted(h.address for h in hosts if h.role == "backend")
        assert sorted(got["db"]) == sorted(f"{h.address}:5432" for h in hosts if h.role == "postgres")
        if host.role == "postgres":
            assert got["pg_volume"].startswith("vol-"), "the data volume is found by its id"
        assert got["zones"] == [h.subnet.zone for h in qdrant] and len(set(got["zones"])) == 3
        # the edge probes: every edge (by inventory name) with the one public name they all serve
        assert got["edge_names"] == {h.address: "querygpt.example.com" for h in hosts if h.role == "edge"}
        # every client that checks revocation reads the CRL where roles/internal_pki writes it
        assert got["crls"] == [got["pki_dir"] + "/crl.pem"], got["crls"]


def test_the_walk_through_names_only_commands_and_files_that_exist() -> None:
    """The old walk-through called a `make setup` that did not exist. Every project command
    and file the docs name must be there."""
    text = (REPO / "docs" / "first-deploy.md").read_text()
    assert "make " not in text and "dynamodb" not in text.lower()
    named = set(re.findall(r"(?<![\w/.-])((?:bin|terraform/bin|playbooks(?:/runbooks)?|requirements|docs)/[\w.-]+)", text))
    assert {"bin/new-env", "bin/build", "terraform/bin/export-outputs", "playbooks/preflight.yml"} <= named
    missing = sorted(path for path in named if not (REPO / path).exists() and not (REPO / "docs" / path).exists())
    assert not missing, f"docs/first-deploy.md names what does not exist: {missing}"


def test_a_rollout_batch_of_a_whole_tier_fails_preflight_naming_the_variable(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    """serial of 100% drains every edge (or backend) at once: refused before anything changes."""
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.fill_in_as_the_docs_say()
    done = rehearsal.run(VENV_BIN / "ansible-playbook", "playbooks/preflight.yml", "-i", rehearsal.inventory,
                         "--tags", "preflight_variables", "--vault-id", f"prod@{rehearsal.password}",
                         "-e", json.dumps({"querygpt_edge_serial": "100%", "querygpt_backend_serial": ["100%"]}))
    assert done.returncode != 0
    problems = reported(done.stdout + done.stderr)
    assert ("inputs", "querygpt_edge_serial") in problems and ("inputs", "querygpt_backend_serial") in problems, problems
    assert "take all" in done.stdout and "playbooks/vars/rollout.yml" in done.stdout
    # what the playbooks ship passes (test_everything_filled_in_as_the_docs_say_passes runs them)


def test_edges_on_lets_encrypts_staging_need_its_roots_for_the_probes(
        prod: dict, moto_url: str, tmp_path: Path) -> None:
    """As inventories/staging has it: certificates from Let's Encrypt's staging directory, whose
    roots no system trusts. Without them in prometheus_stack_blackbox_ca_pem every edge probe
    would fail and ServiceDown fire for good: preflight names the variable, then passes."""
    rehearsal = Rehearsal(tmp_path, moto_url, prod)
    rehearsal.fill_in_as_the_docs_say()
    rehearsal.edit("group_vars/edge/nginx.yml",
                   nginx_acme_server="https://acme-staging-v02.api.letsencrypt.org/directory")
    done = rehearsal.preflight()
    assert done.returncode != 0
    problems = reported(done.stdout + done.stderr)
    assert ("inputs", "prometheus_stack_blackbox_ca_pem") in problems, problems
    assert "letsencrypt-stg-root-x1.pem" in done.stdout
    # preflight checks only that it is a PEM bundle (the blackbox exporter reads the real roots)
    roots = "-----BEGIN CERTIFICATE-----\nMIIFmDCCA4CgAwIBAgIQU9C87nMpOIFKYpfvOHFHFDAN\n-----END CERTIFICATE-----\n"
    rehearsal.edit("group_vars/monitoring/prometheus_stack.yml", prometheus_stack_blackbox_ca_pem=roots)
    done = rehearsal.preflight()
    assert done.returncode == 0, done.stdout[-3000:]



def test_new_env_asks_for_the_existing_vaults_password_once_and_a_new_one_twice(monkeypatch, tmp_path) -> None:
    """--rotate-ca and --rotate-secrets open the vault already there: its own password, asked
    once (a wrong one fails at `ansible-vault view`), not a "new" one to type twice."""
    import importlib.util
    from importlib.machinery import SourceFileLoader
    from types import SimpleNamespace

    loader = SourceFileLoader("new_env", str(REPO / "bin/new-env"))
    spec = importlib.util.spec_from_loader("new_env", loader)
    new_env = importlib.util.module_from_spec(spec)
    loader.exec_module(new_env)
    asked: list[str] = []
    monkeypatch.setattr(new_env.getpass, "getpass", lambda prompt: asked.append(prompt) or "x" * 20)
    args = SimpleNamespace(vault_password_file=None, env="prod")
    for existing, prompts in ((True, 1), (False, 2)):
        asked.clear()
        path = new_env.vault_password(args, existing=existing)
        try:
            assert path.read_text() == "x" * 20 + "\n" and len(asked) == prompts, asked
            assert ("New" in asked[0]) is not existing, asked
        finally:
            path.unlink()
