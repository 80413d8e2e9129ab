"""What a job asks of its source: `Source`, the one protocol between sources and the core.

A job never tests what kind of source it was given; it asks the source:

* `Source.worker_side`: is it read by the workers themselves (a `SplitSource`: files,
  query ranges)? Then the caller only plans splits and sends their coordinates, and the
  source chooses the task bodies that read them.
* `Source.open_batches`: otherwise, its records are taken in the caller, up to ``n`` at a
  time (`BatchReader.take`): a list is sliced, a file of lines read a block at a time,
  a query's rows handed over a fetched batch at a time. Opening is also where a source
  that can be read only once refuses a second job.
* `Source.parser`: what the workers apply to each record taken, when the caller sends raw
  records (undecoded lines) rather than the records themselves.
* `Source.record_noun`: how messages name a record and the source, ``row 12 of the query``.

`aiomr.sources._describe.describe` turns any accepted source into a `Source`: plain
iterables and async iterables get small adapters there, in the one place that looks at what
the user passed. This module imports nothing heavy: worker processes load it with the
split sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._worker.bodies import RecordParser
    from ._split_source import SplitSource

__all__ = ["DEFAULT_NOUN", "Batch", "BatchReader", "Origin", "Source"]

DEFAULT_NOUN = ("record", "the source")
"""How messages name a source's records and the source: ``record 12 of the source``."""

Origin = tuple[int, str, int]
"""``(index in the batch, path, line number)`` where a run of consecutive lines starts."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Records taken from a source at once (see `BatchReader.take`).

    ```python
    from aiomr.sources import Batch

    Batch([b"a", b"b"], last=True)
    ```
    """

    records: Sequence[Any]
    """The records, in source order; a list in all but special cases."""
    origins: tuple[Origin, ...] = ()
    """For lines of files: ``(index in records, path, line number)`` where each run of
    consecutive lines starts, so messages can say ``path:LINE``; empty otherwise."""
    last: bool = False
    """Nothing follows these records: the job asks for no more. A batch that is empty ends
    the source too, so a source that cannot tell leaves this ``False``."""


class BatchReader(Protocol):
    """One job's reading of a source in the caller (what `Source.open_batches` returns).

    Cancellation: a cancelled `take` may leave the reader anywhere; the job then calls
    `aclose` and reads no more.
    """

    async def take(self, limit: int) -> Batch:
        """Return the next records, at most ``limit`` of them; an empty batch at the end.

        Fewer than ``limit`` is fine (whatever is at hand); say ``last=True`` when nothing
        follows. Runs on the event loop: reading that blocks belongs on a thread.
        """
        ...

    async def aclose(self) -> None:
        """Stop reading and let go of what the reading holds (files, cursors). Idempotent."""
        ...


class Source:
    """A source of records that tells a job how to read it; the base of every source.

    Iterables and async iterables need none of this: a job takes them as they are. Subclass
    `Source` to give a job what an iterable cannot say: records that come in batches
    (`open_batches`), a name for them in messages (`record_noun`), or a one-use source
    that refuses a second job. A source that the workers read themselves subclasses
    `SplitSource` instead.

    ```python
    import itertools

    import aiomr
    from aiomr.sources import Batch, Source


    class Countdown(Source):
        record_noun = ("tick", "the countdown")

        def __init__(self, start: int) -> None:
            self.start = start

        def open_batches(self) -> "CountdownReader":
            return CountdownReader(self.start)


    class CountdownReader:
        def __init__(self, start: int) -> None:
            self._ticks = iter(range(start, 0, -1))

        async def take(self, limit: int) -> Batch:
            ticks = list(itertools.islice(self._ticks, limit))
            return Batch(ticks, last=len(ticks) < limit)

        async def aclose(self) -> None:
            pass


    async def main() -> None:
        print(await aiomr.map_reduce(Countdown(10), abs, max))  # 10


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Cancellation: a job closes the reader `open_batches` gave (``aclose``) however it ends,
    cancelled or not.
    """

    record_noun: tuple[str, str] = DEFAULT_NOUN
    """How messages name one record and the source, e.g. ``("row", "the query")`` gives
    ``row 12 of the query``."""
    parser: RecordParser | None = None
    """Applied in the workers to the raw records `open_batches` takes (a picklable callable
    with a ``parse_many(list)`` method, like the one `lines` uses to decode and parse
    lines); ``None``: the records taken are the records."""

    def worker_side(self) -> SplitSource | None:
        """Return what the workers read for themselves, or ``None`` (the default): the records
        are taken in the caller with `open_batches`."""
        return None

    def open_batches(self) -> BatchReader:
        """Start one job's reading of the records in the caller; called once per job.

        A source that can be read only once raises `ValueError` when a second job opens it.
        """
        raise TypeError(
            f"{type(self).__qualname__} gives a job no records: "
            "a Source must override open_batches() or worker_side()"
        )
