"""Hostile PDFs get a 4xx within bounded memory and time (issue 16, "Limits").

Each PDF is generated (tests/app/hostile_pdfs.py), uploaded through the FastAPI
app, and must be refused with its reason while:
- the extraction child's peak RSS stays under its memory cap (QUERYGPT_PDF_MEMORY_BYTES),
  read from the child's own rusage (pdf_worker.WorkerRun.peak_rss_kib);
- the server process's RSS does not grow by more than a fixed bound;
- nothing reaches the documents bucket or the embedding model.

Measured before this change: the 10-page bomb cost the backend 222 s of CPU and 2.3 GB.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import hostile_pdfs as hostile
import pytest
from querygpt import pdf_worker
from querygpt.config import Settings
from querygpt.pdf import PdfLimits, extract_pages
from querygpt.pdf_worker import WorkerLimits, WorkerRun, run_worker
from querygpt_testkit import DOCUMENTS_BUCKET, encrypt_pdf, make_pdf, metric_value, upload

#: The server may grow by this much while refusing a hostile upload (it holds the
#: upload itself, at most a few MiB here, plus allocator noise); before the subprocess
#: it grew by gigabytes.
PARENT_GROWTH_BOUND = 64 * 1024 * 1024


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[WorkerRun]:
    """Every extraction the app runs, with what the child cost."""
    seen: list[WorkerRun] = []

    def recording(*args: Any, **kwargs: Any) -> WorkerRun:
        run = run_worker(*args, **kwargs)
        seen.append(run)
        return run

    monkeypatch.setattr(pdf_worker, "run_worker", recording)
    return seen


HOSTILE = {
    # The measured bomb: 10 pages sharing one stream inflating to 70 MiB of text operators.
    "bomb": (hostile.pdf_bomb, 413, "parser_limit"),
    # One stream inflating to 2 GiB.
    "zip_bomb": (hostile.zip_bomb, 413, "parser_limit"),
    "nested_in_page": (lambda: hostile.nested_arrays_pdf(100_000, "page"), 422, "corrupt"),
    "nested_in_stream": (lambda: hostile.nested_arrays_pdf(100_000, "stream"), 422, "corrupt"),
    "too_many_pages": (lambda: hostile.many_pages_pdf(1001), 413, "too_many_pages"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pdf_is_refused_within_bounded_memory(
    name: str, make_client: Any, runs: list[WorkerRun], fake_ollama: Any, s3: Any
) -> None:
    build, status, reason = HOSTILE[name]
    client = make_client(pdf_max_pages=1000)
    data = build()
    rejected = metric_value(client, "querygpt_upload_rejected_total", reason=reason)
    assert len(data) < 8 * 1024 * 1024, "the fixture itself stays small"
    before = _rss()
    started = time.monotonic()
    response = upload(client, data, filename=f"{name}.pdf")
    elapsed = time.monotonic() - started
    grown = _rss() - before

    assert response.status_code == status, response.text
    assert metric_value(client, "querygpt_upload_rejected_total", reason=reason) == rejected + 1
    (run,) = runs
    assert run.rejected is not None and run.rejected.reason == reason
    cap = Settings().pdf_memory_bytes
    assert 0 < run.peak_rss_kib * 1024 < cap, f"child peak {run.peak_rss_kib} KiB"
    assert grown < PARENT_GROWTH_BOUND, f"the server grew by {grown} bytes"
    assert elapsed < 30
    assert fake_ollama.embed_calls == []
    assert "Contents" not in s3.list_objects_v2(Bucket=DOCUMENTS_BUCKET)


@pytest.mark.parametrize(
    ("overrides", "reason", "names"),
    [
        ({"pdf_max_pages": 1}, "too_many_pages", "QUERYGPT_PDF_MAX_PAGES"),
        ({"pdf_max_chars": 1000}, "too_much_text", "QUERYGPT_PDF_MAX_CHARS"),
        ({"pdf_max_chunks": 1}, "too_many_chunks", "QUERYGPT_PDF_MAX_CHUNKS"),
    ],
)
def test_each_count_bound_is_a_413_naming_its_setting(
    make_client: Any, overrides: dict[str, int], reason: str, names: str
) -> None:
    client = make_client(**overrides)
    rejected = metric_value(client, "querygpt_upload_rejected_total", reason=reason)
    pages = [[f"line {i} of page {p}: customers.id INTEGER" for i in range(40)] for p in range(3)]
    response = upload(client, make_pdf(pages))
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert names in detail and "split" in detail
    assert metric_value(client, "querygpt_upload_rejected_total", reason=reason) == rejected + 1


def test_text_bound_stops_on_the_first_page_past_it() -> None:
    """The count is made while pypdf extracts: a 1 MiB page of text stops at the bound,
    on page 1, without reading the other nine pages that share its stream."""
    data = hostile.shared_stream_pdf(10, 1024 * 1024)
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        extract_pages(data, PdfLimits(max_chars=100_000))
    assert getattr(info.value, "reason", None) == "too_much_text"
    assert "page 1" in info.value.detail  # type: ignore[attr-defined]
    assert time.monotonic() - started < 20


def test_memory_limit_kills_the_child_with_a_422() -> None:
    """With pypdf's stream limit raised out of the way, the 2 GiB stream meets the
    child's RLIMIT_AS: a 422 naming memory, and the child never got past its cap."""
    cap = 256 * 1024 * 1024
    run = run_worker(
        hostile.zip_bomb(),
        PdfLimits(max_stream_bytes=1024**3),
        WorkerLimits(memory_bytes=cap, cpu_seconds=30),
    )
    assert run.rejected is not None
    assert (run.rejected.reason, run.rejected.status_code) == ("extract_memory", 422)
    assert "more memory than allowed" in run.rejected.detail
    assert run.peak_rss_kib * 1024 <= cap


def test_cpu_limit_kills_the_child_with_a_422() -> None:
    """50 pages of matrix operators (no text, so no count bound applies) take seconds
    of CPU each time the shared stream is parsed: RLIMIT_CPU stops them."""
    data = hostile.shared_stream_pdf(50, 2 * 1024 * 1024, hostile.CM_OPS)
    started = time.monotonic()
    run = run_worker(data, PdfLimits(), WorkerLimits(cpu_seconds=1))
    assert run.rejected is not None
    assert (run.rejected.reason, run.rejected.status_code) == ("extract_time", 422)
    assert "more time than allowed" in run.rejected.detail
    assert time.monotonic() - started < 15


def test_wall_clock_timeout_kills_a_child_that_does_not_use_cpu() -> None:
    started = time.monotonic()
    code, timed_out, _, _, _ = pdf_worker._spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], {}, b"", 0.5, 1024
    )
    assert timed_out and code == -9
    assert time.monotonic() - started < 10


def test_a_crashing_worker_is_a_500_not_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exit that no limit explains is a server bug: it must not hide as a 4xx."""
    real_spawn = pdf_worker._spawn

    def broken(argv: list[str], *rest: Any) -> Any:
        return real_spawn([sys.executable, "-c", "raise SystemExit(1)"], *rest)

    monkeypatch.setattr(pdf_worker, "_spawn", broken)
    with pytest.raises(Exception) as info:
        run_worker(make_pdf(), PdfLimits(), WorkerLimits())
    assert getattr(info.value, "status_code", None) == 500


def test_child_gets_a_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child parses untrusted input; the server's secrets are not in its environment."""
    monkeypatch.setenv("QUERYGPT_S3_SECRET_ACCESS_KEY", "do-not-leak")
    seen: dict[str, Any] = {}
    real_spawn = pdf_worker._spawn

    def spy(argv: list[str], env: dict[str, str], *rest: Any) -> Any:
        seen["env"] = env
        return real_spawn(argv, env, *rest)

    monkeypatch.setattr(pdf_worker, "_spawn", spy)
    run = run_worker(make_pdf(), PdfLimits(), WorkerLimits())
    assert run.pages and "customers" in run.pages[0].text
    assert "QUERYGPT_S3_SECRET_ACCESS_KEY" not in seen["env"]


# --- encrypted PDFs -----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RC4-40", "RC4-128", "AES-128", "AES-256"])
def test_password_protected_pdf_is_a_422_saying_encrypted(
    client: Any, schema_pdf: bytes, algorithm: str
) -> None:
    rejected = metric_value(client, "querygpt_upload_rejected_total", reason="encrypted")
    response = upload(client, encrypt_pdf(schema_pdf, "user-secret", algorithm=algorithm))
    assert response.status_code == 422
    assert response.json()["detail"] == "The PDF is encrypted; upload a copy without a password."
    assert metric_value(client, "querygpt_upload_rejected_total", reason="encrypted") == rejected + 1


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_empty_user_password_pdf_is_indexed(
    client: Any, schema_pdf: bytes, algorithm: str
) -> None:
    """Owner-password-only PDFs (editing restricted, anyone may read) are read; AES
    needs the cryptography package, which the backend depends on for exactly this."""
    response = upload(client, encrypt_pdf(schema_pdf, "", algorithm=algorithm))
    assert response.status_code == 200, response.text
    assert response.json()["pages"] == 2


def test_cryptography_is_a_declared_dependency() -> None:
    """Without it pypdf cannot open AES PDFs (the wrong "damaged" answer of issue 16)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "app" / "backend" / "pyproject.toml").read_text()
    pins = (root / "requirements" / "app.txt").read_text()
    assert re.search(r'"cryptography>=[\d.]+,<\d+"', pyproject)
    pinned = re.search(r"^cryptography==([\d.]+)$", pins, re.MULTILINE)
    assert pinned
    found = subprocess.run(
        [sys.executable, "-c", "import cryptography; print(cryptography.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == pinned.group(1)
