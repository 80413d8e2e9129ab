"""Revenue per store and per product over a stream of generated sale records.

A seeded generator produces the sales of a chain of stores (store, product, quantity, unit
price in cents); aiomr pulls them lazily, so the records never sit in one list::

    python3 examples/sales.py                          # 200,000 sales, seed 2024
    python3 examples/sales.py --records 1000000 --seed 7
    python3 examples/sales.py --json revenue.jsonl     # also write revenue per store

One key-based job emits two kinds of keys for every sale, ``("store", name)`` and
``("product", name)``, each with the sale's revenue; ``map_reduce_by_key`` adds them up. A
second job folds each store's sales into ``(revenue, sales)`` with ``fold_by_key`` to get the
mean sale value. Amounts are integer cents, so every figure is exact.
"""

from __future__ import annotations

import argparse
import itertools
import operator
import random
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypedDict

import aiomr


class Sale(TypedDict):
    """One line of a receipt."""

    store: str
    product: str
    quantity: int
    unit_price: int
    """In cents."""


STORES = (
    "Amsterdam",
    "Barcelona",
    "Berlin",
    "Copenhagen",
    "Dublin",
    "Lisbon",
    "Milan",
    "Oslo",
    "Paris",
    "Prague",
    "Vienna",
    "Warsaw",
)
STORE_CUM_WEIGHTS = tuple(itertools.accumulate((9, 7, 12, 4, 5, 6, 8, 3, 11, 5, 6, 4)))
"""Cumulative: bigger stores sell more often, so the ranking has a clear head."""

PRODUCTS = {
    "backpack": 4_999,
    "bike light": 1_850,
    "candle": 650,
    "ceramic mug": 1_200,
    "coffee beans": 1_399,
    "desk lamp": 3_490,
    "headphones": 8_900,
    "notebook": 450,
    "phone case": 1_999,
    "plant pot": 990,
    "rain jacket": 7_450,
    "scarf": 2_200,
    "sunglasses": 5_900,
    "tea tin": 875,
    "umbrella": 1_590,
    "water bottle": 1_750,
}
"""Product name -> list price in cents."""

QUANTITIES = (1, 2, 3, 4, 5, 10)
QUANTITY_CUM_WEIGHTS = tuple(itertools.accumulate((50, 22, 12, 8, 5, 3)))
DISCOUNTS = (100, 100, 100, 100, 90, 80, 50)
"""Percent of the list price paid: most sales at full price, some on offer."""


def generate_sales(records: int, seed: int) -> Iterator[Sale]:
    """Yield ``records`` sales, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    products = sorted(PRODUCTS)
    for _ in range(records):
        product = rng.choice(products)
        yield {
            "store": rng.choices(STORES, cum_weights=STORE_CUM_WEIGHTS)[0],
            "product": product,
            "quantity": rng.choices(QUANTITIES, cum_weights=QUANTITY_CUM_WEIGHTS)[0],
            "unit_price": PRODUCTS[product] * rng.choice(DISCOUNTS) // 100,
        }


def revenue(sale: Sale) -> int:
    """Return what the sale brought in, in cents."""
    return sale["quantity"] * sale["unit_price"]


def revenue_by_store_and_product(sale: Sale) -> Iterator[tuple[tuple[str, str], int]]:
    """Emit the sale's revenue once under its store and once under its product."""
    amount = revenue(sale)
    yield ("store", sale["store"]), amount
    yield ("product", sale["product"]), amount


def revenue_by_store(sale: Sale) -> Iterator[tuple[str, int]]:
    """Emit the sale's revenue under its store."""
    yield sale["store"], revenue(sale)


def add_sale(totals: tuple[int, int], amount: int) -> tuple[int, int]:
    """Fold one sale into a store's ``(revenue, sales)``."""
    return totals[0] + amount, totals[1] + 1


def merge_totals(first: tuple[int, int], second: tuple[int, int]) -> tuple[int, int]:
    """Merge two ``(revenue, sales)`` accumulators of the same store."""
    return first[0] + second[0], first[1] + second[1]


def split_by_kind(totals: dict[tuple[str, str], int], kind: str) -> dict[str, int]:
    """Keep the keys of one kind, without the kind: ``("store", "Oslo") -> "Oslo"``."""
    return {name: value for (key_kind, name), value in totals.items() if key_kind == kind}


def dollars(cents: int) -> str:
    """Format cents exactly as dollars with thousands separators: ``123456 -> 1,234.56``."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a titled table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{cell:>{width}}" for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(title)
    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))
    print()


def print_top(title: str, column: str, totals: dict[str, int], k: int) -> None:
    """Print the ``k`` largest revenues of ``totals``."""
    rows = [(name, dollars(cents)) for name, cents in aiomr.top(totals, k)]
    print_table(title, (column, "revenue"), rows)


def print_means(totals: dict[str, tuple[int, int]]) -> None:
    """Print every store's sales and mean sale value, highest mean first."""
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0] / item[1][1], item[0]))
    rows = [
        (store, f"{sales:,}", dollars(round(cents / sales))) for store, (cents, sales) in ranked
    ]
    print_table("MEAN SALE VALUE PER STORE", ("store", "sales", "mean"), rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, default=200_000, help="sales to generate (default: 200000)"
    )
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default: 2024)")
    parser.add_argument("--top", type=int, default=5, help="rows in the top tables (default: 5)")
    parser.add_argument("--json", metavar="PATH", help="write revenue per store as JSON Lines")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    if args.records < 0:
        parser.error("--records must be >= 0")
    return args


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    totals = await aiomr.map_reduce_by_key(
        generate_sales(args.records, args.seed),
        revenue_by_store_and_product,
        operator.add,
        sort=True,  # key order, so equal revenues rank the same way on every run
        max_workers=args.workers,
    )
    stores = split_by_kind(totals, "store")
    products = split_by_kind(totals, "product")
    print_top(f"TOP {args.top} STORES BY REVENUE", "store", stores, args.top)
    print_top(f"TOP {args.top} PRODUCTS BY REVENUE", "product", products, args.top)
    print(f"TOTAL REVENUE  {dollars(sum(stores.values()))}\n")

    # The same records again (same seed): a generator can be read only once.
    means = await aiomr.fold_by_key(
        generate_sales(args.records, args.seed),
        revenue_by_store,
        add_sale,
        merge_totals,
        initial=(0, 0),
        sort=True,
        max_workers=args.workers,
    )
    print_means(means)

    if args.json:
        rows = await aiomr.write_jsonl(args.json, stores, key="store", value="revenue_cents")
        print(f"wrote {rows} stores to {args.json}", file=sys.stderr)
    print(f"{args.records} sales in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(aiomr.run(main(parse_args())))
