"""Word count: aiomr against a single-process loop, ``multiprocessing.Pool`` and ``dask.bag``.

Two inputs, each counted by every contender (``wordcount_jobs.py``, a fresh process per run,
interleaved round by round): a generated English-like text (200 MB by default: a seeded
Zipf-distributed vocabulary of real and made-up words, sentences with capitals and
punctuation; written once into a cache directory and reused) and the standard library's
``.py`` files. Every contender's full count is checked equal to the single-process loop's.
Then a key-value job with ten times more distinct keys than its memory budget holds, streamed
to a JSON Lines file: the caller's peak RSS against the size of the result held as a dict.

    flock /tmp/aiomr-bench.lock python3 benchmarks/wordcount.py --write-docs
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import operator
import os
import pickle
import random
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

TARGET_SPEEDUP, SEED, VOCABULARY, TEXT_VERSION = 1.7, 20_261_121, 150_000, 1
"""The target; the generator's seed, its distinct words and the version in the file name."""
CACHE_DIR = Path(tempfile.gettempdir()) / "aiomr-bench-wordcount"
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


# The generated text ----------------------------------------------------------------------------

_COMMON_WORDS = str.split("""
the of and to a in is that it was for on are as with his they at be this from I have or by
one had not but what all were when we there can an your which their said if do will each
about how up out them then she many some so these would other into has more her two like him
see time could no make than first been its who now people my made over did down only way
find use may water long little very after words called just where most know get through back
much before go good new write our used me man too any day same right look think also around
another came come work three word must because does part even place well such here take why
things help put years different away again off went old number great tell men say small
every found still between name should home big give air line set own under read last never
us left end along while might next sound below saw something thought both few those always
looked show large often together asked house don't world going want school important until
form food keep children feet land side without boy once animals life enough took sometimes
four head above kind began almost live page got earth need far hand high year mother light
parts country father let night following picture being study second eyes soon times story
boys since white days ever paper hard near sentence better best across during today others
however sure means knew it's try told young miles sun ways thing whole hear example heard
several change answer room sea against top turned learn point city play toward five using
himself usually money seen didn't car morning I'm body upon family later turn move face door
cut done group true half red fish plants living black eat short run book gave order open
ground cold really table remember tree course front space inside ago café naïve rôle
""")
_ONSETS = str.split("b bl br c ch cl cr d dr f fl fr g gr h j k l m n p pl pr qu r s sh sl st t th")
_ONSETS += ["tr", "v", "w"]
_ONSETS += [""] * 8 + str.split("b c d f g h l m n p r s t w") * 3
_VOWELS = str.split("a e i o u a e i o u a e i o ai ea ee ie oa oo ou")
_CODAS = str.split("n r s t l m d nd st ng ck rt th ll ss nt rn ld") + [""] * 40
_SUFFIXES = str.split("ing ed er ly tion ness ment able ful less est s s s") + [""] * 40


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Return ``size`` distinct words, most frequent first: real words, then made-up ones.

    About one made-up word in thirty is a proper name, always written with a capital.
    """
    words = list(dict.fromkeys(_COMMON_WORDS))
    seen = set(words)
    while len(words) < size:
        syllables = rng.choices((1, 2, 3, 4), weights=(6, 8, 3, 1))[0]
        word = "".join(
            rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
        )
        word += rng.choice(_SUFFIXES)
        if word in seen or not 2 <= len(word) <= 13:
            continue
        seen.add(word)
        words.append(word.capitalize() if rng.random() < 1 / 30 else word)
    return words


def _sentence(rng: random.Random, words: list[str], cumulative: list[float]) -> list[str]:
    picked = rng.choices(words, cum_weights=cumulative, k=rng.randint(3, 26))
    random_ = rng.random
    for i in range(len(picked) - 1):
        r = random_()
        if r < 0.07:
            picked[i] += ","
        elif r < 0.08:
            picked[i] += ";"
        elif r < 0.095:
            picked[i] = str(rng.randint(1, 2100))
        elif r < 0.1:
            picked[i] += "-" + picked[i + 1]  # a compound: "water-sound"
        elif r < 0.103:
            picked[i] = f"({picked[i]})"
    first = picked[0]
    picked[0] = first[:1].upper() + first[1:]
    r = random_()
    picked[-1] += "." if r < 0.85 else "?" if r < 0.93 else "!" if r < 0.97 else "..."
    if random_() < 0.05:
        picked[0] = '"' + picked[0]
        picked[-1] += '"'
    return picked


def _paragraph(rng: random.Random, words: list[str], cumulative: list[float]) -> str:
    lines: list[str] = []
    line: list[str] = []
    width = 0
    limit = rng.randint(60, 78)
    for _ in range(rng.randint(1, 8)):
        for token in _sentence(rng, words, cumulative):
            if width + len(token) > limit and line:
                lines.append(" ".join(line))
                line, width = [], 0
            line.append(token)
            width += len(token) + 1
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n\n"


def english_text(size_mb: int) -> Path:
    """Return the cached generated text of ``size_mb`` MB, writing it first if absent."""
    path = CACHE_DIR / f"english-{size_mb}MB-seed{SEED}-v{TEXT_VERSION}.txt"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    h.progress(f"writing {size_mb} MB of generated text to {path} (once)")
    rng = random.Random(SEED)
    words = vocabulary(rng, VOCABULARY)
    # Zipf-Mandelbrot frequencies: rank r has weight 1 / (r + 2.7) ** 1.07.
    cumulative = list(itertools.accumulate(1 / (r + 2.7) ** 1.07 for r in range(len(words))))
    written = 0
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "w", encoding="utf-8") as f:
        while written < size_mb * 1_000_000:
            batch = "".join(_paragraph(rng, words, cumulative) for _ in range(200))
            f.write(batch)
            written += len(batch.encode("utf-8"))
    os.replace(partial, path)
    return path


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
    loop = (
        "`aiomr.run`'s default (uvloop when installed)"
        if m.loop == "both"
        else h.loop_label(m.loop)
    )
    sample = f"{_isolated.SAMPLE_SECONDS * 1000:.0f} ms"
    parts = [
        "## Word count",
        "",
        f"{m.machine} aiomr {m.aiomr}; the aiomr callers' event loop: {loop}.",
        "",
        "Counting every word of a text, every contender in the same run on the same inputs. "
        "All tokenise alike (punctuation to spaces, lower-case, split on whitespace, "
        "alphabetic words only: the rules of `aiomr.cli.words_of`; undecodable bytes "
        "replaced), and every contender's full count was checked equal to the single-process "
        f"loop's before any figure was kept. Each contender ran {m.rounds} times, each time in "
        "a fresh Python process, interleaved with the others in rotating order. That process "
        "runs a small program of its own (`benchmarks/wordcount_jobs.py`) that imports only "
        "what a word-count script needs, because the workers of `forkserver` (aiomr) and "
        "`spawn` (dask) import the program again; aiomr and the benchmark's modules are "
        "byte-compiled first, as `pip install` leaves a package. Wall time runs from just "
        "before a contender starts its workers to the moment it holds the whole count (worker "
        "start-up included; imports excluded); *CPU s* is user + system time of the caller "
        "during that time plus all its worker processes; *caller peak RSS* is the caller's own "
        "high-water mark (`VmHWM`, exact); *all processes peak RSS* is the peak of the summed "
        f"RSS of the caller and every descendant, sampled every {sample} (pages shared after a "
        "fork count once per process). Figures are medians; *speed vs loop* is the median over "
        "rounds of the loop's wall time over the contender's, measured in the same round. "
        "*Others' load* is how many cores processes outside the benchmark kept busy, on "
        "average, while the contender's process ran (from `/proc/stat`): the machine is "
        "shared, and a parallel contender cannot get two cores while others hold one.",
        "",
        "The contenders:",
        "",
        "- **single process**: read lines, tokenise each, `Counter.update` (the baseline);",
        "- **`multiprocessing.Pool(2)`, the tutorial's**: the classic map / partition / "
        "reduce: `pool.map` a function that turns a file (for the one big file: a chunk of "
        f"{jobs.POOL_CHUNK_LINES:,} lines read by the parent) into a list of `(word, 1)` "
        "pairs, group all pairs by word in the parent, `pool.map` a function that sums each "
        "word's ones;",
        "- **`multiprocessing.Pool(2)`, a `Counter` per task**: the same tasks, each "
        "returning a `Counter`, summed in the parent as they arrive (`imap_unordered`);",
        f"- **`dask.bag`**: `read_text` (the big file in {WORKERS * 4} blocks; the small files "
        f"{WORKERS * 4} partitions of several files), `.map(tokens).flatten().frequencies()`, "
        f"computed with `scheduler='processes', num_workers={WORKERS}`;",
        "- **aiomr, the key-value job**: "
        "`aiomr.map_reduce_by_key(aiomr.sources.files(paths, errors='replace'), words_of, "
        f"operator.add, max_workers={WORKERS})`, the job `aiomr wordcount` runs: workers "
        "read their own byte ranges, the mapper yields `(word, 1)` per word, the map side "
        "combines each split by word, reduce tasks merge the partitions;",
        "- **aiomr, per-line pre-combining**: the same job with a mapper that yields "
        "`Counter(words).items()` for each line (each distinct word of a line once);",
        "- **aiomr, a `Counter` per split**: `aiomr.map_reduce(files(paths, encoding=None), "
        "count, merge, mode='blocks')`: each worker decodes its byte range block by block "
        "and runs the single-process loop's body over the lines into one `Counter` per "
        "split; the caller adds up the splits' Counters. Not a key-value job.",
        "",
    ]
    for source in m.inputs:
        parts += [f"### {source.describe()}", "", input_table(m, source), ""]
    headers = ["input", "aiomr", "speed vs loop", f"≥ {TARGET_SPEEDUP}x"]
    headers += [f"ceiling on {WORKERS} idle cores", "head to head with the closest baseline"]
    headers += ["baselines as fast or faster", "ahead of all"]
    rows = [row for source in m.inputs for row in target_rows(m, source)]
    parts += [
        "### Against the targets",
        "",
        f"Targets: aiomr at least {TARGET_SPEEDUP}x the single-process loop's speed, and "
        "ahead of every other baseline (the two `multiprocessing.Pool` programs and "
        "`dask.bag`), by the median speed ratios of the tables above. *Ceiling on "
        f"{WORKERS} idle cores* is {WORKERS} ÷ *CPU vs loop*: the speed ratio a contender "
        f"would reach if its CPU time were spread perfectly over {WORKERS} cores that nothing "
        "else wants. It does not depend on the machine's other load, so it tells a target "
        "missed for lack of cores from one missed for lack of efficiency. *Head to head* is "
        "the median over rounds of the closest baseline's wall time over aiomr's, in the same "
        "round (above 1.00x: aiomr was faster); a baseline is as fast or faster when that "
        "median is 1.00x or less.",
        "",
        h.markdown_table(headers, rows, left=(0, 1, 5, 6)),
        "",
    ]
    if (spill := m.spill) is not None:
        parts += [
            "### More keys than memory",
            "",
            f"A key-value job over `range({2 * spill.keys:,})` whose mapper turns record *n* "
            f"into one pair `(key, 1)`: {spill.keys:,} distinct string keys, each seen twice, "
            f"reduced with `operator.add` on {WORKERS} workers with "
            f"`memory_budget={spill.budget:,}` bytes per reduce task, and streamed to a JSON "
            "Lines file with `aiomr.open_by_key(...)` and `aiomr.write_jsonl`, so the caller "
            "never holds the result. By the sizes `sys.getsizeof` gives (plus "
            f"{DICT_SLOT_BYTES} bytes of dict slot per key) the keys' state is "
            f"{h.mb(key_state_bytes(spill.keys))}: {SPILL_BUDGET_SHARE} times what the budget "
            "holds, so every reduce task must spill sorted runs to disk and merge them. The "
            "first row measures the real size of the result held as one dict: the RSS growth "
            f"of a fresh process that builds it. The job ran {len(spill.runs)} times, each in a "
            "fresh process; medians. *Caller growth* is the caller's peak RSS (`VmHWM`) minus "
            "its RSS just before the job (after imports); *largest worker peak RSS* is the "
            f"largest RSS of any single worker process, sampled every {sample}. Every run's "
            "file was checked to hold every key once with the right count.",
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
