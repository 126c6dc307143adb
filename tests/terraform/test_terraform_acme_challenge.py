"""acme_challenge and route53_zone_id agree, before any edge asks Let's Encrypt.

The edges of prod and staging share one public name behind the NLB, so certbot must prove
it with DNS-01 through Route 53: an HTTP-01 request from Let's Encrypt could land on the
other edge. DNS-01 needs route53_zone_id (iam.tf grants the TXT records of that zone
only). The variable validations say so at plan time; Terraform cannot run here, so these
tests evaluate the conditions themselves (hcl_conditions.py) on the committed tfvars and
on filled-in variants of them.
"""

from __future__ import annotations

import pytest

from hcl_conditions import EvalError, Unsupported, evaluate, failed_validations
from terraform_helpers import ENVIRONMENTS, expr

ZONE_ID = "Z0123456789ABCDEFGHIJ"
CHECKED = ("acme_challenge", "route53_zone_id", "edge_count")


def _values(tf, tfvars: dict, env: str, **overrides) -> dict:
    """The variables of one environment as Terraform would see them: defaults, then the
    committed terraform.tfvars, then the overrides of the test."""
    values = {name: body.get("default") for name, body in tf.variables.items()}
    values.update(tfvars[env])
    values.update(overrides)
    return values


def _failures(tf, values: dict) -> list[str]:
    return [message for name in CHECKED for message in failed_validations(tf.variables[name], values)]


# --- the evaluator itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    "condition, expected",
    [
        ('contains(["dns-01", "http-01"], var.s)', True),
        ('var.s != "http-01" || var.n == 2', False),
        ('var.s == "http-01" && var.n >= 1', True),
        ("!(var.n > 1)", True),
        ('can(regex("^Z[A-Z0-9]{1,31}$", var.empty))', False),
        ('can(regex("^Z[A-Z0-9]{1,31}$", "Z12AB"))', True),
        ('can(regex("^a\\\\.b$", "a.b")) && !can(regex("^a\\\\.b$", "axb"))', True),
        ('var.n == "1"', False),  # different types are never equal
        ("length(var.empty) == 0", True),
        ("floor(var.n) == var.n && !(floor(1.5) == 1.5)", True),
    ],
)
def test_evaluator_agrees_with_terraform(condition: str, expected: bool) -> None:
    assert evaluate(condition, {"s": "http-01", "n": 1, "empty": ""}) is expected


@pytest.mark.parametrize(
    "condition",
    [
        'can(lower(var.s) == "x")',  # a function it does not know, inside can()
        'can(regex("x", var.s) && upper(var.s) == "X")',  # ... after the failing call
        "var.n + 1 == 2",  # arithmetic
        'var.s == "${var.n}"',  # a template
        "var.obj.key == 1",  # attribute access
    ],
)
def test_evaluator_refuses_what_it_does_not_know(condition: str) -> None:
    with pytest.raises(Unsupported):
        evaluate(condition, {"s": "y", "n": 1, "obj": {"key": 1}})


def test_evaluator_reports_terraform_errors() -> None:
    with pytest.raises(EvalError):
        evaluate('regex("^Z", var.s)', {"s": ""})
    with pytest.raises(EvalError):
        evaluate('var.s || true', {"s": "x"})


# --- the validations -------------------------------------------------------------------


def test_acme_challenge_is_declared_with_its_choices(tf) -> None:
    variable = tf.variables["acme_challenge"]
    assert variable["type"] == "string", variable["type"]
    assert variable["default"] == "dns-01"
    assert variable.get("nullable") is False, "acme_challenge = null would pass every `!=` check"
    conditions = " ".join(expr(v["condition"]) or "" for v in variable["validation"])
    for fragment in ('"dns-01"', '"http-01"', "var.route53_zone_id", "var.edge_count"):
        assert fragment in conditions, f"acme_challenge: no validation mentions {fragment}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_committed_tfvars_fail_until_the_zone_is_set(tf, tfvars, env: str) -> None:
    """The committed files are templates: with route53_zone_id = "" under dns-01 the plan
    must stop with a message that names the variable to fill in, not the first edge's
    certbot run."""
    values = _values(tf, tfvars, env)
    assert values["acme_challenge"] == "dns-01", f"environments/{env}/terraform.tfvars: two edges need dns-01"
    assert values["route53_zone_id"] == "", f"environments/{env}/terraform.tfvars: the template keeps it empty"
    failures = _failures(tf, values)
    assert len(failures) == 1, failures
    assert "route53_zone_id" in failures[0] and "acme_challenge" in failures[0], failures[0]
    assert f"environments/<env>/terraform.tfvars" in failures[0], "the message says where to set it"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_committed_tfvars_pass_with_a_zone_id(tf, tfvars, env: str) -> None:
    assert _failures(tf, _values(tf, tfvars, env, route53_zone_id=ZONE_ID)) == []


@pytest.mark.parametrize(
    "zone_id",
    ["", "/hostedzone/Z0123456789ABCDEFGHIJ", "z0123456789abcdefghij", "Z", "Z" + "A" * 32, "ABCDEF", " Z0123"],
)
def test_dns01_refuses_a_missing_or_malformed_zone_id(tf, tfvars, zone_id: str) -> None:
    failures = _failures(tf, _values(tf, tfvars, "prod", route53_zone_id=zone_id))
    assert failures, f"route53_zone_id = {zone_id!r} passed under dns-01"
    assert any("route53_zone_id" in message for message in failures), failures


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_http01_is_refused_with_two_edges(tf, tfvars, env: str) -> None:
    values = _values(tf, tfvars, env, acme_challenge="http-01", route53_zone_id=ZONE_ID)
    assert values["edge_count"] == 2
    failures = _failures(tf, values)
    assert len(failures) == 1, failures
    assert "edge_count" in failures[0] and "dns-01" in failures[0], failures[0]


def test_http01_is_allowed_with_one_edge_and_no_zone(tf, tfvars) -> None:
    values = _values(tf, tfvars, "staging", acme_challenge="http-01", route53_zone_id="", edge_count=1)
    assert _failures(tf, values) == []


@pytest.mark.parametrize("challenge", ["tls-alpn-01", "DNS-01", "dns01", ""])
def test_unknown_challenges_are_refused(tf, tfvars, challenge: str) -> None:
    failures = _failures(tf, _values(tf, tfvars, "prod", acme_challenge=challenge, route53_zone_id=ZONE_ID))
    assert any("acme_challenge must be" in message for message in failures), failures


# --- what follows from the choice ---------------------------------------------------------


def test_edges_get_route53_permissions_exactly_under_dns01(tf) -> None:
    """The TXT-record policy follows acme_challenge, not the mere presence of a zone id: with
    http-01 the edges need no DNS permission even if a zone id is set."""
    found = {}
    for _, block in tf.blocks("data"):
        found.update(block.get("aws_iam_policy_document", {}))
    counts = {
        "data.aws_iam_policy_document.edge_dns01": found["edge_dns01"]["count"],
        "aws_iam_role_policy.edge_dns01": tf.resources("aws_iam_role_policy")["edge_dns01"]["count"],
    }
    for name, count in counts.items():
        assert expr(count) == 'var.acme_challenge == "dns-01" ? 1 : 0', f"{name}: count = {count!r}"


def test_acme_challenge_and_zone_are_outputs(tf) -> None:
    """bin/export-outputs writes them as terraform_acme_challenge and terraform_route53_zone_id,
    so the nginx role's settings come from the same values IAM was built from."""
    outputs = tf.outputs
    for name in ("acme_challenge", "route53_zone_id"):
        assert name in outputs, f"outputs.tf: output {name} is missing"
        assert expr(outputs[name]["value"]) == f"var.{name}", outputs[name]
        assert outputs[name].get("description")
        assert not outputs[name].get("sensitive"), f"output {name}: export-outputs skips sensitive outputs"
