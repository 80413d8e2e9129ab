"""The mappers and reducers of ``aiomr wordcount`` and ``aiomr ngram``.

They run in the workers, so they live apart from the command itself: a worker unpickling
one imports this small module, not the command line and everything it needs.
They are also `aiomr.cli`'s to import (``from aiomr.cli import words_of``).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator

from .._exceptions import RecordError

__all__ = ["count_ngram_blocks", "merge_totals", "words_of"]

_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def words_of(line: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for each alphabetic word of a line, lower-cased."""
    for word in line.translate(_PUNCTUATION).lower().split():
        if word.isalpha():
            yield word, 1


_ALL_BUT_SEPARATORS = bytes(b for b in range(256) if b not in (9, 10))
_NGRAM_LINE = b"\t\t\t\n"


def count_ngram_blocks(blocks: Iterable[bytes]) -> dict[bytes, int]:
    """Total match_count per word over 1-gram blocks (``word, year, match, volumes``).

    Every line must have 4 tab-separated fields and an integer match_count, or the block is
    refused with `aiomr.RecordError` carrying the bad line's ``offset`` in the block (aiomr
    names its file and line). The shape is checked at C speed: the tabs and newlines of a
    block, all else deleted, must be ``"\t\t\t\n"`` once per line. Blocks from
    ``aiomr.sources.files(..., format="tsv", fields=4)`` were checked by the reader already
    (their iterator says ``tsv_fields == 4``), and are not checked twice.
    """
    totals: dict[bytes, int] = {}
    get = totals.get
    checked = getattr(blocks, "tsv_fields", None) == 4
    for block in blocks:
        if not checked:
            separators = block.translate(None, _ALL_BUT_SEPARATORS)
            if not block.endswith(b"\n"):
                separators += b"\n"
            if separators != _NGRAM_LINE * (len(separators) >> 2):
                raise _bad_ngram_line(block)
        fields = block.replace(b"\n", b"\t").split(b"\t")
        try:
            for word, count in zip(fields[0::4], map(int, fields[2::4]), strict=False):
                totals[word] = get(word, 0) + count
        except ValueError:  # a match_count that is not a number: the task fails anyway
            raise _bad_ngram_line(block) from None
    return totals


def _bad_ngram_line(block: bytes) -> RecordError:
    """The error for the first line of ``block`` that is not a 1-gram line."""
    position = 0
    body = block[:-1] if block.endswith(b"\n") else block
    for line in body.split(b"\n"):
        fields = line.split(b"\t")
        if len(fields) != 4:
            found = len(fields)
            return RecordError(f"expected 4 tab-separated fields, found {found}", offset=position)
        try:
            int(fields[2])
        except ValueError:
            return RecordError(f"match_count is not an integer: {fields[2]!r}", offset=position)
        position += len(line) + 1
    raise AssertionError("no bad line in a block refused as bad")  # pragma: no cover


def merge_totals(first: dict[bytes, int], second: dict[bytes, int]) -> dict[bytes, int]:
    """Add the totals of ``second`` into ``first``."""
    get = first.get
    for word, count in second.items():
        first[word] = get(word, 0) + count
    return first
