"""checkov passes on terraform/, and every exception is a justified, used skip comment.

checkov lives in its own virtualenv (.venv-checkov) because it pins an old boto3 and
installs bc-python-hcl2 over python-hcl2's `hcl2` module. It runs with --skip-download
so it never calls its vendor's API.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from terraform_helpers import REPO, TERRAFORM, tf_files

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
HOW_TO_CREATE = "python3 -m venv .venv-checkov && " ".venv-checkov/bin/pip install -r requirements/checkov.txt"
# A skip comment: the check id, then a reason a reviewer can judge (not "false positive").
SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<id>[^:\s]*)(?::(?P<reason>.*))?$")
CHECK_ID = re.compile(r"CKV2?_AWS_\d+")
MIN_REASON_LENGTH = 30


def skip_comments() -> list[tuple[str, int, str, str]]:
    """(file, line, check id, reason) of every checkov skip comment under terraform/."""
    found = []
    for path in tf_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = SKIP_COMMENT.search(line)
            if match:
                found.append(
                    (path.relative_to(TERRAFORM).as_posix(), number, match["id"], (match["reason"] or "").strip())
                )
    return found


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    if not CHECKOV.exists():
        pytest.fail(
            f"{CHECKOV} is missing, so the Terraform layer is unchecked. Create it with:\n"
            f"    {HOW_TO_CREATE}\n"
            "(its own virtualenv: checkov pins an old boto3 and replaces python-hcl2's hcl2 module)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_"))}
    env["LOG_LEVEL"] = "WARNING"
    done = subprocess.run(
        [str(CHECKOV), "-d", "terraform", "--skip-download", "--framework", "terraform", "-o", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report["_returncode"] = done.returncode
    return report


def test_checkov_passes(checkov_report: dict) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
        for c in checkov_report["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0, summary
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert checkov_report["_returncode"] == 0
    assert summary["passed"] > 100, f"checkov checked suspiciously little: {summary}"


def test_every_skip_comment_names_a_check_and_gives_a_reason() -> None:
    comments = skip_comments()
    assert comments, "no skip comments found: has the comment syntax changed?"
    for fname, line, check_id, reason in comments:
        where = f"terraform/{fname}:{line}"
        assert CHECK_ID.fullmatch(check_id), f"{where}: {check_id!r} is not a CKV_AWS_/CKV2_AWS_ check id"
        assert len(reason) >= MIN_REASON_LENGTH, (
            f"{where}: skip of {check_id} needs a reason of at least {MIN_REASON_LENGTH} characters "
            "(#checkov:skip=CKV_...:why this is safe)"
        )


def test_every_skip_is_a_used_comment_and_nothing_else(checkov_report: dict) -> None:
    """Skipped checks come only from comments (no --skip-check, no config file), each
    comment suppresses a real finding (no stale skips), and checkov saw each reason."""
    for name in (".checkov.yml", ".checkov.yaml"):
        assert not (REPO / name).exists() and not (TERRAFORM / name).exists(), f"a {name} would skip checks unseen"

    skipped = checkov_report["results"]["skipped_checks"]
    by_file: dict[str, set[str]] = defaultdict(set)
    for check in skipped:
        assert check["check_result"].get(
            "suppress_comment"
        ), f"{check['check_id']} {check['resource']} skipped without a reason"
        by_file[Path(check["file_path"]).as_posix().lstrip("/")].add(check["check_id"])

    by_comment: dict[str, set[str]] = defaultdict(set)
    for fname, _, check_id, _ in skip_comments():
        by_comment[fname].add(check_id)

    assert dict(by_file) == dict(by_comment), (
        "skip comments and checkov's skipped checks differ (a stale comment, or a skip from elsewhere): "
        f"comments={dict(by_comment)} checkov={dict(by_file)}"
    )
