"""A worker's traceback shows the user's own file and source line, for code sent by value."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import aiomr

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """\
    import asyncio, concurrent.futures, multiprocessing, operator, sys
    import aiomr
    from aiomr.executors import FuturesExecutor

    def mapper(x):
        if x == 7:
            raise ValueError(f"no {x} here")  # the line the traceback must show
        return x

    async def main(kind):
        if kind == "dask":
            from distributed import LocalCluster
            from aiomr.executors import DaskExecutor
            async with (
                LocalCluster(processes=False, n_workers=1, asynchronous=True) as cluster,
                DaskExecutor(cluster.scheduler_address) as executor,
            ):
                await aiomr.map_reduce(range(10), mapper, operator.add, executor=executor)
        elif kind == "futures":
            context = multiprocessing.get_context("forkserver")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                executor = FuturesExecutor(pool)
                await aiomr.map_reduce(range(10), mapper, operator.add, executor=executor)
        else:
            await aiomr.map_reduce(range(10), mapper, operator.add, max_workers=1)

    if __name__ == "__main__":
        try:
            aiomr.run(main(sys.argv[1]))
        except ValueError as exc:
            print(exc.__cause__.formatted)
    """
)


@pytest.mark.parametrize("kind", ["process", "futures", "dask"])
def test_a_main_script_mapper_shows_its_file_and_line(tmp_path: pathlib.Path, kind: str) -> None:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), kind],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f'File "{script}", line 7, in mapper' in done.stdout, done.stdout
    assert 'raise ValueError(f"no {x} here")  # the line the traceback must show' in done.stdout
    assert "<dynamic-code>" not in done.stdout
