"""benchmarks/upload_bounds.py runs, measures the extraction child, and fails over its cap."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import upload_bounds  # noqa: E402


def test_benchmark_reports_each_pdf_under_the_cap(capsys) -> None:
    assert upload_bounds.main(["--cases", "normal,bomb"]) == 0
    out = capsys.readouterr().out
    assert "cap on peak RSS: 512 MiB" in out
    assert "200: " in out and "413 parser_limit" in out
    assert "overhead of the child" in out
    assert "OK: every peak RSS is under" in out


def test_benchmark_exits_1_when_a_peak_is_over_the_cap(capsys) -> None:
    # A 1 MiB cap: no Python process fits, so the check itself is what is tested.
    assert upload_bounds.main(["--cases", "bomb", "--cap-mib", "1"]) == 1
    assert "FAIL: peak RSS over the 1 MiB cap for bomb" in capsys.readouterr().out
