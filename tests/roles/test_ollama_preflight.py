"""Bad input to the ollama role fails before anything on a host changes, naming the variable.

Each case runs ansible-playbook against localhost with the role's preflight (and, for the
archive checks, its controller download) steps; the download cache is a temporary
directory and the release is the lab stand-in packaged by lab/standins/ollama/package.py,
served through ollama_download_base_url: file://... exactly as the role uses a mirror.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = ROOT / ".venv" / "bin" / "ansible-playbook"
PACKAGE = ROOT / "lab" / "standins" / "ollama" / "package.py"
VERSION = "0.20.0"
ZST = "ollama-linux-amd64.tar.zst"


def run_role(tmp_path: Path, variables: dict, entry: str = "preflight", check: bool = False) -> subprocess.CompletedProcess:
    """Run the role against localhost: entry "preflight", "download" (preflight + download) or "main"."""
    base = {
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "ollama_bind_address": "127.0.0.1",
        "ollama_download_cache_dir": str(tmp_path / "cache"),
        "ollama_download_base_url": f"file://{tmp_path}/dist",
        "ollama_models": [{"name": "all-minilm:latest"}],
    }
    if entry == "main":
        tasks = [{"name": "Role", "ansible.builtin.include_role": {"name": "ollama"}}]
    else:
        steps = ["preflight"] + (["download"] if entry == "download" else [])
        tasks = [
            {"name": step, "ansible.builtin.include_role": {"name": "ollama", "tasks_from": step}} for step in steps
        ]
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": True,
             "vars": {**base, **variables}, "tasks": tasks}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1",
               ANSIBLE_CACHE_PLUGIN="memory")
    cmd = [str(PLAYBOOK_BIN), "-i", "localhost,", str(path)] + (["--check"] if check else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def package(tmp_path: Path, version: str = VERSION, fmt: str = "zst") -> str:
    out = tmp_path / "dist" / f"v{version}"
    proc = subprocess.run(
        [sys.executable, str(PACKAGE), "--version", version, "--out", str(out), "--format", fmt],
        check=True, capture_output=True, text=True,
    )
    return proc.stdout.strip()


def assert_fails_naming(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in output:\n{output[-3000:]}"


@pytest.mark.parametrize(
    ("variables", "fragments"),
    [
        ({"ollama_models": [{"name": "all minilm"}]}, ["ollama_models", "'all minilm' is not a model name"]),
        ({"ollama_models": [{"name": "qwen2.5-coder:1.5b:q4"}]}, ["ollama_models", "qwen2.5-coder:1.5b:q4"]),
        ({"ollama_models": [{"name": "all-minilm", "digest": "sha256:abc"}]},
         ["ollama_models", "digest 'sha256:abc' of 'all-minilm' is not a sha256"]),
        ({"ollama_models": [{"name": "all-minilm"}, {"name": "All-MiniLM:latest"}]},
         ["ollama_models", "declared more than once", "all-minilm:latest"]),
        ({"ollama_port": 70000}, ["ollama_port", "70000"]),
        ({"ollama_bind_address": "0.0.0.0"}, ["ollama_bind_address", "never listens on every interface"]),
        ({"ollama_checksum": "md5:1234"}, ["ollama_checksum", "is not a sha256"]),
        ({"ollama_version": "latest"}, ["ollama_version", "'latest' is not a release number"]),
        ({"ollama_keep_alive": "five minutes"}, ["ollama_keep_alive", "five minutes"]),
        ({"ollama_environment_extra": {"OLLAMA_HOST": "0.0.0.0"}}, ["ollama_environment_extra", "OLLAMA_HOST"]),
        ({"ollama_install_nvidia_driver": True}, ["ollama_install_nvidia_driver", "ollama_gpu"]),
    ],
    ids=["space-in-name", "two-tags", "bad-digest", "duplicate", "port", "any-address", "checksum-format",
         "version", "keep-alive", "managed-env", "driver-without-gpu"],
)
def test_preflight_rejects_bad_input(tmp_path: Path, variables: dict, fragments: list[str]) -> None:
    assert_fails_naming(run_role(tmp_path, variables), *fragments)


def test_good_input_passes_preflight(tmp_path: Path) -> None:
    # the counterpart of the cases above: the same run with sane values succeeds
    proc = run_role(tmp_path, {"ollama_models": [{"name": "all-minilm"}, {"name": "library/qwen2.5-coder:1.5b",
                                                  "digest": "sha256:" + "a" * 64}]})
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_whole_role_stops_at_argument_specs_before_any_change(tmp_path: Path) -> None:
    # The role's main entry point, in check mode as a safety net: the argument specs reject a
    # non-integer port before the first task, so nothing is downloaded or installed.
    proc = run_role(tmp_path, {"ollama_port": "eleven"}, entry="main", check=True)
    assert_fails_naming(proc, "ollama_port")
    assert "TASK [ollama : Install" not in proc.stdout
    assert not (tmp_path / "cache").exists()


def test_whole_role_stops_in_preflight_before_download_or_install(tmp_path: Path) -> None:
    proc = run_role(tmp_path, {"ollama_models": [{"name": "bad name"}]}, entry="main", check=True)
    assert_fails_naming(proc, "ollama_models", "'bad name' is not a model name")
    assert "TASK [ollama : Create the controller download cache" not in proc.stdout
    assert "TASK [ollama : Install" not in proc.stdout
    assert not (tmp_path / "cache").exists()


def test_download_verifies_against_sha256sum_txt(tmp_path: Path) -> None:
    digest = package(tmp_path)
    proc = run_role(tmp_path, {}, entry="download")
    assert proc.returncode == 0, proc.stdout[-3000:]
    cached = tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_download_picks_tgz_before_0_14(tmp_path: Path) -> None:
    digest = package(tmp_path, version="0.13.5", fmt="tgz")
    proc = run_role(tmp_path, {"ollama_version": "0.13.5"}, entry="download")
    assert proc.returncode == 0, proc.stdout[-3000:]
    cached = tmp_path / "cache" / "ollama-v0.13.5-ollama-linux-amd64.tgz"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_pinned_checksum_mismatch_fails_naming_ollama_checksum(tmp_path: Path) -> None:
    package(tmp_path)
    proc = run_role(tmp_path, {"ollama_checksum": "sha256:" + "0" * 64}, entry="download")
    assert_fails_naming(proc, "ollama_checksum", "checksum", ZST)
    assert not (tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}").exists()


def test_pinned_checksum_wins_over_sha256sum_txt(tmp_path: Path) -> None:
    digest = package(tmp_path)
    # A tampered sha256sum.txt is ignored when the operator pinned the archive's sum.
    (tmp_path / "dist" / f"v{VERSION}" / "sha256sum.txt").write_text(f"{'1' * 64}  ./{ZST}\n")
    proc = run_role(tmp_path, {"ollama_checksum": digest}, entry="download")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_archive_not_matching_sha256sum_txt_fails(tmp_path: Path) -> None:
    package(tmp_path)
    (tmp_path / "dist" / f"v{VERSION}" / "sha256sum.txt").write_text(f"{'1' * 64}  ./{ZST}\n")
    proc = run_role(tmp_path, {}, entry="download")
    assert_fails_naming(proc, "sha256sum.txt", "ollama_checksum", "1" * 64)
    assert not (tmp_path / "cache" / f"ollama-v{VERSION}-{ZST}").exists()


def test_sha256sum_txt_without_the_archive_fails_naming_ollama_checksum(tmp_path: Path) -> None:
    package(tmp_path)
    (tmp_path / "dist" / f"v{VERSION}" / "sha256sum.txt").write_text(f"{'1' * 64}  ./ollama-darwin.tgz\n")
    proc = run_role(tmp_path, {}, entry="download")
    assert_fails_naming(proc, "ollama_checksum", f"has no line for {ZST}")
