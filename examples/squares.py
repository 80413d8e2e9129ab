"""Sum the squares of 1..10 in worker processes: the smallest aiomr job.

Run: python3 examples/squares.py
"""

from __future__ import annotations

import operator

import aiomr


def square(x: int) -> int:
    return x * x


async def main() -> int:
    return await aiomr.map_reduce(range(1, 11), square, operator.add)


if __name__ == "__main__":
    print(aiomr.run(main()))
