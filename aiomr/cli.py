"""The ``aiomr`` command: run word counts, the n-gram job or your own Job over files.

Results go to stdout, diagnostics to stderr. Exit status: 0 success, 1 the job failed,
2 bad usage or an input that cannot be read, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from ._cli.jobs import count_ngram_blocks, merge_totals, words_of
from ._cli.load import UsageError, load_job, version
from ._cli.run import run_command
from ._exceptions import AiomrError, BrokenInputError, RecordError, WorkerTraceback
from ._loop import run as run_loop
from ._stats import JobStats

__all__ = ["count_ngram_blocks", "load_job", "main", "merge_totals", "words_of"]

EXAMPLES = """\
examples:
  aiomr wordcount /usr/lib/python3*/ --top 10      the 10 most common words
  aiomr wordcount notes.txt --json                 the top 20 as JSON
  aiomr ngram googlebooks-eng-1gram.tsv --word Aardvark
  aiomr run jobs.py:WordCount logs/*.log           run a Job subclass over files
  aiomr run mypackage.jobs:Sessions data/ --json   ... one found by module name
  aiomr run jobs.py:Parse logs/ --on-error skip --dead-letter bad.jsonl
  aiomr wordcount books/ --scheduler tcp://10.0.0.5:8786   on a running Dask cluster
"""


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
        default=None,
        help="where map tasks run (default: process; dask with --scheduler)",
    )
    common.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run on the Dask cluster of this scheduler, e.g. tcp://10.0.0.5:8786",
    )
    common.add_argument(
        "--on-error",
        choices=("raise", "skip", "collect"),
        default="raise",
        help="a record the job fails on: stop (raise, the default), leave it out and count "
        "it (skip), or also list each one on stderr (collect)",
    )
    common.add_argument(
        "--dead-letter",
        metavar="PATH",
        default=None,
        help="append each record left out to this JSON Lines file (with --on-error)",
    )
    common.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_argument(
        "--verbose", action="store_true", help="log what the job and its executor do (INFO)"
    )

    parser = argparse.ArgumentParser(
        prog="aiomr",
        description="MapReduce over files, in worker processes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print aiomr's version and exit")
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


class _Version(argparse.Action):
    """``--version``, whose metadata is read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=str(kwargs.get("help", "")))

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"aiomr {version()}")
        parser.exit()


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
        await run_command(args, JobStats())
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
    _log_to_stderr(verbose=args.verbose)
    try:
        _check_options(args)
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


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before anything starts."""
    if args.scheduler is not None:
        if args.executor not in (None, "dask"):
            raise UsageError(
                f"--scheduler runs on Dask: it cannot go with --executor {args.executor}"
            )
        args.executor = "dask"
    elif args.executor is None:
        args.executor = "process"
    if args.dead_letter is not None and args.on_error == "raise":
        raise UsageError("--dead-letter needs --on-error skip or --on-error collect")


class _NotTheCommandsSummary(logging.Filter):
    """Leave out the library's own line about skipped records: the command prints its own,
    with the dead-letter file and, for ``--on-error collect``, every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "aiomr._map_phase" and str(record.msg).startswith("skipped "))


def _log_to_stderr(*, verbose: bool) -> None:
    """Send log records to stderr, one line each: warnings (what the library survives, a
    lost worker, a retried task) and, with ``--verbose``, what it and Dask report as they go.

    Dask's distributed logs a dozen lines at INFO as a cluster starts and stops; the
    handler's level, not the loggers', keeps them out unless asked for.
    """
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _CommandHandler)), None)
    if handler is None:  # once per process, however often main() runs
        handler = _CommandHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("aiomr: %(message)s"))
        handler.addFilter(_NotTheCommandsSummary())
        root.addHandler(handler)
    handler.setLevel(level)
    root.setLevel(level)


class _CommandHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The command's handler of log records (told apart from any other)."""


def report_failure(exc: BaseException) -> None:
    """Print why the job failed on stderr: for an error of the job's code, its traceback
    (the worker's, when it came from one), then the error and its notes, one line each.

    Malformed or broken input is not the job's code: its message names the file and line,
    and a traceback through aiomr's reader would only hide that."""
    if isinstance(exc, RecordError | BrokenInputError):
        pass
    elif isinstance(exc.__cause__, WorkerTraceback):
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
