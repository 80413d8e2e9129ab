"""Generate files in the Google Books 1-gram format, deterministically, at any size.

Each line says how often a word was printed in the books of one year, and in how many books::

    word<TAB>year<TAB>match_count<TAB>volume_count

as in the published ``googlebooks-eng-all-1gram`` files. The workload of `examples/ngram.py`
(the total ``match_count`` of every word) runs on these files::

    python3 examples/ngram_data.py ngrams.tsv --size 1GB --seed 0
    python3 examples/ngram_data.py small.tsv --size 10MB
    python3 examples/ngram_data.py small.tsv --size 10MB --parquet small.parquet

or from Python, with the answers the job must find::

    info = generate("ngrams.tsv", 100_000_000, seed=0)
    info.totals["Aardvark"]  # Aardvark's exact total match count

What the data looks like:

* **Words**: about 200,000 distinct words per gigabyte (the vocabulary grows with the size),
  made of syllables drawn from a seeded random generator, in the shapes real n-gram data has:
  capitalised forms next to lowercase ones, acronyms, possessives and contractions
  (``don't``, ``l'...``), hyphenated compounds, accented letters, numbers, decades
  (``1950s``), ordinals and abbreviations (``U.S.``). A few real English words are always
  there (`REAL_WORDS`): ``Aardvark``, ``the``, ``of``, ``house``, ``don't``, ``café`` ...
* **Frequencies**: Zipf's law. The word of rank ``r`` among ``V`` is printed about
  ``MIN_TOTAL * V / r`` times in all, so the rarest words appear about ``MIN_TOTAL`` times and
  the commonest ``V`` times more often.
* **Years**: 1500 to 2008. The number of books grows exponentially with the year, and so does
  each word's yearly count; a word appears in one contiguous run of years, long for frequent
  words and short for rare ones (which show up only in recent books). Most runs end in 2008,
  some earlier (archaic words).
* **Volumes**: ``1 <= volume_count <= match_count``; frequent words occur many times per book.
* **Order**: by the word's UTF-8 bytes, then by year: the order of ``LC_ALL=C sort``. A tab
  sorts below every character a word holds, so whole lines are in byte order too.

Speed: each word's lines come out of a few C-level passes (``map``, slice assignment,
``str.join``) and one ``%`` format over precomputed tables (line templates per year, yearly
growth times noise); the random generator is called a handful of times per word, never per
line. That is about 300 ns a line: a gigabyte in about 20 s of one core.

The same seed and size give the same bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import NamedTuple

__all__ = ["GeneratedInfo", "REAL_WORDS", "generate", "parse_size", "vocabulary"]

FIRST_YEAR = 1500
LAST_YEAR = 2008
SPAN = LAST_YEAR - FIRST_YEAR + 1

WORDS_PER_BYTE = 199_000 / 1_000_000_000
"""Distinct words per byte of output: about 200 k in a gigabyte, with ~240 lines of ~21 bytes
each per word. Calibrated at 1 GB, where a second draw would cost seconds; smaller files come
out with a few percent more words per byte, found by `_plan`'s cheap second draw."""
MIN_WORDS = 100
"""The smallest vocabulary, whatever the size (sizes below ~0.5 MB come out larger)."""
MIN_TOTAL = 1_100
"""Total match count of the rarest word; the Zipf curve scales up from it."""
GROWTH = 1.012
"""Books printed in a year, relative to the year before: x1.012 is x430 over the 509 years."""
RUN_JITTER = 0.4
"""A word's run of years is between (1 - RUN_JITTER) and 1 times its natural length."""
ARCHAIC = 0.08
"""Share of words whose run ends before 2008."""
NOISE_ROWS = 64
"""Rows of year-to-year noise; each word reads one row, from a random offset."""

REAL_WORDS: dict[str, float] = {
    "the": 0.0,
    "of": 0.0,
    "and": 0.0,
    "U.S.": 0.001,
    "house": 0.002,
    "don't": 0.004,
    "computer": 0.01,
    "1950s": 0.03,
    "café": 0.06,
    "aardvark": 0.1,
    "Zürich": 0.15,
    "zebra": 0.2,
    "Aardvark": 0.3,
}
"""Real English words always in the vocabulary, and where they rank (a fraction of it).

Words ranked at 0 take the top ranks in this order: ``the`` is the commonest word."""


@dataclass(frozen=True, slots=True)
class GeneratedInfo:
    """What `generate` wrote: the figures a correct job over the file reproduces."""

    path: str
    seed: int
    size_bytes: int
    """Bytes written (close to the size asked for, not exactly it)."""
    lines: int
    words: int
    """Distinct words."""
    total_match_count: int
    totals: dict[str, int]
    """The exact total match count of each of `REAL_WORDS`."""
    seconds: float


# Vocabulary -----------------------------------------------------------------------------------

# fmt: off
_ONSETS = (
    "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y",
    "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "kn", "ph", "pl", "pr", "qu",
    "sc", "sh", "sk", "sl", "sm", "sn", "sp", "st", "str", "th", "tr", "wh",
)
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "au", "ea", "ee", "ei", "ie", "oa", "oi", "oo", "ou", "y")
_CODAS = (
    "", "b", "ck", "d", "ft", "g", "l", "ld", "lt", "m", "mp", "n", "nd", "ng", "nt", "p", "r",
    "rd", "rk", "rm", "rn", "s", "sh", "ss", "st", "t", "th", "x",
)
# fmt: on
SYLLABLES = sorted(
    {onset + nucleus + coda for onset in _ONSETS for nucleus in _NUCLEI for coda in _CODAS}
)
"""About 21,000 syllables, in a fixed order (a set's order would vary between runs)."""
SYLLABLE_COUNTS = (1, 2, 3, 4)
SYLLABLE_CUMULATIVE = tuple(accumulate((0.30, 0.52, 0.16, 0.02)))
_ACCENTS = {"a": "àáâä", "e": "éèêë", "i": "íî", "o": "óôö", "u": "úüû", "c": "ç", "n": "ñ"}
_ORDINALS = {1: "st", 2: "nd", 3: "rd"}


def _number(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:  # a decade
        return f"{rng.randrange(150, 201)}0s"
    if kind == 1:  # an ordinal
        n = rng.randrange(1, 1000)
        suffix = "th" if 10 <= n % 100 <= 20 else _ORDINALS.get(n % 10, "th")
        return f"{n}{suffix}"
    if kind == 2:  # a decimal
        return f"{rng.randrange(100)}.{rng.randrange(100)}"
    return str(int(10 ** (rng.random() * 6)))  # a year, a page, an amount


def _shape(base: str, rng: random.Random, syllables: list[str]) -> str:
    """Dress a lowercase syllable word the way n-gram words come."""
    u = rng.random()
    if u < 0.60:
        return base
    if u < 0.78:
        return base.capitalize()
    if u < 0.80:
        return base[:4].upper()
    if u < 0.85:
        return base + rng.choice(("'s", "'s", "n't", "'d", "'ll"))
    if u < 0.86:
        return rng.choice(("l'", "d'", "o'")) + base
    if u < 0.89:
        return base + "-" + rng.choice(syllables)
    if u < 0.93:
        letters = [i for i, c in enumerate(base) if c in _ACCENTS]
        if letters:
            i = rng.choice(letters)
            return base[:i] + rng.choice(_ACCENTS[base[i]]) + base[i + 1 :]
        return base
    if u < 0.97:
        return _number(rng)
    if u < 0.985:
        return ".".join(base[: rng.randrange(2, 4)].upper()) + "."
    return base.capitalize() + "."


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """Return ``size`` distinct words: `REAL_WORDS` first, then generated ones, in order drawn."""
    words = dict.fromkeys(REAL_WORDS)  # a dict keeps the order drawn; a set would not
    syllables = SYLLABLES
    choices, shape = rng.choices, _shape
    while len(words) < size:
        (count,) = choices(SYLLABLE_COUNTS, cum_weights=SYLLABLE_CUMULATIVE)
        word = shape("".join(choices(syllables, k=count)), rng, syllables)
        words.setdefault(word)
    return list(words)


def _ranks(words: list[str], rng: random.Random) -> list[int]:
    """Give every word a distinct frequency rank (1 = commonest); real words where listed."""
    size = len(words)
    taken = set()
    ranks = [0] * size
    for i, word in enumerate(words):
        if word in REAL_WORDS:
            rank = max(1, round(REAL_WORDS[word] * size))
            while rank in taken:
                rank += 1
            taken.add(rank)
            ranks[i] = rank
    free = [rank for rank in range(1, size + 1) if rank not in taken]
    rng.shuffle(free)
    rest = iter(free)
    return [rank or next(rest) for rank in ranks]


# Planning ------------------------------------------------------------------------------------

_GROWTH = list(accumulate(repeat(GROWTH, SPAN - 1), lambda g, x: g * x, initial=1.0))
"""Relative number of books printed in each year (1500 = 1.0)."""
_GROWTH_SUMS = list(accumulate(_GROWTH, initial=0.0))
_LOG_GROWTH = math.log(GROWTH)
_LOG10_GROWTH = math.log10(GROWTH)
FIXED_BYTES = len("\t2008\t\t\n")
"""Bytes of a line besides the word and the two counts."""
DIGITS_BIAS = 0.55
"""Mean digits of a count above the log10 of its expected value (calibrated on output)."""


def _noise_table(rng: random.Random) -> list[float]:
    """Growth times noise, ``NOISE_ROWS + 1`` spans long: entry ``j`` is for year ``j % SPAN``."""
    noise = [0.25 + 1.5 * rng.random() for _ in range((NOISE_ROWS + 1) * SPAN)]
    return [g * x for g, x in zip(_GROWTH * (NOISE_ROWS + 1), noise, strict=True)]


class _Word(NamedTuple):
    """Everything that decides a word's lines, drawn before any line is written."""

    word: str
    first: int
    """Index of the word's first year (0 = 1500)."""
    years: int
    offset: int
    """Where the word's row of noise starts in the noise table."""
    scale: float
    """Matches per unit of the noise table: the word's total over its run's weight."""
    per_volume: float
    """Volumes per match (<= 1)."""


def _draw_word(word: str, rank: int, vocabulary_size: int, rng: random.Random) -> _Word:
    total = MIN_TOTAL * vocabulary_size / rank  # Zipf
    # The run of years in which the word's yearly count stays above ~1, in books that grow
    # by GROWTH a year: log(total * (GROWTH - 1)) / log(GROWTH) years. Jitter shortens it.
    natural = math.log(max(total * (GROWTH - 1), 1.0)) / _LOG_GROWTH
    years = min(SPAN, int(natural * (1.0 - RUN_JITTER * rng.random())) + 1)
    first = SPAN - years
    if rng.random() < ARCHAIC:
        first = int(rng.random() * (first + 1))
    scale = total / (_GROWTH_SUMS[first + years] - _GROWTH_SUMS[first])
    offset = SPAN * int(rng.random() * NOISE_ROWS) + first
    # Frequent words occur many times per book: matches per volume grow with frequency.
    per_volume = 1.0 / (1.0 + 0.05 * math.sqrt(total / MIN_TOTAL))
    return _Word(word, first, years, offset, scale, per_volume)


def _estimated_bytes(w: _Word) -> float:
    """Roughly how many bytes the word's lines take (the counts' digits are estimated)."""
    # log10 of the expected count grows linearly over the run: average its two ends.
    low = math.log10(w.scale * _GROWTH[w.first])
    high = low + (w.years - 1) * _LOG10_GROWTH
    matches = max(0.0, (low + high) / 2) + DIGITS_BIAS
    volumes = max(0.0, (low + high) / 2 + math.log10(w.per_volume)) + DIGITS_BIAS
    return w.years * (len(w.word.encode("utf-8")) + FIXED_BYTES + matches + volumes)


def _plan(size_bytes: int, seed: int) -> tuple[list[_Word], list[float]]:
    """Draw the vocabulary and every word's run, sorted by word; and the noise table.

    The vocabulary size is chosen so that the estimated output is about ``size_bytes``: a
    first draw at `WORDS_PER_BYTE`, then one redraw scaled by how far its estimate missed.
    """
    size = max(MIN_WORDS, round(size_bytes * WORDS_PER_BYTE))
    for attempt in range(2):
        rng = random.Random(seed)
        words = vocabulary(size, rng)
        ranks = _ranks(words, rng)
        order = sorted(range(size), key=lambda k: words[k].encode("utf-8"))
        drawn = [_draw_word(words[k], ranks[k], size, rng) for k in order]
        table = _noise_table(rng)
        corrected = max(MIN_WORDS, round(size * size_bytes / sum(map(_estimated_bytes, drawn))))
        if attempt or abs(corrected - size) <= size // 200:
            break
        size = corrected
    return drawn, table


# Writing -------------------------------------------------------------------------------------

_LINE_TEMPLATES = [f"\t{year}\t%d\t%d\n" for year in range(FIRST_YEAR, LAST_YEAR + 1)]
"""The rest of a line after the word, per year: the two counts left to format."""
WRITE_CHUNK = 8 << 20
"""Characters gathered before one encode and write: big writes, bounded memory."""


def _lines(w: _Word, table: list[float]) -> tuple[str, int]:
    """Return the word's lines (each ending with a newline) and its total match count.

    A few C-level passes (``map``, slice assignment, ``str.join``) and one ``%`` format for
    the whole block: no Python code runs per line.
    """
    years = w.years
    row = table[w.offset : w.offset + years]
    matches = list(map(math.ceil, map(w.scale.__mul__, row)))
    counts: list[int] = [0] * (2 * years)
    counts[0::2] = matches
    # ceil(p * s * x) <= ceil(s * x) for p < 1 (p <= 0.96, far above rounding error):
    # volumes never exceed matches.
    counts[1::2] = map(math.ceil, map((w.scale * w.per_volume).__mul__, row))
    word = w.word.replace("%", "%%")
    template = word + word.join(_LINE_TEMPLATES[w.first : w.first + years])
    return template % tuple(counts), sum(matches)


def generate(path: str | os.PathLike[str], size_bytes: int, *, seed: int = 0) -> GeneratedInfo:
    """Write a 1-gram file of about ``size_bytes`` bytes to ``path``; return what is in it.

    The same ``size_bytes`` and ``seed`` give the same bytes. The size comes out within a
    few percent of ``size_bytes`` (larger below half a megabyte: the vocabulary has at
    least `MIN_WORDS` words).
    """
    if size_bytes < 1:
        raise ValueError("size_bytes must be >= 1")
    started = time.perf_counter()
    drawn, table = _plan(size_bytes, seed)
    totals: dict[str, int] = {}
    lines = grand_total = written = pending = 0
    parts: list[str] = []
    with open(path, "wb") as f:
        for w in drawn:
            text, total = _lines(w, table)
            lines += w.years
            grand_total += total
            if w.word in REAL_WORDS:
                totals[w.word] = total
            parts.append(text)
            pending += len(text)
            if pending >= WRITE_CHUNK:
                written += f.write("".join(parts).encode("utf-8"))
                parts.clear()
                pending = 0
        written += f.write("".join(parts).encode("utf-8"))
    return GeneratedInfo(
        path=os.fspath(path),
        seed=seed,
        size_bytes=written,
        lines=lines,
        words=len(drawn),
        total_match_count=grand_total,
        totals=totals,
        seconds=time.perf_counter() - started,
    )


# Command line --------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:([KMGT])(I?)B?|B?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Read ``"10MB"``, ``"1GB"``, ``"512KiB"``, ``"2.5G"`` or ``"1000"`` as a byte count.

    KB, MB, GB are powers of 1000; KiB, MiB, GiB powers of 1024.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 10MB, 1GB, 512KiB)")
    number, prefix, binary = match.groups()
    power = "KMGT".index(prefix.upper()) + 1 if prefix else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def _size_arg(text: str) -> int:
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", help="the file to write")
    parser.add_argument(
        "--size", type=_size_arg, default=parse_size("100MB"), help="about how big (10MB, 1GB)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the random seed (default: 0)")
    parser.add_argument(
        "--parquet",
        metavar="PATH",
        help="also write the same rows as Parquet there, 1 M rows per row group (needs pyarrow)",
    )
    return parser.parse_args(argv)


COLUMNS = ("word", "year", "match_count", "volume_count")


def write_parquet(tsv: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write the rows of the 1-gram file ``tsv`` to ``out`` as Parquet; return the rows.

    Streams: a block of the TSV at a time, never the whole file in memory.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    types = {"word": pa.string(), "year": pa.int16(), "match_count": pa.int64()}
    types["volume_count"] = pa.int64()
    reader = pacsv.open_csv(
        tsv,
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS), block_size=64 << 20),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )
    rows = 0
    with pq.ParquetWriter(out, reader.schema) as writer:
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= 1_000_000:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=1_000_000)
                rows += pending_rows
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=1_000_000)
            rows += pending_rows
    return rows


def describe(info: GeneratedInfo) -> Iterator[str]:
    """The lines the command prints about a generated file."""
    rate = info.size_bytes / 1e6 / info.seconds if info.seconds else float("inf")
    yield (
        f"{info.path}: {info.size_bytes:,} bytes, {info.lines:,} lines, {info.words:,} words, "
        f"seed {info.seed}, in {info.seconds:.2f} s ({rate:.0f} MB/s)"
    )
    for word in ("Aardvark", "the"):
        yield f"{word} has appeared {info.totals[word]} times"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = generate(args.out, args.size, seed=args.seed)
    except OSError as exc:
        print(f"ngram_data: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for line in describe(info):
        print(line)
    if args.parquet:
        rows = write_parquet(args.out, args.parquet)
        size = os.path.getsize(args.parquet)
        print(f"{args.parquet}: the same {rows:,} rows as Parquet, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
