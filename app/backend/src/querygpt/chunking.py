"""Split page texts into overlapping chunks for embedding.

Chunks never cross a page boundary so every source returned by ``/query``
can name the exact page. Overlap keeps a column definition that straddles a
cut visible in both neighbouring chunks. Size is counted in characters (best
for small embedding models with a fixed token window) or in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .pdf import PageText


@dataclass(frozen=True)
class Chunk:
    """A piece of text; ``index`` is its position within the whole document."""

    index: int
    page: int
    text: str


def chunk_pages(
    pages: Iterable[PageText], size: int, overlap: int, unit: str = "chars"
) -> list[Chunk]:
    """Chunk every page and number the chunks 0..n-1 across the document."""
    if size < 1:
        raise ValueError("size must be at least 1")
    if not 0 <= overlap < size:
        raise ValueError("overlap must be >= 0 and smaller than size")
    if unit not in ("chars", "words"):
        raise ValueError("unit must be 'chars' or 'words'")
    splitter = split_chars if unit == "chars" else split_words
    chunks: list[Chunk] = []
    for page in pages:
        for piece in splitter(page.text, size, overlap):
            chunks.append(Chunk(index=len(chunks), page=page.number, text=piece))
    return chunks


def count_chunks(text: str, size: int, overlap: int, unit: str = "chars") -> int:
    """How many chunks ``chunk_pages`` makes of one page's ``text``."""
    splitter = split_chars if unit == "chars" else split_words
    return sum(1 for _ in splitter(text, size, overlap))


def split_words(text: str, size: int, overlap: int) -> Iterator[str]:
    """Windows of ``size`` words, each starting ``size - overlap`` words later."""
    words = text.split()
    step = size - overlap
    for start in range(0, len(words), step):
        yield " ".join(words[start : start + size])
        if start + size >= len(words):
            return


def split_chars(text: str, size: int, overlap: int) -> Iterator[str]:
    """Windows of at most ``size`` characters, cut at whitespace when possible.

    A window is shortened to its last whitespace (if that keeps at least half
    of it) so words are not split; the next window starts ``overlap``
    characters before the cut, moved forward to a word start.
    """
    text = text.strip()
    length = len(text)
    start = 0
    min_step = max(1, (size - overlap) // 2)
    while start < length:
        end = min(start + size, length)
        if end < length and not text[end].isspace():
            cut = _last_space(text, start + size // 2, end)
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            yield piece
        if end >= length:
            return
        next_start = max(end - overlap, start + min_step)
        next_start = _word_start(text, next_start, end)
        start = next_start


def _last_space(text: str, low: int, high: int) -> int:
    for i in range(high - 1, low - 1, -1):
        if text[i].isspace():
            return i
    return -1


def _word_start(text: str, pos: int, limit: int) -> int:
    """Move ``pos`` forward to the start of a word, but not past ``limit``."""
    if pos == 0 or text[pos - 1].isspace():
        return pos
    i = pos
    while i < limit and not text[i].isspace():
        i += 1
    while i < limit and text[i].isspace():
        i += 1
    return i if i < limit else pos
