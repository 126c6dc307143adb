"""Every role's preflight keeps the contract playbooks/preflight.yml relies on.

playbooks/preflight.yml runs each role's `tasks/preflight.yml` for every host before any host
changes, without facts and without connecting, and collects `__<role>_preflight` into one
report. So each preflight must be ONE assert looped over `{var, ok, msg}` items (every
problem reported in one run, each naming its variable), need no connection and no facts,
print no secret, and run first in the role's own main.yml (host checks right after it).
The static half reads the task files; the dynamic half runs them (tests/roles/preflight_harness.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from preflight_harness import GOOD_VARS, REPO, ROLES, run_batch, run_role

ROLES_DIR = REPO / "roles"


def tasks(role: str, name: str) -> list[dict]:
    path = ROLES_DIR / role / "tasks" / f"{name}.yml"
    return yaml.safe_load(path.read_text()) or [] if path.exists() else []


def the_assert(role: str) -> dict:
    asserts = [t for t in tasks(role, "preflight") if "ansible.builtin.assert" in t]
    assert len(asserts) == 1, f"roles/{role}/tasks/preflight.yml: expected ONE assert, found {len(asserts)}"
    return asserts[0]


# --- static: the shape of tasks/preflight.yml and its place in main.yml ---------------------


@pytest.mark.parametrize("role", ROLES)
def test_preflight_is_one_assert_over_var_ok_msg(role):
    task = the_assert(role)
    args = task["ansible.builtin.assert"]
    assert args == {"that": "item.ok | bool", "fail_msg": "{{ item.var }}: {{ item.msg }}", "quiet": True}, args
    assert task["register"] == f"__{role}_preflight"
    assert task["loop_control"] == {"label": "{{ item.var }}"}
    assert "no_log" not in task, "messages must carry no secret, so the results can be shown"
    items = task["vars"][f"_{role}_checks"]
    assert isinstance(items, list) and items, f"the checks are a literal list, the task's _{role}_checks"
    defaults = set(yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {})
    for item in items:
        assert set(item) == {"var", "ok", "msg"}, item
        assert item["var"] in defaults, f"{item['var']} is not a variable of roles/{role} (defaults/main.yml)"


@pytest.mark.parametrize("role", ROLES)
def test_preflight_needs_no_host(role):
    """Besides the assert only set_fact; facts are only used behind `is (not) defined`."""
    for task in tasks(role, "preflight"):
        modules = [k for k in task if k.startswith("ansible.builtin.")]
        assert modules in (["ansible.builtin.assert"], ["ansible.builtin.set_fact"]), (role, task.get("name"), modules)
    text = (ROLES_DIR / role / "tasks" / "preflight.yml").read_text()
    for match in re.finditer(r"ansible_facts\[[^\]]+\]", text):
        assert re.match(r" is (not )?defined", text[match.end():]), (
            f"roles/{role}/tasks/preflight.yml uses {match.group(0)} without `is defined`: preflight runs without facts")


@pytest.mark.parametrize("role", ROLES)
def test_main_runs_preflight_then_host_checks_first(role):
    main = tasks(role, "main")
    imports = [t.get("ansible.builtin.import_tasks") for t in main]
    assert imports[0] == "preflight.yml", f"roles/{role}/tasks/main.yml must start with preflight.yml"
    if (ROLES_DIR / role / "tasks" / "host_checks.yml").exists():
        assert imports[1] == "host_checks.yml", f"roles/{role}/tasks/main.yml: host_checks.yml right after preflight.yml"
        assert main[1]["tags"] == main[0]["tags"], "host checks run whenever the preflight does"
    assert set(main[0]["tags"]) >= {role}, main[0]["tags"]


def test_host_checks_are_where_the_host_is_needed():
    """stat/command/slurp/setup only in host_checks.yml (or later task files), never in preflight.yml."""
    for role in ROLES:
        text = (ROLES_DIR / role / "tasks" / "preflight.yml").read_text()
        for module in ("stat", "command", "shell", "slurp", "setup", "uri", "find"):
            assert f"ansible.builtin.{module}:" not in text, (role, module)


# --- dynamic: run it as playbooks/preflight.yml does ----------------------------------------


def _run(tmp_path: Path, role: str, variables: dict | None = None, **kwargs):
    return run_role(tmp_path, role, variables, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The no-facts cases of the tests below, all in one ansible-playbook run (a host per
    case): good-<role>, bad-<role>, secret-<role>."""
    cases = {f"good-{role}": (role, None) for role in ROLES}
    cases |= {f"bad-{role}": (role, BAD[role][0]) for role in ROLES}
    cases |= {f"secret-{role}": (role, {**BAD[role][0], **SECRETS[role]}) for role in SECRETS}
    return run_batch(tmp_path_factory.mktemp("contract"), cases)


@pytest.fixture(scope="module")
def fact_runs(tmp_path_factory):
    """The with-facts cases, in one run: facts-<role> and uncomputable-<role>."""
    cases = {f"facts-{role}": (role, None) for role in FACT_DEFAULTS}
    cases |= {f"uncomputable-{role}": (role, {var: "{{ querygpt_no_such_variable }}"})
              for role, var in FACT_DEFAULTS.items()}
    return run_batch(tmp_path_factory.mktemp("contract-facts"), cases, facts=True)


@pytest.mark.parametrize("role", ROLES)
def test_good_input_passes_without_connection_or_facts(runs, role):
    # GOOD_VARS leave the fact-based defaults (bind addresses) alone: they must not trip it
    result = runs[f"good-{role}"]
    result.assert_ok()
    assert not result.unreachable


@pytest.mark.parametrize("role", ["journal_remote", "journal_upload"])
def test_preflight_of_a_role_that_needs_another_needs_no_connection(tmp_path, role):
    """journal_remote and journal_upload need internal_pki's certificate: the playbooks list it
    before them, so no meta dependency runs (and touches the host) ahead of their preflight.
    (A run of its own: in a run with other roles, a dependency would touch its own host only.)"""
    result = run_role(tmp_path, role)
    assert not result.unreachable and result.ok, result.messages


@pytest.mark.parametrize("role", ROLES)
def test_no_role_hides_another_in_its_dependencies(role):
    """Role coupling shows in the playbooks: a meta dependency would also run, and touch the
    host, ahead of the role's preflight."""
    meta = yaml.safe_load((ROLES_DIR / role / "meta" / "main.yml").read_text()) or {}
    assert not meta.get("dependencies"), f"roles/{role}/meta/main.yml: list {meta['dependencies']} in the playbooks"


# Several bad variables per role: ALL are reported in ONE run, each naming its variable.
BAD = {
    "backend": ({"backend_top_k": 0, "backend_qdrant_api_key": "", "backend_ollama_urls": ["ftp://x"]},
                ["backend_top_k: expected 1-100", "backend_qdrant_api_key: is empty", "backend_ollama_urls: got"]),
    "backup": ({"backup_cron_hour": "two", "backup_s3_bucket": "", "backup_s3_prefix": "/prod/",
                "backup_qdrant_crl_file": "crl.pem"},
               ["backup_cron_hour: expected a cron field", "backup_s3_bucket: is empty", "backup_s3_prefix: got",
                "backup_qdrant_crl_file: expected the absolute path of the internal CA's CRLs"]),
    "common": ({"common_admin_users": [], "common_ssh_port": 0, "common_supported_os": ["Debian"]},
               ["common_admin_users: no user is present", "common_ssh_port: expected a TCP port",
                "common_supported_os: expected a non-empty list"]),
    "firewall": ({"firewall_ssh_source_cidrs": ["10.0.0.0/33"], "firewall_table": "a b",
                  "firewall_openings": [{"name": "x", "ports": [70000], "source_groups": ["monitoring"]}]},
                 ["firewall_ssh_source_cidrs: expected CIDRs", "firewall_table: expected an nftables table name",
                  'firewall_openings: opening(s) "x" need a non-empty list of ports 1-65535']),
    "frontend": ({"frontend_keep_releases": 0, "frontend_install_prefix": "/", "frontend_dist_archive": "dist.zip"},
                 ["frontend_keep_releases: expected 1-100", "frontend_install_prefix: expected an absolute path",
                  "frontend_dist_archive: got \"dist.zip\""]),
    "journal_remote": ({"journal_remote_split_mode": "x", "journal_remote_port": 0, "journal_remote_bind_address": "0.0.0.0",
                        "journal_remote_max_use": "4 GB", "journal_remote_max_file_size": "512K",
                        "journal_remote_keep_free": "-1"},
                       ["journal_remote_split_mode: expected host or none", "journal_remote_port: expected a TCP port",
                        "journal_remote_bind_address: got", "journal_remote_max_use: expected a size such as 4G",
                        "journal_remote_max_file_size: expected a size of at least 1M",
                        "journal_remote_keep_free: expected a size such as 2G"]),
    "internal_pki": ({"internal_pki_renew_days": 400, "internal_pki_ca_cert": "", "internal_pki_extra_names": ["x"],
                      "internal_pki_dependent_units": ["nginx; reboot"],
                      "internal_pki_revoked": [{"serial": 4660, "revoked_on": "2026-12-06"}],
                      "internal_pki_crl_days": 7, "internal_pki_textfile_dir": "prom"},
                     ["internal_pki_renew_days: expected at least 1 day", "internal_pki_ca_cert: is empty",
                      "internal_pki_extra_names: every name must be", "internal_pki_dependent_units: expected systemd unit names",
                      "internal_pki_revoked: entry 1: serial 4660 is not a hex string",
                      "internal_pki_crl_days: expected more days than internal_pki_renew_days",
                      "internal_pki_textfile_dir: expected an absolute directory"]),
    "journal_upload": ({"journal_upload_url": "http://10.0.4.10:19532", "journal_upload_restart_sec": 0},
                       ["journal_upload_url: got", "journal_upload_restart_sec: expected at least 1"]),
    "nginx": ({"nginx_query_rate": "2/s", "nginx_backend_servers": [], "nginx_server_name": "not a name",
               "nginx_backend_tls_name": "10.0.0.1:8000", "nginx_backend_tls_ca": "ca.pem",
               "nginx_exporter_web_config_file": "web-config.yml"},
              ["nginx_query_rate: expected an nginx limit_req rate", "nginx_backend_servers: got []",
               "nginx_server_name: expected the DNS name",
               "nginx_backend_tls_name: expected the DNS name every backend's certificate carries",
               "nginx_backend_tls_ca: expected the absolute path",
               "nginx_exporter_web_config_file: expected the absolute path"]),
    "node_exporter": ({"node_exporter_port": 0, "node_exporter_extra_args": ["-x"], "node_exporter_bind_address": "*",
                       "node_exporter_tls_client_names": [], "node_exporter_tls_key_source": "host.key"},
                      ["node_exporter_port: expected a TCP port", "node_exporter_extra_args: every entry",
                       "node_exporter_bind_address: got", "node_exporter_tls_client_names: expected the names",
                       "node_exporter_tls_key_source: expected the absolute path"]),
    "ollama": ({"ollama_checksum": "", "ollama_port": 70000, "ollama_models": [{"name": "all-minilm"}]},
               ["ollama_checksum: is empty", "ollama_port: expected a TCP port", "ollama_models:"]),
    "prometheus_stack": ({"prometheus_stack_alert_for": {}, "prometheus_stack_retention_time": "two weeks",
                          "prometheus_stack_blackbox_listen_address": "0.0.0.0:9115", "prometheus_stack_internal_ca_pem": "",
                          "prometheus_stack_tls_key": "server.key", "prometheus_stack_web_password": "short"},
                         ["prometheus_stack_alert_for: expected a Prometheus duration",
                          "prometheus_stack_retention_time: expected a Prometheus duration",
                          "prometheus_stack_blackbox_listen_address: expected a loopback",
                          "prometheus_stack_internal_ca_pem: expected the internal CA's certificate",
                          "prometheus_stack_tls_key: expected the absolute path",
                          "prometheus_stack_web_password: expected 16-72 characters"]),
    "postgresql": ({"postgresql_max_connections": 5, "postgresql_app_password": "", "postgresql_listen_address": "0.0.0.0",
                    "postgresql_hosts": ["some-other-host"], "postgresql_backup_s3_endpoint": "https://s3.example:443",
                    "postgresql_backup_s3_access_key_id": "AKIAEXAMPLE", "postgresql_backup_s3_bucket": "",
                    "postgresql_exporter_web_config_file": "relative.yml"},
                   ["postgresql_max_connections: expected", "postgresql_app_password: empty",
                    "postgresql_listen_address: must be", "postgresql_hosts: must list",
                    "postgresql_backup_s3_endpoint: expected host[:port] without a scheme",
                    "postgresql_backup_s3_access_key_id: set it together", "postgresql_backup_s3_bucket: expected",
                    "postgresql_exporter_web_config_file: expected the absolute path"]),
    "qdrant": ({"qdrant_limit_nofile": 1024, "qdrant_checksum": "", "qdrant_data_volume_id": "sdf"},
               ["qdrant_limit_nofile:", "qdrant_checksum: is empty", "qdrant_data_volume_id: got"]),
}


def test_every_role_has_a_bad_input_case():
    assert sorted(BAD) == ROLES


@pytest.mark.parametrize("role", ROLES)
def test_every_problem_is_reported_in_one_run(runs, role):
    _, needles = BAD[role]
    result = runs[f"bad-{role}"]
    result.assert_refused(*needles)
    assert not result.failures, "only the assert may fail: a task that errors hides the other problems"
    assert len(result.problems) >= len(needles), result.problems
    for problem in result.problems:  # playbooks/preflight.yml's form: "<role>: <variable>: <message>"
        assert re.match(rf"{role}: {role}_[a-z0-9_]+: \S", problem), problem


@pytest.mark.parametrize("role", ROLES)
def test_the_check_is_skipped_only_for_the_role_preflight_passed_in_this_run(role):
    """site.yml checks every role in playbooks/preflight.yml, then the role skips that second
    check of the same values; the skip names the role itself, so one role's pass never
    skips another's check (docs/architecture.md, preflight). The skip is an empty loop, not a
    `when`: a `when` on a loop is evaluated per item, after every item has been templated."""
    task = the_assert(role)
    assert "when" not in task
    assert task["loop"] == f"{{{{ [] if '{role}' in (preflight_validated_roles | default([])) else _{role}_checks }}}}"


def test_preflight_records_the_roles_it_passed_after_the_report():
    play = yaml.safe_load((REPO / "playbooks" / "preflight.yml").read_text())[0]
    names = [t["name"] for t in play["tasks"]]
    record = next(t for t in play["tasks"] if "preflight_validated_roles" in t.get("ansible.builtin.set_fact", {}))
    assert names.index(record["name"]) > names.index("Report every problem and stop before any host changes")
    assert record["ansible.builtin.set_fact"]["preflight_validated_roles"] == "{{ _preflight_roles }}"


def test_a_role_still_refuses_bad_values_unless_preflight_passed_it(tmp_path):
    overrides, needles = BAD["nginx"]
    _run(tmp_path, "nginx", {**overrides, "preflight_validated_roles": ["common", "backend"]}).assert_refused(*needles)
    skipped = _run(tmp_path / "skipped", "nginx", {**overrides, "preflight_validated_roles": ["nginx"]})
    assert skipped.ok and not skipped.problems, skipped.messages


# Secrets never reach the output, whether they are fine or are the problem themselves.
SECRETS = {
    "backend": {"backend_qdrant_api_key": "SeCrEt-backend-key", "backend_s3_secret_access_key": "SeCrEt-s3",
                "backend_database_password": "SeCrEt-db", "backend_secret_key": "SeCrEt-too-short"},
    "backup": {"backup_qdrant_api_key": "SeCrEt-backup-key", "backup_s3_secret_access_key": "SeCrEt-s3"},
    "internal_pki": {"internal_pki_ca_key": "SeCrEt-not-a-pem-key"},
    "postgresql": {"postgresql_app_password": "SeCrEt-short", "postgresql_replication_password": "SeCrEt-short"},
    "prometheus_stack": {"prometheus_stack_alertmanager_webhook_urls": ["hooks.example/SeCrEt-token"],
                         "prometheus_stack_alertmanager_slack_api_url": "http://hooks.slack.example/SeCrEt",
                         "prometheus_stack_alertmanager_email_password": "SeCrEt-smtp",
                         "prometheus_stack_web_password": "SeCrEt, long enough but with spaces"},
    "qdrant": {"qdrant_api_key": "SeCrEt-full", "qdrant_read_only_api_key": "SeCrEt-full"},
}


@pytest.mark.parametrize("role", sorted(SECRETS))
def test_no_secret_in_the_output(runs, role):
    result = runs[f"secret-{role}"]  # its output is the whole run's: no case may print one
    assert not result.ok
    assert "SeCrEt" not in result.output, [line for line in result.output.splitlines() if "SeCrEt" in line][:3]


# With facts (the role's own run), the fact-based defaults are checked like any value.
FACT_DEFAULTS = {
    "backend": "backend_bind_address", "backup": "backup_qdrant_url", "journal_remote": "journal_remote_bind_address",
    "nginx": "nginx_exporter_listen_address", "node_exporter": "node_exporter_bind_address",
    "ollama": "ollama_bind_address", "postgresql": "postgresql_listen_address", "prometheus_stack": "prometheus_stack_bind_address", "qdrant": "qdrant_bind_address",
}


@pytest.mark.parametrize("role", sorted(FACT_DEFAULTS))
def test_fact_based_defaults_pass_with_facts(fact_runs, role):
    fact_runs[f"facts-{role}"].assert_ok()


@pytest.mark.parametrize("role", sorted(FACT_DEFAULTS))
def test_a_fact_based_default_that_cannot_be_computed_is_reported(fact_runs, role):
    # an inventory value built from a variable that is missing: named, not a crash of the task
    var = FACT_DEFAULTS[role]
    result = fact_runs[f"uncomputable-{role}"]
    result.assert_refused(f"{var}: cannot be computed")
    assert not result.failures, result.failures


def test_good_vars_cover_every_role():
    assert ROLES == sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "preflight.yml").exists())
    assert set(GOOD_VARS) == set(ROLES)


# White space in the web password is refused as the message says (a value pasted with a newline
# or a tab is the usual mistake); the check once searched for a backslash and an 's' instead.
WEB_PASSWORDS = {"space": "SeCrEt with a space inside", "tab": "SeCrEt\twith-a-tab-inside", "fine": "SeCrEt-without-any-space"}


@pytest.fixture(scope="module")
def web_password_runs(tmp_path_factory):
    return run_batch(tmp_path_factory.mktemp("web-password"),
                     {case: ("prometheus_stack", {"prometheus_stack_web_password": password})
                      for case, password in WEB_PASSWORDS.items()})


@pytest.mark.parametrize("case", sorted(WEB_PASSWORDS))
def test_the_web_password_holds_no_white_space(web_password_runs, case):
    result = web_password_runs[case]
    if case == "fine":
        result.assert_ok()
    else:
        result.assert_refused("prometheus_stack_web_password: expected 16-72 characters without spaces")
        assert len(result.problems) == 1, result.problems
    assert "SeCrEt" not in result.output
