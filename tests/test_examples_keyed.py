"""The key-based examples print the figures a plain, one-process computation gets.

Each example runs as a script in a fresh process; the test regenerates the same records with
the example's own generator (same seed) and counts them with dicts and ``Counter``.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import inspect
import json
import os
import pathlib
import re
import string
import subprocess
import sys
from collections.abc import AsyncIterator
from types import ModuleType

import aiomr

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--workers", "2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"aiomr_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_tables(stdout: str) -> dict[str, list[list[str]]]:
    """Read the examples' tables: a title, a header row, a dashed rule, then the rows.

    Columns are at least two spaces apart; cells hold single spaces at most.
    """
    tables: dict[str, list[list[str]]] = {}
    for block in stdout.strip().split("\n\n"):
        lines = block.splitlines()
        if len(lines) >= 3 and set(lines[2]) <= {"-", " "}:
            tables[lines[0]] = [re.split(r" {2,}", line.strip()) for line in lines[3:]]
    return tables


def cents(text: str) -> int:
    """``"1,234.56"`` -> ``123456``."""
    return int(text.replace(",", "").replace(".", ""))


def ranked(counts: dict[str, int], k: int) -> list[tuple[str, int]]:
    """The ``k`` largest values, ties in key order (the examples ask for sorted keys)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]


# sales.py


def test_sales_figures_match_a_plain_count(tmp_path: pathlib.Path) -> None:
    sales = load_example("sales")
    assert inspect.isgenerator(sales.generate_sales(1, 0))
    revenue: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    count: collections.Counter[str] = collections.Counter()
    for sale in sales.generate_sales(3000, 11):
        amount = sale["quantity"] * sale["unit_price"]
        revenue["store"][sale["store"]] += amount
        revenue["product"][sale["product"]] += amount
        count[sale["store"]] += 1

    out = tmp_path / "stores.jsonl"
    done = run_example("sales.py", "--records", "3000", "--seed", "11", "--json", str(out))
    assert done.returncode == 0, done.stderr
    tables = parse_tables(done.stdout)
    for kind, title in [
        ("store", "TOP 5 STORES BY REVENUE"),
        ("product", "TOP 5 PRODUCTS BY REVENUE"),
    ]:
        printed = [(name, cents(amount)) for name, amount in tables[title]]
        assert printed == ranked(revenue[kind], 5)

    total = re.search(r"^TOTAL REVENUE +([\d,.]+)$", done.stdout, re.MULTILINE)
    assert total is not None
    assert cents(total[1]) == sum(revenue["store"].values())

    means = sorted(revenue["store"], key=lambda s: (-revenue["store"][s] / count[s], s))
    expected = [(s, count[s], round(revenue["store"][s] / count[s])) for s in means]
    printed_means = [
        (store, int(n.replace(",", "")), cents(mean))
        for store, n, mean in tables["MEAN SALE VALUE PER STORE"]
    ]
    assert printed_means == expected

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["store"]: row["revenue_cents"] for row in rows} == revenue["store"]


# logs.py


def classify(line: str) -> str | tuple[str, str, int, str]:
    """Return why a log line is malformed, or its (level, endpoint, status, message)."""
    parts = line.split(" ", 5)
    if len(parts) != 6:
        return "not in log format"
    date, clock, level, endpoint, status, quoted = parts
    well_formed = (
        len(date) == 10
        and date[4] == date[7] == "-"
        and date.replace("-", "").isdigit()
        and len(clock) == 8
        and clock[2] == clock[5] == ":"
        and clock.replace(":", "").isdigit()
        and level != ""
        and endpoint.startswith("/")
        and status != ""
        and len(quoted) >= 2
        and quoted[0] == quoted[-1] == '"'
        and '"' not in quoted[1:-1]
    )
    if not well_formed:
        return "not in log format"
    if level not in ("INFO", "WARNING", "ERROR"):
        return "unknown level"
    if not (len(status) == 3 and status.isdigit() and status[0] in "12345"):
        return "bad status code"
    return level, endpoint, int(status), quoted[1:-1]


def check_log_report(stdout: str, lines: list[str]) -> None:
    """Compare every table of logs.py's report with a count of ``lines``."""
    levels: collections.Counter[str] = collections.Counter()
    endpoints: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    skipped: collections.Counter[str] = collections.Counter()
    for line in lines:
        entry = classify(line)
        if isinstance(entry, str):
            skipped[entry] += 1
            continue
        level, endpoint, status, message = entry
        levels[level] += 1
        endpoints[endpoint] += 1
        statuses[status] += 1
        if level == "ERROR":
            errors[message] += 1
    parsed = sum(levels.values())

    tables = parse_tables(stdout)
    assert tables["LINES BY LEVEL"] == [
        [level, f"{levels[level]:,}", f"{100 * levels[level] / parsed:.1f}%"]
        for level in ("INFO", "WARNING", "ERROR")
    ]
    assert tables["TOP 5 ENDPOINTS"] == [[e, f"{n:,}"] for e, n in ranked(endpoints, 5)]
    assert tables["STATUS CODES"] == [
        [str(code), f"{n:,}", f"{100 * n / parsed:.1f}%"] for code, n in sorted(statuses.items())
    ]
    assert tables["TOP 5 ERROR MESSAGES"] == [[m, f"{n:,}"] for m, n in ranked(errors, 5)]
    title = f"SKIPPED LINES: {sum(skipped.values()):,} of {len(lines):,}"
    assert tables[title] == [[reason, f"{n:,}"] for reason, n in sorted(skipped.items())]


def test_logs_report_matches_a_plain_count_of_the_generated_log() -> None:
    logs = load_example("logs")
    lines = list(logs.generate_log_lines(5000, 5))
    # The generated log has damaged lines of every kind the report names.
    assert {entry for entry in map(classify, lines) if isinstance(entry, str)} == {
        "not in log format",
        "unknown level",
        "bad status code",
    }

    done = run_example("logs.py", "--lines", "5000", "--seed", "5")
    assert done.returncode == 0, done.stderr
    check_log_report(done.stdout, lines)


MALFORMED = [
    "",
    "\x00\x00\x00",
    "2024-01-15 10:23:45 ERROR /api/users 500",
    '2024-01-15 10:23:45 ERROR /api/users 500 "Database timeout',
    '2024-01-15 10:23:45 ERROR /api/users 500 "Database timeout" again',
    '2024-01-15 10:23 ERROR /api/users 500 "Database timeout"',
    '2024-01-15 10:23:45 FATAL /api/users 500 "Disk full"',
    '2024-01-15 10:23:45 error /api/users 500 "Disk full"',
    '2024-01-15 10:23:45 ERROR /api/users 5xx "Database timeout"',
    '2024-01-15 10:23:45 ERROR /api/users 99 "Database timeout"',
    '2024-01-15 10:23:45 ERROR /api/users 5000 "Database timeout"',
]


def test_logs_counts_malformed_lines_and_skips_them(tmp_path: pathlib.Path) -> None:
    logs = load_example("logs")
    good = list(logs.generate_log_lines(600, 9, malformed_rate=0.0))
    assert all(not isinstance(classify(line), str) for line in good)
    lines = good.copy()
    for n, bad in enumerate(MALFORMED):
        lines.insert(n * 50 + 7, bad)
    path = tmp_path / "server.log"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    done = run_example("logs.py", str(path))
    assert done.returncode == 0, done.stderr
    tables = parse_tables(done.stdout)
    assert tables[f"SKIPPED LINES: 11 of {len(lines):,}"] == [
        ["bad status code", "3"],
        ["not in log format", "6"],
        ["unknown level", "2"],
    ]
    assert "Disk full" not in done.stdout
    check_log_report(done.stdout, lines)


def test_logs_rejects_a_missing_file(tmp_path: pathlib.Path) -> None:
    done = run_example("logs.py", str(tmp_path / "nope.log"))
    assert done.returncode == 2
    assert "no such file" in done.stderr
    assert "Traceback" not in done.stderr


# hashtags.py


async def collect(tweets: AsyncIterator[str]) -> list[str]:
    return [tweet async for tweet in tweets]


def test_hashtags_mapper_finds_tags_and_ignores_lookalikes() -> None:
    hashtags = load_example("hashtags")
    tweet = "C# is #1 at #PyCon!! (#python3) #Go_lang... #100DaysOfCode page#anchor #"
    assert [tag for tag, _ in hashtags.hashtags(tweet)] == [
        "pycon",
        "python3",
        "go_lang",
        "100daysofcode",
    ]


def test_hashtags_top_ten_match_a_plain_count() -> None:
    hashtags = load_example("hashtags")
    assert inspect.isasyncgen(hashtags.generate_tweets(0, 3))
    tweets = asyncio.run(collect(hashtags.generate_tweets(3000, 3)))
    counts: collections.Counter[str] = collections.Counter()
    for tweet in tweets:
        for token in tweet.split():
            name = token[1:].rstrip(string.punctuation)
            if token.startswith("#") and any(c.isalpha() for c in name):
                counts[name.lower()] += 1
    assert any(c.isupper() for tweet in tweets for c in tweet)  # mixed case in the input

    done = run_example("hashtags.py", "--tweets", "3000", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "TOP 10 HASHTAGS"
    rows = [line.split(" : ") for line in lines[2:12]]
    assert [(tag.strip(), int(n)) for tag, n in rows] == [
        (f"#{t}", n) for t, n in ranked(counts, 10)
    ]
    assert lines[-1] == f"3000 tweets, {counts.total()} hashtags, {len(counts)} distinct"
