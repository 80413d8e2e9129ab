"""Shared helpers of the benchmarks: event loops, statistics, tables and the docs page.

Every benchmark script imports this module from its own directory, so it runs as
``python3 benchmarks/NAME.py`` from the repository root without installing anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import importlib.metadata
import math
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from _imports import REPO_ROOT as REPO_ROOT
from _imports import import_names as import_names

DOCS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"

SECTIONS: tuple[tuple[str, str], ...] = (
    ("streaming", "Streaming throughput"),
    ("loop_lag", "Event-loop lag under a CPU-bound job"),
    ("fixed_cost", "Fixed cost of a job"),
)
"""The page's sections in order: the script name and its heading."""

T = TypeVar("T")


# Event loops ---------------------------------------------------------------------------------


def uvloop_available() -> bool:
    """Tell whether uvloop can be imported."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_names(choice: str) -> list[str]:
    """Return the event loops to measure for a ``--loop`` choice."""
    if choice == "both":
        return ["asyncio", "uvloop"] if uvloop_available() else ["asyncio"]
    if choice == "uvloop" and not uvloop_available():
        raise SystemExit("uvloop is not installed")
    return [choice]


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the loop factory for ``name`` ("asyncio" or "uvloop")."""
    if name == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop of the named kind."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


def loop_label(loop: str) -> str:
    """Describe an event loop for tables, with its version."""
    if loop == "uvloop":
        return f"uvloop {importlib.metadata.version('uvloop')}"
    return "asyncio (default loop)"


# Statistics ----------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    """Return the median of ``values``."""
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """Return ``items`` rotated by ``shift``, so no variant always runs first in a round."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def fmt_rate(records_per_second: float) -> str:
    """Format a throughput in millions or thousands of records per second."""
    if records_per_second >= 1e6:
        return f"{records_per_second / 1e6:.2f} M/s"
    return f"{records_per_second / 1e3:.1f} k/s"


def fmt_ms(seconds: float, digits: int = 2) -> str:
    """Format seconds as milliseconds."""
    return f"{seconds * 1e3:.{digits}f}"


def fmt_ratio(ratio: float) -> str:
    """Format a ratio with two decimals, or three significant digits when it is tiny."""
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def verdict(met: bool) -> str:
    """Word a target check for a table."""
    return "met" if met else "**missed**"


# Tables and the docs page --------------------------------------------------------------------


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: Sequence[int] = (0,)
) -> str:
    """Render a markdown table; columns numbered in ``left`` align left, the others right."""
    rows = [list(row) for row in rows]
    align = [":---" if i in left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine_rows() -> list[tuple[str, str]]:
    """Describe the machine and the software the figures were measured with."""
    import aiomr

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    uvloop_version = "not installed"
    if uvloop_available():
        uvloop_version = importlib.metadata.version("uvloop")
    return [
        ("CPUs (nproc)", f"{usable} CPUs ({cpu})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("aiomr", f"{aiomr.__version__}{_checkout_revision()}"),
        ("event loops", f"asyncio's default loop; uvloop {uvloop_version}"),
        ("load average at start (1, 5, 15 min)", load),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return completed.stdout.strip()


def _checkout_revision() -> str:
    """Name the checkout's commit, when aiomr is imported from a git checkout."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        modified = _git("status", "--porcelain", "--", "aiomr")
    except (OSError, subprocess.SubprocessError):
        return ""
    return f" (commit {commit}{', with local changes to aiomr/' if modified else ''})"


def machine_line() -> str:
    """Summarise the machine in one line, for the top of a section."""
    rows = dict(machine_rows())
    load = rows["load average at start (1, 5, 15 min)"]
    return (
        f"Measured on {rows['CPUs (nproc)']}, {rows['Python']}, {rows['OS']}, "
        f"on {rows['date']}; load average at start {load}."
    )


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmark:{name}:begin -->", f"<!-- benchmark:{name}:end -->"


_ANY_SECTION = re.compile(
    r"<!-- benchmark:(?P<name>[\w-]+):begin -->.*?<!-- benchmark:(?P=name):end -->", re.DOTALL
)


def other_sections(page: Path = DOCS_PAGE) -> list[str]:
    """Return the sections of the page written by benchmarks other than the ones run here."""
    if not page.exists():
        return []
    ours = {name for name, _ in SECTIONS}
    text = page.read_text(encoding="utf-8")
    return [m.group(0) for m in _ANY_SECTION.finditer(text) if m.group("name") not in ours]


def page_skeleton(extra: Sequence[str] = ()) -> str:
    """Return the benchmarks page with empty sections, the machine, then ``extra`` sections."""
    machine = markdown_table(["", "value"], [list(row) for row in machine_rows()], left=(0, 1))
    parts = [
        "# Benchmarks",
        "",
        "Figures measured by the scripts in `benchmarks/`. Each compares aiomr with baselines "
        "measured in the same run, on the same machine, interleaved round by round, and reports "
        "medians of several runs and ratios rather than single timings. The machine is small "
        "and shared, so absolute figures move from run to run; the ratios move much less.",
        "",
        "Run the streaming, loop-lag and fixed-cost benchmarks and rewrite their sections "
        "(other sections of this page are kept) with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/run_all.py",
        "```",
        "",
        "or one at a time, with `--quick` for a smoke run and `--write-docs` to update its "
        "section here:",
        "",
        "```console",
        "python3 benchmarks/streaming.py --write-docs",
        "python3 benchmarks/loop_lag.py --write-docs",
        "python3 benchmarks/fixed_cost.py --write-docs",
        "```",
        "",
        "`flock` keeps two timed runs from sharing the machine; any other load shows in the "
        "figures, so each section records the load average when it started.",
        "",
        "## Machine",
        "",
        machine,
        "",
    ]
    for name, heading in SECTIONS:
        begin, end = _markers(name)
        parts += [
            begin,
            f"## {heading}",
            "",
            f"Not measured yet: run `python3 benchmarks/{name}.py --write-docs`.",
            end,
            "",
        ]
    for section in extra:
        parts += [section.strip(), ""]
    return "\n".join(parts)


def write_section(name: str, body: str, page: Path = DOCS_PAGE) -> None:
    """Replace the section ``name`` of the docs page with ``body``; keep everything else.

    A new page starts from the skeleton. On a page without this section, the section goes
    before the next of `SECTIONS` present, or at the end. The page is read right before it
    is written, so sections other scripts wrote in the meantime survive.
    """
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = page.read_text(encoding="utf-8") if page.exists() else page_skeleton()
    if begin in text and end in text:
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        names = [n for n, _ in SECTIONS]
        later = [_markers(n)[0] for n in names[names.index(name) + 1 :] if _markers(n)[0] in text]
        if later:
            at = text.index(later[0])
            text = f"{text[:at]}{block}\n\n{text[at:]}"
        else:
            text = f"{text.rstrip()}\n\n{block}\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")


def write_extra_section(name: str, body: str, page: Path = DOCS_PAGE) -> None:
    """Replace the section ``name`` of the docs page, or append it; keep everything else.

    For benchmarks that are not among `SECTIONS` (they run on their own, not from
    ``run_all.py``). The page is read right before it is written, so sections written
    meanwhile survive.
    """
    begin, end = _markers(name)
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    if begin in text and end in text:
        write_section(name, body, page)
        return
    if not text:
        text = page_skeleton()
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"{text.rstrip()}\n\n{begin}\n{body.strip()}\n{end}\n", encoding="utf-8")


# Machine load --------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# Command line --------------------------------------------------------------------------------


def parser(description: str, *, default_runs: int) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--runs",
        type=int,
        default=default_runs,
        help=f"timed rounds per variant (default {default_runs})",
    )
    p.add_argument("--quick", action="store_true", help="a fast smoke run with small sizes")
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="event loop(s) to measure (default: both when uvloop is installed)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the table to its section of {DOCS_PAGE.relative_to(REPO_ROOT)}",
    )
    return p


def progress(message: str) -> None:
    """Report progress on stderr, keeping stdout for the table."""
    print(message, file=sys.stderr, flush=True)
