"""What runs inside a worker: a task's run, its body, its result, and the job's code.

The modules, from a worker's start to its answer:

- `startup`: prepare a worker process (signals, priority, exit with the caller).
- `job_code`: a job's code, pickled once in the caller and loaded once per worker.
- `run`: `execute`, which runs every map task: times its body, captures its result or failure.
- `bodies`: the task bodies, one per mode and source (fold records, map a chunk, read a split).
- `blame`: which record of its chunk a failed body was on, noted on the exception.
- `envelope`: what a task hands back (`Outcome`, `Failure`) and what a body hands `execute`.
- `sealing`: large chunks and partials cross pickled frame by frame (`Sealed`).

The keyed tasks are in `aiomr._keyed.tasks`; a process pool's worker main is
`aiomr.executors._process_worker`, a Dask worker's task `aiomr.executors._dask_worker`.
Nothing here touches the event loop, and nothing is re-exported here: tasks name what they run
by its own module.
"""
