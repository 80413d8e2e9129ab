"""Run the streaming, loop-lag and fixed-cost benchmarks and write their sections of the docs.

The page's ``machine`` section is written first; then each benchmark runs in its own Python
process and writes its section. A benchmark that fails leaves its section saying it was not
measured, and the exit status is non-zero.

Usage::

    flock /tmp/aiomr-bench.lock python3 benchmarks/run_all.py     # full size: ~15 min
    python3 benchmarks/run_all.py --quick --docs-page /tmp/b.md    # a smoke run
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import _harness as h


def main() -> int:
    parser = h.parser(__doc__, runs=0, loop="both")
    args = parser.parse_args()
    if args.quick and args.docs_page.resolve() == h.DOCS_PAGE:
        parser.error("--quick figures are not for the docs: pass --docs-page")
    page: Path = args.docs_page
    h.write_section("machine", h.machine_table(), page)
    passed = ["--write-docs", "--docs-page", str(page), "--loop", args.loop]
    passed += ["--quick"] * args.quick + ["--runs", str(args.runs)] * bool(args.runs)
    failed = []
    for name in h.SECTIONS:
        h.progress(f"== {name}")
        started = time.perf_counter()
        command = [sys.executable, str(Path(__file__).with_name(f"{name}.py")), *passed]
        if subprocess.run(command, stdout=subprocess.DEVNULL, check=False).returncode:
            failed.append(name)
            not_yet = f"Not measured: `python3 benchmarks/{name}.py --write-docs` failed."
            h.write_section(name, not_yet, page)
        h.progress(f"== {name}: {time.perf_counter() - started:.0f} s")
    if failed:
        h.progress(f"failed: {', '.join(failed)}; {page} is incomplete")
        return 1
    h.progress(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
