"""Run PDF text extraction in a child process with memory and CPU limits.

pypdf runs in the server's address space otherwise: one hostile PDF (a small
file whose streams inflate to gigabytes, or whose objects nest without end)
would then cost the whole backend its memory. The child sets RLIMIT_AS and
RLIMIT_CPU on itself before it reads the PDF, and the parent kills it after a
wall-clock timeout, so whatever the input the worst case is one child killed
and a 422 for the upload; the server's own memory holds only the PDF and the
bounded text that comes back.

Protocol: the PDF on stdin, the limits as JSON in argv[1]; one JSON object on
stdout, either ``{"pages": [[number, text], ...]}`` or
``{"rejected": {"reason", "detail", "status_code"}}``, with the child's own peak
RSS (``peak_rss_kib``). A child that dies without answering was stopped by a limit
(422), unless its exit says otherwise (a bug: 500).

The parent blocks until the child ends; callers are sync FastAPI handlers, which
run in the threadpool, off the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from .config import Settings
from .errors import QueryGPTError, UploadRejected
from .pdf import PageText, PdfLimits, check_header

log = logging.getLogger(__name__)

#: What the child may print to stderr (pypdf warns per broken object); the rest is dropped.
_STDERR_KEEP = 4096
#: The parent waits this much longer than the CPU limit (interpreter start, a busy host).
_WALL_SLACK_SECONDS = 10.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class WorkerLimits:
    """Resources of the extraction child (QUERYGPT_PDF_MEMORY_BYTES, _CPU_SECONDS)."""

    memory_bytes: int = 512 * 1024 * 1024
    cpu_seconds: int = 30

    @property
    def wall_seconds(self) -> float:
        return self.cpu_seconds * 2 + _WALL_SLACK_SECONDS


@dataclass(frozen=True)
class WorkerRun:
    """What one extraction cost: the child's peak RSS (KiB) and wall time."""

    pages: list[PageText] | None
    rejected: UploadRejected | None
    peak_rss_kib: int
    seconds: float


def pdf_limits(settings: Settings) -> PdfLimits:
    return PdfLimits(
        max_pages=settings.pdf_max_pages,
        max_chars=settings.pdf_max_chars,
        max_chunks=settings.pdf_max_chunks,
        max_stream_bytes=settings.pdf_max_stream_bytes,
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        chunk_unit=settings.chunk_unit,
    )


def worker_limits(settings: Settings) -> WorkerLimits:
    return WorkerLimits(memory_bytes=settings.pdf_memory_bytes, cpu_seconds=settings.pdf_cpu_seconds)


def extract_pages_isolated(data: bytes, settings: Settings) -> list[PageText]:
    """``pdf.extract_pages`` in a resource-limited child; raises UploadRejected."""
    run = run_worker(data, pdf_limits(settings), worker_limits(settings))
    if run.rejected is not None:
        raise run.rejected
    assert run.pages is not None
    return run.pages


def run_worker(data: bytes, limits: PdfLimits, resources: WorkerLimits) -> WorkerRun:
    """Run one extraction and report its cost (benchmarks/upload_bounds.py uses this)."""
    check_header(data)  # cheap refusals without starting a process
    argv = [
        sys.executable,
        "-s",
        "-m",
        "querygpt.pdf_worker",
        json.dumps({"pdf": asdict(limits), "worker": asdict(resources)}),
    ]
    # A clean environment: the child parses untrusted input and needs none of the
    # server's settings (S3 keys, API keys).
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "PYTHONPATH": _PACKAGE_ROOT}
    started = time.monotonic()
    # The child's answer is at most the bounded text, JSON-escaped (6 bytes a character).
    max_out = limits.max_chars * 6 + 65536
    returncode, timed_out, out, err, sampled = _spawn(
        argv, env, data, resources.wall_seconds, max_out
    )
    seconds = time.monotonic() - started
    rejected: UploadRejected | None = None
    pages: list[PageText] | None = None
    result = _parse(out) if returncode == 0 and not timed_out else None
    # The child's own VmHWM at its end is exact; the sampled one misses at most the last
    # 20 ms of a child that was killed (and is bounded by RLIMIT_AS then anyway).
    peak = max(sampled, int((result or {}).get("peak_rss_kib", 0)))
    if result is not None and "pages" in result:
        pages = [PageText(number=int(n), text=str(t)) for n, t in result["pages"]]
    elif result is not None and "rejected" in result:
        r = result["rejected"]
        rejected = UploadRejected(r["reason"], r["detail"], status_code=int(r["status_code"]))
    else:
        rejected = _killed(returncode, timed_out, err, resources)
    return WorkerRun(pages, rejected, peak, seconds)


def _parse(out: bytes) -> dict | None:  # type: ignore[type-arg]
    try:
        value = json.loads(out)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _killed(
    returncode: int | None, timed_out: bool, err: bytes, resources: WorkerLimits
) -> UploadRejected:
    """The child did not answer: it hit a limit, or (a bug) crashed otherwise."""
    tail = err[-_STDERR_KEEP:].decode("utf-8", "replace")
    cpu_signals = (-signal.SIGXCPU, -signal.SIGKILL)
    if timed_out or returncode in cpu_signals:
        log.warning(
            "pdf extraction stopped by the time limit",
            extra={"returncode": returncode, "timed_out": timed_out, "stderr": tail[-500:]},
        )
        return UploadRejected(
            "extract_time",
            f"The PDF needs more time than allowed to extract ({resources.cpu_seconds} s of "
            "CPU); split it into smaller documents or re-export it (print to PDF), "
            "or raise QUERYGPT_PDF_CPU_SECONDS.",
            status_code=422,
        )
    if returncode == _EXIT_MEMORY or (returncode is not None and returncode < 0):
        # RLIMIT_AS makes allocations fail: a MemoryError (exit code below), or a
        # native abort/segfault inside a library that did not expect it.
        log.warning(
            "pdf extraction stopped by the memory limit",
            extra={"returncode": returncode, "stderr": tail[-500:]},
        )
        return UploadRejected(
            "extract_memory",
            "The PDF needs more memory than allowed to extract "
            f"({resources.memory_bytes // (1024 * 1024)} MiB); split it into smaller "
            "documents or re-export it (print to PDF), or raise QUERYGPT_PDF_MEMORY_BYTES.",
            status_code=422,
        )
    log.error(
        "pdf extraction worker failed", extra={"returncode": returncode, "stderr": tail[-2000:]}
    )
    raise QueryGPTError(
        "The PDF text extractor failed on the server; the operators were told (see the log).",
        status_code=500,
    )


def _spawn(
    argv: list[str], env: dict[str, str], data: bytes, wall_seconds: float, max_out: int
) -> tuple[int, bool, bytes, bytes, int]:
    """Run the child; return (exit code, timed out, stdout, stderr, peak RSS in KiB).

    A timer kills the child at the wall-clock limit; waitid(WNOWAIT) first waits
    without reaping, so the timer can never signal a pid that was reaped and reused
    meanwhile. Peak RSS is the child's VmHWM, sampled from /proc while it runs (the
    rusage of wait4 cannot be used: after vfork+exec it counts the parent's RSS).
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        close_fds=True,
    )
    lock = threading.Lock()
    exited = False
    timed_out = False
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _vm_hwm_kib(proc.pid))

    def kill() -> None:
        nonlocal timed_out
        with lock:
            if not exited:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)

    buffers: dict[str, bytes] = {"out": b"", "err": b""}

    def feed() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except (BrokenPipeError, OSError):  # the child died before reading it all
            pass

    def drain(name: str, stream: IO[bytes], keep: int) -> None:
        chunks: list[bytes] = []
        kept = 0
        for block in iter(lambda: stream.read(65536), b""):
            if kept < keep:  # past it, the answer is truncated and will not parse
                chunks.append(block)
                kept += len(block)
        stream.close()
        buffers[name] = b"".join(chunks)

    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=feed, daemon=True),
        threading.Thread(target=drain, args=("out", proc.stdout, max_out), daemon=True),
        threading.Thread(target=drain, args=("err", proc.stderr, _STDERR_KEEP), daemon=True),
        threading.Thread(target=sample, daemon=True),
    ]
    timer = threading.Timer(wall_seconds, kill)
    timer.daemon = True
    for thread in threads:
        thread.start()
    timer.start()
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    finally:
        with lock:
            exited = True
        timer.cancel()
        done.set()
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for thread in threads:
        # The pipes close when the child exits (it starts no processes of its own);
        # the timeout only keeps a surprise from hanging the request.
        thread.join(timeout=5)
    return proc.returncode, timed_out, buffers["out"], buffers["err"], peak


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak RSS so far (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --- the child ------------------------------------------------------------

_EXIT_MEMORY = 3


class _LimitedStderr:
    """Keep the first few KiB of stderr: pypdf can warn once per broken object."""

    def __init__(self, stream: object, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def write(self, text: str) -> int:
        if self._left > 0:
            piece = text[: self._left]
            self._left -= len(piece)
            self._stream.write(piece)  # type: ignore[attr-defined]
        return len(text)

    def flush(self) -> None:
        self._stream.flush()  # type: ignore[attr-defined]


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # SIGXCPU at the soft limit, SIGKILL one second later if it is caught or ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str] | None = None) -> int:
    args = json.loads((argv or sys.argv[1:])[0])
    sys.stderr = _LimitedStderr(sys.stderr, _STDERR_KEEP)  # type: ignore[assignment]
    worker = WorkerLimits(**args["worker"])
    _limit_self(worker.memory_bytes, worker.cpu_seconds)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    import warnings

    warnings.simplefilter("ignore")
    try:
        from .pdf import extract_pages

        data = sys.stdin.buffer.read()
        try:
            pages = extract_pages(data, PdfLimits(**args["pdf"]))
            answer: dict[str, object] = {"pages": [[p.number, p.text] for p in pages]}
        except UploadRejected as exc:
            answer = {
                "rejected": {
                    "reason": exc.reason,
                    "detail": exc.detail,
                    "status_code": exc.status_code,
                }
            }
        answer["peak_rss_kib"] = _vm_hwm_kib(os.getpid())
        encoded = json.dumps(answer, ensure_ascii=False).encode("utf-8")
    except MemoryError:
        os._exit(_EXIT_MEMORY)
    sys.stdout.buffer.write(encoded)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
