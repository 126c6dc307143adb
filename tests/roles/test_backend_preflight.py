"""Bad input to the backend role fails in preflight, before any change, naming the variable.

The preflight runs through tests/roles/preflight_harness.py as playbooks/preflight.yml runs it
(no facts, no connection, every problem collected); the rollback check, which looks at the
host, runs the role's host_checks against localhost. Every bad case has a passing twin, so a
failure here means the input was refused, not that the harness is broken.
"""

from __future__ import annotations

import json

import pytest
import yaml

from preflight_harness import REPO, run_batch, run_role

VERSION = (REPO / "app/backend/src/querygpt/__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
# The wiring layer's URLs, computed from the inventory groups exactly as in production.
SERVICES = yaml.safe_load((REPO / "group_vars" / "all" / "services.yml").read_text())
WIRED_URLS = {"backend_qdrant_urls": SERVICES["backend_qdrant_urls"], "backend_ollama_urls": SERVICES["backend_ollama_urls"],
              "qdrant_http_port": 6333, "ollama_port": 11434}
UPSTREAMS = {"qdrant": {"qdrant-1": {"querygpt_private_address": "10.0.2.10"}},
             "ollama": {"ollama-1": {"querygpt_private_address": "10.0.3.10"},
                        "ollama-2": {"querygpt_private_address": "10.0.4.10"}}}


def run(tmp_path, overrides=None, **kwargs):
    return run_role(tmp_path, "backend", {"backend_install_prefix": str(tmp_path / "prefix"), **(overrides or {})},
                    **kwargs)


def test_good_input_passes_and_the_release_paths_are_computed(tmp_path):
    result = run(tmp_path, show={"release": "{{ _backend_release_dir }}", "active": "{{ _backend_active_dir }}"})
    result.assert_ok()
    assert result.shown == {"release": f"{tmp_path}/prefix/releases/{VERSION}",
                            "active": f"{tmp_path}/prefix/releases/{VERSION}"}


BAD_INPUT = [
    ({"backend_qdrant_api_key": ""}, "backend_qdrant_api_key: is empty"),
    ({"backend_bind_address": "0.0.0.0"}, 'backend_bind_address: got "0.0.0.0"'),
    ({"backend_top_k": 0}, "backend_top_k: expected 1-100"),
    ({"backend_workers": 65}, "backend_workers: expected 1-64"),
    ({"backend_ollama_urls": ["http://10.0.3.10:11434", "ftp://x"]}, 'backend_ollama_urls: got ["http://10.0.3.10:11434", "ftp://x"]'),
    ({"backend_qdrant_urls": ""}, 'backend_qdrant_urls: got ""'),
    ({"backend_wheelhouse_archive": "relative/wheels.zip"}, "backend_wheelhouse_archive: got"),
    ({"backend_documents_bucket": ""}, "backend_documents_bucket: is empty"),
    ({"backend_s3_access_key_id": "AKIAEXAMPLE"}, "backend_s3_secret_access_key: backend_s3_access_key_id and"),
    ({"backend_rollback_to": "a/b"}, "backend_rollback_to: expected a kept release"),
    ({"backend_keep_releases": 1, "backend_rollback_to": "0.1.0"},
     "backend_keep_releases: expected 1-100 kept releases, at least 2"),
    ({"backend_pdf_max_pages": 0}, "backend_pdf_max_pages: expected 1-100000"),
    ({"backend_pdf_max_chars": 10}, "backend_pdf_max_chars: expected 1000-"),
    ({"backend_pdf_max_chunks": "lots"}, "backend_pdf_max_chunks: expected 1-1000000"),
    ({"backend_pdf_max_stream_bytes": 1024}, "backend_pdf_max_stream_bytes: expected 65536"),
    ({"backend_pdf_memory_bytes": 1048576}, "backend_pdf_memory_bytes: expected 134217728"),
    ({"backend_pdf_cpu_seconds": 0}, "backend_pdf_cpu_seconds: expected 1-600"),
    # more copies than the two Qdrant peers listed (no backend_qdrant_peer_count: the URLs') can hold
    ({"backend_qdrant_replication_factor": 3},
     "backend_qdrant_replication_factor: got 3: expected 1-16 copies of each shard, and no more than"),
    ({"backend_qdrant_shard_number": 0}, "backend_qdrant_shard_number: expected 1-256"),
    ({"backend_qdrant_write_consistency_factor": 2},
     "backend_qdrant_write_consistency_factor: expected 1 to backend_qdrant_replication_factor (1)"),
    ({"backend_qdrant_peer_count": 0}, "backend_qdrant_peer_count: expected the number of Qdrant peers"),
    ({"backend_qdrant_cooldown_seconds": 0}, "backend_qdrant_cooldown_seconds: expected seconds above 0"),
    ({"backend_secret_key": ""}, "backend_secret_key: is empty"),
    ({"backend_session_idle_seconds": 30}, "backend_session_idle_seconds: expected 60-2592000"),
    ({"backend_session_max_seconds": 3600, "backend_session_idle_seconds": 7200},
     "backend_session_max_seconds: expected 60-7776000 seconds (1 minute to 90 days), at least"),
    ({"backend_user_query_rate_per_minute": 0}, "backend_user_query_rate_per_minute: expected 1-60000"),
    ({"backend_user_upload_rate_per_minute": 1.5}, "backend_user_upload_rate_per_minute: expected 1-60000"),
    ({"backend_user_max_concurrent_queries": 33}, "backend_user_max_concurrent_queries: expected 1-32"),
    ({"backend_user_max_concurrent_uploads": 0}, "backend_user_max_concurrent_uploads: expected 1-32"),
    ({"backend_user_storage_quota_bytes": "1G"}, "backend_user_storage_quota_bytes: expected 0 to"),
    ({"backend_qdrant_connect_timeout_seconds": "soon"},
     'backend_qdrant_connect_timeout_seconds: expected seconds above 0 (at most 60), got "soon"'),
]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every bad case of the test below in one ansible-playbook run (a host per case)."""
    tmp = tmp_path_factory.mktemp("backend-bad")
    prefix = {"backend_install_prefix": str(tmp / "prefix")}
    return run_batch(tmp, {next(iter(overrides)): ("backend", {**prefix, **overrides}) for overrides, _ in BAD_INPUT})


@pytest.mark.parametrize(("case", "needle"), [(next(iter(overrides)), needle) for overrides, needle in BAD_INPUT],
                         ids=[next(iter(overrides)) for overrides, _ in BAD_INPUT])
def test_bad_input_fails_naming_the_variable(bad_input_runs, case, needle):
    bad_input_runs[case].assert_refused(needle)


# The cases below that need nothing but their variables run in one ansible-playbook run, as
# the bad input above (most of a run's cost is starting ansible-playbook): each test's
# variables are listed here when the module is read, and each test reads its own Result (one
# not listed fails with a KeyError, it cannot pass unrun).
SIMPLE: list[dict] = []


def listed(*overrides: dict) -> list[dict]:
    SIMPLE.extend(overrides)
    return list(overrides)


def _key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


@pytest.fixture(scope="module")
def simple_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backend-simple")
    prefix = {"backend_install_prefix": str(tmp / "prefix")}
    unique = {_key(overrides): overrides for overrides in SIMPLE}
    runs = run_batch(tmp, {f"case-{i}": ("backend", {**prefix, **overrides}) for i, overrides in enumerate(unique.values())})
    return {key: runs[f"case-{i}"] for i, key in enumerate(unique)}


def simple(runs, overrides: dict):
    return runs[_key(overrides)]


@pytest.mark.parametrize("overrides", listed(*({"backend_ollama_urls": urls} for urls in (
    [], ["http://10.0.3.10:11434", "http://10.0.3.10:11434"], "http://10.0.3.10:11434"))),
    ids=["empty", "duplicate", "a string"])
def test_the_ollama_pool_is_a_list_of_distinct_urls(simple_runs, overrides):
    urls = overrides["backend_ollama_urls"]
    simple(simple_runs, overrides).assert_refused(f"backend_ollama_urls: got {json.dumps(urls)}")


@pytest.mark.parametrize("overrides", listed(*({"backend_qdrant_urls": urls} for urls in (
    [], ["http://10.0.2.10:6333", "http://10.0.2.10:6333"], "http://10.0.2.10:6333",
    ["http://10.0.2.10:6333", "10.0.18.10:6333"]))),
    ids=["empty", "duplicate", "a string", "not a URL"])
def test_the_qdrant_peers_are_a_list_of_distinct_urls(simple_runs, overrides):
    urls = overrides["backend_qdrant_urls"]
    simple(simple_runs, overrides).assert_refused(
        f"backend_qdrant_urls: got {json.dumps(urls)}: expected a list of one or more distinct http(s) URLs")


QDRANT_TIMEOUTS = [
    ("backend_qdrant_cooldown_seconds", 0.5, True), ("backend_qdrant_cooldown_seconds", 3600, True),
    ("backend_qdrant_cooldown_seconds", 3601, False), ("backend_qdrant_cooldown_seconds", -1, False),
    ("backend_qdrant_connect_timeout_seconds", 0.25, True), ("backend_qdrant_connect_timeout_seconds", 60, True),
    ("backend_qdrant_connect_timeout_seconds", 0, False), ("backend_qdrant_connect_timeout_seconds", 61, False),
]
listed(*({variable: value} for variable, value, _ in QDRANT_TIMEOUTS))


@pytest.mark.parametrize(("variable", "value", "ok"), QDRANT_TIMEOUTS)
def test_the_qdrant_timeouts_are_positive_seconds(simple_runs, variable, value, ok):
    result = simple(simple_runs, {variable: value})
    if ok:
        result.assert_ok()
    else:
        result.assert_refused(f"{variable}: expected seconds above 0")
        assert len(result.problems) == 1, result.problems


SECRET_KEYS = [(("SeCrEt" * 8)[:31], "is shorter than 32 characters"), (("SeCrEt" * 8)[:32], ""),
               ("SeCrEt" * 4 + " " + "SeCrEt" * 4, "holds white space")]
listed(*({"backend_secret_key": key} for key, _ in SECRET_KEYS))


@pytest.mark.parametrize(("key", "problem"), SECRET_KEYS, ids=["31", "32", "space"])
def test_the_secret_key_has_at_least_32_characters_and_is_never_shown(simple_runs, key, problem):
    result = simple(simple_runs, {"backend_secret_key": key})
    if not problem:
        result.assert_ok()
    else:
        result.assert_refused(f"backend_secret_key: {problem}", "vault_backend_secret_key")
        assert len(result.problems) == 1, result.problems
    assert key not in result.output


DATABASE_HOSTS = [(["10.0.3.10:5432", "10.0.19.10"], True), (["[fd00:3::10]:5432", "db-1.internal"], True),
                  (["10.0.3.10:5432", "db 1:5432"], False), (["fd00:3::10:5432"], False), (["[db-1]:5432"], False),
                  ([r"\[fd00:3::10\]:5432"], False)]
listed(*({"backend_database_hosts": hosts} for hosts, _ in DATABASE_HOSTS))


@pytest.mark.parametrize(("hosts", "ok"), DATABASE_HOSTS,
                         ids=["ipv4", "ipv6 in brackets and a name", "space", "ipv6 bare", "name in brackets", "backslashes"])
def test_the_database_hosts_are_host_or_host_port(simple_runs, hosts, ok):
    # the backend reads them the same way (querygpt/config.py, _db_host): IPv6 only in brackets
    result = simple(simple_runs, {"backend_database_hosts": hosts})
    if ok:
        result.assert_ok()
    else:
        result.assert_refused("backend_database_hosts: expected every PostgreSQL host as host or host:port")
        assert len(result.problems) == 1, result.problems


THREE_PEERS = ["https://10.0.18.10:6333", "https://10.0.34.10:6333", "https://10.0.50.10:6333"]


listed(*({"backend_qdrant_urls": THREE_PEERS, "backend_qdrant_peer_count": count} for count in (2, 4)))
listed(*({"backend_qdrant_urls": THREE_PEERS, "backend_qdrant_peer_count": count, "backend_qdrant_replication_factor": 3}
         for count in (3, None)))


@pytest.mark.parametrize("count", [2, 4])
def test_the_qdrant_urls_must_list_every_peer_when_the_count_is_set(simple_runs, count):
    result = simple(simple_runs, {"backend_qdrant_urls": THREE_PEERS, "backend_qdrant_peer_count": count})
    result.assert_refused(f"backend_qdrant_urls: lists 3 Qdrant peer(s) but backend_qdrant_peer_count is {count}:")
    assert len(result.problems) == 1, result.problems


@pytest.mark.parametrize("count", [3, None], ids=["the same count", "no count"])
def test_the_qdrant_urls_pass_with_the_same_count_or_none(simple_runs, count):
    # the twin of the test above; with no count the URLs set it (here for the replication factor)
    result = simple(simple_runs, {"backend_qdrant_urls": THREE_PEERS, "backend_qdrant_peer_count": count,
                            "backend_qdrant_replication_factor": 3})
    result.assert_ok()


TWO_PEERS_THREE_COPIES = listed({"backend_qdrant_urls": THREE_PEERS[:2], "backend_qdrant_replication_factor": 3})[0]


def test_without_a_count_the_replication_factor_is_checked_against_the_urls(simple_runs):
    result = simple(simple_runs, TWO_PEERS_THREE_COPIES)
    result.assert_refused("backend_qdrant_replication_factor: got 3: expected 1-16 copies of each shard, and no "
                          "more than the Qdrant peers that can hold them (backend_qdrant_peer_count: 2,")
    assert len(result.problems) == 1, result.problems


FOUR_PROBLEMS = listed({"backend_qdrant_api_key": "", "backend_top_k": 0, "backend_port": 70000,
                        "backend_wheelhouse_archive": "wheels.zip"})[0]


def test_every_problem_is_reported_in_one_run(simple_runs):
    result = simple(simple_runs, FOUR_PROBLEMS)
    result.assert_refused("backend_qdrant_api_key: is empty", "backend_top_k:", "backend_port:",
                          "backend_wheelhouse_archive:")
    assert len(result.problems) == 4, result.problems


def test_upstream_urls_come_from_the_groups(tmp_path):
    result = run(tmp_path, WIRED_URLS, groups=UPSTREAMS,
                 show={"qdrant": "{{ backend_qdrant_urls }}", "ollama": "{{ backend_ollama_urls }}"})
    result.assert_ok()
    # the pool is every ollama host, the Qdrant peers every qdrant host, in inventory order
    assert result.shown == {"qdrant": ["https://10.0.2.10:6333"],
                            "ollama": ["https://10.0.3.10:11434", "https://10.0.4.10:11434"]}


@pytest.mark.parametrize(("missing", "var"), [("qdrant", "backend_qdrant_urls"), ("ollama", "backend_ollama_urls")])
def test_a_url_the_wiring_cannot_compute_is_named(tmp_path, missing, var):
    groups = {name: hosts for name, hosts in UPSTREAMS.items() if name != missing}
    result = run(tmp_path, WIRED_URLS, groups=groups)
    result.assert_refused(f"{var}: cannot be computed")
    assert not result.failures, "the other checks still ran"


# The collection layout as the wiring computes it from group qdrant.
WIRED_LAYOUT = {key: SERVICES[key] for key in ("backend_qdrant_peer_count", "backend_qdrant_shard_number",
                                               "backend_qdrant_replication_factor",
                                               "backend_qdrant_write_consistency_factor")}
SHOW_LAYOUT = {"peers": "{{ backend_qdrant_peer_count | int }}", "shards": "{{ backend_qdrant_shard_number | int }}",
               "copies": "{{ backend_qdrant_replication_factor | int }}",
               "acks": "{{ backend_qdrant_write_consistency_factor | int }}"}


def _qdrant_group(size):
    return {**UPSTREAMS, "qdrant": {f"qdrant-{i}": {"querygpt_private_address": f"10.0.{2 + 16 * i}.10"}
                                    for i in range(1, size + 1)}}


@pytest.mark.parametrize(("size", "layout"), [(1, (1, 1, 1, 1)), (3, (3, 3, 2, 1)), (5, (5, 5, 2, 1))],
                         ids=["one node (every environment today)", "three nodes", "five nodes"])
def test_the_collection_layout_follows_the_qdrant_group(tmp_path, size, layout):
    result = run(tmp_path, {**WIRED_URLS, **WIRED_LAYOUT}, groups=_qdrant_group(size), show=SHOW_LAYOUT)
    result.assert_ok()
    assert tuple(int(result.shown[k]) for k in ("peers", "shards", "copies", "acks")) == layout


def test_the_qdrant_urls_are_every_peer_of_the_qdrant_group(tmp_path):
    result = run(tmp_path, WIRED_URLS, groups=_qdrant_group(3), show={"qdrant": "{{ backend_qdrant_urls }}"})
    result.assert_ok()
    assert result.shown == {"qdrant": ["https://10.0.18.10:6333", "https://10.0.34.10:6333", "https://10.0.50.10:6333"]}


def test_a_replication_factor_above_the_qdrant_group_is_refused_naming_both(tmp_path):
    result = run(tmp_path, {**WIRED_URLS, **WIRED_LAYOUT, "backend_qdrant_replication_factor": 3},
                 groups=_qdrant_group(2))
    result.assert_refused("backend_qdrant_replication_factor: got 3: expected 1-16 copies of each shard, and no "
                          "more than the Qdrant peers that can hold them (backend_qdrant_peer_count: 2,")
    assert len(result.problems) == 1, result.problems


# The edge's timeout as the wiring passes it (group_vars/all/services.yml), with its value there.
WIRED_EDGE = {"backend_edge_timeout": SERVICES["backend_edge_timeout"],
              "nginx_proxy_read_timeout": SERVICES["nginx_proxy_read_timeout"]}


def test_the_role_defaults_end_before_the_wired_edge_timeout(tmp_path):
    run(tmp_path, WIRED_EDGE, show={"edge": "{{ backend_edge_timeout }}"}).assert_ok()


EDGE_CUTS = [
    # the edge's timeout lowered below the default deadline (240) + margin (15)
    ({"nginx_proxy_read_timeout": 255}, "backend_query_deadline_seconds"),
    ({"nginx_proxy_read_timeout": 255}, "backend_upload_deadline_seconds"),
    # a deadline raised to the edge's timeout minus less than the margin
    ({"backend_upload_deadline_seconds": 290}, "backend_upload_deadline_seconds"),
    ({"backend_query_deadline_seconds": 300}, "backend_query_deadline_seconds"),
    ({"backend_deadline_margin": 61}, "backend_query_deadline_seconds"),
]
listed(*({**WIRED_EDGE, **overrides} for overrides, _ in EDGE_CUTS))


@pytest.mark.parametrize(("overrides", "variable"), EDGE_CUTS,
                         ids=["edge-lowered-query", "edge-lowered-upload", "upload-too-long", "query-equals-edge",
                              "margin"])
def test_a_deadline_the_edge_would_cut_is_refused_naming_both(simple_runs, overrides, variable):
    result = simple(simple_runs, {**WIRED_EDGE, **overrides})
    result.assert_refused(f"{variable}: got", "nginx_proxy_read_timeout (")
    problem = next(p for p in result.problems if f"{variable}: got" in p)
    assert "nginx_proxy_read_timeout" in problem and "backend_deadline_margin" in problem


BOUNDARY = listed(*({**WIRED_EDGE, "backend_query_deadline_seconds": seconds} for seconds in (284, 285)))


def test_the_deadline_boundary(simple_runs):
    # 284 + 15 = 299 < 300 passes; 285 + 15 = 300 does not (the edge would cut at the same moment)
    passing, cut = BOUNDARY
    simple(simple_runs, passing).assert_ok()
    simple(simple_runs, cut).assert_refused(
        "backend_query_deadline_seconds: got 285")


BAD_LIMITS = [
    ({"backend_gpu_concurrency": 0}, "backend_gpu_concurrency: expected 1-64"),
    ({"backend_gpu_queue": -1}, "backend_gpu_queue: expected 0-1024"),
    ({"backend_query_rate": 0}, "backend_query_rate: expected requests per second above 0"),
    ({"backend_upload_rate": "fast"}, "backend_upload_rate: expected"),
    ({"backend_query_burst": 0}, "backend_query_burst: expected 1-10000"),
    ({"backend_upload_concurrency": 25}, "backend_upload_concurrency: expected at least 1, and at most 32"),
    ({"backend_query_deadline_seconds": 0}, "backend_query_deadline_seconds: got 0"),
]
listed(*({**WIRED_EDGE, **overrides} for overrides, _ in BAD_LIMITS))


@pytest.mark.parametrize(("overrides", "needle"), BAD_LIMITS,
                         ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_bad_limits_fail_naming_the_variable(simple_runs, overrides, needle):
    simple(simple_runs, {**WIRED_EDGE, **overrides}).assert_refused(needle)


def test_rollback_only_to_a_kept_release(tmp_path):
    host = {"backend_rollback_to": "0.0.9", "backend_bind_address": "127.0.0.1"}
    run(tmp_path, host, entries=("host_checks",), connect=True).assert_refused(
        "backend_rollback_to: release '0.0.9' is not installed")
    # installed before the host's python3 changed (Debian 12's 3.11): it would not import
    (tmp_path / "prefix/releases/0.0.9/lib/python3.11/site-packages/querygpt").mkdir(parents=True)
    (tmp_path / "prefix/releases/0.0.9/bin").mkdir()
    (tmp_path / "prefix/releases/0.0.9/bin/querygpt-backend").write_text("#!/bin/sh\n")
    run(tmp_path, host, entries=("host_checks",), connect=True).assert_refused(
        "backend_rollback_to: release '0.0.9' is not installed on", "for Python 3.13",
        "installed before the host's Python changed")
    (tmp_path / "prefix/releases/0.0.9/lib/python3.13/site-packages/querygpt").mkdir(parents=True)
    result = run(tmp_path, host, entries=("host_checks",), connect=True,
                 show={"active": "{{ _backend_active_dir }}", "url": "{{ _backend_url }}"})
    result.assert_ok()
    assert result.shown == {"active": f"{tmp_path}/prefix/releases/0.0.9", "url": "https://127.0.0.1:8000"}  # TLS only


LEAKABLE_KEY = listed({"backend_qdrant_api_key": "s3cr3t-visible-if-leaked", "backend_top_k": 0})[0]


def test_the_api_key_never_reaches_the_output(simple_runs):
    # the output is the whole batch's: no case shows this key
    result = simple(simple_runs, LEAKABLE_KEY)
    assert not result.ok
    assert "s3cr3t-visible-if-leaked" not in result.output


UNPINNED_RELEASE = listed({"backend_version": "{{ querygpt_release.version }}",
                           "backend_wheelhouse_archive": "{{ querygpt_release_dir }}/wheelhouse.tar.gz"})[0]


def test_a_release_the_wiring_cannot_compute_is_named(simple_runs):
    # group_vars/all/release.yml reads the release from the environment's pins
    result = simple(simple_runs, UNPINNED_RELEASE)
    result.assert_refused("backend_version: cannot be computed", "backend_wheelhouse_archive: cannot be computed")
    assert not result.failures
