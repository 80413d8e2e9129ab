"""Analyse a web server's log: levels, busiest endpoints, status codes, most common errors.

Each line of the log looks like::

    2024-01-15 10:23:45 ERROR /api/users 500 "Database timeout"

Without a file argument the example writes a generated log (deterministic for a seed, with
a few damaged lines in it, as real logs have) to a temporary file and analyses that::

    python3 examples/logs.py                          # 200,000 generated lines
    python3 examples/logs.py --lines 1000000 --seed 3
    python3 examples/logs.py --save server.log        # generate into server.log and keep it
    python3 examples/logs.py server.log               # analyse an existing log

The analysis is one class-based job, mrjob style: the mapper parses a line and emits a count
under ``("level", ...)``, ``("endpoint", ...)``, ``("status", ...)`` and, for errors,
``("error", message)``; the combiner and the reducer add the counts up. A line that does not
parse is not an error of the job: the mapper counts it under ``("skipped", reason)``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import itertools
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import aiomr

T = TypeVar("T")


class Weighted(Generic[T]):
    """Draw items with fixed relative weights (one bisection, no per-draw setup)."""

    def __init__(self, weights: dict[T, int]) -> None:
        self.items = tuple(weights)
        self.cumulative = list(itertools.accumulate(weights.values()))

    def draw(self, rng: random.Random) -> T:
        return self.items[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]


LEVELS = {"INFO": 86, "WARNING": 10, "ERROR": 4}
ENDPOINTS = {
    "/api/users": 30,
    "/api/orders": 22,
    "/api/products": 18,
    "/api/search": 10,
    "/api/cart": 12,
    "/api/login": 8,
    "/api/checkout": 6,
    "/api/reviews": 4,
    "/health": 15,
    "/static/app.js": 9,
}
OUTCOMES: dict[str, dict[tuple[str, str], int]] = {
    "INFO": {
        ("200", "OK"): 70,
        ("201", "Created"): 8,
        ("204", "No content"): 4,
        ("301", "Moved permanently"): 3,
        ("304", "Not modified"): 15,
    },
    "WARNING": {
        ("200", "Slow response"): 30,
        ("400", "Invalid request body"): 15,
        ("401", "Invalid token"): 20,
        ("404", "Not found"): 25,
        ("429", "Rate limit exceeded"): 10,
    },
    "ERROR": {
        ("500", "Database timeout"): 35,
        ("502", "Upstream unavailable"): 20,
        ("503", "Service overloaded"): 15,
        ("504", "Gateway timeout"): 12,
        ("500", "Null reference in handler"): 10,
        ("500", "Out of memory"): 8,
    },
}
"""Level -> (status code, message) a request at that level ends with -> weight."""

MALFORMED_RATE = 0.002
"""Share of generated lines that are damaged: cut short, or with a garbled field."""
START = datetime.datetime(2024, 1, 15)

LINE = re.compile(r'(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) (\S+) (/\S*) (\S+) "([^"]*)"')
STATUS = re.compile(r"[1-5]\d\d", re.ASCII)

NOT_A_LOG_LINE = "not in log format"
UNKNOWN_LEVEL = "unknown level"
BAD_STATUS = "bad status code"


def format_line(stamp: str, level: str, endpoint: str, status: str, message: str) -> str:
    """Return one log line, without its newline."""
    return f'{stamp} {level} {endpoint} {status} "{message}"'


def damage(stamp: str, fields: tuple[str, str, str, str], rng: random.Random) -> str:
    """Return a broken log line, the way logs get broken."""
    level, endpoint, status, message = fields
    kind = rng.randrange(4)
    if kind == 0:  # the writer died mid-line
        line = format_line(stamp, *fields)
        return line[: rng.randrange(len(line) - 1)]
    if kind == 1:
        level = rng.choice(("ERRROR", "INF", "WARNNING"))
    elif kind == 2:
        status = rng.choice(("5OO", "-1", "2000", "HTTP"))
    else:
        return "\x00" * rng.randrange(1, 40)
    return format_line(stamp, level, endpoint, status, message)


def generate_log_lines(
    lines: int, seed: int, *, malformed_rate: float = MALFORMED_RATE
) -> Iterator[str]:
    """Yield ``lines`` log lines (without newlines), the same ones for the same ``seed``."""
    rng = random.Random(seed)
    levels, endpoints = Weighted(LEVELS), Weighted(ENDPOINTS)
    outcomes = {level: Weighted(weights) for level, weights in OUTCOMES.items()}
    when = START
    stamp = f"{when:%Y-%m-%d %H:%M:%S}"
    for _ in range(lines):
        if step := rng.randrange(3):  # a few requests a second
            when += datetime.timedelta(seconds=step)
            stamp = f"{when:%Y-%m-%d %H:%M:%S}"
        level = levels.draw(rng)
        status, message = outcomes[level].draw(rng)
        fields = (level, endpoints.draw(rng), status, message)
        if rng.random() < malformed_rate:
            yield damage(stamp, fields, rng)
        else:
            yield format_line(stamp, *fields)


def write_log(path: str, lines: int, seed: int) -> None:
    """Write a generated log of ``lines`` lines to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        for line in generate_log_lines(lines, seed):
            f.write(line + "\n")


def read_lines(path: str) -> Iterator[str]:
    """Yield the lines of ``path`` one at a time, without their newlines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            yield line.rstrip("\n")


Key = tuple[str, Any]
"""What a count is of: ``("level", "ERROR")``, ``("status", 500)``, ``("skipped", reason)``."""
KINDS = ("level", "endpoint", "status", "error", "skipped")


class LogReport(aiomr.Job):
    """Count lines by level, endpoint, status code and error message; count the bad ones."""

    def mapper(self, _: None, line: str) -> Iterator[tuple[Key, int]]:
        match = LINE.fullmatch(line)
        if match is None:
            yield ("skipped", NOT_A_LOG_LINE), 1
            return
        _date, _time, level, endpoint, status, message = match.groups()
        if level not in LEVELS:
            yield ("skipped", UNKNOWN_LEVEL), 1
        elif STATUS.fullmatch(status) is None:
            yield ("skipped", BAD_STATUS), 1
        else:
            yield ("level", level), 1
            yield ("endpoint", endpoint), 1
            yield ("status", int(status)), 1
            if level == "ERROR":
                yield ("error", message), 1

    # The combiner runs on each chunk's pairs in the worker: a chunk of thousands of lines
    # ships a few dozen counts to the shuffle instead of one pair per field of every line.
    def combiner(self, key: Key, counts: Iterable[int]) -> Iterator[tuple[Key, int]]:
        yield key, sum(counts)

    def reducer(self, key: Key, counts: Iterable[int]) -> Iterator[tuple[Key, int]]:
        yield key, sum(counts)


def split_by_kind(pairs: Iterable[tuple[Key, int]]) -> dict[str, dict[Any, int]]:
    """Turn ``(("status", 500), 12)`` pairs into ``{"status": {500: 12}, ...}``."""
    counts: dict[str, dict[Any, int]] = {kind: {} for kind in KINDS}
    for (kind, name), count in pairs:
        counts[kind][name] = count
    return counts


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a titled table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{cell:>{width}}" for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(title)
    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    print()


def share(count: int, total: int) -> str:
    """Format ``count`` as a percentage of ``total``."""
    return f"{100 * count / total:.1f}%" if total else "-"


def print_levels(levels: dict[str, int]) -> None:
    """Print the lines of each level and their share of the parsed lines."""
    parsed = sum(levels.values())
    rows = [
        (level, f"{levels.get(level, 0):,}", share(levels.get(level, 0), parsed))
        for level in LEVELS
    ]
    print_table("LINES BY LEVEL", ("level", "lines", "share"), rows)


def print_top(title: str, headers: tuple[str, str], counts: dict[str, int], k: int) -> None:
    """Print the ``k`` largest counts."""
    rows = [(name, f"{n:,}") for name, n in aiomr.top(counts, k)]
    print_table(title, headers, rows)


def print_statuses(statuses: dict[int, int]) -> None:
    """Print every status code seen, in numeric order, with its share of the parsed lines."""
    parsed = sum(statuses.values())
    rows = [(str(code), f"{n:,}", share(n, parsed)) for code, n in sorted(statuses.items())]
    print_table("STATUS CODES", ("status", "lines", "share"), rows)


def print_skipped(skipped: dict[str, int], parsed: int) -> None:
    """Print how many lines were skipped, and why."""
    total = sum(skipped.values())
    rows = [(reason, f"{n:,}") for reason, n in sorted(skipped.items())]
    print_table(f"SKIPPED LINES: {total:,} of {parsed + total:,}", ("reason", "lines"), rows)


def print_report(counts: dict[str, dict[Any, int]], top: int) -> None:
    """Print every table of the report."""
    print_levels(counts["level"])
    print_top(f"TOP {top} ENDPOINTS", ("endpoint", "requests"), counts["endpoint"], top)
    print_statuses(counts["status"])
    print_top(f"TOP {top} ERROR MESSAGES", ("message", "errors"), counts["error"], top)
    print_skipped(counts["skipped"], sum(counts["level"].values()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", nargs="?", help="log file to analyse (default: generate one)")
    parser.add_argument(
        "--lines", type=int, default=200_000, help="lines to generate (default: 200000)"
    )
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default: 2024)")
    parser.add_argument("--save", metavar="PATH", help="write the generated log to PATH")
    parser.add_argument("--top", type=int, default=5, help="rows in the top tables (default: 5)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    if args.log and args.save:
        parser.error("give a log to analyse or --save, not both")
    if args.log and not os.path.isfile(args.log):
        parser.error(f"{args.log}: no such file")
    if args.lines < 0:
        parser.error("--lines must be >= 0")
    return args


async def analyse(path: str, args: argparse.Namespace) -> None:
    """Run the job over the lines of ``path`` and print the report."""
    started = time.perf_counter()
    # Sorted keys, so equal counts rank the same way on every run.
    pairs = await LogReport().run(read_lines(path), sort=True, max_workers=args.workers)
    print_report(split_by_kind(pairs), args.top)
    print(f"{path}: analysed in {time.perf_counter() - started:.2f} s", file=sys.stderr)


async def main(args: argparse.Namespace) -> int:
    if args.log:
        await analyse(args.log, args)
    elif args.save:
        await asyncio.to_thread(write_log, args.save, args.lines, args.seed)
        await analyse(args.save, args)
    else:
        with tempfile.TemporaryDirectory(prefix="aiomr-logs-") as directory:
            path = os.path.join(directory, "server.log")
            await asyncio.to_thread(write_log, path, args.lines, args.seed)
            await analyse(path, args)
    return 0


if __name__ == "__main__":
    sys.exit(aiomr.run(main(parse_args())))
