"""Bad records: what ``on_error="skip"`` and ``"collect"`` keep, and the dead-letter file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import aiofiles

__all__ = ["SAMPLE_SIZE", "BadRecord", "DeadLetterFile", "OnError", "check_on_error"]

OnError: TypeAlias = Literal["raise", "skip", "collect"]
"""What a record whose parsing or mapping fails does to the job."""


def check_on_error(on_error: object, dead_letter: object) -> None:
    """Raise `ValueError` for an unknown ``on_error``, or a dead letter it would never fill."""
    if on_error not in ("raise", "skip", "collect"):
        raise ValueError(f"on_error must be 'raise', 'skip' or 'collect', got {on_error!r}")
    if dead_letter is not None and on_error == "raise":
        raise ValueError("dead_letter= needs on_error='skip' or 'collect'")


SAMPLE_SIZE = 20
"""Bad records `JobStats.bad_sample` keeps with ``on_error="skip"``: enough to see what goes
wrong, bounded whatever the input."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that was skipped, where it came from, and why."""

    location: str
    """``path:LINE`` for streamed lines, ``path:LINE (byte OFFSET)`` for byte-range splits,
    else the record's position in the source."""
    record: str
    """A short repr of the record."""
    error: str
    """The exception's type and message."""


class DeadLetterFile:
    """Append every bad record to a JSON Lines file, one object per line, through aiofiles.

    Cancellation: whatever was written stays; the file is closed by `aclose`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: Any = None

    async def write(self, records: list[BadRecord]) -> None:
        """Append ``records``, opening the file on first use."""
        if self._file is None:
            self._file = await aiofiles.open(self.path, "a", encoding="utf-8")
        lines = "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
        await self._file.write(lines)

    async def aclose(self) -> None:
        """Close the file. Idempotent."""
        file, self._file = self._file, None
        if file is not None:
            await file.close()
