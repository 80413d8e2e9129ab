"""Long lines cost time linear in their length, and their decoding keeps off the event loop.

No timings here: the tests look at the structure that makes it so (no copy per block, one
read or one join per record, which thread decodes).
"""

from __future__ import annotations

import codecs
import operator
import pathlib
import threading
from typing import Any

import pytest

import aiomr
import aiomr.sources
from aiomr.sources import _lines, _streamed
from aiomr.sources._file_splits import SplitReader, plan_splits
from aiomr.sources._framing import Pending


def write(path: pathlib.Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def as_list(record: Any) -> list[Any]:
    return [record]


def test_a_long_record_is_kept_in_pieces_and_joined_once() -> None:
    pending = Pending(quoted=False)
    blocks = [bytes([65 + i]) * 1000 for i in range(50)]
    for block in blocks:
        assert pending.push(block) == b""
    # Nothing was copied: the pieces are the blocks themselves.
    assert all(kept is block for kept, block in zip(pending._parts, blocks, strict=True))
    assert pending.size == 50_000
    assert pending.push(b"end\nnext") == b"".join(blocks) + b"end\n"
    assert pending.drain() == b"next"


def test_a_split_reads_a_long_line_in_blocks_it_does_not_copy_again(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "long.txt", b"short\n" + b"x" * 3_000_000 + b"\nend\n")
    joins: list[int] = []

    class Counting(Pending):
        def push(self, data: bytes) -> bytes:
            parts = len(self._parts)
            out = super().push(data)
            if out and parts:
                joins.append(parts)
            # A block is never glued to what is pending: the pieces stay as they came.
            assert len(self._parts) <= parts + 1
            return out

    monkeypatch.setattr("aiomr.sources._segments.Pending", Counting)
    reader = SplitReader(None, "strict", None)
    records = [r for split in plan_splits([path], 10**9) for r in reader.records(split)]
    assert records == [b"short", b"x" * 3_000_000, b"end"]
    assert len(joins) == 1  # the long line was joined once, from its ~46 blocks


def test_lines_reads_a_long_line_again_in_one_piece_instead_of_keeping_its_blocks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "long.txt", b"short\n" + b"y" * 5_000_000 + b"\r\nend\n")
    most: list[int] = []
    reads: list[int] = []

    class Watched(_streamed.StreamedFile):
        def read_records(self, size: int) -> Any:
            block = super().read_records(size)
            most.append(len(self.pending._parts))
            return block

        def _long_record(self, data: bytes, end: int) -> tuple[bytes, int]:
            record, lines = super()._long_record(data, end)
            reads.append(len(record))
            return record, lines

    monkeypatch.setattr(_lines, "StreamedFile", Watched)

    async def read() -> list[Any]:
        return [line async for line in aiomr.sources.lines(path, encoding=None, block_size=4096)]

    import asyncio

    assert asyncio.run(read()) == [b"short", b"y" * 5_000_000, b"end"]
    # Past LONG_RECORD the pieces are let go; the line is read again, once, whole.
    assert max(most) <= _streamed.LONG_RECORD // 4096 + 1
    assert reads == [5_000_000]


@pytest.mark.parametrize("block_size", [1000, 4096, 1 << 17, 5 << 20])
@pytest.mark.parametrize("suffix", ["", ".gz"])
async def test_long_lines_come_whole_with_their_line_ends_off(
    tmp_path: pathlib.Path, block_size: int, suffix: str
) -> None:
    import gzip

    long_text = "é" * 1_500_001  # 3 MB of two-byte characters: slices cut through some
    lines = ["a", long_text, "b" * 2_000_000, "", long_text]
    content = "\r\n".join(lines).encode() + b"\r"  # the last one without a newline
    path = tmp_path / f"long.txt{suffix}"
    path.write_bytes(gzip.compress(content) if suffix else content)
    got = [line async for line in aiomr.sources.lines(path, block_size=block_size)]
    assert got == lines
    raw = [line async for line in aiomr.sources.lines(path, encoding=None, block_size=block_size)]
    assert raw == [line.encode() for line in lines]


async def test_a_long_line_that_does_not_decode_is_named(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "bad.txt", b"ok\n" + b"z" * 2_000_000 + b"\xff\nafter\n")
    with pytest.raises(aiomr.RecordError) as caught:
        [line async for line in aiomr.sources.lines(path, block_size=4096)]
    assert str(caught.value).startswith(f"{path}:2: cannot decode as utf-8: invalid start byte")


# --- which thread decodes ------------------------------------------------------------------


class Recorded:
    """A codec that decodes as UTF-8 and notes the thread of every call."""

    name = "aiomr-test-recorded-utf8"

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.calls = 0
        utf8 = codecs.lookup("utf-8")
        recorded = self

        class Incremental(codecs.BufferedIncrementalDecoder):
            def _buffer_decode(self, data: Any, errors: str, final: bool) -> tuple[str, int]:
                recorded.note()
                return codecs.utf_8_decode(data, errors, final)

        def decode(data: Any, errors: str = "strict") -> tuple[str, int]:
            recorded.note()
            return utf8.decode(data, errors)

        self.info = codecs.CodecInfo(
            utf8.encode, decode, name=self.name, incrementaldecoder=Incremental
        )

    def note(self) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)

    def search(self, name: str) -> codecs.CodecInfo | None:
        return self.info if name == self.name.replace("-", "_") or name == self.name else None


RECORDED = Recorded()
codecs.register(RECORDED.search)  # once: the interpreter caches what a lookup found


@pytest.fixture
def recorded() -> Recorded:
    RECORDED.threads.clear()
    RECORDED.calls = 0
    return RECORDED


async def test_iterating_lines_decodes_on_helper_threads_never_the_loop(
    tmp_path: pathlib.Path, recorded: Recorded
) -> None:
    lines = [f"line {n} ü" for n in range(20_000)]
    lines[5000] = "ü" * 3_000_000  # larger than a block, and than LONG_RECORD
    path = write(tmp_path / "mixed.txt", "\n".join(lines).encode())
    got = [
        line async for line in aiomr.sources.lines(path, encoding=recorded.name, block_size=8192)
    ]
    assert got == lines
    assert recorded.calls > 0
    assert threading.current_thread().name not in recorded.threads


async def test_a_job_over_lines_leaves_decoding_to_the_workers(
    tmp_path: pathlib.Path, recorded: Recorded
) -> None:
    lines = [f"line {n} ü" for n in range(5000)]
    path = write(tmp_path / "lines.txt", "\n".join(lines).encode())
    got = await aiomr.map_reduce(
        aiomr.sources.lines(path, encoding=recorded.name, block_size=8192),
        as_list,
        operator.add,
        ordered=True,
        executor="thread",
        max_workers=2,
    )
    assert got == lines
    assert recorded.calls > 0
    assert threading.current_thread().name not in recorded.threads
