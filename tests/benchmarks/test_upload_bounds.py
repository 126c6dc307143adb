"""benchmarks/upload_bounds.py runs, measures the extraction child, and fails over its cap."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import upload_bounds  # noqa: E402


def test_benchmark_reports_each_pdf_under_the_cap(capsys) -> None:
    assert upload_bounds.main(["--cases", "normal,bomb"]) == 0
    out = capsys.readouterr().out
    # fixed caps, below the child's RLIMIT_AS (512 MiB), so the check can fail
    assert "cap on peak RSS: 256 MiB in the child, 64 MiB of growth in the server" in out
    assert "200: " in out and "413 parser_limit" in out
    assert "overhead of the child" in out
    assert "OK: every peak RSS is under" in out


def test_benchmark_exits_1_when_a_peak_is_over_the_cap(capsys) -> None:
    # A 1 MiB cap: no Python process fits, so the check itself is what is tested.
    assert upload_bounds.main(["--cases", "bomb", "--cap-mib", "1"]) == 1
    assert "FAIL: peak RSS over the 1 MiB cap (or the server's growth over 64 MiB) for bomb" in capsys.readouterr().out


def test_benchmark_exits_1_when_the_server_grows_over_its_cap(capsys, monkeypatch) -> None:
    # The server side measured for real: the same upload passes a 1 MiB cap on the server's
    # growth, and goes over it once it keeps 8 MiB alive in this process.
    assert upload_bounds.main(["--cases", "bomb", "--server-cap-mib", "1"]) == 0
    capsys.readouterr()
    real = upload_bounds.run_worker
    kept = []

    def hoarding(*args, **kwargs):
        # A fresh mapping, every page written: a bytearray may reuse heap pages an earlier
        # test in this process freed (glibc raises its mmap threshold after such frees), which
        # are resident already and so do not grow the peak.
        block = mmap.mmap(-1, 8 * 2**20)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        kept.append(block)
        return real(*args, **kwargs)

    monkeypatch.setattr(upload_bounds, "run_worker", hoarding)
    assert upload_bounds.main(["--cases", "bomb", "--server-cap-mib", "1"]) == 1
    out = capsys.readouterr().out
    assert "OVER THE CAP" in out and "FAIL" in out
