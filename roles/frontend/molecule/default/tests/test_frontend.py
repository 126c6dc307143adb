"""Verify the frontend role on the instance after converge and side_effect.

side_effect.yml deployed A (the real build of app/frontend), B (0.2.0) and C (0.3.0) with
frontend_keep_releases 2, rolled back to B, and had two broken archives and a rollback to the
pruned A refused; /var/tmp/molecule-frontend.json holds the release names it saw.
"""

import json
import re

import pytest

testinfra_hosts = ["edge"]

PREFIX = "/opt/querygpt/frontend"
RELEASE_NAME = re.compile(r"^(?P<version>[0-9A-Za-z._+]+)-(?P<hash>[0-9a-f]{12})$")


@pytest.fixture(scope="module")
def record(host):
    return json.loads(host.file("/var/tmp/molecule-frontend.json").content_string)


@pytest.fixture(scope="module")
def releases(host):
    return set(host.check_output(f"ls {PREFIX}/releases").split())


def test_release_names_are_version_and_hash(record):
    names = {key: RELEASE_NAME.match(record[key]) for key in ("a", "b", "c")}
    assert all(names.values()), record
    assert names["a"]["version"] == "0.1.0"  # app/frontend/package.json
    assert names["b"]["version"] == "0.2.0" and names["c"]["version"] == "0.3.0"
    # B and C come from the same archive, A was built from the sources: another hash kind
    assert names["b"]["hash"] == names["c"]["hash"]


def test_current_points_at_the_rolled_back_release(host, record):
    assert record["rollback"] == record["b"]
    current = host.file(f"{PREFIX}/current")
    assert current.is_symlink and current.linked_to == f"{PREFIX}/releases/{record['b']}"
    assert not host.file(f"{PREFIX}/.current.tmp").exists


def test_the_asset_pool_holds_exactly_the_kept_releases_assets(host, record):
    """nginx serves /assets/ from the pool when current lacks a file: every kept release's
    assets are there, with their content, and nothing else. (A pool file may be a link to a
    pruned release's file of the same hashed name and content: A was built from the same
    sources as B and C's archive.)"""
    def files(where):
        out = host.check_output(f"cd {where} && find . -type f -exec sha256sum {{}} +")
        return {name.removeprefix("./"): digest for digest, name in (line.split() for line in out.splitlines())}

    pool = files(f"{PREFIX}/pool/assets")
    kept = {}
    for key in ("b", "c"):
        kept.update(files(f"{PREFIX}/releases/{record[key]}/assets"))
    assert pool == kept and pool


def test_pruning_kept_two_releases(record, releases):
    assert releases == {record["b"], record["c"]}  # A, the oldest, was pruned


def test_refused_archives_never_became_releases(host, releases):
    hidden = set(host.check_output(f"ls -A {PREFIX}/releases").split()) - releases
    assert all(name.startswith(".") and name.endswith(".tmp") for name in hidden), hidden
    assert not any(name.startswith(("0.4.0", "0.5.0")) for name in releases)


def test_index_html_references_assets_that_exist(host):
    index = host.file(f"{PREFIX}/current/index.html")
    assert index.is_file
    html = index.content_string
    assert '<div id="root"></div>' in html and "/src/main.jsx" not in html  # built, not the source
    assets = re.findall(r'(?:src|href)="/(assets/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        assert re.search(r"-[A-Za-z0-9_-]{8}\.(js|css)$", asset), asset  # content-hashed name
        assert host.file(f"{PREFIX}/current/{asset}").is_file, asset


def test_files_are_root_owned_and_readable_by_www_data(host, releases):
    for release in releases:
        bad = host.check_output(
            f"find {PREFIX}/releases/{release} \\( ! -user root -o ! -group root "
            "-o \\( -type d ! -perm 0755 \\) -o \\( -type f ! -perm 0644 \\) \\) -print"
        )
        assert bad == "", bad
    for path in (PREFIX, f"{PREFIX}/releases"):
        directory = host.file(path)
        assert directory.user == "root" and directory.mode == 0o755
    # the nginx worker's user reads through the link; it writes nothing
    assert host.run(f"runuser -u www-data -- cat {PREFIX}/current/index.html").rc == 0
    assert host.run(f"runuser -u www-data -- touch {PREFIX}/current/x").rc != 0


def test_no_build_tooling_on_the_host(host):
    assert not host.exists("node") and not host.exists("npm")
    assert not host.file(f"{PREFIX}/current/node_modules").exists
