"""The examples run as users run them: as scripts, in fresh processes."""

from __future__ import annotations

import collections
import os
import pathlib
import random
import subprocess
import sys

import aiomr

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_squares_prints_385() -> None:
    done = run_example("squares.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "385\n"


def test_wordcount_top_words_match_what_was_written(tmp_path: pathlib.Path) -> None:
    rng = random.Random(7)
    vocabulary = [f"word{chr(97 + i)}{chr(97 + j)}" for i in range(6) for j in range(6)]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    written: collections.Counter[str] = collections.Counter()
    for n in range(40):
        folder = tmp_path / f"part{n % 4}"
        folder.mkdir(exist_ok=True)
        words = rng.choices(vocabulary, weights, k=rng.randint(50, 400))
        written.update(words)
        # Punctuation, capitals and stop words must not change the count.
        text = " ".join(w.capitalize() + rng.choice(["", ",", ".", "!"]) for w in words)
        (folder / f"doc{n}.txt").write_text(f"The {text} and the end\n")
    written["end"] += 40
    (tmp_path / "ignored.py").write_text("notcounted " * 1000)

    done = run_example("wordcount.py", str(tmp_path), "--suffix", ".txt", "--top", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "TOP 5 WORDS BY FREQUENCY"
    rows = [line.split(" : ") for line in lines[2:]]
    table = [(word.strip(), int(count)) for word, count in rows]
    assert table == written.most_common(5)


def test_wordcount_over_the_standard_library_prints_twenty_rows() -> None:
    done = run_example("wordcount.py")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    assert len(rows) == 20
    counts = [int(row.split(" : ")[1]) for row in rows]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] > 1000


def test_wordcount_rejects_a_missing_directory(tmp_path: pathlib.Path) -> None:
    done = run_example("wordcount.py", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert "not a directory" in done.stderr
    assert "Traceback" not in done.stderr
