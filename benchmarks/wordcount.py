"""Word count: aiomr against a single-process loop, ``multiprocessing.Pool`` and ``dask.bag``.

Two inputs, each counted by every contender in the same run:

* a generated English-like text (about 200 MB by default): a seeded Zipf-distributed
  vocabulary of real and made-up words, sentences with capitals and punctuation, wrapped
  into lines; written once into a cache directory under the system's temporary directory
  and reused;
* the Python standard library's own ``.py`` files (``sysconfig``'s stdlib path, without
  ``site-packages``).

Every contender tokenises alike: punctuation to spaces, lower-case, split on whitespace,
alphabetic words only (the rules of ``aiomr.cli.words_of``); bytes that are not UTF-8 are
replaced. Every contender's full count is checked equal to the single-process loop's before
any figure is reported.

Each timed run starts a fresh Python process for one contender, so memory figures belong to
that contender alone; contenders are interleaved round by round in rotating order. A
contender's wall time runs from just before it starts its workers to the moment it holds its
complete result (imports, reading the list of paths and writing the result for checking are
outside). Worker start-up is inside, for every contender that has workers. Each contender is
the small program ``wordcount_jobs.py``, which imports only what a word-count script needs
(workers started with ``forkserver`` or ``spawn`` import the main program again), and aiomr
and these scripts are byte-compiled before the first run, as an installed package is.

Measured per run: wall time; CPU seconds (user + system of the contender's process during
the timed part, plus all of its descendants, reaped before reading); the caller's peak RSS
(``VmHWM``, the kernel's high-water mark, exact); and the peak of the summed RSS of the
caller and all its descendants, sampled every 50 ms from this (the parent) process with
psutil. Summed RSS counts pages shared by forked processes once per process, so it slightly
overstates.

The second figure is a key-value job with ten times more distinct keys than its memory
budget holds, streamed to a JSON Lines file with ``aiomr.open_by_key`` and
``aiomr.write_jsonl``: the caller's peak RSS against the size of the result held as a dict
(measured in a fresh process that builds it), with the job's spill count and time.

Run timed measurements alone on the machine, e.g.::

    flock /tmp/aiomr-bench.lock python3 benchmarks/wordcount.py --write-docs

and ``python3 benchmarks/wordcount.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import dataclasses
import functools
import itertools
import json
import operator
import os
import pickle
import random
import resource
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import wordcount_jobs as jobs
from wordcount_jobs import POOL_CHUNK_LINES, WORKERS, cpu_seconds, peak_rss, stop_forkserver

TARGET_SPEEDUP = 1.7
SAMPLE_SECONDS = 0.05
"""Interval of the memory sampler; the list of descendants is refreshed every fifth sample."""
CACHE_DIR = Path(tempfile.gettempdir()) / "aiomr-bench-wordcount"
SEED = 20_261_121
VOCABULARY = 150_000
"""Distinct words the generator draws from (Zipf-distributed, most frequent first)."""
TEXT_VERSION = 1
"""Part of the cached file's name: bump it when the generator changes."""
SPILL_KEYS = 3_000_000
SPILL_BUDGET_SHARE = 10
"""The spill job has this many times more keys than its memory budget holds."""
DICT_SLOT_BYTES = 48
"""What one entry of a dict costs besides its key and value (hash, pointers, spare room)."""


class Settings:
    """What the parent passes on to every measurement process (see ``--loop``)."""

    loop = "both"

    @classmethod
    def use_uvloop(cls) -> bool | None:
        """The ``use_uvloop`` argument of `aiomr.run` for the chosen loop."""
        return {"asyncio": False, "uvloop": True}.get(cls.loop)

    @classmethod
    def describe_loop(cls) -> str:
        if cls.loop == "both":
            return "`aiomr.run`'s default (uvloop when installed)"
        return _common.loop_label(cls.loop)


# Inputs -------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return text.split()


_COMMON_WORDS = _split("""
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
_ONSETS = _split(
    "b bl br c ch cl cr d dr f fl fr g gr h j k l m n p pl pr qu r s sh sl st t th tr v w"
)
_ONSETS += [""] * 8 + _split("b c d f g h l m n p r s t w") * 3
_VOWELS = _split("a e i o u a e i o u a e i o ai ea ee ie oa oo ou")
_CODAS = _split("n r s t l m d nd st ng ck rt th ll ss nt rn ld") + [""] * 40
_SUFFIXES = _split("ing ed er ly tion ness ment able ful less est s s s") + [""] * 40


def _made_up_word(rng: random.Random) -> str:
    syllables = rng.choices((1, 2, 3, 4), weights=(6, 8, 3, 1))[0]
    word = "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    )
    return word + rng.choice(_SUFFIXES)


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Return ``size`` distinct words, most frequent first: real words, then made-up ones.

    About one made-up word in thirty is a proper name, always written with a capital.
    """
    seen: set[str] = set()
    words: list[str] = []
    for word in _COMMON_WORDS:
        if word not in seen:
            seen.add(word)
            words.append(word)
    while len(words) < size:
        word = _made_up_word(rng)
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
    _common.progress(f"writing {size_mb} MB of generated text to {path} (once)")
    rng = random.Random(SEED)
    words = vocabulary(rng, VOCABULARY)
    # Zipf-Mandelbrot frequencies: rank r has weight 1 / (r + 2.7) ** 1.07.
    cumulative = list(itertools.accumulate(1 / (r + 2.7) ** 1.07 for r in range(len(words))))
    target = size_mb * 1_000_000
    written = 0
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "w", encoding="utf-8") as f:
        while written < target:
            batch = "".join(_paragraph(rng, words, cumulative) for _ in range(200))
            f.write(batch)
            written += len(batch.encode("utf-8"))
    os.replace(partial, path)
    return path


def stdlib_sources() -> list[str]:
    """Return the standard library's ``.py`` files in a stable order, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [
        str(path)
        for path in sorted(root.rglob("*.py"))
        if path.is_file()
        and {"site-packages", "dist-packages"}.isdisjoint(path.relative_to(root).parts)
    ]


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


@dataclass(frozen=True)
class Contender:
    """One way of counting words (its code: ``wordcount_jobs.JOBS[key]``) and its label."""

    key: str
    label: str

    @property
    def aiomr(self) -> bool:
        """Whether this is one of aiomr's ways."""
        return jobs.JOBS[self.key].aiomr


LOOP = Contender("loop", "single process: `Counter` loop over lines")
CONTENDERS = (
    LOOP,
    Contender(
        "pool_tutorial", "`multiprocessing.Pool(2)`, the tutorial's map / partition / reduce"
    ),
    Contender("pool_counters", "`multiprocessing.Pool(2)`, a `Counter` per task (fairer)"),
    Contender("dask", "`dask.bag`, processes scheduler, 2 workers"),
    Contender("aiomr_keyed", "aiomr `map_reduce_by_key(files(...), words_of, operator.add)`"),
    Contender("aiomr_keyed_per_line", "aiomr `map_reduce_by_key`, mapper pre-combines each line"),
    Contender(
        "aiomr_split_counter",
        "aiomr `map_reduce(files(...), mode='blocks')`, a `Counter` per split",
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}
IDIOMATIC = "aiomr_keyed"


class TreeSampler:
    """Sample the summed RSS of a process and all its descendants, in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self.peak = 0
        """Largest summed RSS of the process and its descendants seen."""
        self.largest_child = 0
        """Largest RSS of any single descendant seen."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        psutil = self._psutil
        processes = [self._root]
        tick = 0
        while not self._stop.is_set():
            if tick % 5 == 0:
                with contextlib.suppress(psutil.Error):
                    processes = [self._root, *self._root.children(recursive=True)]
            total = 0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    total += rss
                    if process is not self._root:
                        self.largest_child = max(self.largest_child, rss)
            self.peak = max(self.peak, total)
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _our_cpu_seconds() -> float:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def run_isolated(arguments: list[str], script: Path = Path(__file__)) -> dict[str, Any]:
    """Run ``script`` (by default this one) with ``arguments`` in a fresh process; return
    its report.

    The report is the JSON the process printed, plus ``tree_peak`` (the sampled peak of the
    summed RSS, never less than the caller's own peak), ``largest_child`` (sampled) and
    ``others`` (cores that processes outside this benchmark kept busy meanwhile, on average).
    """
    command = [sys.executable, str(script.resolve()), *arguments]
    busy, ours, started = _busy_cpu_seconds(), _our_cpu_seconds(), time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        with TreeSampler(process.pid) as sampler:
            out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(arguments)}: exit status {process.returncode}")
    elapsed = time.perf_counter() - started
    others = (_busy_cpu_seconds() - busy) - (_our_cpu_seconds() - ours)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    report["tree_peak"] = max(sampler.peak, report["caller_peak"])
    report["largest_child"] = sampler.largest_child
    report["others"] = max(0.0, others / elapsed)
    return report


@dataclass
class Samples:
    """The timed runs of one contender on one input."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    caller_peak: list[int] = field(default_factory=list)
    tree_peak: list[int] = field(default_factory=list)
    others: list[float] = field(default_factory=list)


def _mismatch(name: str, got: dict[str, int], want: dict[str, int]) -> str:
    missing = [w for w in want if w not in got][:5]
    extra = [w for w in got if w not in want][:5]
    wrong = [(w, got[w], want[w]) for w in want if w in got and got[w] != want[w]][:5]
    return (
        f"{name}: counts differ from the single-process loop's ({len(got):,} words against "
        f"{len(want):,}); missing {missing}, extra {extra}, wrong (word, got, want) {wrong}"
    )


def measure_once(
    contender: Contender, source: Input, want: dict[str, int] | None
) -> tuple[dict[str, Any], dict[str, int]]:
    """Run ``contender`` on ``source`` once in a fresh process; check its counts."""
    with tempfile.TemporaryDirectory(prefix="aiomr-wordcount-") as directory:
        list_file = os.path.join(directory, "paths.txt")
        Path(list_file).write_text("\n".join(source.paths) + "\n", encoding="utf-8")
        result_file = os.path.join(directory, "counts.pickle")
        report = run_isolated(
            [contender.key, list_file, result_file, Settings.loop], Path(jobs.__file__)
        )
        with open(result_file, "rb") as f:
            counts: dict[str, int] = pickle.load(f)
    if want is not None and counts != want:
        raise SystemExit(_mismatch(contender.label, counts, want))
    return report, counts


def _warm_page_cache(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def measure(
    inputs: list[Input], contenders: list[Contender], runs: int
) -> dict[str, dict[str, Samples]]:
    """Run every contender ``runs`` times on every input, interleaved, in fresh processes."""
    references: dict[str, dict[str, int]] = {}
    for source in inputs:
        _warm_page_cache(source.paths)
        _common.progress(f"reference: {LOOP.label} on {source.describe()} (untimed)")
        _, references[source.name] = measure_once(LOOP, source, None)
        words = references[source.name]
        _common.progress(f"  {sum(words.values()):,} words, {len(words):,} distinct")
    samples = {s.name: {c.key: Samples() for c in contenders} for s in inputs}
    for round_ in range(runs):
        for source in inputs:
            for contender in _common.rotated(contenders, round_):
                report, _ = measure_once(contender, source, references[source.name])
                s = samples[source.name][contender.key]
                s.wall.append(report["wall"])
                s.cpu.append(report["cpu"])
                s.caller_peak.append(report["caller_peak"])
                s.tree_peak.append(report["tree_peak"])
                s.others.append(report["others"])
                _common.progress(
                    f"  round {round_ + 1}/{runs} {source.name}: {report['wall']:7.2f} s "
                    f"cpu {report['cpu']:6.1f} s caller {_mb(report['caller_peak'])} "
                    f"all {_mb(report['tree_peak'])} others {report['others']:.2f} cores  "
                    f"{contender.label}"
                )
    return samples


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


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def spill_main(keys: int, budget: int, out_file: str) -> None:
    """Run the spill job once in this (fresh) process; print its measurements as JSON."""
    import aiomr

    stats = aiomr.JobStats()

    async def job() -> int:
        spec = aiomr.ReduceByKey(functools.partial(spill_pairs, keys), operator.add)
        async with aiomr.open_by_key(
            range(2 * keys), spec, memory_budget=budget, max_workers=WORKERS, stats=stats
        ) as pairs:
            return await aiomr.write_jsonl(out_file, pairs)

    before_rss = _rss()
    before = os.times()
    started = time.perf_counter()
    rows = aiomr.run(job(), use_uvloop=Settings.use_uvloop())
    wall = time.perf_counter() - started
    stop_forkserver()
    report = {
        "wall": wall,
        "cpu": cpu_seconds(before, os.times()),
        "caller_before": before_rss,
        "caller_peak": peak_rss(),
        "rows": rows,
        "spills": stats.spills,
        "map_output_keys": stats.map_output_keys,
    }
    print(json.dumps(report), flush=True)


def key_state_main(keys: int) -> None:
    """Build the spill job's result as one dict in this (fresh) process; print what it took."""
    before_rss = _rss()
    counts = {spill_key(keys, n): 2 for n in range(keys)}
    report = {"caller_before": before_rss, "caller_peak": peak_rss(), "rows": len(counts)}
    print(json.dumps(report), flush=True)


def _check_jsonl(path: str, keys: int) -> None:
    seen = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["value"] != 2:
                raise SystemExit(f"the spill job counted wrong: {row}")
            seen.add(row["key"])
    if len(seen) != keys:
        raise SystemExit(f"the spill job wrote {len(seen):,} distinct keys, not {keys:,}")


@dataclass
class SpillResult:
    """The spill job's runs and the measured size of its key state."""

    keys: int
    budget: int
    runs: list[dict[str, Any]]
    key_state: dict[str, Any]


def measure_spill(keys: int, runs: int) -> SpillResult:
    """Measure the result's size as a dict, then run the spill job ``runs`` times."""
    budget = key_state_bytes(keys) // SPILL_BUDGET_SHARE
    key_state = run_isolated(["--key-state", "--keys", str(keys), "--loop", Settings.loop])
    _common.progress(
        f"  {keys:,} keys in one dict: RSS {_mb(key_state['caller_before'])} -> "
        f"{_mb(key_state['caller_peak'])}"
    )
    reports = []
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aiomr-spill-", dir=CACHE_DIR) as directory:
        out_file = os.path.join(directory, "counts.jsonl")
        for round_ in range(runs):
            report = run_isolated(
                [
                    *("--spill", "--keys", str(keys), "--budget", str(budget)),
                    *("--out", out_file, "--loop", Settings.loop),
                ]
            )
            if report["spills"] < 1:
                raise SystemExit("the spill job did not spill")
            _check_jsonl(out_file, keys)
            os.unlink(out_file)
            reports.append(report)
            _common.progress(
                f"  spill round {round_ + 1}/{runs}: {report['wall']:6.1f} s, "
                f"{report['spills']} spills, caller {_mb(report['caller_before'])} -> "
                f"{_mb(report['caller_peak'])}, largest worker {_mb(report['largest_child'])}, "
                f"all {_mb(report['tree_peak'])}, others {report['others']:.2f} cores"
            )
    return SpillResult(keys, budget, reports, key_state)


# Tables ----------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def speedup(samples: dict[str, Samples], key: str, baseline: str) -> float:
    """Median over rounds of the baseline's wall time over ``key``'s, same round."""
    ours, theirs = samples[key].wall, samples[baseline].wall
    return _common.median(b / a for a, b in zip(ours, theirs, strict=True))


def cpu_ratio(samples: dict[str, Samples], key: str, baseline: str) -> float:
    """Median over rounds of ``key``'s CPU seconds over the baseline's, same round."""
    ours, theirs = samples[key].cpu, samples[baseline].cpu
    return _common.median(a / b for a, b in zip(ours, theirs, strict=True))


def input_table(source: Input, samples: dict[str, Samples], contenders: list[Contender]) -> str:
    rows = []
    for c in contenders:
        s = samples[c.key]
        wall = _common.median(s.wall)
        rows.append(
            [
                c.label,
                f"{wall:.2f}",
                f"{min(s.wall):.2f} to {max(s.wall):.2f}",
                f"{source.size / 1e6 / wall:.1f}",
                f"{_common.median(s.cpu):.1f}",
                f"{cpu_ratio(samples, c.key, LOOP.key):.2f}x",
                _mb(_common.median(s.caller_peak)),
                _mb(_common.median(s.tree_peak)),
                f"{speedup(samples, c.key, LOOP.key):.2f}x",
                f"{_common.median(s.others):.2f}",
            ]
        )
    headers = [
        "contender",
        "wall s",
        "range s",
        "MB/s",
        "CPU s",
        "CPU vs loop",
        "caller peak RSS",
        "all processes peak RSS",
        "speed vs loop",
        "others' load",
    ]
    return _common.markdown_table(headers, rows)


def target_rows(
    source: Input, samples: dict[str, Samples], contenders: list[Contender]
) -> list[list[str]]:
    rows = []
    baselines = [c for c in contenders if not c.aiomr and c is not LOOP]
    for c in contenders:
        if not c.aiomr:
            continue
        ratio = speedup(samples, c.key, LOOP.key)
        behind = [b.label for b in baselines if speedup(samples, c.key, b.key) <= 1.0]
        ceiling = WORKERS / cpu_ratio(samples, c.key, LOOP.key)
        lead, closest = min((speedup(samples, c.key, b.key), b.label) for b in baselines)
        rows.append(
            [
                source.label,
                c.label,
                f"{ratio:.2f}x",
                _common.verdict(ratio >= TARGET_SPEEDUP),
                f"{ceiling:.2f}x",
                f"{lead:.2f}x {closest}",
                "; ".join(behind) if behind else "none",
                _common.verdict(not behind),
            ]
        )
    return rows


def spill_table(spill: SpillResult) -> str:
    reports = spill.runs

    def med(name: str) -> float:
        return _common.median(r[name] for r in reports)

    state = spill.key_state["caller_peak"] - spill.key_state["caller_before"]
    growth = _common.median(r["caller_peak"] - r["caller_before"] for r in reports)
    rows = [
        [
            "the result as one dict in a fresh process (for scale)",
            "",
            "",
            "",
            _mb(spill.key_state["caller_before"]),
            _mb(spill.key_state["caller_peak"]),
            _mb(state),
            "",
            "",
        ],
        [
            "`open_by_key` + `write_jsonl`: the caller streams the result to a file",
            f"{med('wall'):.1f}",
            f"{med('cpu'):.1f}",
            f"{med('spills'):.0f}",
            _mb(med("caller_before")),
            _mb(med("caller_peak")),
            f"{_mb(growth)} ({growth / state:.0%} of the dict)",
            _mb(med("largest_child")),
            _mb(med("tree_peak")),
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
        "largest worker peak RSS",
        "all processes peak RSS",
    ]
    return _common.markdown_table(headers, rows)


def render(
    inputs: list[Input],
    contenders: list[Contender],
    samples: dict[str, dict[str, Samples]],
    spill: SpillResult | None,
    runs: int,
    machine: str,
) -> str:
    parts = [
        "## Word count",
        "",
        machine,
        "",
        "Counting every word of a text, every contender in the same run on the same inputs. "
        "All tokenise alike (punctuation to spaces, lower-case, split on whitespace, "
        "alphabetic words only: the rules of `aiomr.cli.words_of`; undecodable bytes "
        "replaced), and every contender's full count was checked equal to the single-process "
        "loop's before any figure was kept. Each contender ran "
        f"{runs} times, each time in a fresh Python process, interleaved with the others in "
        "rotating order. That process runs a small program of its own "
        "(`benchmarks/wordcount_jobs.py`) that imports only what a word-count script needs, "
        "because the workers of `forkserver` (aiomr) and `spawn` (dask) import the program "
        "again; aiomr and the benchmark's modules are byte-compiled first, as `pip install` "
        "leaves a package. Wall time runs from just before a contender starts its workers to "
        "the moment it holds the whole count (worker start-up included; imports excluded); "
        "*CPU s* is user + system time of the caller during that time plus all its worker "
        "processes; *caller peak RSS* is the caller's own high-water mark (`VmHWM`, exact); "
        "*all processes peak RSS* is the peak of the summed RSS of the caller and every "
        f"descendant, sampled every {SAMPLE_SECONDS * 1000:.0f} ms (pages shared after a fork "
        "count once per process). Figures are medians; *speed vs loop* is the median over "
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
        f"{POOL_CHUNK_LINES:,} lines read by the parent) into a list of `(word, 1)` pairs, "
        "group all pairs by word in the parent, `pool.map` a function that sums each word's "
        "ones;",
        "- **`multiprocessing.Pool(2)`, a `Counter` per task**: the same tasks, each "
        "returning a `Counter`, summed in the parent as they arrive (`imap_unordered`);",
        "- **`dask.bag`**: `read_text` (the big file in "
        f"{WORKERS * 4} blocks; the small files {WORKERS * 4} partitions of several files), "
        "`.map(tokens).flatten().frequencies()`, computed with "
        f"`scheduler='processes', num_workers={WORKERS}`;",
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
    for source in inputs:
        parts += [
            f"### {source.describe()}",
            "",
            input_table(source, samples[source.name], contenders),
            "",
        ]
    rows = [row for s in inputs for row in target_rows(s, samples[s.name], contenders)]
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
        _common.markdown_table(
            [
                "input",
                "aiomr",
                "speed vs loop",
                f"≥ {TARGET_SPEEDUP}x",
                f"ceiling on {WORKERS} idle cores",
                "head to head with the closest baseline",
                "baselines as fast or faster",
                "ahead of all",
            ],
            rows,
            left=(0, 1, 5, 6),
        ),
        "",
    ]
    if spill is not None:
        keys = spill.keys
        parts += [
            "### More keys than memory",
            "",
            f"A key-value job over `range({2 * keys:,})` whose mapper turns record *n* into "
            f"one pair `(key, 1)`: {keys:,} distinct string keys, each seen twice, reduced "
            f"with `operator.add` on {WORKERS} workers with `memory_budget={spill.budget:,}` "
            "bytes per reduce task, and streamed to a JSON Lines file with "
            "`aiomr.open_by_key(...)` and `aiomr.write_jsonl`, so the caller never holds the "
            f"result. By the sizes `sys.getsizeof` gives (plus {DICT_SLOT_BYTES} bytes of dict "
            f"slot per key) the keys' state is {_mb(key_state_bytes(keys))}: "
            f"{SPILL_BUDGET_SHARE} times what the budget holds, so every reduce task must spill "
            "sorted runs to disk and merge them. The first row measures the real size of the "
            "result held as one dict: the RSS growth of a fresh process that builds it. The "
            f"job ran {len(spill.runs)} times, each in a fresh process; medians. *Caller "
            "growth* is the caller's peak RSS (`VmHWM`) minus its RSS just before the job "
            "(after imports); *largest worker peak RSS* is the largest RSS of any single "
            f"worker process, sampled every {SAMPLE_SECONDS * 1000:.0f} ms. Every run's file "
            "was checked to hold every key once with the right count.",
            "",
            spill_table(spill),
            "",
        ]
    return "\n".join(parts)


# Raw results ----------------------------------------------------------------------------------

LAST_RESULTS = CACHE_DIR / "wordcount-last.json"
"""Where the last measurement's raw figures are kept, so ``--render-last`` can redraw it."""


def save_results(
    inputs: list[Input],
    contenders: list[Contender],
    samples: dict[str, dict[str, Samples]],
    spill: SpillResult | None,
    runs: int,
    machine: str,
) -> None:
    data = {
        "inputs": [dataclasses.asdict(i) for i in inputs],
        "contenders": [c.key for c in contenders],
        "samples": {
            name: {key: dataclasses.asdict(s) for key, s in by_key.items()}
            for name, by_key in samples.items()
        },
        "spill": dataclasses.asdict(spill) if spill is not None else None,
        "runs": runs,
        "machine": machine,
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    LAST_RESULTS.write_text(json.dumps(data), encoding="utf-8")


def load_results() -> tuple[Any, ...]:
    data = json.loads(LAST_RESULTS.read_text(encoding="utf-8"))
    inputs = [Input(**i) for i in data["inputs"]]
    contenders = [BY_KEY[key] for key in data["contenders"]]
    samples = {
        name: {key: Samples(**s) for key, s in by_key.items()}
        for name, by_key in data["samples"].items()
    }
    spill = SpillResult(**data["spill"]) if data["spill"] is not None else None
    return inputs, contenders, samples, spill, data["runs"], data["machine"]


# Command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender (default 3)")
    parser.add_argument(
        "--size-mb", type=int, default=200, help="size of the generated text (default 200)"
    )
    parser.add_argument(
        "--spill-keys",
        type=int,
        default=SPILL_KEYS,
        help=f"distinct keys of the spill job (default {SPILL_KEYS:,})",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[c.key for c in CONTENDERS],
        help="run only these contenders (the loop always runs); repeatable",
    )
    parser.add_argument("--no-spill", action="store_true", help="skip the spill figure")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="both",
        help="event loop of the aiomr contenders' callers; 'both' (the default, as for the "
        "other benchmarks) leaves it to aiomr.run: uvloop when installed",
    )
    parser.add_argument(
        "--render-last",
        action="store_true",
        help="measure nothing: redraw the tables of the last measurement",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run on small inputs")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the tables to {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}",
    )
    # The parent runs each measurement by starting this script again with these.
    hidden = argparse.SUPPRESS
    parser.add_argument("--spill", action="store_true", help=hidden)
    parser.add_argument("--key-state", action="store_true", help=hidden)
    parser.add_argument("--keys", type=int, help=hidden)
    parser.add_argument("--budget", type=int, help=hidden)
    parser.add_argument("--out", help=hidden)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Settings.loop = args.loop
    if args.spill:
        spill_main(args.keys, args.budget, args.out)
        return
    if args.key_state:
        key_state_main(args.keys)
        return
    text = render(*load_results()) if args.render_last else measure_all(args)
    print(text)
    if args.write_docs:
        _common.write_extra_section("wordcount", text)


def _byte_compile() -> None:
    """Byte-compile aiomr and these scripts, as ``pip install`` does for an installed package.

    A checkout run with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile every module
    again in every process: the caller, the fork server and each worker.
    """
    import aiomr

    for directory in (Path(aiomr.__file__).parent, Path(__file__).parent):
        if not compileall.compile_dir(directory, quiet=1):
            raise SystemExit(f"could not byte-compile {directory}")


def measure_all(args: argparse.Namespace) -> str:
    """Measure everything the options ask for; save the raw figures; return the tables."""
    aiomr_version = dict(_common.machine_rows())["aiomr"]
    machine = (
        f"{_common.machine_line()} aiomr {aiomr_version}; the aiomr callers' event loop: "
        f"{Settings.describe_loop()}."
    )
    size_mb = 20 if args.quick and args.size_mb == 200 else args.size_mb
    spill_keys = 300_000 if args.quick and args.spill_keys == SPILL_KEYS else args.spill_keys
    contenders = [c for c in CONTENDERS if not args.only or c is LOOP or c.key in args.only]
    inputs = [
        Input("english", "generated English-like text", [str(english_text(size_mb))]),
        Input("stdlib", "the standard library's `.py` files", stdlib_sources()),
    ]
    _byte_compile()
    samples = measure(inputs, contenders, args.runs)
    spill = None
    if not args.no_spill:
        _common.progress(f"spill job: {spill_keys:,} keys")
        spill = measure_spill(spill_keys, args.runs)
    save_results(inputs, contenders, samples, spill, args.runs, machine)
    return render(inputs, contenders, samples, spill, args.runs, machine)


if __name__ == "__main__":
    main()
