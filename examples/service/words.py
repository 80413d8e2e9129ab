"""The word count the service runs: a mapper and a reducer for the workers, a top-20 view.

`count_words` runs in the worker processes, once per line; `merge_counts` folds the counts
of a chunk in the worker, then the partials of all chunks in the service; `top_words` turns
the running count into the table the page shows.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter

__all__ = ["TOP", "count_words", "merge_counts", "top_words"]

TOP = 20
"""Rows of the table the service reports."""

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
"""A run of letters and digits, with apostrophes inside it kept ("don't" is one word)."""


def count_words(line: str) -> Counter[str]:
    """Count the case-folded words of one line."""
    return Counter(_WORD.findall(line.casefold()))


def merge_counts(total: Counter[str], more: Counter[str]) -> Counter[str]:
    """Add ``more`` into ``total`` in place (each job folds into a fresh counter)."""
    total.update(more)
    return total


def top_words(counts: Counter[str], k: int = TOP) -> list[tuple[str, int]]:
    """Return the ``k`` most common words, ties in alphabetical order.

    The tie-break makes the table independent of the order in which chunks complete,
    which `Counter.most_common` (first seen first) is not.
    """
    return heapq.nsmallest(k, counts.items(), key=lambda item: (-item[1], item[0]))
