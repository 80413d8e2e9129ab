"""What every benchmark shares: its command line, interleaved rounds, medians, tables, the docs.

A benchmark script is its measurement: its contenders, workload, checks and tables. It hands
them to `main`, which parses the shared options (``--runs``, ``--quick``, ``--write-docs``,
``--docs-page``, ``--load``), runs a contender when the script was started as one, measures,
keeps the raw figures, prints the section and writes it to the docs page.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import pickle
import re
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import _machine
from _machine import REPO_ROOT, uvloop_version

DOCS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"
DATA_DIR = Path("/tmp/aiomr-bench")
"""Generated inputs, and the raw figures of each benchmark's last measurement."""
SECTIONS = ("streaming", "loop_lag", "fixed_cost")
"""The sections `run_all.py` writes, after the ``machine`` section."""

T = TypeVar("T")
M = TypeVar("M")


def progress(message: str) -> None:
    """Report progress on stderr, keeping stdout for the section."""
    print(message, file=sys.stderr, flush=True)


# Event loops -----------------------------------------------------------------------------------


def loop_names(choice: str) -> list[str]:
    """Return the event loops to measure for a ``--loop`` choice."""
    if choice == "both":
        return ["asyncio", "uvloop"] if uvloop_version() else ["asyncio"]
    if choice == "uvloop" and not uvloop_version():
        raise SystemExit("uvloop is not installed")
    return [choice]


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop of the named kind."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_label(loop: str) -> str:
    """Describe an event loop for tables, with its version."""
    return f"uvloop {uvloop_version()}" if loop == "uvloop" else "asyncio (default loop)"


# Rounds and statistics -------------------------------------------------------------------------


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """Return ``items`` rotated by ``shift``, so no variant always runs first in a round."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def interleaved(items: Sequence[T], rounds: int, *, first: int = 0) -> Iterator[tuple[int, T]]:
    """Yield ``(round, item)``: every item once a round, in an order rotating each round."""
    for round_ in range(first, rounds):
        for item in rotated(items, round_):
            yield round_, item


def median(values: Iterable[float | None]) -> float:
    """The median of the figures that are there (not None, not NaN); NaN when none is."""
    there = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(there) if there else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(max(1, math.ceil(q / 100 * len(ordered))), len(ordered)) - 1]


def ratios(ours: Iterable[float], theirs: Iterable[float]) -> list[float]:
    """Each round's figure over the other's figure of the same round."""
    return [a / b for a, b in zip(ours, theirs, strict=True)]


def by_round(ours: Iterable[Any], theirs: Iterable[Any], name: str = "wall") -> list[float]:
    """``ours``' figure ``name`` over ``theirs``', for the rounds (``.round``) both have."""
    other = {r.round: getattr(r, name) for r in theirs}
    return [getattr(r, name) / other[r.round] for r in ours if r.round in other]


def differences(got: dict[Any, int], want: dict[Any, int], reference: str) -> list[str]:
    """Say how the answer ``got`` differs from ``want``, if it does: the check of every run."""
    if got == want:
        return []
    wrong = sorted((k for k in want.keys() | got.keys() if got.get(k) != want.get(k)), key=str)
    shown = ", ".join(f"{k!r}: {got.get(k)} != {want.get(k)}" for k in wrong[:5])
    return [f"{len(wrong):,} keys differ from {reference}: {shown}"]


# Formatting ------------------------------------------------------------------------------------


def fmt_rate(per_second: float) -> str:
    """Format a throughput in millions or thousands of records per second."""
    return f"{per_second / 1e6:.2f} M/s" if per_second >= 1e6 else f"{per_second / 1e3:.1f} k/s"


def fmt_ms(seconds: float, digits: int = 2) -> str:
    """Format seconds as milliseconds."""
    return f"{seconds * 1e3:.{digits}f}"


def fmt_ratio(ratio: float) -> str:
    """Format a ratio with two decimals, or two significant digits when it is tiny."""
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def na(value: float, spec: str, unit: str = "") -> str:
    """Format ``value`` with ``spec`` and ``unit``, or ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else f"{value:{spec}}{unit}"


def span(values: Sequence[float], spec: str, unit: str = "") -> str:
    """The range of ``values``: ``1.20 to 1.50 s``."""
    return f"{min(values):{spec}} to {max(values):{spec}}{unit}" if values else "n/a"


def per_run(values: Sequence[int]) -> str:
    """A median and the per-run values: ``2 (2, 2, 3)``."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):g} ({', '.join(str(v) for v in values)})"


def mb(size: float) -> str:
    """Format bytes as megabytes: ``118 MB``."""
    return f"{size / 1e6:,.0f} MB"


def choose(text: str | None, known: Iterable[str], what: str) -> list[str]:
    """The comma-separated names in ``text`` (all when None), in ``known``'s order."""
    known = list(known)
    asked = [k.strip() for k in text.split(",")] if text else known
    if unknown := [k for k in asked if k not in known]:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; try {', '.join(known)}")
    return [k for k in known if k in asked]


def missing_module(modules: Iterable[str]) -> str | None:
    """The first of ``modules`` whose package is not installed, if any."""
    return next((m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None), None)


def choose_installed(
    text: str | None, contenders: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The contenders ``text`` names (all when None) whose modules are installed, and those
    left out because one is not (each said so); ``contenders`` map names to objects with
    their ``modules``."""
    keys = choose(text, contenders, "contenders")
    skipped = [k for k in keys if missing_module(contenders[k].modules)]
    for key in skipped:
        progress(f"skipping {key}: {missing_module(contenders[key].modules)} is not installed")
    return [k for k in keys if k not in skipped], skipped


def failed(run: Any) -> str:
    """The lines saying what a run failed, for the progress report."""
    return "".join(f"\n  FAILED: {p}" for p in [run.error, *run.problems] if p)


def verdict(met: bool) -> str:
    """Word a target check for a table."""
    return "met" if met else "**missed**"


def times(n: int) -> str:
    """``once``, ``3 times``."""
    return "once" if n == 1 else f"{n} times"


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: Sequence[int] = (0,)
) -> str:
    """Render a markdown table; columns numbered in ``left`` align left, the others right."""
    align = [":---" if i in left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# Measurements ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Measurements:
    """Every run of a benchmark, and what it ran on."""

    rounds: int = 0
    runs: list[Any] = field(default_factory=list)
    machine: str = field(default_factory=_machine.machine_line)
    aiomr: str = field(default_factory=_machine.aiomr_revision)
    began: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def of(self, key: str, *, ok: bool = True) -> list[Any]:
        """The runs of variant ``key``: those that passed their checks, or all."""
        return [r for r in self.runs if r.key == key and (r.ok or not ok)]

    def add(self, run: Any, note: str = "") -> None:
        """Keep a run, say so, and count the time so far."""
        self.runs.append(run)
        self.seconds = time.perf_counter() - self.began
        progress(f"round {run.round + 1}/{self.rounds} {run.key}: {note}")

    def wall(self, key: str) -> float:
        """The median wall time of variant ``key``."""
        return median(r.wall for r in self.of(key))

    def speedup(self, key: str, baseline: str) -> float:
        """Median over rounds of ``baseline``'s wall time over ``key``'s, in the same round;
        the ratio of the medians when no round ran both (a slow baseline ran fewer times)."""
        paired = by_round(self.of(baseline), self.of(key))
        return median(paired) if paired else self.wall(baseline) / self.wall(key)

    def runs_ok(self, key: str) -> str:
        """``4 of 5``: the runs of variant ``key`` that passed their checks, of all."""
        return f"{len(self.of(key))} of {len(self.of(key, ok=False))}"

    def all_ok(self) -> bool:
        """Whether every run passed its checks."""
        return all(r.ok for r in self.runs)


# The docs page ---------------------------------------------------------------------------------


def wall_table(
    m: Measurements,
    labels: dict[str, str],
    size_bytes: int,
    baseline: str,
    heading: str,
    digits: int,
) -> str:
    """The contenders' wall time, throughput, CPU and memory, and their speed against
    ``baseline`` (`Measurements.speedup`), one row per contender that has runs."""
    headers = ["contender", "runs", "wall (median)", "range", "MB/s", "CPU s", "caller peak RSS"]
    spec = f".{digits}f"
    rows = []
    for key in (k for k in labels if m.of(k)):
        runs, wall = m.of(key), m.wall(key)
        ratio = m.speedup(key, baseline) if m.of(baseline) else math.nan
        rows.append(
            [
                labels[key],
                str(len(runs)),
                f"{wall:{spec}} s",
                span([r.wall for r in runs], spec, " s"),
                f"{size_bytes / 1e6 / wall:.0f}",
                f"{median(r.cpu for r in runs):.1f}",
                mb(median(r.caller_peak for r in runs)),
                mb(median(r.tree_peak for r in runs)),
                f"{fmt_ratio(ratio)}x" if not math.isnan(ratio) else "n/a",
            ]
        )
    return markdown_table([*headers, "all processes peak RSS", heading], rows)


def lag_table(m: Measurements, labels: dict[str, str]) -> str:
    """Each contender's event-loop lag (its runs' ``ticks``, ``lag_p99``, ``lag_max``)."""
    rows = [
        [
            labels[key],
            str(len(runs)),
            f"{median(r.ticks for r in runs):,.0f}",
            f"{fmt_ms(median(r.lag_p99 for r in runs), 1)} ms",
            f"{fmt_ms(max(r.lag_max for r in runs), 1)} ms",
        ]
        for key in labels
        if (runs := [r for r in m.of(key) if r.ticks])
    ]
    headers = ["contender", "runs", "ticks per run", "lag p99 (median of runs)"]
    return markdown_table([*headers, "lag max (worst run)"], rows)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- benchmark:{name}:begin -->", f"<!-- benchmark:{name}:end -->"


def machine_table() -> str:
    """The machine and the software, as the page's ``machine`` section shows them."""
    return markdown_table(["", "value"], _machine.machine_rows(), left=(0, 1))


def write_section(name: str, body: str, page: Path = DOCS_PAGE) -> None:
    """Replace the generated section ``name`` of the docs page with ``body``; keep the rest.

    Only the text between the section's markers is generated: the prose around it is the
    page's own. A section not on the page yet (a scratch page) goes at its end. The page is
    read right before it is written, so sections other scripts wrote meanwhile survive.
    """
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    text = page.read_text(encoding="utf-8") if page.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")


# The command line ------------------------------------------------------------------------------


def positive(text: str) -> int:
    """An argument that must be a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def parser(
    doc: str | None, *, runs: int, quick_runs: int = 1, loop: str | None = None
) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark shares.

    ``runs`` and ``quick_runs`` are the rounds without and with ``--quick``; with ``loop``
    (its default choice) the parser offers ``--loop``.
    """
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    default = f"default {runs}" if runs else "default: each script's own"
    p.add_argument("--runs", type=positive, help=f"rounds of every variant ({default})")
    p.add_argument("--quick", action="store_true", help="a fast smoke run on small inputs")
    p.add_argument("--write-docs", action="store_true", help="write the section to the page")
    p.add_argument(
        "--docs-page",
        type=Path,
        default=DOCS_PAGE,
        help=f"the page --write-docs writes (default {DOCS_PAGE.relative_to(REPO_ROOT)})",
    )
    p.add_argument(
        "--load",
        type=Path,
        nargs="?",
        const=True,
        help="measure nothing: report the raw figures kept by the last run (or of this file)",
    )
    p.add_argument("--contender", nargs="+", help=argparse.SUPPRESS)
    if loop is not None:
        choices = ["asyncio", "uvloop", "both"]
        p.add_argument("--loop", choices=choices, default=loop, help=f"default: {loop}")
    p.set_defaults(default_runs=(runs, quick_runs))
    return p


def main(
    section: str,
    p: argparse.ArgumentParser,
    measure: Callable[[argparse.Namespace], M],
    render: Callable[[M], str],
    *,
    contender: Callable[[list[str]], dict[str, Any]] | None = None,
    ok: Callable[[M], bool] | None = None,
    also_write: Callable[[M, Path], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Run a benchmark from its command line; return the exit status.

    Started as ``--contender ARGS... OUT``, run ``contender`` (see `_machine.contender_main`).
    Otherwise measure (or ``--load`` the raw figures kept by the last run), print the section,
    and with ``--write-docs`` write it to the page (and ``also_write`` beside it). The status
    is 1 when ``ok`` says a run failed its checks.
    """
    args = p.parse_args(argv)
    if args.contender:
        assert contender is not None, f"{section} has no contender"
        _machine.contender_main(contender, args.contender)
        return 0
    if args.quick and args.write_docs and args.docs_page.resolve() == DOCS_PAGE:
        p.error("--quick figures are not for the docs; drop --write-docs or pass --docs-page")
    args.runs = args.runs or args.default_runs[args.quick]
    kept = DATA_DIR / f"last-{section}.pickle"
    if args.load is not None:
        with open(kept if args.load is True else args.load, "rb") as f:
            m = pickle.load(f)
    else:
        m = measure(args)
        save(m, kept)
    text = render(m)
    print(text)
    if args.write_docs:
        write_section(section, text, args.docs_page)
        if also_write is not None:
            also_write(m, args.docs_page.parent)
        progress(f"wrote {args.docs_page}")
    return 0 if ok is None or ok(m) else 1


def save(m: object, path: Path) -> None:
    """Keep the raw figures of a measurement, for ``--load``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".part"), "wb") as f:
        pickle.dump(m, f, pickle.HIGHEST_PROTOCOL)
    os.replace(path.with_suffix(".part"), path)
