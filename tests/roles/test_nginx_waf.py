"""The nginx role's web application firewall settings, without a host.

Bad WAF input fails in preflight naming the variable (tests/roles/preflight_harness.py, as
playbooks/preflight.yml runs it). The ModSecurity configuration is rendered with Ansible from
the role's defaults and vars: detection mode, paranoia level and thresholds reach it, its body
limits follow nginx's, and every exclusion stays narrow and documented. Molecule
(roles/nginx/molecule/default) runs the rendered blocking configuration for real: attacks
get 403, SQL questions and PDF uploads pass, the audit log is in the journal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from preflight_harness import REPO, render_template, run_role

ROLE = REPO / "roles" / "nginx"


def render(tmp_path: Path, **overrides: object) -> str:
    """roles/nginx/templates/waf-modsecurity.conf.j2 rendered by Ansible over the role's defaults and vars."""
    return render_template(tmp_path, "nginx", "waf-modsecurity.conf.j2", overrides)


def directives(conf: str) -> list[str]:
    """Each directive on one line (continuations joined), comments dropped."""
    joined = re.sub(r"\\\n\s*", "", conf)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_detection_mode_changes_only_the_engine(tmp_path):
    blocking = directives(render(tmp_path / "blocking"))
    detection = directives(render(tmp_path / "detection", nginx_waf_mode="detection"))
    assert "SecRuleEngine On" in blocking
    assert "SecRuleEngine DetectionOnly" in detection and "SecRuleEngine On" not in detection
    # the same rules, exclusions and audit log: detection is a rehearsal of blocking
    assert [d for d in blocking if not d.startswith("SecRuleEngine")] == [
        d for d in detection if not d.startswith("SecRuleEngine")]


def test_paranoia_level_and_thresholds_reach_the_configuration(tmp_path):
    default = directives(render(tmp_path / "default"))
    assert any("setvar:tx.paranoia_level=1" in d for d in default)
    conf = directives(render(tmp_path / "tuned", nginx_waf_paranoia_level=2, nginx_waf_inbound_anomaly_threshold=10,
                             nginx_waf_outbound_anomaly_threshold=8))
    assert any("setvar:tx.paranoia_level=2" in d for d in conf)
    assert any("setvar:tx.inbound_anomaly_score_threshold=10" in d
               and "setvar:tx.outbound_anomaly_score_threshold=8" in d for d in conf)


def test_body_limits_follow_nginx(tmp_path):
    conf = directives(render(tmp_path, nginx_client_max_body_size="30m", nginx_default_max_body_size="512k"))
    assert "SecRequestBodyLimit 31457280" in conf
    assert "SecRequestBodyNoFilesLimit 524288" in conf
    assert "SecRequestBodyLimitAction Reject" in conf


def test_audit_log_goes_to_the_fifo_without_headers(tmp_path):
    conf = directives(render(tmp_path))
    assert "SecAuditLog /run/querygpt-waf/audit.fifo" in conf
    assert "SecAuditLogParts AHZ" in conf  # B and F would carry Authorization, Cookie, Set-Cookie
    assert "SecAuditEngine RelevantOnly" in conf
    assert not any(d.startswith("SecAuditLogRelevantStatus") for d in conf)


def test_exclusions_are_narrow_and_documented(tmp_path):
    """Each exclusion removes rules from named fields on one exact path, and the README explains it."""
    exclusions = [d for d in directives(render(tmp_path)) if "ctl:ruleRemove" in d]
    assert exclusions, "no exclusion found: the test reads the wrong file"
    readme = (ROLE / "README.md").read_text()
    for rule in exclusions:
        # one exact path, or one anchored pattern of a path without wildcards (.*, .+)
        assert re.match(r'SecRule REQUEST_FILENAME "(@streq /api/[a-z/]+|@rx \^/api/[^" ]+\$)" ', rule), rule
        assert ".*" not in rule and ".+" not in rule, rule
        rule_id = re.search(r"id:(\d+)", rule).group(1)
        assert f"| {rule_id} |" in readme, f"exclusion {rule_id} is not in the README's table"
        for ctl in re.findall(r"ctl:(\w+)=([^,\"]+)", rule):
            # a target on every removal: never a whole rule, never every field
            assert ctl[0] in ("ruleRemoveTargetById", "ruleRemoveTargetByTag"), rule
            assert re.fullmatch(r"[\w-]+;(ARGS|FILES):[\w.]+", ctl[1]), rule


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"nginx_waf_mode": "audit"}, "nginx_waf_mode: expected detection"),
        ({"nginx_waf_paranoia_level": 5}, "nginx_waf_paranoia_level: expected a CRS paranoia level 1-4"),
        ({"nginx_waf_inbound_anomaly_threshold": 0}, "nginx_waf_inbound_anomaly_threshold: expected an anomaly score"),
        ({"nginx_waf_outbound_anomaly_threshold": "high"}, "nginx_waf_outbound_anomaly_threshold: expected"),
    ],
    ids=["mode", "paranoia", "inbound-0", "outbound-text"],
)
def test_bad_waf_input_fails_in_preflight(tmp_path, overrides, needle):
    run_role(tmp_path, "nginx", overrides).assert_refused(needle)


def test_good_waf_input_passes_preflight(tmp_path):
    run_role(tmp_path, "nginx", {"nginx_waf_mode": "detection", "nginx_waf_paranoia_level": 4,
                                 "nginx_waf_inbound_anomaly_threshold": 10,
                                 "nginx_waf_outbound_anomaly_threshold": 1000}).assert_ok()


def _routes() -> list[dict]:
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_nginx_api_routes"]


def test_only_the_paths_that_update_or_delete_allow_put_patch_delete(tmp_path):
    """CRS's default methods everywhere; each API path that serves PUT, PATCH or DELETE (nginx's
    routes) widens them for itself only, by the same anchored pattern as its nginx location, and
    by exactly its methods. Every such rule is in the README's table."""
    conf = directives(render(tmp_path))
    assert "SecAction \"id:900200,phase:1,pass,t:none,nolog,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS'\"" in conf
    widened = {}
    for rule in (d for d in conf if "tx.allowed_methods=" in d and "id:900200" not in d):
        pattern = re.match(r'SecRule REQUEST_FILENAME "@rx (\^/api/[^" ]+\$)" ', rule).group(1)
        methods = re.search(r"tx.allowed_methods=([A-Z ]+)'", rule).group(1).split()
        assert methods[:4] == ["GET", "HEAD", "POST", "OPTIONS"], rule
        widened[pattern] = set(methods[4:])
        rule_id = re.search(r"id:(\d+)", rule).group(1)
        assert f"| {rule_id} |" in (ROLE / "README.md").read_text(), rule
    expected = {"^" + re.sub(r"\(\?<\w+>([^)]*)\)", r"\1", route["path"]) + "$":
                set(route["methods"]) - {"GET", "HEAD", "POST", "OPTIONS"}
                for route in _routes() if set(route["methods"]) - {"GET", "HEAD", "POST", "OPTIONS"}}
    assert widened == expected


def test_the_password_field_is_excluded_only_where_a_password_is_sent(tmp_path):
    conf = directives(render(tmp_path))
    password = [d for d in conf if "ARGS:json.password" in d]
    paths = {re.match(r'SecRule REQUEST_FILENAME "@\w+ ([^"]+)"', d).group(1) for d in password}
    assert paths == {"/api/auth/login", "/api/users", "^/api/users/[a-z0-9][a-z0-9._-]{2,63}$"}
    for rule in password:
        assert re.findall(r"ctl:\w+=[^,\"]+", rule) == ["ctl:ruleRemoveTargetByTag=OWASP_CRS;ARGS:json.password"], rule

