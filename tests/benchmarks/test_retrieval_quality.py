"""The retrieval benchmark's arithmetic and data (benchmarks/retrieval_quality.py).

The benchmark's figures tune the backend's defaults (docs/retrieval.md), so its scoring is
checked here on hand-made sources whose recall is known, and its data on the rules the
figures rely on: every labelled table exists in the question's document.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import retrieval_quality as rq  # noqa: E402
from querygpt.pdf import PageText  # noqa: E402  (the benchmark puts app/backend/src on sys.path)

Q = rq.Question("shop", "Which customer spent the most?", ("customers", "orders"))


def test_mentions_matches_whole_identifiers_only() -> None:
    assert rq.mentions("customer_id bigint REFERENCES orders(id),", "orders")
    assert rq.mentions("Table orders", "orders")
    assert not rq.mentions("CREATE TABLE order_items (", "orders")
    assert not rq.mentions("CREATE TABLE order_items (", "order")
    assert not rq.mentions("customer_orders", "orders")
    assert not rq.mentions("orders_archive", "orders")


def test_recall_at_k_counts_needed_tables_in_the_first_k_sources() -> None:
    sources = [
        rq.Source("shop", "CREATE TABLE orders ( customer_id bigint REFERENCES customers(id) )"),
        rq.Source("shop", "CREATE TABLE products ("),
    ]
    assert rq.recall_at_k(sources, Q, 1) == 1.0  # one chunk mentioning both tables is enough
    only_orders = [rq.Source("shop", "Table orders"), rq.Source("shop", "Table brands"),
                   rq.Source("shop", "Table customers")]
    assert rq.recall_at_k(only_orders, Q, 1) == 0.5
    assert rq.recall_at_k(only_orders, Q, 2) == 0.5
    assert rq.recall_at_k(only_orders, Q, 3) == 1.0
    assert not rq.all_at_k(only_orders, Q, 2)
    assert rq.all_at_k(only_orders, Q, 3)
    assert rq.recall_at_k([], Q, 5) == 0.0


def test_a_chunk_of_another_document_is_not_relevant() -> None:
    """hr and healthcare both have `departments`: only the question's document counts."""
    sources = [rq.Source("other", "Table customers and orders"), rq.Source("shop", "Table orders")]
    assert rq.recall_at_k(sources, Q, 2) == 0.5


def test_top_k_is_exact_cosine_best_first_with_stable_ties() -> None:
    matrix = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]])
    assert rq.top_k(matrix, np.array([0.0, 1.0]), 3) == [1, 2, 3]
    assert rq.top_k(matrix, np.array([1.0, 0.0]), 2) == [0, 2]
    assert rq.top_k(matrix, np.array([1.0, 0.0]), 10) == [0, 2, 3, 1]


def test_mean() -> None:
    assert rq.mean([0.5, 1.0, 0.0]) == 0.5
    assert rq.mean([]) == 0.0


@pytest.mark.parametrize(("column", "table"), [
    ("customer_id", "customers"), ("manager_employee_id", "employees"), ("category_id", "categories"),
    ("user_key", "dim_users"), ("product_review_id", "product_reviews"), ("email", None), ("tracking_id", None),
    ("person_id", "people"), ("quiz_id", "quizzes"), ("branch_id", "branches"), ("beneficiary_id", "beneficiaries"),
])
def test_references_resolve_foreign_keys(column: str, table: str | None) -> None:
    tables = ["customers", "employees", "categories", "dim_users", "product_reviews", "products", "people", "quizzes",
              "branches", "beneficiaries"]
    assert rq.references(column, tables) == table


class FakeEmbedder:
    """Unit vectors by keyword, so the ranking and therefore the recall are known."""

    AXES = ("customer", "order", "weather")

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = []
        for text in texts:
            v = np.array([float(axis in text.lower()) for axis in self.AXES]) + 1e-3
            vectors.append(list(v / np.linalg.norm(v)))
        return vectors


def test_evaluate_averages_recall_over_questions() -> None:
    pages = {"shop": [PageText(1, "Table customers holds every customer."),
                      PageText(2, "Table orders holds every order."),
                      PageText(3, "Table forecasts holds the weather.")]}
    questions = [rq.Question("shop", "customer", ("customers",)),
                 rq.Question("shop", "weather by order", ("forecasts", "orders")),
                 rq.Question("shop", "weather", ("customers",))]
    result = rq.evaluate(pages, questions, FakeEmbedder(), 800, 120, "chars", (1, 2, 3))
    assert result.chunks == 3
    # k=1: q1 finds customers (1), q2 finds orders or forecasts (0.5), q3 finds forecasts (0).
    assert result.recall[1] == pytest.approx((1 + 0.5 + 0) / 3)
    assert result.all_tables[1] == pytest.approx(1 / 3)
    # k=2: q2 has both; q3's second source is a tie (customers, orders) broken by position.
    assert result.recall[2] == pytest.approx(1.0)
    assert result.recall[3] == pytest.approx(1.0)


def test_the_data_is_as_the_docs_say() -> None:
    documents = {d.name: d for d in map(rq.parse_schema, sorted((rq.DATA / "schemas").glob("*.txt")))}
    questions = rq.load_questions(rq.DATA / "questions.tsv", documents)  # refuses unknown tables
    assert len(documents) == 11
    assert sum(len(d.tables) for d in documents.values()) >= 400
    assert len(questions) >= 130
    assert {q.document for q in questions} == set(documents)
    per_document = {name: sum(q.document == name for q in questions) for name in documents}
    assert all(10 <= n <= 13 for n in per_document.values()), per_document
    assert len({q.text for q in questions}) == len(questions)
    for doc in documents.values():
        names = [t.name for t in doc.tables]
        assert len(names) == len(set(names)), doc.name
        assert all(t.comment and t.columns for t in doc.tables), doc.name


def test_bad_schema_lines_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("# Title\ncustomers | no columns here\n")
    with pytest.raises(SystemExit, match=r"bad.txt:2: expected `name \| comment \| columns`"):
        rq.parse_schema(bad)


def test_documents_survive_the_pdf_round_trip() -> None:
    """What the backend reads back from the rendered PDF still names every table."""
    from querygpt.pdf import extract_pages

    doc = rq.parse_schema(rq.DATA / "schemas" / "hr.txt")
    text = "\n".join(p.text for p in extract_pages(rq.render_pdf(rq.render_lines(doc), doc.title)))
    for table in doc.tables:
        assert f"CREATE TABLE {table.name} (" in text


def test_the_tuned_defaults_are_the_documented_and_deployed_ones() -> None:
    """docs/retrieval.md's decision, the app's defaults and the role's default agree."""
    import re

    import yaml
    from querygpt.config import DEFAULTS, Settings

    settings = Settings()
    assert (str(settings.chunk_size), str(settings.chunk_overlap), str(settings.top_k)) == (
        DEFAULTS["QUERYGPT_CHUNK_SIZE"], DEFAULTS["QUERYGPT_CHUNK_OVERLAP"], DEFAULTS["QUERYGPT_TOP_K"])
    role = yaml.safe_load((ROOT / "roles" / "backend" / "defaults" / "main.yml").read_text())
    assert role["backend_top_k"] == settings.top_k
    decision = (ROOT / "docs" / "retrieval.md").read_text().split("## Decision", 1)[1]
    assert re.search(rf"`top_k` \d+ -> {settings.top_k}\b", decision)
    assert re.search(rf"`chunk_size` \d+ -> {settings.chunk_size}\b", decision)
    assert re.search(rf"`chunk_overlap` \d+ -> {settings.chunk_overlap}\b", decision)
