"""Progress events, their terminal displays, and what the library logs."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import operator
import os
import pathlib
import time

import pytest

import aiomr


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


async def test_progress_events_while_a_file_job_runs(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{n}\n" for n in range(200_000)))
    stats = aiomr.JobStats()
    source = aiomr.sources.files(path, split_size=64 * 1024)
    job = asyncio.create_task(engine.map_reduce(source, int, operator.add, stats=stats))
    events = [event async for event in aiomr.progress(stats, every_seconds=0.01)]
    assert await job == sum(range(200_000))
    last = events[-1]
    assert last.done
    assert [e.done for e in events].count(True) == 1
    assert last.records == 200_000
    assert last.bytes_total == last.bytes_done == path.stat().st_size
    assert last.fraction == 1.0
    assert last.chunks_in_flight == 0
    assert last.chunks_done == stats.chunks
    records = [e.records for e in events]
    assert records == sorted(records)
    assert all(e.eta is None or e.eta >= 0 for e in events)
    assert last.eta == 0


async def test_report_progress_calls_back_until_the_end(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    events: list[aiomr.Progress] = []
    async with aiomr.report_progress(stats, events.append, every_seconds=0.01):
        total = await engine.map_reduce(range(3000), slow_square, operator.add, stats=stats)
    assert total == sum(x * x for x in range(3000))
    assert events
    assert events[-1].done
    assert events[-1].records == 3000
    assert events[-1].bytes_total is None
    assert events[-1].eta is None
    assert events[-1].fraction is None


@pytest.mark.parametrize("use_tqdm", [True, False])
async def test_show_progress_on_a_terminal(engine: aiomr.Engine, use_tqdm: bool) -> None:
    terminal = Terminal()
    stats = aiomr.JobStats()
    async with aiomr.show_progress(stats, stream=terminal, interval=0.01, use_tqdm=use_tqdm):
        await engine.map_reduce(range(3000), slow_square, operator.add, stats=stats)
    drawn = terminal.getvalue()
    assert "records" in drawn if not use_tqdm else "rec" in drawn
    # Nothing at all where the stream is not a terminal.
    quiet = io.StringIO()
    async with aiomr.show_progress(stats, stream=quiet, interval=0.01):
        await asyncio.sleep(0.05)
    assert quiet.getvalue() == ""


def die_once(marker: str, x: int) -> int:
    if x == 77 and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        os._exit(3)
    return x


async def test_the_library_logs_what_it_survives(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiomr")
    mapper = functools.partial(die_once, str(tmp_path / "died"))
    total = await aiomr.map_reduce(range(200), mapper, operator.add, chunk_size=10, max_workers=2)
    assert total == sum(range(200))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("aiomr")]
    # How it ended is named, and that another worker takes its place.
    assert any(
        m.startswith("worker ") and "exited with status 3; starting another" in m for m in messages
    )
    assert any("again" in m for m in messages)


async def test_skipped_records_are_summed_up_in_one_warning(
    engine: aiomr.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiomr")
    total = await engine.map_reduce(
        ["1", "x", "3", "y"], int, operator.add, on_error="skip", chunk_size=2
    )
    assert total == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("skipped 2 bad records of 4 (on_error='skip')")
