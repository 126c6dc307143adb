"""Bad input to the ollama role fails before anything on a host changes, naming the variable.

The preflight cases run through tests/roles/preflight_harness.py (as playbooks/preflight.yml
runs them: no facts, no connection, every problem collected). The archive cases run the
role's controller download against the lab stand-in packaged by lab/standins/ollama/package.py,
served through ollama_download_base_url: file://... exactly as the role uses a mirror: the
archive is verified against the operator's pin, ollama_checksum, and nothing else.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from preflight_harness import SHA, run_batch, run_role

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lab" / "standins" / "ollama" / "package.py"
VERSION = "0.20.0"
ZST = "ollama-linux-amd64.tar.zst"
PINNED = [{"name": "all-minilm:l6-v2", "digest": "sha256:" + SHA}, {"name": "qwen2.5-coder:1.5b", "digest": SHA}]


def preflight(tmp_path: Path, variables: dict, **kwargs):
    return run_role(tmp_path, "ollama", {"ollama_models": PINNED, **variables}, **kwargs)


def package(tmp_path: Path, version: str = VERSION, fmt: str = "zst") -> str:
    out = tmp_path / "dist" / f"v{version}"
    proc = subprocess.run(
        [sys.executable, str(PACKAGE), "--version", version, "--out", str(out), "--format", fmt],
        check=True, capture_output=True, text=True,
    )
    return proc.stdout.strip()


def download(tmp_path: Path, variables: dict):
    """The role's preflight, then its controller download, into a cache under tmp_path."""
    return preflight(tmp_path, {"ollama_download_cache_dir": str(tmp_path / "cache"),
                                "ollama_download_base_url": f"file://{tmp_path}/dist", **variables},
                     entries=("download",), connect=True)


BAD_INPUT = [
    ({"ollama_models": [{"name": "all minilm:v1", "digest": SHA}]},
     ['ollama_models: "all minilm:v1": not a model name']),
    ({"ollama_models": [{"name": "qwen2.5-coder:1.5b:q4", "digest": SHA}]},
     ['ollama_models: "qwen2.5-coder:1.5b:q4": not a model name']),
    ({"ollama_models": [{"name": "all-minilm:l6-v2", "digest": "sha256:abc"}]},
     ['ollama_models: "all-minilm:l6-v2": digest missing or not a sha256', "/api/tags"]),
    ({"ollama_models": [{"name": "all-minilm:l6-v2"}]},
     ['ollama_models: "all-minilm:l6-v2": digest missing']),
    ({"ollama_models": [{"name": "all-minilm", "digest": SHA}]},
     ['ollama_models: "all-minilm": no explicit tag, or :latest', "pin a tag"]),
    ({"ollama_models": [{"name": "library/all-minilm:Latest", "digest": SHA}]},
     ['ollama_models: "library/all-minilm:Latest": no explicit tag, or :latest']),
    ({"ollama_models": PINNED + [{"name": "All-MiniLM:l6-v2", "digest": SHA}]},
     ["ollama_models: declared more than once: all-minilm:l6-v2"]),
    ({"ollama_port": 70000}, ["ollama_port: expected a TCP port 1-65535, got 70000"]),
    ({"ollama_proxy_tls_certificate": ""}, ["ollama_proxy_tls_certificate: expected an absolute path", "over TLS only"]),
    ({"ollama_proxy_tls_key": "host.key"}, ['ollama_proxy_tls_key: expected an absolute path on the host', '"host.key"']),
    ({"ollama_proxy_tls_ca": ""}, ["ollama_proxy_tls_ca: expected an absolute path", "verifies the proxy's certificate"]),
    ({"ollama_proxy_tls_group": "Bad Group"}, ['ollama_proxy_tls_group: expected a group name or "", got "Bad Group"']),
    ({"ollama_bind_address": "0.0.0.0"}, ["ollama_bind_address:", "never listens on every interface"]),
    ({"ollama_checksum": ""}, ["ollama_checksum: is empty", "sha256sum.txt", "second download", "pins.yml"]),
    ({"ollama_checksum": "md5:1234"}, ["ollama_checksum: is not a sha256"]),
    ({"ollama_version": "latest"}, ['ollama_version: expected a release number like 0.20.0 (never latest), got "latest"']),
    ({"ollama_keep_alive": "five minutes"}, ["ollama_keep_alive:", "five minutes"]),
    ({"ollama_environment_extra": {"OLLAMA_HOST": "0.0.0.0"}}, ["ollama_environment_extra:", "OLLAMA_HOST"]),
    ({"ollama_install_nvidia_driver": True}, ["ollama_install_nvidia_driver: true needs ollama_gpu: true"]),
    ({"ollama_data_volume_id": "/dev/sdf"}, ["ollama_data_volume_id: got", "vol-0123456789abcdef0"]),
    ({"ollama_data_volume_id": "vol-0123456789abcdef0", "ollama_data_device": "/dev/xvdf"},
     ["ollama_data_device: is set together with ollama_data_volume_id"]),
    ({"ollama_bind_address": "127.0.0.1"}, ["ollama_bind_address:", "loopback address is where Ollama itself"]),
    ({"ollama_proxy_allowed_calls": ["POST /api/embed", "DELETE /api/delete"]},
     ['ollama_proxy_allowed_calls: expected a non-empty list of calls like "POST /api/embed"']),
    ({"ollama_proxy_allowed_calls": ["POST /api/embed", "POST /api/pull"]},
     ["ollama_proxy_allowed_calls: opens model management", "/api/pull"]),
    ({"ollama_proxy_allowed_calls": []}, ["ollama_proxy_allowed_calls: expected a non-empty list"]),
    ({"ollama_proxy_max_body_size": "0"}, ["ollama_proxy_max_body_size: expected an nginx size", '"0"']),
    ({"ollama_proxy_read_timeout": 0}, ["ollama_proxy_read_timeout: expected at least 1 second"]),
    ({"ollama_proxy_upstream_keepalive": "many"}, ["ollama_proxy_upstream_keepalive: expected at least 1"]),
]
BAD_INPUT_IDS = ["space-in-name", "two-tags", "bad-digest", "no-digest", "no-tag", "latest-tag", "duplicate",
                 "port", "tls-certificate", "tls-key", "tls-ca", "tls-group", "any-address", "no-checksum", "checksum-format", "version", "keep-alive", "managed-env",
                 "driver-without-gpu", "volume-id", "volume-id-and-device", "loopback-bind", "proxy-bad-call",
                 "proxy-management-call", "proxy-no-calls", "proxy-body-size", "proxy-read-timeout",
                 "proxy-keepalive"]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every bad case of the test below in one ansible-playbook run (a host per case)."""
    return run_batch(tmp_path_factory.mktemp("ollama-bad"),
                     {case: ("ollama", {"ollama_models": PINNED, **variables})
                      for case, (variables, _) in zip(BAD_INPUT_IDS, BAD_INPUT, strict=True)})


@pytest.mark.parametrize(("case", "fragments"), [(case, fragments) for case, (_, fragments)
                                                  in zip(BAD_INPUT_IDS, BAD_INPUT, strict=True)],
                         ids=BAD_INPUT_IDS)
def test_preflight_rejects_bad_input(bad_input_runs, case: str, fragments: list[str]) -> None:
    bad_input_runs[case].assert_refused(*fragments)


def test_good_input_passes_preflight(tmp_path: Path) -> None:
    # the counterpart of the cases above: pinned tags and digests, a volume id, a model to remove
    preflight(tmp_path, {"ollama_models": PINNED + [{"name": "nomic-embed-text", "state": "absent"}],
                         "ollama_data_volume_id": "vol-0123456789abcdef0"}).assert_ok()


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    result = preflight(tmp_path, {"ollama_checksum": "", "ollama_port": 0,
                                  "ollama_models": [{"name": "all-minilm"}, {"name": "qwen2.5-coder:1.5b"}]})
    result.assert_refused("ollama_checksum: is empty", "ollama_port: expected a TCP port",
                          'ollama_models: "all-minilm": no explicit tag',
                          'ollama_models: "all-minilm", "qwen2.5-coder:1.5b": digest missing')
    assert not result.failures


def test_whole_role_stops_in_preflight_before_download_or_install(tmp_path: Path) -> None:
    result = preflight(tmp_path, {"ollama_models": [{"name": "bad name"}],
                                  "ollama_download_cache_dir": str(tmp_path / "cache")},
                       entries=("main",), facts=True)
    result.assert_refused("ollama_models:")
    assert "Create the controller download cache" not in result.output
    assert "Install the packages Ollama needs" not in result.output
    assert not (tmp_path / "cache").exists()


def test_download_verifies_against_the_pin(tmp_path: Path) -> None:
    digest = package(tmp_path)
    download(tmp_path, {"ollama_checksum": digest}).assert_ok()
    cached = tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_download_picks_tgz_before_0_14(tmp_path: Path) -> None:
    digest = package(tmp_path, version="0.13.5", fmt="tgz")
    download(tmp_path, {"ollama_version": "0.13.5", "ollama_checksum": "sha256:" + digest.upper()}).assert_ok()
    cached = tmp_path / "cache" / "ollama-v0.13.5-ollama-linux-amd64.tgz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_pinned_checksum_mismatch_fails_naming_ollama_checksum(tmp_path: Path) -> None:
    package(tmp_path)
    result = download(tmp_path, {"ollama_checksum": "0" * 64})
    result.assert_refused("ollama_checksum", "checksum", ZST)
    assert not (tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}").exists()


def test_sha256sum_txt_is_never_read(tmp_path: Path) -> None:
    # Only the pin counts: a tampered sha256sum.txt beside the archive changes nothing, and a
    # release directory without one downloads the same.
    digest = package(tmp_path)
    release = tmp_path / "dist" / f"v{VERSION}"
    (release / "sha256sum.txt").write_text(f"{'1' * 64}  ./{ZST}\n")
    download(tmp_path, {"ollama_checksum": digest}).assert_ok()
    (release / "sha256sum.txt").unlink()
    (tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}").unlink()
    download(tmp_path, {"ollama_checksum": digest}).assert_ok()


def test_no_download_without_a_pin(tmp_path: Path) -> None:
    # a release that carries its own sha256sum.txt still needs the operator's pin
    package(tmp_path)
    result = download(tmp_path, {"ollama_checksum": ""})
    result.assert_refused("ollama_checksum: is empty")
    # even run on its own after the (here ignored) preflight, the download refuses an empty pin
    assert result.failures and not (tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}").exists()
