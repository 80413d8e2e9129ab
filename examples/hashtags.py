"""Count the hashtags of a stream of tweets and print the 10 most used.

The tweets come from an async generator, the way a live feed (a websocket, a message queue)
delivers them; this one is generated, the same tweets for the same seed::

    python3 examples/hashtags.py                       # 100,000 tweets, seed 2024
    python3 examples/hashtags.py --tweets 500000 --top 20 --seed 1

``#Python!``, ``#PYTHON`` and ``#python,`` are one hashtag: the mapper finds the tags of a
tweet, drops the punctuation around them and lower-cases them; ``map_reduce_by_key`` adds the
counts up in worker processes while the stream is still arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import operator
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiomr

TAGS = (
    "Python", "AsyncIO", "MapReduce", "DataEngineering", "OpenSource", "MachineLearning",
    "DevOps", "Linux", "Rust", "JavaScript", "WebDev", "CloudNative", "Kubernetes", "Docker",
    "BigData", "Analytics", "SQL", "Postgres", "Testing", "CodeReview", "100DaysOfCode",
    "Coffee", "Monday", "Weekend", "Music", "Travel", "Football", "Cats", "Dogs", "Gardening",
    "Photography", "Cooking", "Books", "Movies", "Science", "Space", "Climate", "Health",
    "Running", "Cycling", "Chess", "Gaming", "Art", "Design", "Startups", "Remote", "Hiring",
    "Conference", "PyCon", "Tutorial",
)  # fmt: skip
"""Each tag's rank in this list sets how often it is used (Zipf's law, roughly)."""
TAG_WEIGHTS = tuple(itertools.accumulate(1 / rank**1.1 for rank in range(1, len(TAGS) + 1)))

WORDS = (
    "just", "shipped", "a", "new", "release", "of", "my", "project", "today", "love", "this",
    "the", "best", "way", "to", "learn", "is", "build", "something", "thread", "below", "what",
    "do", "you", "think", "about", "finally", "working", "on", "weekend", "again", "we're",
    "#1", "C#", "5", "minutes", "read", "check", "out", "great", "talk", "at",
)  # fmt: skip
"""Filler; ``#1`` and ``C#`` look like hashtags and are not."""

CASINGS: tuple[Callable[[str], str], ...] = (str, str, str, str.lower, str.lower, str.upper)
PUNCTUATION = ("", "", "", "", "!", "!!", ",", ".", "?", ":", ";", "...")

HASHTAG = re.compile(r"(?<!\w)#([a-z0-9_]*[a-z][a-z0-9_]*)", re.IGNORECASE | re.ASCII)
"""A ``#`` that does not follow a word character, then a name with at least one letter."""

YIELD_EVERY = 500
"""Tweets between two hand-backs to the event loop, where a live feed would await the network."""


def make_tweet(rng: random.Random) -> str:
    """Return one tweet: a few filler words with zero to four hashtags among them."""
    words = rng.choices(WORDS, k=rng.randint(3, 14))
    for tag in rng.choices(TAGS, cum_weights=TAG_WEIGHTS, k=rng.choice((0, 1, 1, 2, 2, 3, 4))):
        tagged = "#" + rng.choice(CASINGS)(tag) + rng.choice(PUNCTUATION)
        words.insert(rng.randint(0, len(words)), tagged)
    return " ".join(words)


async def generate_tweets(tweets: int, seed: int) -> AsyncIterator[str]:
    """Yield ``tweets`` tweets, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    for index in range(tweets):
        if index % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        yield make_tweet(rng)


def hashtags(tweet: str) -> Iterator[tuple[str, int]]:
    """Emit ``(tag, 1)`` for each hashtag of the tweet, lower-cased, without the ``#``."""
    for tag in HASHTAG.findall(tweet):
        yield tag.lower(), 1


def print_top(counts: dict[str, int], top: int) -> None:
    """Print the ``top`` most used hashtags as ``#tag : count`` rows."""
    most_used = aiomr.top(counts, top)
    width = max((len(tag) + 1 for tag, _ in most_used), default=0)
    print(f"TOP {top} HASHTAGS\n")
    for tag, count in most_used:
        print(f"{'#' + tag:<{width}} : {count:>7}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tweets", type=int, default=100_000, help="tweets to generate (default: 100000)"
    )
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default: 2024)")
    parser.add_argument("--top", type=int, default=10, help="hashtags to print (default: 10)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    if args.tweets < 0:
        parser.error("--tweets must be >= 0")
    return args


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    stats = aiomr.JobStats()
    counts = await aiomr.map_reduce_by_key(
        generate_tweets(args.tweets, args.seed),
        hashtags,
        operator.add,
        sort=True,  # key order, so equal counts rank alphabetically on every run
        max_workers=args.workers,
        stats=stats,
    )
    print_top(counts, args.top)
    print(f"\n{stats.records} tweets, {sum(counts.values())} hashtags, {len(counts)} distinct")
    print(f"{time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(aiomr.run(main(parse_args())))
