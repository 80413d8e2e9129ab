"""Run the streaming, loop-lag and fixed-cost benchmarks and rewrite docs/benchmarks.md.

The page is first reset to its skeleton (the introduction and a description of the machine),
keeping the sections other benchmark scripts wrote there; then each benchmark runs in its
own Python process and writes its section. A benchmark that fails leaves its section saying
it was not measured, and the exit status is non-zero.

Usage::

    flock /tmp/aiomr-bench.lock python3 benchmarks/run_all.py           # full size: ~15 min
    python3 benchmarks/run_all.py --quick                                # a smoke run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of each benchmark")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per variant (default: each script's own)"
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="event loop(s) to measure (default: both when uvloop is installed)",
    )
    args = parser.parse_args(argv)
    _common.DOCS_PAGE.parent.mkdir(parents=True, exist_ok=True)
    kept = _common.other_sections()
    _common.DOCS_PAGE.write_text(_common.page_skeleton(kept), encoding="utf-8")
    passed = ["--write-docs", "--loop", args.loop]
    if args.quick:
        passed.append("--quick")
    if args.runs is not None:
        passed += ["--runs", str(args.runs)]
    failed: list[str] = []
    for name, _ in _common.SECTIONS:
        _common.progress(f"== {name}")
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *passed],
            stdout=subprocess.DEVNULL,
            check=False,
        )
        _common.progress(f"== {name}: {time.perf_counter() - started:.0f} s")
        if completed.returncode != 0:
            failed.append(name)
    rel = _common.DOCS_PAGE.relative_to(_common.REPO_ROOT)
    if failed:
        _common.progress(f"failed: {', '.join(failed)}; {rel} is incomplete")
        return 1
    _common.progress(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
