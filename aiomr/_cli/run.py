"""The commands of ``aiomr``: word count, n-gram totals and a user's Job, over files.

Each command takes the parsed arguments and a `JobStats` to fill, runs its job on the
executor the options name, and prints its result on stdout; what it has to say besides
(files left out, records skipped) goes to stderr, one line each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import operator
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .._api import map_reduce
from .._engine import Engine
from .._jobclass import Job
from .._keyed.specs import ReduceByKey
from .._progress import show_progress
from .._results import top
from .._stats import JobStats
from ..executors import ExecutorSpec
from ..sources._file_splits import files
from ..sources._paths import expand_paths
from ..sources._sniff import SNIFF_BYTES, split_binary
from .jobs import count_ngram_blocks, merge_totals, words_of
from .load import UsageError, load_job

__all__ = ["run_command"]
"""Commands whose job cannot leave bad records out yet: ``ngram`` reads raw blocks, and
skipping needs the reader to find and report the bad lines of a block itself."""

_NAMES_SHOWN = 3
"""File names a message lists before it counts the rest."""


async def run_command(args: argparse.Namespace, stats: JobStats) -> None:
    """Run the command ``args`` names."""
    found = await asyncio.to_thread(_readable, args.paths)
    # The user's code first: importing it may change sys.path, which every worker started
    # afterwards inherits.
    job = load_job(args.target) if args.command == "run" else None
    async with (
        _executor(args) as executor,
        show_progress(stats) if not args.quiet else contextlib.nullcontext(),
    ):
        if job is not None:
            await _run_job(args, job, executor, stats)
        elif args.command == "wordcount":
            await _wordcount(args, found, executor, stats)
        else:
            await _ngram(args, executor, stats)
    _report_skipped(args, stats)


def _readable(paths: Sequence[str]) -> list[str]:
    """Every file ``paths`` names (blocking); `UsageError` if one is missing or unreadable."""
    try:
        found = expand_paths(list(paths))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    for path in found:
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: permission denied")
    if not found:
        raise UsageError(f"{' '.join(paths)}: no files to read")
    return found


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    more = len(paths) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


async def _text_files(found: list[str]) -> list[str]:
    """The files of ``found`` that look like text; say on stderr which others were left out."""
    try:
        text, binary = await asyncio.to_thread(split_binary, found)
    except OSError as exc:  # it names the file
        raise UsageError(str(exc)) from None
    if not text:
        raise UsageError(
            f"no text files to read: {len(binary)} file{'s' if len(binary) > 1 else ''} "
            f"look binary (a NUL byte in the first {SNIFF_BYTES} bytes): {_names(binary)}"
        )
    if binary:
        print(
            f"aiomr: skipped {len(binary)} binary file{'s' if len(binary) > 1 else ''} "
            f"(a NUL byte in the first {SNIFF_BYTES} bytes): {_names(binary)}",
            file=sys.stderr,
        )
    return text


@contextlib.asynccontextmanager
async def _executor(args: argparse.Namespace) -> AsyncIterator[ExecutorSpec]:
    """The executor the options name: a name the job resolves, or, with ``--scheduler``, a
    connection to that Dask scheduler, closed at the end."""
    if args.scheduler is None:
        yield args.executor
        return
    try:
        from ..executors._dask import DaskExecutor
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    async with DaskExecutor(args.scheduler, max_workers=args.workers) as executor:
        await executor.start()
        yield executor


def _error_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"on_error": args.on_error, "dead_letter": args.dead_letter}


async def _wordcount(
    args: argparse.Namespace, found: list[str], executor: ExecutorSpec, stats: JobStats
) -> None:
    paths = await _text_files(found)
    async with Engine(executor, max_workers=args.workers, split_seconds=None) as engine:
        counts = await engine.run_by_key(
            files(paths, split_size=args.chunk_size, errors="replace"),
            ReduceByKey(words_of, operator.add),
            stats=stats,
            **_error_options(args),
        )
    rows = top(counts, args.top)
    if args.json:
        print(json.dumps([{"word": w, "count": c} for w, c in rows], ensure_ascii=False))
        return
    width = max((len(w) for w, _ in rows), default=0)
    for word, count in rows:
        print(f"{word:<{width}} : {count}")


async def _ngram(args: argparse.Namespace, executor: ExecutorSpec, stats: JobStats) -> None:
    # The reader checks every block for 4 tab-separated fields at C speed; a bad line fails
    # the job, located, or is cut out of its block under --on-error skip/collect.
    totals: dict[bytes, int] = await map_reduce(
        files(args.paths, split_size=args.chunk_size, encoding=None, format="tsv", fields=4),
        count_ngram_blocks,
        merge_totals,
        mode="blocks",
        initial={},
        executor=executor,
        max_workers=args.workers,
        stats=stats,
        **_error_options(args),
    )
    print(f"{args.word} has appeared {totals.get(args.word.encode(), 0)} times")


async def _run_job(
    args: argparse.Namespace, job: type[Job], executor: ExecutorSpec, stats: JobStats
) -> None:
    pairs = await job().run(
        files(args.paths, split_size=args.chunk_size),
        sort=args.sort,
        executor=executor,
        max_workers=args.workers,
        stats=stats,
        **_error_options(args),
    )
    for key, value in pairs:
        if args.json:
            print(json.dumps({"key": key, "value": value}, ensure_ascii=False, default=repr))
        else:
            print(f"{key}\t{value}")


def _report_skipped(args: argparse.Namespace, stats: JobStats) -> None:
    """Say on stderr what the job left out: one line in all, and with ``--on-error collect``
    one line per record."""
    if not stats.records_skipped:
        return
    first = stats.bad_sample[0] if stats.bad_sample else None
    where = f"; the first at {first.location}: {first.error}" if first else ""
    kept = f", written to {args.dead_letter}" if args.dead_letter else ""
    print(
        f"aiomr: skipped {stats.records_skipped} bad record"
        f"{'s' if stats.records_skipped > 1 else ''} of {stats.records}{kept}{where}",
        file=sys.stderr,
    )
    if args.on_error == "collect":
        for bad in stats.bad_records:
            print(
                f"aiomr: bad record at {bad.location}: {bad.error}: {bad.record}", file=sys.stderr
            )
