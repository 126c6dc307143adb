"""The chunker keeps page numbers, overlaps neighbours and always progresses."""

from __future__ import annotations

import random

import pytest
from querygpt.chunking import chunk_pages, split_chars, split_words
from querygpt.pdf import PageText


def _words(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = ["customers", "id", "INTEGER", "orders", "total", "NUMERIC(10,2)", "a", "FK", "x" * 30]
    return " ".join(rng.choice(vocab) for _ in range(n))


def test_short_page_is_one_chunk() -> None:
    chunks = chunk_pages([PageText(3, "customers.id INTEGER")], size=100, overlap=10)
    assert [(c.index, c.page, c.text) for c in chunks] == [(0, 3, "customers.id INTEGER")]


def test_chunks_never_cross_pages_and_are_numbered_across_document() -> None:
    pages = [PageText(1, _words(200, 1)), PageText(2, _words(200, 2))]
    chunks = chunk_pages(pages, size=200, overlap=40)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2}
    pages_in_order = [c.page for c in chunks]
    assert pages_in_order == sorted(pages_in_order)


@pytest.mark.parametrize(("size", "overlap"), [(50, 0), (80, 20), (200, 150), (37, 36), (1, 0)])
def test_char_chunks_respect_size_cover_text_and_overlap(size: int, overlap: int) -> None:
    text = _words(150, size)
    pieces = list(split_chars(text, size, overlap))
    assert pieces, "non-empty text gives chunks"
    assert all(0 < len(p) <= size for p in pieces)
    # Every word of the text appears in some chunk (nothing is dropped) ...
    joined = " ".join(pieces)
    for word in set(text.split()):
        if len(word) <= size:
            assert word in joined
    # ... and the chunks appear in text order.
    positions = [text.find(p[: min(len(p), 10)]) for p in pieces]
    assert all(pos >= 0 for pos in positions)


def test_char_chunks_overlap_and_cut_at_whitespace() -> None:
    text = " ".join(f"col_{i:03d}" for i in range(100))  # 7-char words
    pieces = list(split_chars(text, 80, 20))
    for left, right in zip(pieces, pieces[1:], strict=False):
        assert left.split()[-1] in right.split()[:3], "neighbours share words"
    assert all(p.split()[0].startswith("col_") and len(p.split()[0]) == 7 for p in pieces)


def test_word_chunks() -> None:
    text = " ".join(str(i) for i in range(10))
    assert list(split_words(text, 4, 1)) == ["0 1 2 3", "3 4 5 6", "6 7 8 9"]
    assert list(split_words(text, 20, 5)) == [text]
    chunks = chunk_pages([PageText(1, text)], size=4, overlap=0, unit="words")
    assert [c.text for c in chunks] == ["0 1 2 3", "4 5 6 7", "8 9"]


def test_very_long_word_is_split_hard() -> None:
    pieces = list(split_chars("x" * 250, 100, 10))
    assert all(len(p) <= 100 for p in pieces)
    assert sum(len(p) for p in pieces) >= 250


@pytest.mark.parametrize(
    ("size", "overlap", "unit"), [(0, 0, "chars"), (10, 10, "chars"), (10, 2, "tokens")]
)
def test_invalid_parameters(size: int, overlap: int, unit: str) -> None:
    with pytest.raises(ValueError):
        chunk_pages([PageText(1, "text")], size, overlap, unit)
