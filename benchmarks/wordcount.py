"""Word count: aiomr against a single-process loop, ``multiprocessing.Pool`` and ``dask.bag``.

Every contender (``wordcount_jobs.py``, a fresh process per run) counts a generated English-like
text (``_english.py``) and the standard library's ``.py`` files; then a key-value job with ten
times more distinct keys than its memory budget holds is streamed to a file. docs/benchmarks.md
says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/wordcount.py --write-docs
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import _isolated
import _machine
import wordcount_jobs as jobs
from _english import CACHE_DIR, english_text

TARGET_SPEEDUP = 1.7
SPILL_BUDGET_SHARE = 10
"""The spill job has this many times more keys than its memory budget holds."""
DICT_SLOT_BYTES = 48
"""What one entry of a dict costs besides its key and value (hash, pointers, spare room)."""
RUN_TIMEOUT = 1800.0
WORKERS = jobs.WORKERS
LOOP = "loop"
CONTENDERS = {
    LOOP: "single process: `Counter` loop over lines",
    "pool_tutorial": "`multiprocessing.Pool(2)`, the tutorial's map / partition / reduce",
    "pool_counters": "`multiprocessing.Pool(2)`, a `Counter` per task (fairer)",
    "dask": "`dask.bag`, processes scheduler, 2 workers",
    "aiomr_keyed": "aiomr `map_reduce_by_key(files(...), words_of, operator.add)`",
    "aiomr_keyed_per_line": "aiomr `map_reduce_by_key`, mapper pre-combines each line",
    "aiomr_split_counter": "aiomr `map_reduce(files(...), mode='blocks')`, a `Counter` per split",
}


# The word counts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One input of the benchmark: its files and a description for the tables."""

    name: str
    label: str
    paths: list[str]

    @property
    def size(self) -> int:
        return sum(os.path.getsize(p) for p in self.paths)

    def describe(self) -> str:
        files = f"{len(self.paths):,} files" if len(self.paths) > 1 else "one file"
        return f"{self.label}: {files}, {self.size / 1e6:.1f} MB"


def count_once(
    key: str, source: Input, loop: str, want: dict[str, int] | None
) -> tuple[_isolated.Run, dict[str, int]]:
    """Run contender ``key`` on ``source`` once in a fresh process; check its counts."""
    with tempfile.TemporaryDirectory(prefix="aiomr-wordcount-") as directory:
        list_file, result_file = os.path.join(directory, "paths"), os.path.join(directory, "counts")
        Path(list_file).write_text("\n".join(source.paths) + "\n", encoding="utf-8")
        child = _isolated.run_child(
            jobs.__file__, [key, list_file, result_file, loop], timeout=RUN_TIMEOUT
        )
        report = child.require(CONTENDERS[key])
        with open(result_file, "rb") as f:
            counts: dict[str, int] = pickle.load(f)
    if want is not None and (problems := h.differences(counts, want, "the single-process loop's")):
        raise SystemExit(f"{CONTENDERS[key]}: {problems[0]}")
    run = _isolated.Run(f"{source.name}:{key}", 0, report["wall"], report["cpu"], child.others)
    run.caller_peak, run.tree_peak = (
        report["caller_peak"],
        max(child.tree_peak, report["caller_peak"]),
    )
    return run, counts


# The spill figure ------------------------------------------------------------------------------


def spill_key(keys: int, n: int) -> str:
    """Key of record ``n``: one of ``keys`` distinct strings, visited in a scattered order."""
    return f"key{n * 7_919 % keys:08d}"


def spill_pairs(keys: int, n: int) -> list[tuple[str, int]]:
    """The spill job's mapper: each record is one occurrence of one key."""
    return [(spill_key(keys, n), 1)]


def key_state_bytes(keys: int) -> int:
    """Estimate what ``keys`` entries ``{key: small count}`` hold in a dict (keys and slots)."""
    return keys * (sys.getsizeof(spill_key(keys, 12_345)) + DICT_SLOT_BYTES)


def contender(args: list[str]) -> dict[str, Any]:
    """In a fresh process: ``key-state KEYS`` builds the spill job's result as one dict;
    ``spill KEYS BUDGET OUT LOOP`` runs the spill job once."""
    if args[0] == "key-state":
        before = _machine.rss()
        counts = {spill_key(int(args[1]), n): 2 for n in range(int(args[1]))}
        return {"caller_before": before, "caller_peak": _machine.peak_rss(), "rows": len(counts)}
    import aiomr

    keys, budget, out, loop = int(args[1]), int(args[2]), args[3], args[4]
    stats = aiomr.JobStats()

    async def job() -> int:
        spec = aiomr.ReduceByKey(functools.partial(spill_pairs, keys), operator.add)
        async with aiomr.open_by_key(
            range(2 * keys), spec, memory_budget=budget, max_workers=WORKERS, stats=stats
        ) as pairs:
            return await aiomr.write_jsonl(out, pairs)

    before, cpu, started = _machine.rss(), os.times(), time.perf_counter()
    rows = aiomr.run(job(), use_uvloop={"asyncio": False, "uvloop": True}.get(loop))
    wall = time.perf_counter() - started
    _machine.stop_forkserver()
    figures = {"wall": wall, "cpu": sum(os.times()[:4]) - sum(cpu[:4]), "spills": stats.spills}
    return figures | {"caller_before": before, "caller_peak": _machine.peak_rss(), "rows": rows}


@dataclass
class Spill:
    """The spill job's runs and the measured size of its key state."""

    keys: int
    budget: int
    key_state: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)


def measure_spill(keys: int, runs: int, loop: str) -> Spill:
    """Measure the result's size as a dict, then run the spill job ``runs`` times."""
    state = _isolated.run_child(__file__, ["key-state", str(keys)], timeout=RUN_TIMEOUT).require(
        "key state"
    )
    spill = Spill(keys, key_state_bytes(keys) // SPILL_BUDGET_SHARE, state)
    rss = f"{h.mb(state['caller_before'])} -> {h.mb(state['caller_peak'])}"
    h.progress(f"  {keys:,} keys in one dict: RSS {rss}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiomr-spill-", dir=CACHE_DIR) as directory:
        out = os.path.join(directory, "counts.jsonl")
        for round_ in range(runs):
            args = ["spill", str(keys), str(spill.budget), out, loop]
            child = _isolated.run_child(__file__, args, timeout=RUN_TIMEOUT)
            report = child.require("the spill job") | {"largest_child": child.largest_child}
            report |= {
                "tree_peak": max(child.tree_peak, report["caller_peak"]),
                "others": child.others,
            }
            if report["spills"] < 1:
                raise SystemExit("the spill job did not spill")
            seen = set()
            with open(out, encoding="utf-8") as f:
                for row in map(json.loads, f):
                    if row["value"] != 2:
                        raise SystemExit(f"the spill job counted wrong: {row}")
                    seen.add(row["key"])
            if len(seen) != keys:
                raise SystemExit(f"the spill job wrote {len(seen):,} distinct keys, not {keys:,}")
            os.unlink(out)
            spill.runs.append(report)
            caller = f"{h.mb(report['caller_before'])} -> {h.mb(report['caller_peak'])}"
            h.progress(
                f"  spill round {round_ + 1}/{runs}: {report['wall']:6.1f} s, "
                f"{report['spills']} spills, caller {caller}, largest worker "
                f"{h.mb(report['largest_child'])}, all {h.mb(report['tree_peak'])}"
            )
    return spill


# Measuring and reporting -----------------------------------------------------------------------


@dataclass(kw_only=True)
class Result(h.Measurements):
    loop: str
    inputs: list[Input]
    contenders: list[str]
    spill: Spill | None = None

    def speedup(self, source: Input, key: str, baseline: str = LOOP) -> float:
        """Median over rounds of the baseline's wall time over ``key``'s, same round."""
        return h.median(
            h.by_round(self.of(f"{source.name}:{baseline}"), self.of(f"{source.name}:{key}"))
        )

    def cpu_ratio(self, source: Input, key: str) -> float:
        """Median over rounds of ``key``'s CPU seconds over the loop's, same round."""
        return h.median(
            h.by_round(self.of(f"{source.name}:{key}"), self.of(f"{source.name}:{LOOP}"), "cpu")
        )


def measure(args: argparse.Namespace) -> Result:
    """Measure everything the options ask for."""
    if args.only and (unknown := set(args.only) - set(CONTENDERS)):
        raise SystemExit(f"unknown contenders: {', '.join(unknown)}; try {', '.join(CONTENDERS)}")
    contenders = [k for k in CONTENDERS if not args.only or k == LOOP or k in args.only]
    size_mb = args.size_mb or (20 if args.quick else 200)
    inputs = [
        Input("english", "generated English-like text", [str(english_text(size_mb))]),
        Input("stdlib", "the standard library's `.py` files", jobs.stdlib_files()),
    ]
    m = Result(rounds=args.runs, loop=args.loop, inputs=inputs, contenders=contenders)
    _machine.byte_compile()
    references = {}
    for source in inputs:
        _machine.warm_page_cache(source.paths)
        h.progress(f"reference: {CONTENDERS[LOOP]} on {source.describe()} (untimed)")
        _, references[source.name] = count_once(LOOP, source, args.loop, None)
    for round_ in range(args.runs):
        for source in inputs:
            for key in h.rotated(contenders, round_):
                run, _ = count_once(key, source, args.loop, references[source.name])
                run.round = round_
                memory = f"caller {h.mb(run.caller_peak)} all {h.mb(run.tree_peak)}"
                m.add(run, f"{run.wall:7.2f} s cpu {run.cpu:6.1f} s {memory}, {run.others:.2f}")
    if not args.no_spill:
        keys = args.spill_keys or (300_000 if args.quick else 3_000_000)
        h.progress(f"spill job: {keys:,} keys")
        m.spill = measure_spill(keys, args.runs, args.loop)
    return m


def input_table(m: Result, source: Input) -> str:
    rows = []
    for key in m.contenders:
        runs = m.of(f"{source.name}:{key}")
        wall = h.median(r.wall for r in runs)
        rows.append(
            [
                CONTENDERS[key],
                f"{wall:.2f}",
                h.span([r.wall for r in runs], ".2f"),
                f"{source.size / 1e6 / wall:.1f}",
                f"{h.median(r.cpu for r in runs):.1f}",
                f"{m.cpu_ratio(source, key):.2f}x",
                h.mb(h.median(r.caller_peak for r in runs)),
                h.mb(h.median(r.tree_peak for r in runs)),
                f"{m.speedup(source, key):.2f}x",
                f"{h.median(r.others for r in runs):.2f}",
            ]
        )
    headers = ["contender", "wall s", "range s", "MB/s", "CPU s", "CPU vs loop", "caller peak RSS"]
    return h.markdown_table(
        [*headers, "all processes peak RSS", "speed vs loop", "others' load"], rows
    )


def target_rows(m: Result, source: Input) -> list[list[str]]:
    rows = []
    baselines = [k for k in m.contenders if not k.startswith("aiomr") and k != LOOP]
    for key in (k for k in m.contenders if k.startswith("aiomr")):
        ratio = m.speedup(source, key)
        behind = [CONTENDERS[b] for b in baselines if m.speedup(source, key, b) <= 1.0]
        lead, closest = min((m.speedup(source, key, b), CONTENDERS[b]) for b in baselines)
        rows.append(
            [
                source.label,
                CONTENDERS[key],
                f"{ratio:.2f}x",
                h.verdict(ratio >= TARGET_SPEEDUP),
                f"{WORKERS / m.cpu_ratio(source, key):.2f}x",
                f"{lead:.2f}x {closest}",
                "; ".join(behind) if behind else "none",
                h.verdict(not behind),
            ]
        )
    return rows


def spill_table(spill: Spill) -> str:
    runs, state = spill.runs, spill.key_state
    size = state["caller_peak"] - state["caller_before"]
    growth = h.median(r["caller_peak"] - r["caller_before"] for r in runs)
    names = ("wall", "cpu", "spills", "caller_before", "caller_peak", "largest_child", "tree_peak")
    med = {name: h.median(r[name] for r in runs) for name in names}
    rows = [
        [
            "the result as one dict in a fresh process (for scale)",
            *("", "", ""),
            *(h.mb(state["caller_before"]), h.mb(state["caller_peak"]), h.mb(size), "", ""),
        ],
        [
            "`open_by_key` + `write_jsonl`: the caller streams the result to a file",
            f"{med['wall']:.1f}",
            f"{med['cpu']:.1f}",
            f"{med['spills']:.0f}",
            h.mb(med["caller_before"]),
            h.mb(med["caller_peak"]),
            f"{h.mb(growth)} ({growth / size:.0%} of the dict)",
            h.mb(med["largest_child"]),
            h.mb(med["tree_peak"]),
        ],
    ]
    headers = [
        "",
        "wall s",
        "CPU s",
        "spills",
        "caller RSS before",
        "caller peak RSS",
        "caller growth",
    ]
    return h.markdown_table([*headers, "largest worker peak RSS", "all processes peak RSS"], rows)


def render(m: Result) -> str:
    """Return the docs section: one table per input, the targets and the spill job."""
    loop = "`aiomr.run`'s default (uvloop when installed)"
    loop = loop if m.loop == "both" else h.loop_label(m.loop)
    parts = [
        f"{m.machine} aiomr {m.aiomr}; the aiomr callers' event loop: {loop}.",
        "",
        f"Each contender ran {h.times(m.rounds)} on each input.",
        "",
    ]
    for source in m.inputs:
        parts += [f"### {source.describe()}", "", input_table(m, source), ""]
    headers = ["input", "aiomr", "speed vs loop", f"≥ {TARGET_SPEEDUP}x"]
    headers += [f"ceiling on {WORKERS} idle cores", "head to head with the closest baseline"]
    headers += ["baselines as fast or faster", "ahead of all"]
    rows = [row for source in m.inputs for row in target_rows(m, source)]
    parts += ["### Against the targets", ""]
    parts += [h.markdown_table(headers, rows, left=(0, 1, 5, 6)), ""]
    if (spill := m.spill) is not None:
        parts += [
            "### More keys than memory",
            "",
            f"`range({2 * spill.keys:,})`: {spill.keys:,} distinct keys, each seen twice; "
            f"`memory_budget={spill.budget:,}` bytes per reduce task, for keys' state of "
            f"{h.mb(key_state_bytes(spill.keys))} ({SPILL_BUDGET_SHARE} times the budget); "
            f"the job ran {h.times(len(spill.runs))}.",
            "",
            spill_table(spill),
            "",
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3, loop="both")
    parser.add_argument("--size-mb", type=h.positive, help="the generated text (default 200)")
    parser.add_argument(
        "--spill-keys", type=h.positive, help="of the spill job (default 3,000,000)"
    )
    parser.add_argument("--only", action="append", help="run only these contenders (and the loop)")
    parser.add_argument("--no-spill", action="store_true", help="skip the spill figure")
    sys.exit(h.main("wordcount", parser, measure, render, contender=contender))
