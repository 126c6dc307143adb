"""Terraform, the dynamic inventories and docs/architecture.md agree.

- The Role tags Terraform puts on instances, the groups the inventories build from them,
  and the host groups of docs/architecture.md are one and the same set.
- Every instance has IMDSv2 required, encrypted EBS, the Project/Environment/Role tags,
  and no public address unless it is the bastion.
- The security group rules, read back from security_groups.tf, are exactly the firewall
  matrix (expected_firewall_matrix()).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import pytest
import yaml

from terraform_helpers import ENVIRONMENTS, INVENTORIES, REPO, expr, tf_files

GROUPS = {"bastion", "edge", "backend", "qdrant", "ollama", "postgres", "monitoring"}
EVERY_HOST = "every host"
ANYWHERE = "anywhere"
ADMIN_CIDRS = "admin CIDRs"


WIRING = REPO / "group_vars" / "all"


def _wired(value: Any, ports: dict[str, Any]) -> Any:
    """A port of the wiring: a number, or "{{ <port variable> }}" of group_vars/all/ports.yml."""
    match = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", str(value).strip())
    return int(ports[match.group(1)]) if match else int(value)


def expected_firewall_matrix() -> list[dict[str, Any]]:
    """The firewall matrix of docs/architecture.md, read from the wiring layer.

    group_vars/all/firewall.yml holds it once: the openings each playbook passes to the
    firewall role (ports from group_vars/all/ports.yml), SSH from the bastion on every host
    and from the admin CIDRs on the bastion. One dict per row: `to` a group or "every host";
    `ports` the TCP ports; `from` each a group, "every host", "anywhere" or "admin CIDRs".
    """
    ports = yaml.safe_load((WIRING / "ports.yml").read_text())
    firewall = yaml.safe_load((WIRING / "firewall.yml").read_text())
    rows = []
    for target, openings in firewall["querygpt_firewall_openings"].items():
        for opening in openings:
            sources = [EVERY_HOST if g == "all" else g for g in opening.get("source_groups", [])]
            sources += [ANYWHERE for c in opening.get("source_cidrs", []) if c == "0.0.0.0/0"]
            assert set(opening.get("source_cidrs", [])) <= {"0.0.0.0/0", "::/0"}, opening
            rows.append({"to": EVERY_HOST if target == "all" else target,
                         "ports": [_wired(p, ports) for p in opening["ports"]], "from": sources})
    ssh = _wired(firewall["firewall_ssh_port"], ports)
    assert "bastion" in firewall["firewall_ssh_source_groups"] and "terraform_admin_cidrs" in firewall["firewall_ssh_source_cidrs"]
    rows.append({"to": EVERY_HOST, "ports": [ssh], "from": ["bastion"]})
    rows.append({"to": "bastion", "ports": [ssh], "from": [ADMIN_CIDRS]})
    return rows


def expand_matrix(rows: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    """(to group, port, from) for every cell, with "every host" spelled out."""

    def groups(name: str) -> list[str]:
        return sorted(GROUPS) if name == EVERY_HOST else [name]

    cells = set()
    for row in rows:
        for to in groups(row["to"]):
            for port in row["ports"]:
                for source in row["from"]:
                    for src in groups(source):
                        cells.add((to, port, src))
    return cells


# --- reading the rules back from HCL -----------------------------------------------------

_SG_REF = re.compile(r'^aws_security_group\.tier\[(?:"(?P<lit>[a-z]+)"|(?P<each>each\.key|each\.value))\]\.id$')


def _iterations(for_each: Any, tf_locals: dict) -> list[tuple[Any, Any]]:
    """(each.key, each.value) pairs of a for_each, for the literal forms this module uses."""
    if for_each is None:
        return [(None, None)]
    if isinstance(for_each, dict):
        return [(k, v) for k, v in for_each.items() if not k.startswith("__")]
    code = expr(for_each)
    assert code, f"unexpected for_each {for_each!r}"
    if code == "toset(var.admin_cidrs)":
        return [(ADMIN_CIDRS, ADMIN_CIDRS)]
    match = re.fullmatch(r"toset\(local\.(\w+)\)", code)
    if match:
        return [(v, v) for v in tf_locals[match.group(1)]]
    match = re.fullmatch(r"toset\((\[.*\])\)", code, re.S)
    if match:
        return [(v, v) for v in json.loads(match.group(1))]
    raise AssertionError(f"for_each {code!r}: teach the test to read it, or keep rules literal")


def _resolve(value: Any, key: Any, val: Any) -> Any:
    code = expr(value)
    if code == "each.key":
        return key
    if code == "each.value":
        return val
    return value


def _sg_group(ref: str, key: Any, val: Any) -> str:
    match = _SG_REF.match(expr(ref) or "")
    assert match, f"security group reference {ref!r} is not aws_security_group.tier[...].id"
    if match["lit"]:
        return match["lit"]
    return key if match["each"] == "each.key" else val


def firewall_rules_from_hcl(tf) -> Iterator[tuple[str, str, tuple[str, int, str]]]:
    """(resource, description, (to, port, from)) for every ingress rule instance."""
    for name, body in tf.resources("aws_vpc_security_group_ingress_rule").items():
        for key, val in _iterations(body.get("for_each"), tf.locals):
            to = _sg_group(body["security_group_id"], key, val)
            if "referenced_security_group_id" in body:
                source = _sg_group(body["referenced_security_group_id"], key, val)
            else:
                cidr = _resolve(body["cidr_ipv4"], key, val)
                source = ANYWHERE if cidr == "0.0.0.0/0" else cidr
            assert body["ip_protocol"] == "tcp", f"{name}: the matrix is TCP only"
            low, high = int(_resolve(body["from_port"], key, val)), int(_resolve(body["to_port"], key, val))
            for port in range(low, high + 1):
                yield name, body.get("description", ""), (to, port, source)


def test_firewall_rules_equal_the_matrix(tf) -> None:
    from_hcl = {cell for _, _, cell in firewall_rules_from_hcl(tf)}
    expected = expand_matrix(expected_firewall_matrix())
    assert not from_hcl - expected, f"security_groups.tf opens more than the matrix: {sorted(from_hcl - expected)}"
    assert not expected - from_hcl, f"security_groups.tf misses matrix cells: {sorted(expected - from_hcl)}"


# What EC2 accepts in a security group rule description (no quotes, no apostrophes).
_SG_DESCRIPTION = re.compile(r"^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{1,255}$")


def test_every_firewall_rule_has_a_valid_description(tf) -> None:
    for rtype in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule"):
        for name, body in tf.resources(rtype).items():
            description = body.get("description")
            assert description, f"{rtype}.{name} has no description"
            literal = re.sub(r"\$\{[^}]*\}", "x", description)
            assert _SG_DESCRIPTION.match(literal), f"{rtype}.{name}: EC2 rejects characters in {description!r}"
    for name, body in tf.resources("aws_security_group").items():
        literal = re.sub(r"\$\{[^}]*\}", "x", body["description"])
        assert _SG_DESCRIPTION.match(literal), f"aws_security_group.{name}: description {body['description']!r}"


def test_rules_are_separate_resources_not_inline_blocks(tf) -> None:
    """Inline ingress/egress blocks would fight the rule resources (and hide from the test)."""
    for name, body in tf.resources("aws_security_group").items():
        assert "ingress" not in body and "egress" not in body, f"aws_security_group.{name} has inline rules"
    for legacy in ("aws_security_group_rule",):
        assert not tf.resources(legacy), f"use aws_vpc_security_group_ingress_rule, not {legacy}"


def test_one_security_group_per_tier(tf) -> None:
    groups = tf.resources("aws_security_group")
    assert list(groups) == ["tier"] and expr(groups["tier"]["for_each"]) == "toset(local.tiers)"
    assert set(tf.locals["tiers"]) == GROUPS


# --- instances ------------------------------------------------------------------------------


def test_role_tags_inventory_groups_and_architecture_agree(tf, inventories) -> None:
    instances = tf.resources("aws_instance")
    roles = {body["tags"]["Role"] for body in instances.values()}
    assert roles == GROUPS, f"Role tags {sorted(roles)} != docs/architecture.md groups {sorted(GROUPS)}"
    assert len(instances) == len(GROUPS), "one aws_instance resource per tier"
    assert set(tf.locals["tiers"]) == GROUPS

    for env, inventory in inventories.items():
        role_groups = [g for g in inventory["keyed_groups"] if "Role" in g["key"]]
        assert len(role_groups) == 1, f"inventories/{env}/aws_ec2.yml: one keyed group on the Role tag"
        keyed = role_groups[0]
        prefix = inventory.get("hostvars_prefix", "")
        assert keyed["key"] in (f"{prefix}tags.Role", f"{prefix}tags['Role']"), keyed
        # prefix "" and separator "": the group is the tag value itself (ansible-core
        # would otherwise produce "_bastion" from the default "_" separator).
        assert keyed.get("prefix", "") == "" and keyed.get("separator") == "", keyed
        producible = {keyed.get("prefix", "") + keyed["separator"] + role for role in roles}
        assert producible == GROUPS
        # The filter admits exactly these roles, so no other Role group can appear.
        assert set(inventory["filters"]["tag:Role"]) == GROUPS


def test_inventories_filter_on_this_project_and_environment(tf, tfvars, inventories) -> None:
    project = tf.variables["project"]["default"]
    for env, inventory in inventories.items():
        where = f"inventories/{env}/aws_ec2.yml"
        assert inventory["plugin"] == "amazon.aws.aws_ec2", where
        filters = inventory["filters"]
        assert filters["tag:Project"] == project, where
        assert filters["tag:Environment"] == env, where
        assert filters["instance-state-name"] == "running", where
        assert inventory["regions"] == [tfvars[env]["region"]], f"{where}: regions must be var.region of {env}"
        assert inventory["hostnames"] == ["private-ip-address"], where
        assert "private_ip_address" in inventory["compose"]["ansible_host"], where
        assert any(
            g["key"].endswith("placement.availability_zone") and g["prefix"] == "az" for g in inventory["keyed_groups"]
        )


def test_default_tags_carry_project_and_environment(tf) -> None:
    default_tags = tf.locals["default_tags"]
    assert expr(default_tags["Project"]) == "var.project"
    assert expr(default_tags["Environment"]) == "var.env"
    providers = [p["aws"] for _, block in tf.blocks("provider") for p in [block] if "aws" in p]
    assert len(providers) == 2, "the default aws provider and aws.replica"
    for provider in providers:
        assert expr(provider["default_tags"][0]["tags"]) == "local.default_tags", provider


@pytest.fixture(scope="module")
def instances(tf) -> dict[str, dict]:
    return tf.resources("aws_instance")


def test_every_instance_requires_imdsv2(instances) -> None:
    for name, body in instances.items():
        metadata = body.get("metadata_options", [{}])[0]
        assert metadata.get("http_tokens") == "required", f"aws_instance.{name}: IMDSv2 not required"
        assert metadata.get("http_endpoint", "enabled") == "enabled", name


def test_every_instance_has_an_encrypted_root_volume(instances) -> None:
    for name, body in instances.items():
        root = body.get("root_block_device", [{}])[0]
        assert root.get("encrypted") is True, f"aws_instance.{name}: root volume not encrypted"
        assert not body.get("ebs_block_device"), f"aws_instance.{name}: use aws_ebs_volume, not inline ebs_block_device"


def test_every_data_volume_is_encrypted_gp3(tf) -> None:
    volumes = tf.resources("aws_ebs_volume")
    assert {"qdrant_data", "ollama_models"} <= set(volumes)
    for name, body in volumes.items():
        assert body.get("encrypted") is True, f"aws_ebs_volume.{name} is not encrypted"
        assert body.get("type") == "gp3", f"aws_ebs_volume.{name} is not gp3"


def test_every_instance_is_tagged_with_its_role(instances) -> None:
    for name, body in instances.items():
        tags = body.get("tags", {})
        assert tags.get("Role") in GROUPS, f"aws_instance.{name}: Role tag {tags.get('Role')!r} is not a group"
        assert tags.get("Name"), f"aws_instance.{name}: no Name tag"
        # Project and Environment come from default_tags; an explicit value could drift.
        assert "Project" not in tags and "Environment" not in tags, f"aws_instance.{name}: leave those to default_tags"


def test_only_the_bastion_is_public(instances) -> None:
    for name, body in instances.items():
        public = body.get("associate_public_ip_address", False)
        subnet = expr(body["subnet_id"]) or ""
        if body["tags"]["Role"] == "bastion":
            assert subnet.startswith("aws_subnet.public["), f"aws_instance.{name}: the bastion sits in a public subnet"
        else:
            assert public is False, f"aws_instance.{name}: private hosts get no public IP"
            assert subnet.startswith("aws_subnet.private["), f"aws_instance.{name}: must be in a private subnet"


def test_multi_instance_tiers_spread_over_azs(instances) -> None:
    for name, body in instances.items():
        if "count" in body:
            assert expr(body["subnet_id"]) == "aws_subnet.private[count.index % var.az_count].id", name


def test_every_instance_has_a_tier_profile_and_security_group(instances) -> None:
    for name, body in instances.items():
        role = body["tags"]["Role"]
        assert expr(body["iam_instance_profile"]) == f'aws_iam_instance_profile.tier["{role}"].name', name
        assert body["vpc_security_group_ids"] == [f'${{aws_security_group.tier["{role}"].id}}'], name


def _without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


def test_only_qdrant_and_postgres_may_write_backups(tf) -> None:
    """Least privilege: the backups bucket ARN appears only in the qdrant policy, the postgres
    one (pgBackRest's repository, its pgbackrest/ prefix only; qdrant's snapshots under
    <env>/qdrant/ only) and the bucket's own configuration, and no tier may erase a backup's history: both delete (retention) only
    current versions of a versioned bucket."""
    documents = tf.resources("aws_iam_role_policy")
    assert set(documents) == {"qdrant", "postgres", "backend", "monitoring", "replication", "flow_logs", "edge_dns01"}
    for _, block in tf.blocks("data"):
        for kind, named in block.items():
            if kind != "aws_iam_policy_document":
                continue
            for name, body in named.items():
                text = json.dumps(_without_comments(body))
                if "aws_s3_bucket.backups" in text and name not in ("tls_only", "access_logs"):
                    assert name in ("qdrant", "postgres"), f"policy document {name} grants access to the backups bucket"
                # Each tier reaches its own prefix only: objects, and what it may list.
                own = {"postgres": "pgbackrest", "qdrant": "${var.env}/qdrant"}.get(name)
                if own:
                    objects = [r for s in body["statement"] for r in s["resources"] if "backups.arn}/" in r]
                    assert objects == [f"${{aws_s3_bucket.backups.arn}}/{own}/*"], objects
                    for statement in body["statement"]:
                        if "aws_s3_bucket.backups.arn}" in statement["resources"][0] and "/" not in \
                                statement["resources"][0].split("}")[-1]:
                            prefixes = [c["values"] for c in statement.get("condition", []) if c["variable"] == "s3:prefix"]
                            assert prefixes == [[own, f"{own}/*"]], (name, statement["sid"], prefixes)
                if name in ("qdrant", "postgres"):
                    assert "s3:DeleteObjectVersion" not in text
                    assert "s3:PutLifecycleConfiguration" not in text


def test_an_erasure_reaches_the_replica_and_leaves_nothing_behind(tf) -> None:
    """The erasure (app/backend: DocumentStore.delete_all_versions) keeps one delete marker,
    the only deletion S3 replication carries: replication must carry markers, both buckets
    must expire noncurrent copies, and lone markers must not pile up in either bucket."""
    (rule,) = tf.resources("aws_s3_bucket_replication_configuration")["documents"]["rule"]
    assert rule["delete_marker_replication"] == [{"status": "Enabled"}], rule
    lifecycles = tf.resources("aws_s3_bucket_lifecycle_configuration")
    for bucket in ("documents", "documents_replica"):
        rules = [r for r in lifecycles[bucket]["rule"] if r["status"] == "Enabled" and r["filter"] == [{}]]
        assert any(r.get("noncurrent_version_expiration") for r in rules), bucket
        markers = [e for r in rules for e in r.get("expiration", []) if e.get("expired_object_delete_marker")]
        assert markers, f"{bucket}: expiration {{ expired_object_delete_marker = true }} on a rule for every key"


def test_every_named_reader_of_a_secret_is_granted_it(tf) -> None:
    """secrets.tf names who reads each secret at runtime; iam.tf grants it per tier from that
    list. A reader without a grant would get AccessDenied the day it starts reading."""
    readers = {r for secret in tf.locals["secrets"].values() for r in secret["readers"]}
    granted = set(re.findall(r'contains\(local\.secrets\[k\]\.readers, "(\w+)"\)', (REPO / "terraform/iam.tf").read_text()))
    assert granted and readers <= granted, f"named as readers without a grant in iam.tf: {sorted(readers - granted)}"


def test_no_tier_gets_ssm(tf) -> None:
    """SSH through the bastion is the only way in. No role installs the SSM agent, so SSM
    permissions and endpoints would be privilege and cost that nothing uses."""
    for name, body in tf.resources("aws_iam_role_policy_attachment").items():
        assert "SSM" not in body["policy_arn"], f"aws_iam_role_policy_attachment.{name} attaches {body['policy_arn']}"
    for name, body in tf.resources("aws_vpc_endpoint").items():
        service = body.get("service_name", "")
        assert not re.search(r"\.(ssm|ssmmessages|ec2messages)$", service), f"aws_vpc_endpoint.{name}: {service}"
    for path in tf_files():
        text = path.read_text()
        for marker in ("AmazonSSM", '"ssm:', "ssmmessages", "ec2messages"):
            assert marker not in text, f"terraform/{path.name} still grants or mentions {marker}"
    # With no Session Manager, an instance without a key pair is unreachable.
    ssh_key = tf.variables["ssh_key_name"]
    assert "default" not in ssh_key and ssh_key.get("nullable") is False, "ssh_key_name must be required, never null"
    assert ssh_key.get("validation"), "ssh_key_name: validate that it is not empty"


def test_outputs_the_inventory_and_docs_need(tf) -> None:
    outputs = tf.outputs
    for name in (
        "environment",
        "bastion_public_ip",
        "nlb_dns_name",
        "backups_bucket",
        "documents_bucket",
        "secret_arns",
    ):
        assert name in outputs, f"outputs.tf: output {name} is missing"
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"


def test_the_lab_load_balancer_checks_the_edges_exactly_as_the_nlb(tf) -> None:
    """The lab's HAProxy stands in for the NLB: an edge leaves and rejoins it after the same
    checks, or a zone-outage test in the lab would pass on a detection the NLB does not have."""
    health = tf.resources("aws_lb_target_group")["edge"]["health_check"]
    health = health[0] if isinstance(health, list) else health
    lab_lb = (REPO / "lab" / "playbooks" / "prepare_lb.yml").read_text()
    found = re.search(r"default-server check inter (\d+)s fall (\d+) rise (\d+)", lab_lb)
    assert found, "lab/playbooks/prepare_lb.yml: no `default-server check inter Ns fall N rise N` line"
    assert (int(health["interval"]), int(health["unhealthy_threshold"]), int(health["healthy_threshold"])) == \
        tuple(int(g) for g in found.groups())
