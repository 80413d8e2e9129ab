"""The generated English-like text of the word-count benchmark, written once and cached.

A seeded Zipf-distributed vocabulary of real and made-up words (about one made-up word in thirty
a capitalised proper name), in sentences with capitals and punctuation, in paragraphs of
wrapped lines.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
from pathlib import Path

import _harness as h

SEED, VOCABULARY, TEXT_VERSION = 20_261_121, 150_000, 1
"""The generator's seed, its distinct words and the version in the file name."""
CACHE_DIR = Path(tempfile.gettempdir()) / "aiomr-bench-wordcount"

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
