"""Large partials cross from the workers sealed, and are unpickled in slices."""

from __future__ import annotations

import operator
import pickle
from collections import Counter
from typing import Any

import pytest

import aiomr
from aiomr._worker import envelope, run, sealing
from aiomr._worker.sealing import SEAL_MIN_ITEMS, Sealed, seal, unseal

pytestmark = pytest.mark.usefixtures("nothing_left_running")


class CountingReader(sealing._SliceReader):
    __slots__ = ("reads",)

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def test_a_large_partial_is_read_back_in_many_slices() -> None:
    value = {f"word{i}": i for i in range(100_000)}
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    reader = CountingReader(data)
    assert pickle.Unpickler(reader).load() == value
    # One read per frame of about 64 KiB: each is a chance for another thread to run.
    assert reader.reads >= len(data) // (128 * 1024)


@pytest.mark.parametrize(
    "value",
    [
        {i: str(i) for i in range(SEAL_MIN_ITEMS)},
        list(range(SEAL_MIN_ITEMS)),
        set(range(SEAL_MIN_ITEMS)),
        Counter({"a\nb": 1, b"\n": 2, "x" * 100_000: 3}),
        ("line\n" * 10, 1.5, None),
    ],
)
def test_unseal_gives_back_what_was_sealed(value: Any) -> None:
    assert unseal(Sealed(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))) == value
    assert unseal(value) is value  # anything not sealed passes through


def test_only_worker_processes_seal() -> None:
    big = dict.fromkeys(range(SEAL_MIN_ITEMS), 0)
    assert seal(big) is big  # this is not a worker process
    assert seal([1, 2, 3]) == [1, 2, 3]


def chunk_counts(numbers: list[int]) -> Counter[str]:
    return Counter(f"key{n % 3000}" for n in numbers)


def merge(first: Counter[str], second: Counter[str]) -> Counter[str]:
    assert type(second) is Counter, type(second)  # the reducer never sees a Sealed
    first.update(second)
    return first


async def test_large_partials_from_worker_processes_fold_correctly() -> None:
    total = await aiomr.map_reduce(
        range(40_000), chunk_counts, merge, mode="chunk", chunk_size=10_000, max_workers=2
    )
    assert total == chunk_counts(list(range(40_000)))
    assert len(total) == 3000 >= SEAL_MIN_ITEMS


async def test_a_first_partial_that_is_sealed_becomes_the_value() -> None:
    counts = await aiomr.map_reduce(
        range(10_000), chunk_counts, operator.add, mode="chunk", chunk_size=10_000, max_workers=1
    )
    assert counts == chunk_counts(list(range(10_000)))


# Large chunks of records go out sealed: pickled by the caller in frames, on a helper thread.


def test_a_large_chunk_is_pickled_frame_by_frame() -> None:
    records = [f"word{i}\t{i}\t{i % 7}" for i in range(65_536)]
    sink = sealing._FrameSink()
    pickle.Pickler(sink, pickle.HIGHEST_PROTOCOL).dump(records)
    # One write per frame of about 64 KiB: each is a chance for the event loop to run.
    assert len(sink.parts) >= sum(map(len, records)) // (128 * 1024)
    sealed = sealing.seal_records(records)
    assert pickle.loads(sealed.data) == records


def test_execute_unseals_a_sealed_chunk_before_the_body_sees_it() -> None:
    records = list(range(5_000))
    outcome = run.execute(
        lambda rs, start: (type(rs), sum(rs), start), sealing.seal_records(records), 7
    )
    assert isinstance(outcome, envelope.Outcome)
    assert outcome.value == (list, sum(records), 7)
    assert outcome.records == len(records)


def triple(x: int) -> int:
    return 3 * x


async def test_large_chunks_reach_worker_processes_sealed_and_whole() -> None:
    # chunk_size above SEAL_MIN_ITEMS: every chunk is sealed on its way out.
    async with aiomr.Engine(max_workers=2) as engine:
        stats = aiomr.JobStats()
        total = await engine.map_reduce(
            range(30_000), triple, operator.add, chunk_size=SEAL_MIN_ITEMS * 3, stats=stats
        )
    assert total == 3 * sum(range(30_000))
    assert stats.records == stats.records_reduced == 30_000


class Locked:
    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()


async def test_a_large_chunk_that_cannot_be_pickled_is_named() -> None:
    records = [1] * SEAL_MIN_ITEMS + [Locked()]
    async with aiomr.Engine(max_workers=2) as engine:
        with pytest.raises(
            aiomr.UnpicklableError,
            match=r"^chunk 0 \(records \[0, 2001\) of the source\): one of its records cannot be "
            r"pickled to cross to a worker",
        ):
            await engine.map_reduce(records, id, operator.add, chunk_size=len(records))


def test_sealed_bytes_cross_the_pool_out_of_band() -> None:
    from aiomr.executors._process_worker import pack, unpack

    data = pickle.dumps(list(range(300_000)), pickle.HIGHEST_PROTOCOL)
    parts = pack((len, (Sealed(data), 0)))
    # The sealed bytes are one of the frame's parts as they are: pickle never copied them.
    assert any(memoryview(part).obj is data for part in parts)
    frame = bytearray(b"".join(bytes(memoryview(part)) for part in parts))
    fn, (sealed, start) = unpack(frame)
    assert (fn, start) == (len, 0)
    assert memoryview(sealed.data).obj is frame  # read back as a view, not a copy
    assert unseal(sealed) == list(range(300_000))
    # Pickled by anything else, a sealed value still carries its bytes in band.
    assert pickle.loads(pickle.dumps(Sealed(data), 4)).data == data


def test_out_of_band_buffers_start_aligned_in_the_frame() -> None:
    from aiomr.executors._process_worker import ALIGN, pack, unpack

    pieces = [bytes([65 + i]) * size for i, size in enumerate((3, 70, 1, 129))]
    parts = pack([pickle.PickleBuffer(piece) for piece in pieces])
    frame = bytearray(b"".join(bytes(memoryview(part)) for part in parts))
    for piece in pieces:
        assert frame.index(piece) % ALIGN == 0, piece[:1]
    assert [bytes(view) for view in unpack(frame)] == pieces


def test_a_chunk_of_a_few_huge_records_is_sealed_off_the_loop() -> None:
    from aiomr._dispatch import _large

    assert _large([b"x" * (2 << 20)])  # one long line
    assert _large([0] * SEAL_MIN_ITEMS)
    assert not _large([b"short", b"lines"])
    assert not _large([1, 2, 3])  # no length: judged by count alone


def test_a_large_bytes_object_is_copied_out_of_the_pickle_slice_by_slice() -> None:
    import os

    from aiomr._worker.sealing import _COPY_SLICE, _SliceReader

    payload = os.urandom(3 * _COPY_SLICE + 12_345)  # one BINBYTES opcode, one readinto
    data = pickle.dumps({"blob": payload, "tail": [1, 2, 3]}, protocol=5)
    assert pickle.Unpickler(_SliceReader(data)).load() == {"blob": payload, "tail": [1, 2, 3]}


async def test_a_large_reply_read_into_a_memory_map_comes_back_whole() -> None:
    from aiomr.executors._handle import _MAPPED, _body_buffer

    assert isinstance(_body_buffer(_MAPPED - 1), bytearray) is not False
    size = 3 * _MAPPED
    mapped = _body_buffer(size)
    assert len(mapped) == size
    assert not isinstance(mapped, bytearray)
    got = await aiomr.map_reduce([size], bytes_of, operator.add, max_workers=1)
    assert got == bytes_of(size)


def bytes_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)
