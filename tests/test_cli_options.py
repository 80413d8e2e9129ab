"""The aiomr command's options: bad records, binary files, imports, version, Dask."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import distributed
import pytest

import aiomr

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def aiomr_command(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiomr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=cwd,
        check=False,
    )


PICKY_JOB = textwrap.dedent(
    """\
    import aiomr

    class Picky(aiomr.Job):
        def mapper(self, _, line):
            if line.startswith("bad"):
                raise ValueError(f"no {line!r}")
            yield line, 1

        def reducer(self, line, ones):
            yield line, sum(ones)
    """
)


@pytest.fixture
def picky(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    jobs = tmp_path / "jobs.py"
    jobs.write_text(PICKY_JOB)
    data = tmp_path / "data.txt"
    data.write_text("a\nbad one\nb\na\nbad two\n")
    return jobs, data


def test_skip_leaves_bad_records_out_and_says_so(
    tmp_path: pathlib.Path, picky: tuple[pathlib.Path, pathlib.Path]
) -> None:
    jobs, data = picky
    dead = tmp_path / "bad.jsonl"
    done = aiomr_command(
        "run",
        f"{jobs}:Picky",
        str(data),
        "--sort",
        "--on-error",
        "skip",
        "--dead-letter",
        str(dead),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\t2\nb\t1\n"
    assert done.stderr == (
        f"aiomr: skipped 2 bad records of 5, written to {dead}; the first at "
        f"{data}:2 (byte 2): ValueError: no 'bad one'\n"
    )
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [bad["record"] for bad in written] == ["b'bad one'", "b'bad two'"]


def test_collect_lists_every_bad_record(picky: tuple[pathlib.Path, pathlib.Path]) -> None:
    jobs, data = picky
    done = aiomr_command("run", f"{jobs}:Picky", str(data), "--on-error", "collect")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("aiomr: skipped 2 bad records of 5; the first at ")
    assert lines[1:] == [
        f"aiomr: bad record at {data}:2 (byte 2): ValueError: no 'bad one': b'bad one'",
        f"aiomr: bad record at {data}:5 (byte 14): ValueError: no 'bad two': b'bad two'",
    ]


def test_wordcount_takes_the_options_too(tmp_path: pathlib.Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("the cat and the hat\n")
    dead = tmp_path / "bad.jsonl"
    done = aiomr_command(
        "wordcount", str(text), "--top", "1", "--on-error", "skip", "--dead-letter", str(dead)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the : 2\n"
    assert done.stderr == ""  # nothing was skipped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["wordcount", "--dead-letter", "bad.jsonl"],
            "aiomr: --dead-letter needs --on-error skip or --on-error collect\n",
        ),
        (
            ["wordcount", "--scheduler", "tcp://127.0.0.1:1", "--executor", "thread"],
            "aiomr: --scheduler runs on Dask: it cannot go with --executor thread\n",
        ),
    ],
)
def test_options_that_do_not_go_together(
    tmp_path: pathlib.Path, args: list[str], message: str
) -> None:
    data = tmp_path / "data.tsv"
    data.write_text("Aardvark\t1900\t12\t3\n")
    done = aiomr_command(*args[:1], str(data), *args[1:], cwd=tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (2, message, "")


def write_binary(path: pathlib.Path) -> pathlib.Path:
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 64)
    return path


def test_wordcount_leaves_binary_files_out(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "lib"
    tree.mkdir()
    for name in ("a.so", "b.so", "c.so", "d.so"):
        write_binary(tree / name)
    (tree / "notes.txt").write_text("the cat and the hat\n")
    done = aiomr_command("wordcount", str(tree), "--top", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "the : 2"
    assert done.stderr == (
        "aiomr: skipped 4 binary files (a NUL byte in the first 8192 bytes): "
        f"{tree / 'a.so'}, {tree / 'b.so'}, {tree / 'c.so'} and 1 more\n"
    )


def test_wordcount_over_binary_files_only_is_refused(tmp_path: pathlib.Path) -> None:
    lib = write_binary(tmp_path / "libx.so")
    done = aiomr_command("wordcount", str(lib))
    assert done.returncode == 2
    assert done.stderr == (
        "aiomr: no text files to read: 1 file look binary (a NUL byte in the first 8192 bytes): "
        f"{lib}\n"
    )


LAUNCHER = (
    "import sys\nfrom aiomr.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"
)
"""What the installed ``aiomr`` script does: its own directory, not the current one, comes
first on sys.path."""


def run_installed_command(
    tmp_path: pathlib.Path, *args: str, cwd: pathlib.Path
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    launcher = bin_dir / "aiomr"
    launcher.write_text(LAUNCHER)
    return subprocess.run(
        [sys.executable, str(launcher), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=cwd,
        check=False,
    )


SIBLING_JOB = textwrap.dedent(
    """\
    import aiomr
    import shout
    from shout import loud

    class Loud(aiomr.Job):
        def mapper(self, _, line):
            # Both run in the workers: a module and a function of it, by name.
            yield loud(line), shout.PID()

        def reducer(self, word, pids):
            yield word, len(set(pids))
    """
)
SHOUT = (
    "import os\n\ndef loud(text):\n    return text.upper()\n\ndef PID():\n    return os.getpid()\n"
)


def test_a_job_file_imports_its_sibling_modules_in_the_workers(tmp_path: pathlib.Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "jobs.py").write_text(SIBLING_JOB)
    (project / "shout.py").write_text(SHOUT)
    data = tmp_path / "data.txt"
    data.write_text("a\nb\n" * 50)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_installed_command(
        tmp_path,
        "run",
        str(project / "jobs.py") + ":Loud",
        str(data),
        "--sort",
        "--workers",
        "2",
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["A", "B"]


def test_a_module_job_imports_from_the_current_directory(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jobs.py").write_text(
        SIBLING_JOB.replace("import shout\nfrom shout", "from mypkg import shout\nfrom mypkg.shout")
    )
    (package / "shout.py").write_text(SHOUT)
    data = tmp_path / "data.txt"
    data.write_text("a\nb\n" * 50)
    done = run_installed_command(
        tmp_path, "run", "mypkg.jobs:Loud", str(data), "--sort", "--workers", "2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["A", "B"]


def test_version() -> None:
    done = aiomr_command("--version")
    assert done.returncode == 0
    assert done.stdout == f"aiomr {importlib.metadata.version('aiomr')}\n"


async def test_a_running_dask_scheduler_and_no_dask_chatter(tmp_path: pathlib.Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("the cat and the hat\n" * 20)
    async with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",  # another process connects to it
        asynchronous=True,
        dashboard_address=":0",
    ) as cluster:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiomr",
            "wordcount",
            str(text),
            "--top",
            "1",
            "--scheduler",
            cluster.scheduler_address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert out.decode() == "the : 40\n"
    assert err.decode() == ""


def test_a_local_dask_cluster_is_quiet_unless_asked(tmp_path: pathlib.Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("the cat and the hat\n")
    done = aiomr_command(
        "wordcount", str(text), "--top", "1", "--executor", "dask", "--workers", "1"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the : 2\n"
    assert done.stderr == ""
    verbose = aiomr_command(
        "wordcount", str(text), "--top", "1", "--executor", "dask", "--workers", "1", "--verbose"
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "aiomr: Scheduler closing" in verbose.stderr


NGRAMS = "Aardvark\t2000\t10\t3\nAardvark\t2001\t20\nAardvark\t2002\t30\t5\nZebra\t2000\t7\t1\n"
"""Four 1-gram lines, the second with only three fields: it must never shift the others."""


def test_ngram_fails_on_a_row_without_four_fields(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "ngrams.tsv"
    data.write_text(NGRAMS)
    done = aiomr_command("ngram", str(data), "--word", "Zebra")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(
        f"aiomr: RecordError: {data}:2 (byte 19): expected 4 fields, found 3\n"
    )


@pytest.mark.parametrize("how", ["skip", "collect"])
def test_ngram_skips_a_row_without_four_fields(tmp_path: pathlib.Path, how: str) -> None:
    data = tmp_path / "ngrams.tsv"
    data.write_text(NGRAMS)
    dead = tmp_path / "bad.jsonl"
    for word, total in (("Zebra", 7), ("Aardvark", 40)):
        dead.unlink(missing_ok=True)
        done = aiomr_command(
            "ngram", str(data), "--word", word, "--on-error", how, "--dead-letter", str(dead)
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{word} has appeared {total} times\n"
        assert done.stderr.startswith(
            f"aiomr: skipped 1 bad record of 4, written to {dead}; the first at {data}:2 (byte 19)"
        )
        [bad] = [json.loads(line) for line in dead.read_text().splitlines()]
        assert bad["location"] == f"{data}:2 (byte 19)"
        assert bad["record"] == "b'Aardvark\\t2001\\t20'"
