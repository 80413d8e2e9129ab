"""The mappers and reducers of ``aiomr wordcount`` and ``aiomr ngram``.

They run in the workers, so they live apart from the command itself: a worker unpickling
one imports this small module, not the command line and everything it needs.
They are also `aiomr.cli`'s to import (``from aiomr.cli import words_of``).
"""

from __future__ import annotations

import string
from collections.abc import Iterator

__all__ = ["count_ngram_blocks", "merge_totals", "words_of"]

_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def words_of(line: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for each alphabetic word of a line, lower-cased."""
    for word in line.translate(_PUNCTUATION).lower().split():
        if word.isalpha():
            yield word, 1


def count_ngram_blocks(blocks: Iterator[bytes]) -> dict[bytes, int]:
    """Total match_count per word over 1-gram blocks (``word, year, match, volumes``)."""
    totals: dict[bytes, int] = {}
    get = totals.get
    for block in blocks:
        fields = block.replace(b"\n", b"\t").split(b"\t")
        for word, count in zip(fields[0::4], map(int, fields[2:-1:4]), strict=False):
            totals[word] = get(word, 0) + count
    return totals


def merge_totals(first: dict[bytes, int], second: dict[bytes, int]) -> dict[bytes, int]:
    """Add the totals of ``second`` into ``first``."""
    get = first.get
    for word, count in second.items():
        first[word] = get(word, 0) + count
    return first
