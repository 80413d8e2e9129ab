"""Class-based jobs for people who know mrjob and Hadoop streaming: `Job`.

A `Job` is a thin layer over the key-based engine: its `aiomr.Step` rounds run as group-by-key
plans (`aiomr._steps`), on an engine the caller gives or on workers started for the call.
"""

from __future__ import annotations

from typing import Any, Unpack

from ._chunker import AnySource
from ._engine import Engine
from ._options import KeyedKeywords, KeyedOptions
from ._steps import Step, checked_steps
from .executors import ExecutorSpec

__all__ = ["Job"]


class Job:
    """Subclass and define ``mapper`` and ``reducer`` (and ``combiner``, hooks, ``steps``).

    The word count, mrjob style:

        import aiomr

        class WordCount(aiomr.Job):
            def mapper(self, _, line):
                for word in line.split():
                    yield word.lower(), 1

            def combiner(self, word, counts):
                yield word, sum(counts)

            def reducer(self, word, counts):
                yield word, sum(counts)

        async def main() -> None:
            pairs = await WordCount().run(["the cat", "the hat"], sort=True)
            print(pairs)  # [('cat', 1), ('hat', 1), ('the', 2)]

        if __name__ == "__main__":
            aiomr.run(main())

    Methods you may define: ``mapper(key, value)``, ``combiner(key, values)``,
    ``reducer(key, values)`` -- each yielding ``(key, value)`` pairs -- and
    ``mapper_init``/``mapper_final``/``reducer_init``/``reducer_final``. Override
    `steps` for several rounds. The instance travels to the workers (with cloudpickle),
    so attributes set in ``__init__`` are visible there; state set in a task stays in that
    task. The combiner may run zero, one or many times and must not change the answer.
    """

    def steps(self) -> list[Step]:
        """Return the job's rounds; by default one, made of the methods the class defines."""
        return [
            Step(
                mapper=getattr(self, "mapper", None),
                combiner=getattr(self, "combiner", None),
                reducer=getattr(self, "reducer", None),
                mapper_init=getattr(self, "mapper_init", None),
                mapper_final=getattr(self, "mapper_final", None),
                reducer_init=getattr(self, "reducer_init", None),
                reducer_final=getattr(self, "reducer_final", None),
            )
        ]

    async def run(
        self,
        source: AnySource,
        *,
        engine: Engine | None = None,
        executor: ExecutorSpec = "process",
        **options: Unpack[KeyedKeywords],
    ) -> list[tuple[Any, Any]]:
        """Run every step over ``source`` and return the last step's pairs.

        Args:
            source: the records, given to the first mapper as ``(None, record)``.
            engine: an `aiomr.Engine` to run on (`aiomr.Engine.run_job` does the same);
                without one the call starts and stops its own workers (``executor`` and
                ``max_workers`` choose them).
            executor: where tasks run when the call starts its own workers.
            **options: the options of the key-based jobs (`aiomr.KeyedKeywords`): ``sort``
                orders the output pairs by key; ``on_error`` applies to every step;
                ``stats`` describes the last step.

        Cancellation: cancelling the call stops the running step and removes every step's
        temporary files.
        """
        checked = KeyedOptions.of("run", options)
        checked_steps(self)
        if engine is not None:
            return await engine.run_job(self, source, **options)
        async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as own:
            return await own.run_job(self, source, **options)
