"""Total the match counts of every word in Google Books 1-gram files, four ways.

Each line of a 1-gram file says how often a word was printed in one year's books::

    word<TAB>year<TAB>match_count<TAB>volume_count

The job adds up ``match_count`` per word and prints one word's total::

    python3 examples/ngram_data.py ngrams.tsv --size 100MB   # a file to try it on
    python3 examples/ngram.py ngrams.tsv                     # Aardvark has appeared N times
    python3 examples/ngram.py ngrams.tsv --word the --way idiomatic --workers 2

The four ways give the same totals; they differ in where the work happens:

* ``split`` (the default, the fast one): the caller cuts the files into line-aligned byte
  ranges and sends only their coordinates. Each worker reads its ranges itself, in blocks of
  64 KiB of bytes, checks that every line has its four tab-separated fields (one C call per
  block), and counts them with the fastest pure-Python loop there is for this: one
  ``replace`` and one ``split`` per block, then ``zip`` over every fourth field into
  ``dict.get``. Words stay bytes in the workers; the caller merges one small dict per range
  (the input is sorted by word, so the ranges hardly share words) and decodes once, at the end.
* ``idiomatic``: the same byte ranges read by the workers, but the mapper sees one parsed
  row at a time and yields ``(word, match_count)``; `aiomr.map_reduce_by_key` combines each
  range's pairs by word in the worker, then shuffles and reduces them by key.
* ``lines``: the idiomatic job fed by `aiomr.sources.lines`: the caller reads the files
  (128 KiB at a time) and ships the lines to the workers in chunks. That is the way for input
  the workers cannot open themselves; here it shows what streaming every line through the
  caller costs.
* ``columnar`` (needs pyarrow: ``pip install 'aiomr[arrow]'``): the same byte ranges, parsed
  by pyarrow in the workers into record batches, totalled by `aiomr.Aggregate` with
  pyarrow's group-by (``mode="batches"``); it also reads the data as Parquet
  (``ngram_data.py --parquet``): give ``.parquet`` files.

A line that is not a 1-gram line (not four fields, a count that is not a number) stops every
way with its file and line, and exit status 1.

The timing and throughput of the run go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import sys
import time
from collections.abc import Iterable, Iterator

import aiomr
import aiomr.sources

WAYS = ("split", "idiomatic", "lines", "columnar")
COLUMNS = ["word", "year", "match_count", "volume_count"]


SEPARATORS_ONLY = bytes(b for b in range(256) if b not in (9, 10))
"""What `bytes.translate` deletes to leave a block's tabs and newlines."""


def count_blocks(blocks: Iterable[bytes]) -> dict[bytes, int]:
    """Total the match counts of a split's blocks by word, words as bytes (runs in a worker).

    Every block holds whole lines. Turning its newlines into tabs makes the block one flat
    list of fields, four per line, in two C calls; the words are every fourth field from the
    first, the match counts every fourth from the third. That only holds if every line has
    exactly four fields: one line with three would shift every field after it. So a block is
    checked first, also in C: its tabs and newlines, all else deleted, must read
    ``"\t\t\t\n"`` once per line. Blocks of ``files(..., format="tsv", fields=4)`` come
    checked already (their iterator says so), and are not checked twice.
    """
    counts: dict[bytes, int] = {}
    get = counts.get
    checked = getattr(blocks, "tsv_fields", None) == 4
    for block in blocks:
        if not checked:
            separators = block.translate(None, SEPARATORS_ONLY)
            if not block.endswith(b"\n"):
                separators += b"\n"
            if separators != b"\t\t\t\n" * (len(separators) // 4):
                raise bad_line(block)
        fields = block.replace(b"\n", b"\t").split(b"\t")
        try:
            for word, count in zip(fields[0::4], map(int, fields[2::4]), strict=False):
                counts[word] = get(word, 0) + count
        except ValueError:  # a match count that is not a number
            raise bad_line(block) from None
    return counts


def bad_line(block: bytes) -> aiomr.RecordError:
    """Name the first line of ``block`` that is not a 1-gram line, by its offset in the block
    (aiomr turns that into its file and line)."""
    offset = 0
    for line in block.split(b"\n"):
        fields = line.split(b"\t")
        if len(fields) != 4:
            return aiomr.RecordError(f"expected 4 fields, found {len(fields)}", offset=offset)
        try:
            int(fields[2])
        except ValueError:
            return aiomr.RecordError(f"match_count {fields[2]!r} is not a number", offset=offset)
        offset += len(line) + 1
    return aiomr.RecordError("a block that is not 1-gram lines", offset=0)


def merge(totals: dict[bytes, int], more: dict[bytes, int]) -> dict[bytes, int]:
    """Add one dict of totals into the other, the smaller into the larger, and return it.

    Both are the job's own partials, so updating one in place is safe.
    """
    if len(totals) < len(more):
        totals, more = more, totals
    get = totals.get
    for word, count in more.items():
        totals[word] = get(word, 0) + count
    return totals


def decode(totals: dict[bytes, int]) -> dict[str, int]:
    """Turn byte-string words into text, once for every distinct word."""
    try:
        return {word.decode("utf-8"): count for word, count in totals.items()}
    except UnicodeDecodeError as exc:
        raise ValueError(f"a word that is not UTF-8: {exc.object!r}") from None


def word_and_count(row: list[str]) -> Iterator[tuple[str, int]]:
    """The idiomatic mapper: yield ``(word, match_count)`` for one row of four fields."""
    word, _year, match_count, _volume_count = row
    yield word, int(match_count)


async def count_words(paths: list[str], way: str, workers: int | None) -> dict[str, int]:
    """Return the total match count of every word in ``paths``, computed the ``way`` asked."""
    if way == "split":
        empty: dict[bytes, int] = {}
        totals = await aiomr.map_reduce(
            aiomr.sources.files(paths, encoding=None, format="tsv", fields=4),
            count_blocks,
            merge,
            initial=empty,
            mode="blocks",
            max_workers=workers,
        )
        # 200 k words take tens of milliseconds to decode: off the event loop.
        return await asyncio.to_thread(decode, totals)
    if way == "idiomatic":
        return await aiomr.map_reduce_by_key(
            aiomr.sources.files(paths, format="tsv", fields=4),
            word_and_count,
            operator.add,
            max_workers=workers,
        )
    if way == "lines":
        lines: aiomr.sources.LineSource[list[str]] = aiomr.sources.lines(
            paths, format="tsv", fields=4
        )
        return await aiomr.map_reduce_by_key(
            lines, word_and_count, operator.add, max_workers=workers
        )
    if way == "columnar":
        return await count_columnar(paths, workers)
    raise ValueError(f"way must be one of {', '.join(WAYS)}, got {way!r}")


async def count_columnar(paths: list[str], workers: int | None) -> dict[str, int]:
    """The columnar way: Arrow batches in the workers, totals by pyarrow's group-by."""
    per_word = aiomr.Aggregate(by="word", total=("match_count", "sum"))
    source: aiomr.sources.SplitSource
    if all(path.endswith(".parquet") for path in paths):
        source = aiomr.sources.parquet(
            paths, columns=["word", "match_count"], dictionary_columns=["word"]
        )
    else:  # words are strings, even where the first ones look like numbers
        source = aiomr.sources.files(
            paths,
            format="tsv",
            names=COLUMNS,
            types={"word": "string"},
            columns=["word", "match_count"],
        )
    states = await aiomr.map_reduce(
        source, per_word.map, per_word.merge, mode="batches", max_workers=workers
    )

    def as_dict() -> dict[str, int]:
        table = per_word.finish(states)
        return dict(zip(table["word"].to_pylist(), table["total"].to_pylist(), strict=True))

    return await asyncio.to_thread(as_dict)  # 200 k words: off the event loop


def unreadable(paths: list[str]) -> str | None:
    """Say why the first path that cannot be read cannot, or return None."""
    for path in paths:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
    return None


def input_bytes(paths: list[str]) -> int:
    """The size of the input, for the throughput figure."""
    return sum(os.path.getsize(path) for path in paths)


def _workers(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", metavar="FILE", help="1-gram files (tab-separated)")
    parser.add_argument("--word", default="Aardvark", help="the word to report (Aardvark)")
    parser.add_argument(
        "--workers", type=_workers, default=None, help="worker processes (default: CPU count)"
    )
    parser.add_argument("--way", choices=WAYS, default="split", help="how to run the job")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        totals = await count_words(args.files, args.way, args.workers)
    except OSError as exc:  # a file vanished or became unreadable after the check
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ngram: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # the columnar way without pyarrow: say what to install
        print(f"ngram: {exc}", file=sys.stderr)
        return 2
    except (ValueError, aiomr.BrokenInputError) as exc:  # a bad line, or a file cut short
        print(f"ngram: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    print(f"{args.word} has appeared {totals.get(args.word, 0)} times")
    megabytes = await asyncio.to_thread(input_bytes, args.files) / 1e6
    workers = args.workers or os.cpu_count() or 1
    print(
        f"{args.way}: {megabytes:.1f} MB in {seconds:.2f} s ({megabytes / seconds:.1f} MB/s), "
        f"{workers} workers, {len(totals):,} distinct words",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    arguments = parse_args()
    if (reason := unreadable(arguments.files)) is not None:
        print(f"ngram: {reason}", file=sys.stderr)
        sys.exit(2)
    sys.exit(aiomr.run(main(arguments)))
