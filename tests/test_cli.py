"""The aiomr command, run as users run it: a real process, real files, real signals."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

import aiomr
from aiomr._progress import format_progress
from aiomr.cli import words_of

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent


def aiomr_command(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiomr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture
def corpus(tmp_path: pathlib.Path) -> pathlib.Path:
    texts = {
        "a.txt": "The cat sat on the mat.\nThe dog, the cat!\n",
        "sub/b.txt": "A cat is a cat; dogs are dogs.\n" * 30,
        "sub/c.md": "Mat mat MAT mat\n",
    }
    for name, text in texts.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def expected_counts(root: pathlib.Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            for line in path.read_text().splitlines():
                counts.update(word for word, _ in words_of(line))
    return counts


def test_wordcount_table(corpus: pathlib.Path) -> None:
    done = aiomr_command("wordcount", str(corpus), "--top", "3", "--workers", "2")
    assert done.returncode == 0, done.stderr
    rows = [line.split(" : ") for line in done.stdout.splitlines()]
    assert [(w.strip(), int(c)) for w, c in rows] == expected_counts(corpus).most_common(3)
    assert done.stderr == ""  # no progress bar when stderr is not a terminal


def test_wordcount_json_and_globs(corpus: pathlib.Path) -> None:
    done = aiomr_command("wordcount", str(corpus / "**" / "*.txt"), "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    counts = expected_counts(corpus)
    counts.subtract({"mat": 4})  # the .md file is not matched
    assert rows[0] == {"word": "cat", "count": counts["cat"]}


def test_ngram(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "1gram.tsv"
    data.write_text(
        "Aardvark\t1900\t12\t3\nAardvark\t1901\t30\t7\nAbacus\t1950\t5\t5\nZebra\t2000\t7\t1\n"
    )
    done = aiomr_command("ngram", str(data), "--chunk-size", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Aardvark has appeared 42 times\n"
    other = aiomr_command("ngram", str(data), "--word", "Zebra", "--executor", "inline")
    assert other.stdout == "Zebra has appeared 7 times\n"


def test_run_a_job_from_a_file(corpus: pathlib.Path, tmp_path: pathlib.Path) -> None:
    jobs = tmp_path / "jobs.py"
    jobs.write_text(
        "import aiomr\n"
        "class LineLengths(aiomr.Job):\n"
        "    def mapper(self, _, line):\n"
        "        yield len(line), 1\n"
        "    def reducer(self, length, ones):\n"
        "        yield length, sum(ones)\n"
    )
    done = aiomr_command("run", f"{jobs}:LineLengths", str(corpus / "a.txt"), "--sort")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "17\t1\n23\t1\n"
    as_json = aiomr_command("run", f"{jobs}:LineLengths", str(corpus / "a.txt"), "--json")
    assert {json.loads(line)["key"] for line in as_json.stdout.splitlines()} == {17, 23}


def test_a_failing_job_shows_its_traceback_and_the_record(tmp_path: pathlib.Path) -> None:
    jobs = tmp_path / "jobs.py"
    jobs.write_text(
        "import aiomr\n"
        "class Picky(aiomr.Job):\n"
        "    def mapper(self, _, line):\n"
        "        if line == 'line 637':\n"
        "            raise ValueError(f'no {line!r} please')\n"
        "        yield line, 1\n"
    )
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {i}\n" for i in range(1000)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "aiomr", "run", f"{jobs}:Picky", str(data), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
        check=False,
    )
    assert done.returncode == 1
    assert list(scratch.iterdir()) == []  # the job's files are gone
    assert "aiomr: aiomr:" not in done.stderr
    # The worker's traceback names the job file and shows the failing line.
    assert f'File "{jobs}", line 5, in mapper' in done.stderr
    assert "raise ValueError(f'no {line!r} please')" in done.stderr
    last = done.stderr.splitlines()[-2:]
    assert last[0] == "aiomr: ValueError: no 'line 637' please"
    assert re.fullmatch(
        r"aiomr: raised by user code at record 637 of the split, in split 0 \(.*\) \(pid \d+\)",
        last[1],
    ), last[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wordcount", "/no/such/file"], "aiomr: /no/such/file: no such file or directory\n"),
        (["ngram", "/no/*.tsv"], "aiomr: /no/*.tsv: no file matches this pattern\n"),
        (
            ["run", "nojob", "."],
            "aiomr: nojob: expected FILE_OR_MODULE:JOB, e.g. jobs.py:WordCount\n",
        ),
        (["run", "json:dumps", "."], "aiomr: json:dumps: not an aiomr.Job subclass\n"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str) -> None:
    done = aiomr_command(*args)
    assert done.returncode == 2
    assert done.stderr == message
    assert done.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("x\n")
    path.chmod(0)
    done = aiomr_command("wordcount", str(path))
    assert done.returncode == 2
    assert done.stderr == f"aiomr: {path}: permission denied\n"


def test_help_has_examples() -> None:
    done = aiomr_command("--help")
    assert done.returncode == 0
    assert "examples:" in done.stdout
    assert "aiomr ngram" in done.stdout


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [(signal.SIGINT, 130, "aiomr: interrupted\n"), (signal.SIGTERM, 143, "aiomr: terminated\n")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_stops_cleanly_and_leaves_no_worker_nor_file(
    tmp_path: pathlib.Path, signum: int, status: int, said: str
) -> None:
    marker = tmp_path / "started"
    jobs = tmp_path / "slow.py"
    jobs.write_text(
        "import pathlib, time, aiomr\n"
        "class Slow(aiomr.Job):\n"
        "    def mapper(self, _, line):\n"
        f"        pathlib.Path({str(marker)!r}).touch()\n"
        "        time.sleep(0.2)\n"
        "        yield line, 1\n"
        "    def reducer(self, key, ones):\n"
        "        yield key, sum(ones)\n"
    )
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {i}\n" for i in range(2000)))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiomr", "run", f"{jobs}:Slow", str(data), "--chunk-size", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    family = psutil.Process(process.pid).children(recursive=True)
    assert family, "no worker processes found"
    assert any(scratch.iterdir()), "the job keeps its files in TMPDIR"
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert err == said
    assert out == ""
    _, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []
    assert list(scratch.iterdir()) == []


def test_progress_line() -> None:
    stats = aiomr.JobStats(records=1500, chunks=4, chunks_done=2, started_at=time.monotonic() - 2)
    assert format_progress(stats).startswith("1.5k records, 2/4 chunks")
    stats.bytes_total = 1000
    stats.bytes_done = 250
    line = format_progress(stats)
    assert "25.0%" in line
    assert "250 B/1.0 KB" in line
    assert "ETA" in line
