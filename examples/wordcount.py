"""Count the words of every file under a directory and print the 20 most common.

By default it reads the Python standard library's own source files, a corpus present wherever
Python runs::

    python3 examples/wordcount.py               # the standard library
    python3 examples/wordcount.py DIR --top 30  # any directory, any file suffix
    python3 examples/wordcount.py DIR --suffix .txt

This is key-based MapReduce as the PyMOTW example does it: the mapper turns one file into
``(word, 1)`` pairs, and ``operator.add`` reduces each word's counts. Each worker opens its own
files (the caller sends only paths); aiomr combines the pairs of each chunk of files by word
before the shuffle, then reduces the partitions in the workers.
"""

from __future__ import annotations

import argparse
import operator
import pathlib
import string
import sys
import sysconfig
import time
from collections.abc import Iterator

import aiomr

STOP_WORDS = frozenset(
    {"a", "an", "and", "are", "as", "be", "by", "for", "if", "in", "is", "it", "of", "or"}
    | {"py", "rst", "that", "the", "to", "with"}
)
_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def file_to_words(path: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every word of one file (runs in a worker)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for word in line.translate(_PUNCTUATION).lower().split():
                if word.isalpha() and word not in STOP_WORDS:
                    yield word, 1


THIRD_PARTY = frozenset({"site-packages", "dist-packages"})


def files_under(root: pathlib.Path, suffix: str) -> Iterator[str]:
    """Yield the files below ``root`` with ``suffix``, in a stable order.

    Installed third-party packages (``site-packages``) are skipped: below the standard
    library's directory they would make the count depend on what happens to be installed.
    """
    for path in sorted(root.rglob(f"*{suffix}")):
        if path.is_file() and THIRD_PARTY.isdisjoint(path.relative_to(root).parts):
            yield str(path)


def print_table(counts: dict[str, int], top: int) -> None:
    most_common = aiomr.top(counts, top)
    width = max((len(word) for word, _ in most_common), default=0)
    print(f"TOP {top} WORDS BY FREQUENCY\n")
    for word, count in most_common:
        print(f"{word:<{width}} : {count:>7}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root",
        nargs="?",
        default=sysconfig.get_paths()["stdlib"],
        help="directory to read (default: the Python standard library)",
    )
    parser.add_argument("--suffix", default=".py", help="file suffix to read (default: .py)")
    parser.add_argument("--top", type=int, default=20, help="how many words to print")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    root = pathlib.Path(args.root)
    stats = aiomr.JobStats()
    started = time.perf_counter()
    counts = await aiomr.map_reduce_by_key(
        files_under(root, args.suffix),
        file_to_words,
        operator.add,
        max_workers=args.workers,
        stats=stats,
    )
    print_table(counts, args.top)
    print(
        f"\n{stats.records} files, {sum(counts.values())} words, {len(counts)} distinct, "
        f"{time.perf_counter() - started:.2f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    if not pathlib.Path(arguments.root).is_dir():
        sys.exit(f"wordcount: {arguments.root}: not a directory")
    sys.exit(aiomr.run(main(arguments)))
