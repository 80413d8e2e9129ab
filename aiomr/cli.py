"""The ``aiomr`` command: run word counts, the n-gram job or your own Job over files.

Results go to stdout, diagnostics to stderr. Exit status: 0 success, 1 the job failed,
2 bad usage or an input that cannot be read, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import operator
import os
import signal
import sys
import traceback
from collections.abc import Sequence

import cloudpickle

from ._api import map_reduce
from ._cli_jobs import count_ngram_blocks, merge_totals, words_of
from ._engine import Engine
from ._exceptions import AiomrError, WorkerTraceback
from ._jobclass import Job
from ._keyspec import ReduceByKey
from ._loop import run as run_loop
from ._progress import show_progress
from ._results import top
from ._stats import JobStats
from .executors import ExecutorSpec
from .sources._paths import expand_paths
from .sources._splits import files

__all__ = ["count_ngram_blocks", "main", "merge_totals", "words_of"]

EXAMPLES = """\
examples:
  aiomr wordcount /usr/lib/python3*/ --top 10      the 10 most common words
  aiomr wordcount notes.txt --json                 the top 20 as JSON
  aiomr ngram googlebooks-eng-1gram.tsv --word Aardvark
  aiomr run jobs.py:WordCount logs/*.log           run a Job subclass over files
  aiomr run mypackage.jobs:Sessions data/ --json   ... one found by module name
"""


class UsageError(Exception):
    """Bad arguments or unreadable input: one line on stderr, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workers", type=_positive, default=None, help="worker processes")
    common.add_argument(
        "--chunk-size",
        type=_size,
        default=None,
        metavar="BYTES",
        help="bytes of input per task, e.g. 64MB (default: about four tasks per worker)",
    )
    common.add_argument(
        "--executor",
        choices=("process", "thread", "inline", "dask"),
        default="process",
        help="where map tasks run (default: process)",
    )
    common.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="aiomr",
        description="MapReduce over files, in worker processes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    wordcount = commands.add_parser(
        "wordcount", parents=[common], help="count words and print the most common"
    )
    wordcount.add_argument("paths", nargs="+", metavar="PATH", help="files, globs or directories")
    wordcount.add_argument("--top", type=_positive, default=20, help="rows to print (default 20)")
    wordcount.add_argument("--json", action="store_true", help="print the rows as JSON")

    ngram = commands.add_parser(
        "ngram", parents=[common], help="total match_count of a word in Google Books 1-grams"
    )
    ngram.add_argument("paths", nargs="+", metavar="FILE", help="1-gram files (TSV)")
    ngram.add_argument("--word", default="Aardvark", help="the word to report (default Aardvark)")

    job = commands.add_parser("run", parents=[common], help="run an aiomr.Job subclass over files")
    job.add_argument("target", metavar="FILE_OR_MODULE:JOB", help="e.g. jobs.py:WordCount")
    job.add_argument("paths", nargs="+", metavar="PATH", help="files, globs or directories")
    job.add_argument("--sort", action="store_true", help="sort the output by key")
    job.add_argument("--json", action="store_true", help="print JSON lines, not tab-separated")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def _size(text: str) -> int:
    number = text.strip().upper()
    digits = number.rstrip("KMGIB")
    unit = number[len(digits) :]
    if unit not in _SIZE_UNITS or not digits:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64KB, 64MB, 1GiB)")
    try:
        value = int(float(digits) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {text!r}")
    return value


def _check_readable(paths: Sequence[str]) -> None:
    try:
        found = expand_paths(list(paths))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    for path in found:
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: permission denied")
    if not found:
        raise UsageError(f"{' '.join(paths)}: no files to read")


def load_job(target: str) -> type[Job]:
    """Load ``FILE.py:NAME`` or ``package.module:NAME``, an `aiomr.Job` subclass."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"{target}: expected FILE_OR_MODULE:JOB, e.g. jobs.py:WordCount")
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise UsageError(f"{where}: no such file")
        module_name = "aiomr_user_" + os.path.splitext(os.path.basename(where))[0]
        spec = importlib.util.spec_from_file_location(module_name, where)
        if spec is None or spec.loader is None:
            raise UsageError(f"{where}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        # Workers cannot import a file by path: ship its code by value.
        cloudpickle.register_pickle_by_value(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UsageError(f"{where}: cannot import: {exc}") from None
    job = getattr(module, name, None)
    if not (isinstance(job, type) and issubclass(job, Job)):
        raise UsageError(f"{target}: not an aiomr.Job subclass")
    return job


async def _wordcount(args: argparse.Namespace, stats: JobStats) -> None:
    async with (
        show_progress(stats) if not args.quiet else contextlib.nullcontext(),
        Engine(args.executor, max_workers=args.workers, split_seconds=None) as engine,
    ):
        counts = await engine.run_by_key(
            files(args.paths, split_size=args.chunk_size, errors="replace"),
            ReduceByKey(words_of, operator.add),
            stats=stats,
        )
    rows = top(counts, args.top)
    if args.json:
        print(json.dumps([{"word": w, "count": c} for w, c in rows], ensure_ascii=False))
        return
    width = max((len(w) for w, _ in rows), default=0)
    for word, count in rows:
        print(f"{word:<{width}} : {count}")


async def _ngram(args: argparse.Namespace, stats: JobStats) -> None:
    executor: ExecutorSpec = args.executor
    totals: dict[bytes, int]
    async with show_progress(stats) if not args.quiet else contextlib.nullcontext():
        totals = await map_reduce(
            files(args.paths, split_size=args.chunk_size, encoding=None),
            count_ngram_blocks,
            merge_totals,
            mode="blocks",
            initial={},
            executor=executor,
            max_workers=args.workers,
            stats=stats,
        )
    print(f"{args.word} has appeared {totals.get(args.word.encode(), 0)} times")


async def _run_job(args: argparse.Namespace, stats: JobStats) -> None:
    job = load_job(args.target)
    async with show_progress(stats) if not args.quiet else contextlib.nullcontext():
        pairs = await job().run(
            files(args.paths, split_size=args.chunk_size),
            sort=args.sort,
            executor=args.executor,
            max_workers=args.workers,
            stats=stats,
        )
    for key, value in pairs:
        if args.json:
            print(json.dumps({"key": key, "value": value}, ensure_ascii=False, default=repr))
        else:
            print(f"{key}\t{value}")


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class Terminated(Exception):
    """SIGTERM arrived: the job was cancelled and its workers stopped."""


async def _main(args: argparse.Namespace) -> int:
    # SIGTERM gets the treatment Ctrl-C gets: cancel the job, which stops its workers and
    # removes its temporary files, then exit with the conventional status.
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        main_task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await asyncio.to_thread(_check_readable, args.paths)
        stats = JobStats()
        if args.command == "wordcount":
            await _wordcount(args, stats)
        elif args.command == "ngram":
            await _ngram(args, stats)
        else:
            await _run_job(args, stats)
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    # The library logs what it survives (a lost worker, skipped records): one line each.
    logging.basicConfig(level=logging.WARNING, format="aiomr: %(message)s", stream=sys.stderr)
    try:
        # SIGTERM is handled by _main itself, which knows the job it runs.
        uvloop = False if args.no_uvloop else None
        return run_loop(_main(args), use_uvloop=uvloop, handle_sigterm=False)
    except UsageError as exc:
        print(f"aiomr: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aiomr: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("aiomr: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        report_failure(exc)
        return 1


def report_failure(exc: BaseException) -> None:
    """Print why the job failed on stderr: for an error of the job's code, its traceback
    (the worker's, when it came from one), then the error and its notes, one line each."""
    if isinstance(exc.__cause__, WorkerTraceback):
        print(exc.__cause__.formatted.rstrip(), file=sys.stderr)
    elif not isinstance(exc, AiomrError) and exc.__traceback__ is not None:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        print(f"Traceback (most recent call last):\n{frames.rstrip()}", file=sys.stderr)
    print(f"aiomr: {type(exc).__name__}: {exc}", file=sys.stderr)
    for note in getattr(exc, "__notes__", ()):
        # aiomr's own notes already say who speaks.
        print(note if note.startswith("aiomr: ") else f"aiomr: {note}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
