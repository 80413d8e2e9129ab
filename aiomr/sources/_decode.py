"""Turn raw records into what the mapper sees, in the workers: decode, then parse.

`aiomr.sources.lines` hands a job raw ``bytes`` records: the caller only cuts them, and the
workers decode and parse them here, so a record that does not decode is a bad record like
any other (skipped with ``on_error="skip"``, named by ``path:LINE`` otherwise) and the event
loop never spends time decoding.
"""

from __future__ import annotations

import codecs
import time
from typing import Any, NamedTuple

from .._exceptions import RecordError
from ._parse import Parser

__all__ = ["SLICE", "HeadedRecord", "RecordDecoder", "decode_error", "decode_gently"]


def decode_error(exc: UnicodeDecodeError, encoding: str) -> RecordError:
    """Say what could not be decoded, without where (the caller adds that)."""
    bad = exc.object[exc.start : exc.start + 1]
    return RecordError(f"cannot decode as {encoding}: {exc.reason} (byte {bad!r})")


SLICE = 1 << 20
"""Bytes decoded in one call by `decode_gently`: about a millisecond."""
YIELD_SECONDS = 0.0002
"""Pause between slices. Not 0: ``sleep(0)`` releases the GIL and takes it straight back
before a waiting thread wakes, and the waiter then gets it only after the interpreter's
switch interval (5 ms); a short real pause lets it in at once."""


def decode_gently(raw: bytes, encoding: str, errors: str) -> str:
    """Decode ``raw`` a slice at a time, offering the GIL to other threads between slices.

    One ``bytes.decode`` of 50 MB holds the GIL for a tenth of a second, and an event loop in
    another thread of the process waits all that time; in slices it waits a millisecond at a
    time, and only the final join of the decoded pieces is one long copy.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    pieces = []
    for start in range(0, len(raw), SLICE):
        final = start + SLICE >= len(raw)
        pieces.append(decoder.decode(raw[start : start + SLICE], final))
        time.sleep(YIELD_SECONDS)  # let a thread that waits for the GIL (the loop) take it
    return "".join(pieces)


class HeadedRecord(NamedTuple):
    """A raw record of a file with a header, and the field names that header gave."""

    names: tuple[Any, ...]
    raw: bytes

    def __repr__(self) -> str:
        return repr(self.raw)


class RecordDecoder:
    """Decode raw records with ``encoding`` and parse them with ``parser`` (either optional).

    `parse_many` does a whole chunk in a few C calls when it can (joined, decoded once, split
    again); a record that fails raises `RecordError` with its ``index`` in the chunk.
    """

    def __init__(self, encoding: str | None, errors: str, parser: Parser | None) -> None:
        self.encoding = encoding
        self.errors = errors
        self.parser = parser
        self._bound: dict[tuple[Any, ...], RecordDecoder] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "errors": self.errors, "parser": self.parser}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["encoding"], state["errors"], state["parser"])  # type: ignore[misc]

    def __call__(self, raw: Any) -> Any:
        """Decode and parse one raw record."""
        return self.parse_many([raw])[0]

    def parse_many(self, raws: list[Any], gently: bool = False) -> list[Any]:
        """Decode and parse a chunk of raw records.

        ``gently``: the chunk holds records of megabytes, and this runs beside an event
        loop: decode one record at a time, a large one in slices (see `decode_gently`).
        """
        if raws and type(raws[0]) is HeadedRecord:
            return self._headed(raws, gently)
        try:
            texts = self.decode_many(raws, gently)
        except RecordError as exc:
            # The records before the one that does not decode may hold an earlier error.
            if exc.index and self.parser is not None:
                self.parser.parse_many(self.decode_many(raws[: exc.index], gently))
            raise
        return self.parser.parse_many(texts) if self.parser is not None else texts

    def decode_many(self, raws: list[bytes], gently: bool = False) -> list[Any]:
        """Decode a chunk of raw records; ``bytes`` as they are without an encoding."""
        encoding = self.encoding
        if encoding is None or not raws:
            return raws
        errors = self.errors
        if gently:
            return [self._decode_one(index, raw, True) for index, raw in enumerate(raws)]
        # One decode for the chunk when no record holds a newline (all but CSV records).
        if self.parser is None or self.parser.format != "csv":
            joined = b"\n".join(raws)
            try:
                texts = joined.decode(encoding, errors).split("\n")
            except UnicodeDecodeError as exc:
                error = decode_error(exc, encoding)
                error.index = joined.count(b"\n", 0, exc.start)
                raise error from exc
            if len(texts) == len(raws):  # else an error handler wrote a newline
                return texts
        return [self._decode_one(index, raw) for index, raw in enumerate(raws)]

    def _decode_one(self, index: int, raw: bytes, gently: bool = False) -> str:
        assert self.encoding is not None
        try:
            if gently and len(raw) > SLICE:
                return decode_gently(raw, self.encoding, self.errors)
            return raw.decode(self.encoding, self.errors)
        except UnicodeDecodeError as exc:
            error = decode_error(exc, self.encoding)
            error.index = index
            raise error from exc

    def _headed(self, raws: list[HeadedRecord], gently: bool) -> list[Any]:
        """Records of files with headers: each run from one file parsed with its names."""
        out: list[Any] = []
        start = 0
        while start < len(raws):
            names = raws[start].names
            end = start + 1
            while end < len(raws) and raws[end].names is names:
                end += 1
            bound = self._bound.get(names)
            if bound is None:
                assert self.parser is not None
                parser = self.parser.with_names(names)
                bound = self._bound[names] = RecordDecoder(self.encoding, self.errors, parser)
            try:
                out.extend(bound.parse_many([record.raw for record in raws[start:end]], gently))
            except RecordError as exc:
                if exc.index is not None:
                    exc.index += start
                raise
            start = end
        return out
